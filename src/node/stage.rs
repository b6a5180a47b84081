//! NodeStageVolume and NodeUnstageVolume: the attach and the detach.
//!
//! Stage: validate → guard → look at the staging path (already mounted with this volume's
//! disk: done; with anything else: refuse) → write the stage record → reuse or create the
//! session (found in sysfs; else node record with manual start-up and CHAP, login; on
//! failure use a session the "failed" login brought up anyway, or log it out and remove the
//! records, and forget the stage record only once no session to the target is left) → wait
//! for the LUN's disk in sysfs → for mount volumes: blkid, mkfs only when blank, mount.
//!
//! Unstage: validate → guard → refuse while the disk is still mounted elsewhere (a pod's
//! bind mount) → unmount the staging path → flush and delete the disk → log out of that
//! target only → delete its node records → forget the record. Each "not there" is success.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::csi::{NodeStageVolumeRequest, NodeUnstageVolumeRequest};
use crate::domain::chap::{self, Chap, ChapKey};
use crate::domain::{Iqn, Portal, PublishContext, VolumeId};

use super::context::{self, Access, Capability};
use super::device::{self, BlockDevice};
use super::error::NodeError;
use super::fs::{Content, FsType};
use super::iscsi::Login;
use super::mount::{DeviceRef, MountEntry, MountMode, MountOptions};
use super::state::{StageRecord, StateError};
use super::superblock;
use super::{
    mounted_at, resolve, unmount_all, Filesystems, Iscsiadm, Mounter, NodeConfig, SharedRunner,
    StateDir, Sysfs,
};

/// Why a volume cannot be staged or unstaged here (besides the layers' own failures).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The target wants CHAP but kubelet sent no key.
    #[error("the volume's target requires CHAP (publish_context authMethod=CHAP) but the stage secrets hold no `{key}`: point the StorageClass's csi.storage.k8s.io/node-stage-secret-name and -namespace at the Secret holding the CHAP key")]
    MissingChapKey {
        /// The secrets key expected.
        key: &'static str,
    },
    /// Something else is mounted at the staging path.
    #[error("staging path {path} already has {found} mounted, not this volume's device {expected}: refusing to mount over it (a stale mount from an earlier session?); unmount it")]
    Conflict {
        /// The staging path.
        path: PathBuf,
        /// What is mounted there.
        found: DeviceRef,
        /// The volume's device, or why there is none.
        expected: Expected,
    },
    /// The staging path holds this volume, staged differently.
    #[error("{path} already holds the volume as {existing}, but the request asks for {wanted}")]
    StagedDifferently {
        /// The staging path.
        path: PathBuf,
        /// How it is staged.
        existing: Staged,
        /// What was asked.
        wanted: Staged,
    },
    /// The disk is still mounted somewhere else (a pod's target path).
    #[error("{device} is still mounted at {}: unpublish it first", mounts.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", "))]
    StillInUse {
        /// The disk.
        device: String,
        /// Where it is mounted.
        mounts: Vec<PathBuf>,
    },
    /// The device holds something other than the requested filesystem.
    #[error("{} holds {found}, not the requested {wanted} filesystem: refusing to format it (request the filesystem it holds, or wipe it deliberately)", device.display())]
    WrongContent {
        /// The device node.
        device: PathBuf,
        /// What blkid found.
        found: Content,
        /// The filesystem asked for.
        wanted: FsType,
    },
    /// A blank device was staged read-only: it cannot be formatted nor mounted.
    #[error("{} holds no filesystem and the volume is staged read-only: it must be staged by a writer once first", device.display())]
    UnformattedReadOnly {
        /// The device node.
        device: PathBuf,
    },
}

/// What the staging path should hold, as [`StageError::Conflict`] says.
#[derive(Debug)]
pub enum Expected {
    /// The volume's disk.
    Disk(DeviceRef),
    /// Nothing known: the volume's LUN has no disk here.
    NotAttached {
        /// The volume's target.
        target: Iqn,
        /// Its LUN.
        lun: u32,
    },
    /// Nothing: a block volume is not mounted when staged.
    Nothing,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Disk(disk) => disk.fmt(f),
            Expected::NotAttached { target, lun } => {
                write!(f, "none: LUN {lun} of {target} is not attached")
            }
            Expected::Nothing => f.write_str("nothing: a block volume is not mounted when staged"),
        }
    }
}

