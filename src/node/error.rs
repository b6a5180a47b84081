//! NodeError: everything a Node RPC can fail with, each layer's error wrapped with its
//! context. The gRPC code of each variant is chosen in `crate::error` only.

use std::path::PathBuf;

use crate::domain::chap::ChapError;

use super::device::DeviceError;
use super::fs::FsError;
use super::iscsi::IscsiError;
use super::mount::MountError;
use super::state::StateError;

/// A failed Node RPC.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A request field is missing or malformed; nothing was done.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field (`volume_id`, `publish_context.portals`...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Another operation on the same volume is running.
    #[error("an operation on volume {volume_id} is already in progress")]
    Busy {
        /// The volume.
        volume_id: String,
    },
    /// The target wants CHAP but kubelet sent no key.
    #[error("the volume's target requires CHAP (publish_context authMethod=CHAP) but the stage secrets hold no `{key}`: point the StorageClass's csi.storage.k8s.io/node-stage-secret-name and -namespace at the Secret holding the CHAP key")]
    MissingChapKey {
        /// The secrets key expected.
        key: &'static str,
    },
    /// The CHAP key is unusable.
    #[error(transparent)]
    Chap(#[from] ChapError),
    /// iscsiadm failed.
    #[error(transparent)]
    Iscsi(#[from] IscsiError),
    /// Device discovery or removal failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// blkid or mkfs failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A mount syscall failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The node's record of staged volumes could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Something else is mounted at the staging path.
    #[error("staging path {path} already has {found} mounted, not this volume's device {expected}: refusing to mount over it (a stale mount from an earlier session?); unmount it")]
    StagingConflict {
        /// The staging path.
        path: PathBuf,
        /// What is mounted there.
        found: String,
        /// The volume's device (or why it is unknown).
        expected: String,
    },
    /// The staging path holds this volume, staged differently.
    #[error("{path} already holds the volume as {existing}, but the request asks for {wanted}")]
    StagedDifferently {
        /// The staging path.
        path: PathBuf,
        /// How it is staged (`ext4 read-write`).
        existing: String,
        /// What was asked.
        wanted: String,
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
    #[error("{device} holds {found}, not the requested {wanted} filesystem: refusing to format it (request the filesystem it holds, or wipe it deliberately)")]
    WrongContent {
        /// The device node.
        device: String,
        /// What blkid found.
        found: String,
        /// The filesystem asked for.
        wanted: String,
    },
    /// A blank device was staged read-only: it cannot be formatted nor mounted.
    #[error("{device} holds no filesystem and the volume is staged read-only: it must be staged by a writer once first")]
    UnformattedReadOnly {
        /// The device node.
        device: String,
    },
    /// Publish before stage.
    #[error("volume {volume_id} is not staged at {path}: NodeStageVolume must succeed first")]
    NotStaged {
        /// The volume.
        volume_id: String,
        /// The staging path given.
        path: PathBuf,
    },
    /// The target path already holds this volume, published differently.
    #[error("{path} already holds the volume {existing}, but the request asks for {wanted}")]
    PublishedDifferently {
        /// The target path.
        path: PathBuf,
        /// How it is published (`read-only`, `read-write`).
        existing: &'static str,
        /// What was asked.
        wanted: &'static str,
    },
    /// A read-only publication of a raw block volume staged read-write was asked for.
    #[error("{path}: a read-only publication of a raw block volume staged read-write cannot be enforced (Linux ignores read-only bind mounts of device nodes); use a reader-only access mode (ReadOnlyMany), which makes the whole device read-only")]
    ReadOnlyBlockUnenforceable {
        /// The target path.
        path: PathBuf,
    },
    /// The target path holds another device.
    #[error("{path} already has {found} mounted, not this volume's {expected}: refusing to mount over it")]
    TargetConflict {
        /// The target path.
        path: PathBuf,
        /// What is mounted there.
        found: String,
        /// The volume's device.
        expected: String,
    },
    /// NodeExpandVolume of a volume this node has not staged.
    #[error("volume {volume_id} is not staged on this node")]
    NotStagedHere {
        /// The volume.
        volume_id: String,
    },
    /// NodeExpandVolume at a path that does not hold the volume.
    #[error("{path} does not hold volume {volume_id} ({found}): give its staging or publish path")]
    NotAtPath {
        /// The volume_path given.
        path: PathBuf,
        /// The volume.
        volume_id: String,
        /// What the path holds.
        found: String,
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
        device: String,
        /// Its size.
        size: u64,
        /// The size asked for.
        required: u64,
        /// How long we waited.
        waited: std::time::Duration,
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
    /// A path given in the request does not exist.
    #[error("{path} does not exist")]
    PathNotFound {
        /// The path.
        path: PathBuf,
    },
    /// A file-system operation on a request path failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl NodeError {
    /// An invalid request field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A closure wrapping an io::Error on `path`.
    pub fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| NodeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
