//! NodeExpandVolume: after ControllerExpandVolume grew the LV (and made the target report
//! it), the node rescans the volume's SCSI disk so the kernel reads the new capacity, waits
//! (bounded) until the disk shows the size asked for, then grows the filesystem online while
//! it stays mounted: `resize2fs <disk>` for ext4, `xfs_growfs <mount point>` for xfs. A raw
//! block volume is only rescanned: the pod sees the new size of the device node at once.
//!
//! The volume must be staged here (its stage record names its target and LUN, NOT_FOUND
//! otherwise), and `volume_path` must be where it is staged or published. Every step is a
//! no-op when already done, so a repeat (or a retry after a crash half-way) is harmless.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::csi::{CapacityRange, NodeExpandVolumeRequest};

use super::context::{self, Access};
use super::device::BlockDevice;
use super::error::NodeError;
use super::fs::FsType;
use super::mount::DeviceRef;
use super::state::StageRecord;
use super::{mounted_at, resolve, Filesystems, Mounter, NodeConfig, StateDir, Sysfs};

/// How often the disk is rescanned while it is smaller than asked.
const RESCAN_EVERY: Duration = Duration::from_millis(500);

/// What growing the volume at `volume_path` takes besides the rescan.
#[derive(Debug, PartialEq, Eq)]
enum Grow {
    /// A filesystem mounted at this path.
    Filesystem(FsType, PathBuf),
    /// Nothing: a raw block volume.
    Block,
}

/// Why a staged volume cannot be expanded on this node.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// The volume is not staged here.
    #[error("volume {volume_id} is not staged on this node")]
    NotStagedHere {
        /// The volume.
        volume_id: String,
    },
    /// The volume_path does not hold the volume.
    #[error("{path} does not hold volume {volume_id} ({found}): give its staging or publish path")]
    NotAtPath {
        /// The volume_path given.
        path: PathBuf,
        /// The volume.
        volume_id: String,
        /// What the path holds.
        found: AtPath,
    },
    /// The volume is staged but its disk is gone (session lost and not recovered).
    #[error("volume {volume_id} is staged but LUN {lun} of {target} has no disk on this node: unstage and stage it again")]
    NoDisk {
        /// The volume.
        volume_id: String,
        /// Its target.
        target: String,
        /// Its LUN.
        lun: u32,
    },
    /// After a rescan the disk is still smaller than the size asked for.
    #[error("{device} is {size} bytes after a rescan, {required} were asked for (waited {waited:?}): ControllerExpandVolume has not grown the volume, or the target does not report the new size yet")]
    NotGrown {
        /// The disk.
        device: PathBuf,
        /// Its size.
        size: u64,
        /// The size asked for.
        required: u64,
        /// How long we waited.
        waited: Duration,
    },
    /// The mounted filesystem is not one this driver can grow.
    #[error(
        "{path} holds a {fs_type} filesystem, which this driver cannot grow (ext4 and xfs only)"
    )]
    CannotGrow {
        /// The mount point.
        path: PathBuf,
        /// Its filesystem type.
        fs_type: String,
    },
}

/// What a volume_path holds instead of the volume, as [`ExpandError::NotAtPath`] says.
#[derive(Debug)]
pub enum AtPath {
    /// Another device is mounted there.
    Other {
        /// What is mounted.
        found: DeviceRef,
        /// The volume's disk.
        disk: DeviceRef,
    },
    /// Nothing is mounted there.
    Nothing,
}

impl fmt::Display for AtPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtPath::Other { found, disk } => {
                write!(f, "{found} is mounted there, the volume's disk is {disk}")
            }
            AtPath::Nothing => f.write_str("nothing is mounted there"),
        }
    }
}

/// `required_bytes` of the range (0 when absent), refusing negative or inverted ranges.
fn required_bytes(range: Option<&CapacityRange>) -> Result<u64, NodeError> {
    let Some(r) = range else { return Ok(0) };
    let field = "capacity_range";
    let required = u64::try_from(r.required_bytes)
        .map_err(|_| NodeError::invalid(field, "required_bytes is negative"))?;
    let limit = u64::try_from(r.limit_bytes)
        .map_err(|_| NodeError::invalid(field, "limit_bytes is negative"))?;
    if limit > 0 && limit < required {
        return Err(NodeError::invalid(
            field,
            "limit_bytes is smaller than required_bytes",
        ));
    }
    Ok(required)
}

/// A validated NodeExpandVolume.
pub(super) struct Expand {
    /// The volume, as named.
    volume_id: String,
    /// Where it is staged or published, as given.
    volume_path: String,
    /// The size the disk must reach.
    required: u64,
    /// The access type, when the request says.
    access: Option<Access>,
}

/// Validates NodeExpandVolume.
pub(super) fn validate_expand(req: &NodeExpandVolumeRequest) -> Result<Expand, NodeError> {
    context::volume_id(&req.volume_id)?;
    if req.volume_path.is_empty() {
        return Err(NodeError::invalid("volume_path", "must not be empty"));
    }
    let required = required_bytes(req.capacity_range.as_ref())?;
    let access = match &req.volume_capability {
        Some(cap) => Some(context::capability(Some(cap))?.access),
        None => None,
    };
    if !req.staging_target_path.is_empty() {
        context::abs_path("staging_target_path", &req.staging_target_path)?;
    }
    Ok(Expand {
        volume_id: req.volume_id.clone(),
        volume_path: req.volume_path.clone(),
        required,
        access,
    })
}

