//! NodeGetVolumeStats: usage (statvfs for a mounted volume, the device size for a raw
//! block volume) and the volume condition, read from the kernel: the device behind the
//! path, its SCSI state and its iSCSI session's state.

use std::path::{Path, PathBuf};

use crate::csi::volume_usage::Unit;
use crate::csi::{
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage,
};

use super::context;
use super::device::DevNum;
use super::error::NodeError;
use super::{mounted_at, resolve, Mounter, Sysfs};

/// statvfs numbers in bytes and inodes.
struct FsUsage {
    /// Bytes: total, available to unprivileged users, used.
    bytes: (u64, u64, u64),
    /// Inodes: total, free, used.
    inodes: (u64, u64, u64),
}

fn usage(unit: Unit, (total, available, used): (u64, u64, u64)) -> VolumeUsage {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    VolumeUsage {
        available: clamp(available),
        total: clamp(total),
        used: clamp(used),
        unit: unit as i32,
    }
}

async fn statvfs(path: &Path) -> Result<FsUsage, NodeError> {
    let owned: PathBuf = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&owned))
        .await
        .map_err(|e| NodeError::io("statvfs", path)(std::io::Error::other(e.to_string())))?;
    let st = result.map_err(|errno| NodeError::io("statvfs", path)(errno.into()))?;
    let frsize = st.fragment_size() as u64;
    let (blocks, free, avail) = (
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.blocks_available() as u64,
    );
    let (files, ffree) = (st.files() as u64, st.files_free() as u64);
    Ok(FsUsage {
        bytes: (
            blocks * frsize,
            avail * frsize,
            blocks.saturating_sub(free) * frsize,
        ),
        inodes: (files, ffree, files.saturating_sub(ffree)),
    })
}

/// A validated NodeGetVolumeStats: the volume path.
pub(super) struct Stats {
    /// Where the volume is staged or published (normalised, not yet resolved).
    path: PathBuf,
}

/// Validates NodeGetVolumeStats.
pub(super) fn validate_stats(req: &NodeGetVolumeStatsRequest) -> Result<Stats, NodeError> {
    context::volume_id(&req.volume_id)?;
    // No volume lives at a relative path: that is "not found" (csi-sanity checks it).
    if !req.volume_path.is_empty() && !req.volume_path.starts_with('/') {
        return Err(NodeError::PathNotFound {
            path: req.volume_path.clone().into(),
        });
    }
    let path = context::abs_path("volume_path", &req.volume_path)?;
    if !req.staging_target_path.is_empty() {
        context::abs_path("staging_target_path", &req.staging_target_path)?;
    }
    Ok(Stats { path })
}

/// What NodeGetVolumeStats reads: the mount table and sysfs.
pub(super) struct VolumeStats<'a> {
    /// Mounts.
    pub(super) mounter: &'a dyn Mounter,
    /// Device discovery.
    pub(super) sysfs: &'a Sysfs,
}

impl VolumeStats<'_> {
    /// NodeGetVolumeStats, validated. It only observes: no guard, so it answers while
    /// another operation on the volume runs.
    pub(super) async fn stats(&self, req: &Stats) -> Result<NodeGetVolumeStatsResponse, NodeError> {
        let path = &req.path;
        if let Err(e) = tokio::fs::metadata(&path).await {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound => NodeError::PathNotFound { path: path.clone() },
                _ => NodeError::io("inspect", path)(e),
            });
        }
        let path = resolve(path);
        if let Some(dev) = self.mounter.block_device(&path).await? {
            let size = match self.sysfs.health(dev)? {
                Some(h) => self.sysfs.size_bytes(&h.name)?.unwrap_or(0),
                None => 0,
            };
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![usage(Unit::Bytes, (size, 0, 0))],
                volume_condition: Some(self.condition(Some(dev))?),
            });
        }
        let mounted = mounted_at(self.mounter, &path).await?;
        let fs = statvfs(&path).await?;
        let condition = match mounted {
            Some(m) => self.condition(Some(m.dev))?,
            None => self.condition(None)?,
        };
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![usage(Unit::Bytes, fs.bytes), usage(Unit::Inodes, fs.inodes)],
            volume_condition: Some(condition),
        })
    }

    /// The condition of the volume on device `dev` (`None`: nothing mounted).
    fn condition(&self, dev: Option<DevNum>) -> Result<VolumeCondition, NodeError> {
        let problem = match dev {
            None => Some("the volume path is not mounted".to_string()),
            Some(dev) => match self.sysfs.health(dev)? {
                None => Some(format!(
                    "device {dev} is gone (SCSI device removed or iSCSI session lost); unstage and stage the volume again"
                )),
                Some(h) => h.problem(),
            },
        };
        Ok(match problem {
            None => VolumeCondition {
                abnormal: false,
                message: "healthy: iSCSI session logged in, SCSI device running".into(),
            },
            Some(message) => VolumeCondition {
                abnormal: true,
                message,
            },
        })
    }
}