/// How a volume is staged: its filesystem and mode (`ext4 read-write`).
#[derive(Debug, PartialEq, Eq)]
pub struct Staged {
    /// The filesystem type.
    pub fs_type: String,
    /// Read-only or read-write.
    pub mode: MountMode,
}

impl fmt::Display for Staged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.fs_type, self.mode)
    }
}

/// A validated NodeStageVolume.
pub(super) struct Stage {
    /// The volume.
    id: VolumeId,
    /// Where to mount it (normalised, not yet resolved).
    staging: PathBuf,
    /// How it is accessed.
    cap: Capability,
    /// Its target, from publish_context.
    target: PublishContext,
    /// The credentials for this volume and this node, when the target wants CHAP.
    chap: Option<Chap>,
}

/// Validates NodeStageVolume (`initiator`: this node's IQN, which the CHAP credentials are
/// derived with).
pub(super) fn validate_stage(
    req: &NodeStageVolumeRequest,
    initiator: &Iqn,
) -> Result<Stage, NodeError> {
    let id = context::volume(&req.volume_id)?;
    let staging = context::abs_path("staging_target_path", &req.staging_target_path)?;
    let cap = context::capability(req.volume_capability.as_ref())?;
    let target = context::publish_context(&req.publish_context)?;
    let chap = chap(&req.secrets, &id, target.chap, initiator)?;
    Ok(Stage {
        id,
        staging,
        cap,
        target,
        chap,
    })
}

/// The CHAP credentials for `volume` and this node, when the target wants CHAP.
fn chap(
    secrets: &HashMap<String, String>,
    volume: &VolumeId,
    required: bool,
    initiator: &Iqn,
) -> Result<Option<Chap>, NodeError> {
    if !required {
        if secrets.contains_key(chap::SECRET_KEY) {
            tracing::warn!("stage secrets hold a CHAP key but the target does not use CHAP (publish_context authMethod=None); logging in without");
        }
        return Ok(None);
    }
    ChapKey::from_secrets(secrets)?
        .map(|key| Some(key.credentials(volume, initiator)))
        .ok_or(
            StageError::MissingChapKey {
                key: chap::SECRET_KEY,
            }
            .into(),
        )
}

/// A validated NodeUnstageVolume.
pub(super) struct Unstage {
    /// The volume, as named (an id that is not ours finds nothing).
    volume_id: String,
    /// Where it is staged (normalised, not yet resolved).
    staging: PathBuf,
}

/// Validates NodeUnstageVolume.
pub(super) fn validate_unstage(req: &NodeUnstageVolumeRequest) -> Result<Unstage, NodeError> {
    context::volume_id(&req.volume_id)?;
    Ok(Unstage {
        volume_id: req.volume_id.clone(),
        staging: context::abs_path("staging_target_path", &req.staging_target_path)?,
    })
}

/// What NodeStageVolume and NodeUnstageVolume act through.
pub(super) struct Staging<'a> {
    /// Settings.
    pub(super) config: &'a NodeConfig,
    /// The initiator.
    pub(super) iscsi: &'a Iscsiadm,
    /// blkid and mkfs.
    pub(super) fs: &'a Filesystems,
    /// blockdev.
    pub(super) tools: &'a SharedRunner,
    /// Mounts.
    pub(super) mounter: &'a dyn Mounter,
    /// Device discovery.
    pub(super) sysfs: &'a Sysfs,
    /// Stage records.
    pub(super) state: &'a StateDir,
}

