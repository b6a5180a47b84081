//! NodePublishVolume and NodeUnpublishVolume: a pod's view of a staged volume.
//!
//! Mount volumes: the staging mount is bind-mounted onto the target directory, then
//! remounted read-only (and with the capability's nosuid/nodev/noexec...) when asked.
//! Block volumes: the LUN's device node, found again through sysfs from publish_context, is
//! bind-mounted onto a file at the target path. Unpublish unmounts and removes the path.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::csi::{NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use crate::domain::PublishContext;

use super::context::{self, Access};
use super::device::DevNum;
use super::error::NodeError;
use super::mount::{DeviceRef, MountEntry, MountMode, MountOptions};
use super::{mounted_at, resolve, unmount_all, Mounter, Sysfs};

/// What publishing means for the requested access type.
enum Plan {
    /// Bind the staging mount, with these options.
    Mount(MountOptions),
    /// Bind the LUN's device node.
    Block(PublishContext),
}

/// Why a staged volume cannot be published at the target path.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Publish before stage.
    #[error("volume {volume_id} is not staged at {}: NodeStageVolume must succeed first", path.display())]
    NotStaged {
        /// The volume.
        volume_id: String,
        /// The staging path given.
        path: PathBuf,
    },
    /// The target path already holds this volume, published differently.
    #[error("{} already holds the volume {existing}, but the request asks for {wanted}", path.display())]
    PublishedDifferently {
        /// The target path.
        path: PathBuf,
        /// How it is published.
        existing: MountMode,
        /// What was asked.
        wanted: MountMode,
    },
    /// A read-only publication of a raw block volume staged read-write was asked for.
    #[error("{}: a read-only publication of a raw block volume staged read-write cannot be enforced (Linux ignores read-only bind mounts of device nodes); use a reader-only access mode (ReadOnlyMany), which makes the whole device read-only", path.display())]
    ReadOnlyBlockUnenforceable {
        /// The target path.
        path: PathBuf,
    },
    /// The target path holds something else.
    #[error("{} already has {found} mounted, not this volume's {expected}: refusing to mount over it", path.display())]
    Conflict {
        /// The target path.
        path: PathBuf,
        /// What is there.
        found: Occupant,
        /// The volume's staging mount or disk.
        expected: DeviceRef,
    },
}

/// What holds a target path, as [`PublishError::Conflict`] says.
#[derive(Debug)]
pub enum Occupant {
    /// A mount.
    Mount(DeviceRef),
    /// A device node bound there (a raw block volume).
    Device(DevNum),
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Occupant::Mount(m) => m.fmt(f),
            Occupant::Device(dev) => write!(f, "device {dev}"),
        }
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

/// Volume `volume_id` is not staged at `staging`.
fn not_staged(volume_id: &str, staging: &Path) -> PublishError {
    PublishError::NotStaged {
        volume_id: volume_id.to_string(),
        path: staging.to_path_buf(),
    }
}

/// The target path holds the volume as `found`, not `read_only` as asked.
fn published_differently(target_path: &Path, found: &MountEntry, read_only: bool) -> NodeError {
    PublishError::PublishedDifferently {
        path: target_path.to_path_buf(),
        existing: found.mode(),
        wanted: MountMode::of(read_only),
    }
    .into()
}

/// What NodePublishVolume and NodeUnpublishVolume act through: mounts and sysfs.
pub(super) struct Publishing<'a> {
    /// Mounts.
    pub(super) mounter: &'a dyn Mounter,
    /// Device discovery.
    pub(super) sysfs: &'a Sysfs,
}

impl Publishing<'_> {
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
        let staged = mounted_at(self.mounter, staging)
            .await?
            .ok_or_else(|| not_staged(volume_id, staging))?;
        if let Some(m) = mounted_at(self.mounter, target_path).await? {
            if m.dev != staged.dev {
                return Err(PublishError::Conflict {
                    path: target_path.to_path_buf(),
                    found: Occupant::Mount(m.device()),
                    expected: staged.device(),
                }
                .into());
            }
            if m.read_only() != read_only {
                return Err(published_differently(target_path, &m, read_only));
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
            .ok_or_else(|| not_staged(volume_id, staging))?;
        if read_only && !self.sysfs.read_only(&disk.name)? {
            return Err(PublishError::ReadOnlyBlockUnenforceable {
                path: target_path.to_path_buf(),
            }
            .into());
        }
        if let Some(m) = mounted_at(self.mounter, target_path).await? {
            let bound = self.mounter.block_device(target_path).await?;
            if bound != Some(disk.dev) {
                return Err(PublishError::Conflict {
                    path: target_path.to_path_buf(),
                    found: match bound {
                        Some(d) => Occupant::Device(d),
                        None => Occupant::Mount(m.device()),
                    },
                    expected: (&disk).into(),
                }
                .into());
            }
            if m.read_only() != read_only {
                return Err(published_differently(target_path, &m, read_only));
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
        unmount_all(self.mounter, &target_path).await?;
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
