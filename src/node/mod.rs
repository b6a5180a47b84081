//! The Node service: what nova-compute and os-brick do in Cinder's attach, for kubelet.
//!
//! - [`stage`](NodeService::stage): node record + CHAP, login (an existing session is
//!   reused), the LUN's disk found through sysfs, mkfs only on a blank device, mount at the
//!   staging path; [`unstage`](NodeService::unstage) undoes it for that target only.
//! - publish/unpublish: bind mounts into the pod's target path (a device node bound onto a
//!   file for raw block volumes).
//! - stats: statvfs or device size, and the volume condition from the session state.
//! - expand: rescan the LUN's disk, then resize2fs / xfs_growfs online (block: rescan only).
//!
//! Every RPC has the controller's shape (`service.rs`, `impl Node`): it validates the request
//! into typed values ([`context`], [`crate::domain`]), takes the per-volume guard, then calls
//! one operation (`stage.rs`, `publish.rs`, `stats.rs`, `expand.rs`) that observes the real
//! state (mountinfo, sysfs, iscsiadm) before acting, so a repeat or a retry after a crash
//! half-way completes the work instead of redoing it; all in the one span of the RPC
//! ([`crate::rpc`]). The layers: [`iscsi`], [`device`], [`fs`], [`mount`], [`state`]; the
//! test doubles in `fake` (tests and the `testing` feature only); kubelet registration
//! (node-driver-registrar built in): [`registration`].

pub mod context;
pub mod device;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod fs;
pub mod iscsi;
pub mod mount;
pub mod registration;
pub mod state;
pub mod superblock;

mod expand;
mod publish;
mod service;
mod stage;
mod startup;
mod stats;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::exec::SharedRunner;
use crate::ops::{VolumeGuard, VolumeLocks};

use self::device::Sysfs;
use self::error::NodeError;
use self::expand::Expansion;
use self::fs::Filesystems;
use self::iscsi::Iscsiadm;
use self::mount::{mount_at, MountEntry, MountError, Mounter, Unmounted};
use self::publish::Publishing;
use self::stage::Staging;
use self::state::StateDir;
use self::stats::VolumeStats;
use crate::domain::Iqn;

pub use self::startup::{read_initiator_name, run};

/// Settings of the node service.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Reported by NodeGetInfo: the Kubernetes node name, or the IQN when standalone.
    pub node_id: String,
    /// This host's initiator IQN (CHAP credentials are derived with it).
    pub initiator_iqn: Iqn,
    /// Reported by NodeGetInfo (0: no limit).
    pub max_volumes_per_node: i64,
    /// How long to wait for a LUN's disk after a login.
    pub device_timeout: Duration,
}

/// What the node service acts through (real in production, fakes in unit tests).
pub struct NodeDeps {
    /// iscsiadm, in the host's namespaces or directly.
    pub iscsiadm: Iscsiadm,
    /// Runs blkid, mkfs and blockdev (in this container: they only need /dev).
    pub tools: SharedRunner,
    /// Mount syscalls and the mount table.
    pub mounter: Arc<dyn Mounter>,
    /// sysfs and /dev.
    pub sysfs: Sysfs,
    /// Records of staged volumes.
    pub state: StateDir,
}

/// The Node service.
pub struct NodeService {
    /// Settings.
    config: NodeConfig,
    /// The initiator.
    iscsi: Iscsiadm,
    /// blkid and mkfs.
    fs: Filesystems,
    /// blockdev.
    tools: SharedRunner,
    /// Mounts.
    mounter: Arc<dyn Mounter>,
    /// Device discovery.
    sysfs: Sysfs,
    /// Stage records.
    state: StateDir,
    /// One operation per volume at a time.
    locks: VolumeLocks,
}

impl NodeService {
    /// A node service with `config`, acting through `deps`.
    pub fn new(config: NodeConfig, deps: NodeDeps) -> Self {
        NodeService {
            config,
            iscsi: deps.iscsiadm,
            fs: Filesystems::new(Arc::clone(&deps.tools)),
            tools: deps.tools,
            mounter: deps.mounter,
            sysfs: deps.sysfs,
            state: deps.state,
            locks: VolumeLocks::new(),
        }
    }

    /// Takes the volume's guard, or fails with `Busy` (ABORTED).
    fn lock(&self, volume_id: &str) -> Result<VolumeGuard, NodeError> {
        self.locks
            .try_lock(volume_id)
            .ok_or_else(|| NodeError::Busy {
                volume_id: volume_id.to_string(),
            })
    }
    /// NodeStageVolume's and NodeUnstageVolume's parts.
    fn staging(&self) -> Staging<'_> {
        Staging {
            config: &self.config,
            iscsi: &self.iscsi,
            fs: &self.fs,
            tools: &self.tools,
            mounter: self.mounter.as_ref(),
            sysfs: &self.sysfs,
            state: &self.state,
        }
    }

    /// NodePublishVolume's and NodeUnpublishVolume's parts.
    fn publishing(&self) -> Publishing<'_> {
        Publishing {
            mounter: self.mounter.as_ref(),
            sysfs: &self.sysfs,
        }
    }

    /// NodeExpandVolume's parts.
    fn expansion(&self) -> Expansion<'_> {
        Expansion {
            config: &self.config,
            fs: &self.fs,
            mounter: self.mounter.as_ref(),
            sysfs: &self.sysfs,
            state: &self.state,
        }
    }

    /// NodeGetVolumeStats's parts.
    fn volume_stats(&self) -> VolumeStats<'_> {
        VolumeStats {
            mounter: self.mounter.as_ref(),
            sysfs: &self.sysfs,
        }
    }
}

/// The top-most mount at `path`.
async fn mounted_at(mounter: &dyn Mounter, path: &Path) -> Result<Option<MountEntry>, NodeError> {
    Ok(mount_at(&mounter.mounts().await?, path).cloned())
}

/// Unmounts everything stacked at `path`.
async fn unmount_all(mounter: &dyn Mounter, path: &Path) -> Result<(), NodeError> {
    // A path can hold several stacked mounts; a few rounds is more than kubelet makes.
    const ROUNDS: u32 = 8;
    for _ in 0..ROUNDS {
        if mounter.unmount(path).await? == Unmounted::NotMounted {
            return Ok(());
        }
        tracing::info!(path = %path.display(), "unmounted");
    }
    match mounted_at(mounter, path).await? {
        None => Ok(()),
        Some(m) => Err(MountError::StillMounted {
            path: path.to_path_buf(),
            found: m.device(),
            rounds: ROUNDS,
        }
        .into()),
    }
}

/// `path` with symlinks resolved when it exists (mountinfo lists resolved paths).
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