impl Staging<'_> {
    /// NodeStageVolume, validated and under the volume's guard.
    pub(super) async fn stage(&self, req: &Stage) -> Result<(), NodeError> {
        let Stage {
            id,
            staging,
            cap,
            target,
            chap,
        } = req;
        let staging = resolve(staging);

        let record = StageRecord {
            volume_id: id.to_string(),
            target_iqn: target.iqn.to_string(),
            portals: target.portals.iter().map(ToString::to_string).collect(),
            lun: target.lun,
        };
        if let Some(mounted) = mounted_at(self.mounter, &staging).await? {
            self.check_staged(&staging, &mounted, target, cap)?;
            // Re-written in case it was lost: unstage needs it.
            self.state.save(&record).await?;
            tracing::info!(staging = %staging.display(), "already staged");
            return Ok(());
        }
        // Written before the login, so that an unstage after a crash finds the session.
        self.state.save(&record).await?;
        let portal = match self.ensure_session(target, chap.as_ref()).await {
            Ok(p) => p,
            Err(e) => {
                // Never forget a target that still has a session: unstage logs it out.
                match self.sysfs.sessions_of(target.iqn.as_str()) {
                    Ok(left) if left.is_empty() => self.state.remove(&record.volume_id).await?,
                    _ => {
                        tracing::warn!(target = %target.iqn, "a session to the target may be left after the failed login; keeping the stage record for NodeUnstageVolume")
                    }
                }
                return Err(e);
            }
        };
        let disk = self
            .sysfs
            .wait_for_lun(
                target.iqn.as_str(),
                &portal,
                target.lun,
                self.config.device_timeout,
            )
            .await?;
        self.sysfs
            .check_by_path(&portal, target.iqn.as_str(), target.lun, &disk)?;
        tracing::info!(device = %disk.path.display(), lun = target.lun, "LUN attached");
        match &cap.access {
            Access::Block if cap.read_only => {
                Ok(device::set_read_only(self.tools.as_ref(), &disk.path).await?)
            }
            Access::Block => Ok(()),
            Access::Mount { fs, options } => {
                self.format_and_mount(&disk, &staging, *fs, options, cap.read_only)
                    .await
            }
        }
    }

    /// Whether what is mounted at the staging path is this volume, staged compatibly.
    fn check_staged(
        &self,
        staging: &Path,
        mounted: &MountEntry,
        target: &PublishContext,
        cap: &Capability,
    ) -> Result<(), NodeError> {
        let conflict = |expected: Expected| StageError::Conflict {
            path: staging.to_path_buf(),
            found: mounted.device(),
            expected,
        };
        let disk = self
            .sysfs
            .find_lun(target.iqn.as_str(), target.lun)?
            .ok_or_else(|| {
                conflict(Expected::NotAttached {
                    target: target.iqn.clone(),
                    lun: target.lun,
                })
            })?;
        if disk.dev != mounted.dev {
            return Err(conflict(Expected::Disk((&disk).into())).into());
        }
        let Access::Mount { fs, .. } = &cap.access else {
            return Err(conflict(Expected::Nothing).into());
        };
        let existing = Staged {
            fs_type: mounted.fs_type.clone(),
            mode: mounted.mode(),
        };
        let wanted = Staged {
            fs_type: fs.name().to_string(),
            mode: MountMode::of(cap.read_only),
        };
        if existing != wanted {
            return Err(StageError::StagedDifferently {
                path: staging.to_path_buf(),
                existing,
                wanted,
            }
            .into());
        }
        Ok(())
    }

    /// Reuses a session to the target, or logs in through the first portal that accepts.
    /// A login that reports a failure may have logged in anyway (iscsiadm logs in with the
    /// records it could read even when its walk of the database failed): a session that is
    /// up through one of the target's portals is then used. Otherwise any session to the
    /// target is logged out and the node records made here are deleted again.
    async fn ensure_session(
        &self,
        target: &PublishContext,
        chap: Option<&Chap>,
    ) -> Result<Portal, NodeError> {
        if let Some((sid, portal)) = self.find_session(target.iqn.as_str(), None)? {
            tracing::info!(sid, %portal, "reusing the existing session");
            return Ok(portal);
        }
        let mut first_error = None;
        for portal in &target.portals {
            let attempt = async {
                self.iscsi
                    .prepare(target.iqn.as_str(), portal, chap)
                    .await?;
                self.iscsi.login(target.iqn.as_str(), portal).await
            };
            match attempt.await {
                Ok(how) => {
                    tracing::info!(%portal, reused = (how == Login::Existing), "logged in");
                    return Ok(portal.clone());
                }
                Err(e) => {
                    tracing::warn!(%portal, error = %crate::error::full_message(&e), "login failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some((sid, portal)) =
            self.find_session(target.iqn.as_str(), Some(&target.portals))?
        {
            tracing::warn!(sid, %portal, "the login reported a failure, but its session is up: using it");
            return Ok(portal);
        }
        if let Err(e) = self.clean_up_login(target.iqn.as_str()).await {
            tracing::warn!(error = %crate::error::full_message(&e), "cannot clean up after the failed login");
        }
        Err(first_error
            .map(NodeError::from)
            .unwrap_or_else(|| NodeError::invalid("publish_context", "no portals")))
    }

    /// A session to `iqn` (from sysfs, with the portal it is connected to); with
    /// `up_through`, only a logged-in one through one of those portals.
    fn find_session(
        &self,
        iqn: &str,
        up_through: Option<&[Portal]>,
    ) -> Result<Option<(u32, Portal)>, NodeError> {
        for s in self.sysfs.sessions_of(iqn)? {
            let Some(portal) = self.sysfs.session_portal(s.sid)? else {
                continue;
            };
            let fits = up_through.is_none_or(|portals| {
                s.state == device::LOGGED_IN && portals.iter().any(|p| p.same(&portal))
            });
            if fits {
                return Ok(Some((s.sid, portal)));
            }
        }
        Ok(None)
    }

    /// Logs out of whatever session a failed login left to `iqn`, and deletes its records.
    async fn clean_up_login(&self, iqn: &str) -> Result<(), NodeError> {
        if !self.sysfs.sessions_of(iqn)?.is_empty() {
            self.iscsi.logout(iqn).await?;
            tracing::info!(
                target = iqn,
                "logged out of the session the failed login left"
            );
        }
        self.iscsi.delete_records(iqn).await?;
        Ok(())
    }

    /// blkid, mkfs only when blank, mount.
    async fn format_and_mount(
        &self,
        disk: &BlockDevice,
        staging: &Path,
        fs: FsType,
        options: &MountOptions,
        read_only: bool,
    ) -> Result<(), NodeError> {
        let device = disk.path.display().to_string();
        let existing = match self.fs.probe(&disk.path).await? {
            Content::Blank if read_only => {
                return Err(StageError::UnformattedReadOnly {
                    device: disk.path.clone(),
                }
                .into());
            }
            Content::Blank => {
                self.fs.mkfs(&disk.path, fs).await?;
                false
            }
            Content::Filesystem(found) if found == fs.name() => true,
            found => {
                return Err(StageError::WrongContent {
                    device: disk.path.clone(),
                    found,
                    wanted: fs,
                }
                .into())
            }
        };
        tokio::fs::create_dir_all(staging)
            .await
            .map_err(NodeError::io("create directory", staging))?;
        let mut flags = options.flags;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let mut data = options.data.clone();
        for implied in fs.implied_options() {
            if !data.iter().any(|d| d == implied) {
                data.push(implied.to_string());
            }
        }
        self.mounter
            .mount_fs(&disk.path, staging, fs.name(), flags, &data.join(","))
            .await?;
        tracing::info!(device = %device, staging = %staging.display(), %fs, read_only, "mounted");
        if existing && !read_only {
            if let Err(e) = self.grow_to_disk(disk, staging, fs).await {
                // Unmounted again, so that the retry grows it rather than finding it staged.
                unmount_all(self.mounter, staging).await?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Grows an existing filesystem that is smaller than its disk: a volume restored or
    /// cloned into a larger size, or expanded while it was not staged, gets the size the pod
    /// asked for (kubelet calls NodeExpandVolume only for an expansion of the claim).
    async fn grow_to_disk(
        &self,
        disk: &BlockDevice,
        staging: &Path,
        fs: FsType,
    ) -> Result<(), NodeError> {
        let disk_size = self.sysfs.size_bytes(&disk.name)?.unwrap_or(0);
        let fs_size = match superblock::read_size(&disk.path, fs).await {
            Ok(Some(size)) => size,
            Ok(None) => {
                tracing::warn!(device = %disk.path.display(), %fs, "no superblock found where blkid found one; not growing the filesystem");
                return Ok(());
            }
            Err(e) => return Err(NodeError::io("read the superblock of", &disk.path)(e)),
        };
        if fs_size + superblock::GROW_SLACK < disk_size {
            tracing::info!(device = %disk.path.display(), fs_size, disk_size, "filesystem smaller than its disk: growing it");
            self.fs.grow(&disk.path, staging, fs).await?;
        }
        Ok(())
    }

    /// NodeUnstageVolume, validated and under the volume's guard.
    pub(super) async fn unstage(&self, req: &Unstage) -> Result<(), NodeError> {
        let staging = resolve(&req.staging);

        let record = match self.state.load(&req.volume_id).await {
            // Unreadable: the staged disk still leads to the session, and the file goes.
            Err(e @ StateError::Corrupt { .. }) => {
                tracing::warn!(error = %e, "ignoring the unreadable stage record");
                None
            }
            other => other?,
        };
        let mounts = self.mounter.mounts().await?;
        let staged = super::mount::mount_at(&mounts, &staging).cloned();
        // The target: from the record, else from the staged disk's session.
        let mut target = record.as_ref().map(|r| r.target_iqn.clone());
        let mut disks = Vec::new();
        if let Some(m) = &staged {
            if let Some(h) = self.sysfs.health(m.dev)? {
                let session_target = h.session.as_ref().map(|s| s.target.clone());
                if target.is_none() {
                    target = session_target.clone();
                }
                // Never delete a disk that belongs to another target.
                if session_target.is_some() && session_target == target {
                    disks.push(h.name);
                }
            }
        }
        if let (Some(r), Some(t)) = (&record, &target) {
            if let Some(d) = self.sysfs.find_lun(t, r.lun)? {
                if !disks.contains(&d.name) {
                    disks.push(d.name);
                }
            }
        }
        self.refuse_if_in_use(&mounts, &staging, &disks)?;
        if staged.is_some() {
            unmount_all(self.mounter, &staging).await?;
        }
        for name in &disks {
            self.remove_disk(name).await?;
        }
        if let Some(t) = &target {
            self.iscsi.logout(t).await?;
            self.iscsi.delete_records(t).await?;
            tracing::info!(target = %t, "logged out and node records deleted");
        }
        self.state.remove(&req.volume_id).await?;
        Ok(())
    }

    /// Fails when one of `disks` is mounted anywhere but at the staging path: deleting it
    /// under a pod would lose that pod's writes.
    fn refuse_if_in_use(
        &self,
        mounts: &[MountEntry],
        staging: &Path,
        disks: &[String],
    ) -> Result<(), NodeError> {
        for name in disks {
            let num = self.sysfs.block_dev(name)?;
            let users: Vec<_> = mounts
                .iter()
                .filter(|m| m.mount_point != staging)
                .filter(|m| {
                    Some(m.dev) == num || (m.fs_type == "devtmpfs" && m.root == format!("/{name}"))
                })
                .map(|m| m.mount_point.clone())
                .collect();
            if !users.is_empty() {
                return Err(StageError::StillInUse {
                    device: name.clone(),
                    mounts: users,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Flushes and deletes SCSI disk `name`. A flush failure stops the unstage while the
    /// session is healthy (the data could still be written); with a dead session there is
    /// nowhere to write to, and the disk is removed anyway.
    async fn remove_disk(&self, name: &str) -> Result<(), NodeError> {
        let node = self.sysfs.node_path(name);
        if node.exists() {
            if let Err(e) = device::flush(self.tools.as_ref(), &node).await {
                let problem = match self.sysfs.block_dev(name)? {
                    Some(num) => self.sysfs.health(num)?.and_then(|h| h.problem()),
                    None => Some(format!("{name} is gone")),
                };
                match problem {
                    None => return Err(e.into()),
                    Some(why) => {
                        tracing::warn!(device = name, %why, error = %crate::error::full_message(&e), "flush failed on an unhealthy device; removing it anyway")
                    }
                }
            }
        }
        if self.sysfs.delete(name)? {
            tracing::info!(device = name, "SCSI device deleted");
        }
        Ok(())
    }
}