/// The staged volume of `record` has no disk.
fn no_disk(record: &StageRecord) -> NodeError {
    ExpandError::NoDisk {
        volume_id: record.volume_id.clone(),
        target: record.target_iqn.clone(),
        lun: record.lun,
    }
    .into()
}

/// What NodeExpandVolume acts through.
pub(super) struct Expansion<'a> {
    /// Settings.
    pub(super) config: &'a NodeConfig,
    /// blkid and mkfs.
    pub(super) fs: &'a Filesystems,
    /// Mounts.
    pub(super) mounter: &'a dyn Mounter,
    /// Device discovery.
    pub(super) sysfs: &'a Sysfs,
    /// Stage records.
    pub(super) state: &'a StateDir,
}

impl Expansion<'_> {
    /// NodeExpandVolume, validated and under the volume's guard; returns the disk's size.
    pub(super) async fn expand(&self, req: &Expand) -> Result<u64, NodeError> {
        let record =
            self.state
                .load(&req.volume_id)
                .await?
                .ok_or_else(|| ExpandError::NotStagedHere {
                    volume_id: req.volume_id.clone(),
                })?;
        let path = self.existing_path(&req.volume_path).await?;
        let disk = self.disk_of(&record)?;
        let grow = self
            .what_grows(&req.volume_id, &path, &disk, req.access.clone())
            .await?;
        let size = self.rescan_until(&record, &disk, req.required).await?;
        if let Grow::Filesystem(fs, mount_point) = &grow {
            self.fs.grow(&disk.path, mount_point, *fs).await?;
        }
        tracing::info!(device = %disk.path.display(), size, filesystem = ?grow, "volume expanded on the node");
        Ok(size)
    }

    /// `volume_path` checked and resolved; a path that does not exist (or a relative one,
    /// where no volume can live) is NOT_FOUND.
    async fn existing_path(&self, volume_path: &str) -> Result<PathBuf, NodeError> {
        if !volume_path.starts_with('/') {
            return Err(NodeError::PathNotFound {
                path: volume_path.into(),
            });
        }
        let path = context::abs_path("volume_path", volume_path)?;
        match tokio::fs::metadata(&path).await {
            Ok(_) => Ok(resolve(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(NodeError::PathNotFound { path })
            }
            Err(e) => Err(NodeError::io("inspect", &path)(e)),
        }
    }

    /// The staged volume's disk, found from its record through sysfs.
    fn disk_of(&self, record: &StageRecord) -> Result<BlockDevice, NodeError> {
        self.sysfs
            .find_lun(&record.target_iqn, record.lun)?
            .ok_or_else(|| no_disk(record))
    }

    /// What `path` holds of the volume on `disk`: its device node (a published block
    /// volume), a mount of its filesystem (staged or published), or, for a block volume,
    /// its staging directory.
    async fn what_grows(
        &self,
        volume_id: &str,
        path: &Path,
        disk: &BlockDevice,
        access: Option<Access>,
    ) -> Result<Grow, NodeError> {
        if self.mounter.block_device(path).await? == Some(disk.dev) {
            return Ok(Grow::Block);
        }
        if access == Some(Access::Block) {
            return Ok(Grow::Block);
        }
        let not_here = |found: AtPath| -> NodeError {
            ExpandError::NotAtPath {
                path: path.to_path_buf(),
                volume_id: volume_id.to_string(),
                found,
            }
            .into()
        };
        match mounted_at(self.mounter, path).await? {
            Some(m) if m.dev == disk.dev => match m.fs_type.parse::<FsType>() {
                Ok(fs) if fs.name() == m.fs_type => Ok(Grow::Filesystem(fs, path.to_path_buf())),
                _ => Err(ExpandError::CannotGrow {
                    path: path.to_path_buf(),
                    fs_type: m.fs_type,
                }
                .into()),
            },
            Some(m) => Err(not_here(AtPath::Other {
                found: m.device(),
                disk: disk.into(),
            })),
            None => Err(not_here(AtPath::Nothing)),
        }
    }

    /// Rescans `disk` until it is at least `required` bytes (bounded by the device
    /// timeout); returns its size.
    async fn rescan_until(
        &self,
        record: &StageRecord,
        disk: &BlockDevice,
        required: u64,
    ) -> Result<u64, NodeError> {
        let started = Instant::now();
        loop {
            if !self.sysfs.rescan(&disk.name)? {
                return Err(no_disk(record));
            }
            let size = self.sysfs.size_bytes(&disk.name)?.unwrap_or(0);
            if size >= required {
                tracing::debug!(device = %disk.path.display(), size, waited_ms = started.elapsed().as_millis() as u64, "disk rescanned");
                return Ok(size);
            }
            if started.elapsed() >= self.config.device_timeout {
                return Err(ExpandError::NotGrown {
                    device: disk.path.clone(),
                    size,
                    required,
                    waited: started.elapsed(),
                }
                .into());
            }
            tokio::time::sleep(RESCAN_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_ranges() {
        let r = |required, limit| CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        };
        assert_eq!(required_bytes(None).unwrap(), 0);
        assert_eq!(required_bytes(Some(&r(10, 0))).unwrap(), 10);
        assert_eq!(required_bytes(Some(&r(10, 10))).unwrap(), 10);
        for bad in [r(-1, 0), r(0, -1), r(10, 5)] {
            assert!(required_bytes(Some(&bad)).is_err(), "{bad:?}");
        }
    }
}
