//! NodePublishVolume and NodeUnpublishVolume: a pod's view of a staged volume.
//!
//! Mount volumes: the staging mount is bind-mounted onto the target directory, then
//! remounted read-only (and with the capability's nosuid/nodev/noexec...) when asked.
//! Block volumes: the LUN's device node, found again through sysfs from publish_context, is
//! bind-mounted onto a file at the target path. Unpublish unmounts and removes the path.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::csi::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use crate::domain::PublishContext;

use super::context::{self, Access};
use super::error::NodeError;
use super::mount::MountOptions;
use super::{resolve, NodeService};

/// What publishing means for the requested access type.
enum Plan {
    /// Bind the staging mount, with these options.
    Mount(MountOptions),
    /// Bind the LUN's device node.
    Block(PublishContext),
}

/// How a publication is described in errors.
fn mode(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

/// A validated NodePublishVolume.
pub(super) struct Publish {
    /// The volume, as named.
    volume_id: String,
    /// Where the pod wants it (normalised, not yet resolved).
    target_path: PathBuf,
    /// Where it is staged (normalised, not yet resolved).
    staging: PathBuf,
    /// What publishing means for its access type.
    plan: Plan,
    /// Read-only, asked by the request or implied by the access mode.
    read_only: bool,
}

/// Validates NodePublishVolume.
pub(super) fn validate_publish(req: &NodePublishVolumeRequest) -> Result<Publish, NodeError> {
    context::volume_id(&req.volume_id)?;
    let target_path = context::abs_path("target_path", &req.target_path)?;
    // STAGE_UNSTAGE_VOLUME is advertised, so the CO must pass the staging path.
    let staging = context::abs_path("staging_target_path", &req.staging_target_path)?;
    let cap = context::capability(req.volume_capability.as_ref())?;
    let plan = match cap.access {
        Access::Mount { options, .. } => Plan::Mount(options),
        Access::Block => Plan::Block(context::publish_context(&req.publish_context)?),
    };
    Ok(Publish {
        volume_id: req.volume_id.clone(),
        target_path,
        staging,
        plan,
        read_only: req.readonly || cap.read_only,
    })
}

/// A validated NodeUnpublishVolume.
pub(super) struct Unpublish {
    /// Where the volume is published (normalised, not yet resolved).
    target_path: PathBuf,
}

/// Validates NodeUnpublishVolume.
pub(super) fn validate_unpublish(req: &NodeUnpublishVolumeRequest) -> Result<Unpublish, NodeError> {
    context::volume_id(&req.volume_id)?;
    Ok(Unpublish {
        target_path: context::abs_path("target_path", &req.target_path)?,
    })
}

impl NodeService {
    /// NodePublishVolume, validated and under the volume's guard.
    pub(super) async fn publish(&self, req: &Publish) -> Result<(), NodeError> {
        let target_path = resolve(&req.target_path);
        match &req.plan {
            Plan::Mount(options) => {
                let staging = resolve(&req.staging);
                self.publish_mount(
                    &req.volume_id,
                    &staging,
                    &target_path,
                    options,
                    req.read_only,
                )
                .await
            }
            Plan::Block(target) => {
                self.publish_block(
                    &req.volume_id,
                    &req.staging,
                    &target_path,
                    target,
                    req.read_only,
                )
                .await
            }
        }
    }

    async fn publish_mount(
        &self,
        volume_id: &str,
        staging: &Path,
        target_path: &Path,
        options: &MountOptions,
        read_only: bool,
    ) -> Result<(), NodeError> {
        let staged = self
            .mount_at(staging)
            .await?
            .ok_or_else(|| NodeError::NotStaged {
                volume_id: volume_id.to_string(),
                path: staging.to_path_buf(),
            })?;
        if let Some(m) = self.mount_at(target_path).await? {
            if m.dev != staged.dev {
                return Err(NodeError::TargetConflict {
                    path: target_path.to_path_buf(),
                    found: format!("{} ({})", m.source, m.dev),
                    expected: format!("{} ({})", staged.source, staged.dev),
                });
            }
            if m.read_only() != read_only {
                return Err(NodeError::PublishedDifferently {
                    path: target_path.to_path_buf(),
                    existing: mode(m.read_only()),
                    wanted: mode(read_only),
                });
            }
            tracing::info!(target_path = %target_path.display(), "already published");
            return Ok(());
        }
        tokio::fs::create_dir_all(target_path)
            .await
            .map_err(NodeError::io("create directory", target_path))?;
        self.mounter.bind(staging, target_path).await?;
        self.restrict(target_path, options.flags, read_only).await?;
        tracing::info!(target_path = %target_path.display(), read_only, "published");
        Ok(())
    }

    async fn publish_block(
        &self,
        volume_id: &str,
        staging: &Path,
        target_path: &Path,
        target: &PublishContext,
        read_only: bool,
    ) -> Result<(), NodeError> {
        let disk = self
            .sysfs
            .find_lun(target.iqn.as_str(), target.lun)?
            .ok_or_else(|| NodeError::NotStaged {
                volume_id: volume_id.to_string(),
                path: staging.to_path_buf(),
            })?;
        if read_only && !self.sysfs.read_only(&disk.name)? {
            return Err(NodeError::ReadOnlyBlockUnenforceable {
                path: target_path.to_path_buf(),
            });
        }
        if let Some(m) = self.mount_at(target_path).await? {
            let bound = self.mounter.block_device(target_path).await?;
            if bound != Some(disk.dev) {
                return Err(NodeError::TargetConflict {
                    path: target_path.to_path_buf(),
                    found: match bound {
                        Some(d) => format!("device {d}"),
                        None => format!("{} ({})", m.source, m.dev),
                    },
                    expected: format!("{} ({})", disk.path.display(), disk.dev),
                });
            }
            if m.read_only() != read_only {
                return Err(NodeError::PublishedDifferently {
                    path: target_path.to_path_buf(),
                    existing: mode(m.read_only()),
                    wanted: mode(read_only),
                });
            }
            tracing::info!(target_path = %target_path.display(), "already published");
            return Ok(());
        }
        if let Some(parent) = target_path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(NodeError::io("create directory", parent))?;
        }
        tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target_path)
            .await
            .map_err(NodeError::io("create file", target_path))?;
        self.mounter.bind(&disk.path, target_path).await?;
        self.restrict(target_path, MsFlags::empty(), read_only)
            .await?;
        tracing::info!(target_path = %target_path.display(), device = %disk.path.display(), read_only, "published");
        Ok(())
    }

    /// Remounts a fresh bind mount with `flags` (+ read-only); undoes the bind on failure.
    async fn restrict(
        &self,
        target_path: &Path,
        mut flags: MsFlags,
        read_only: bool,
    ) -> Result<(), NodeError> {
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        if flags.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.mounter.remount_bind(target_path, flags).await {
            if let Err(undo) = self.mounter.unmount(target_path).await {
                tracing::warn!(error = %undo, "cannot undo the bind mount");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// NodeUnpublishVolume, validated and under the volume's guard.
    pub(super) async fn unpublish(&self, req: &Unpublish) -> Result<(), NodeError> {
        let target_path = resolve(&req.target_path);
        self.unmount_all(&target_path).await?;
        match tokio::fs::symlink_metadata(&target_path).await {
            Ok(meta) if meta.is_dir() => tokio::fs::remove_dir(&target_path)
                .await
                .map_err(NodeError::io("remove directory", &target_path))?,
            Ok(_) => tokio::fs::remove_file(&target_path)
                .await
                .map_err(NodeError::io("remove file", &target_path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::io("inspect", &target_path)(e)),
        }
        Ok(())
    }
}
