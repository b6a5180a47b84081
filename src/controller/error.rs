//! Everything a Controller RPC can fail with. Variants carry the context (volume id, node,
//! key) and wrap the layer errors; src/error/controller.rs maps them to gRPC codes.

use crate::domain::chap::ChapError;
use crate::export::TargetError;
use crate::lvm::tags::TagError;
use crate::lvm::LvmError;

use super::capacity::CapacityError;
use super::copy::CopyError;
use super::params::ParamError;
use super::resolver::ResolveError;
use crate::domain::volume_id::IdError;

/// A failed Controller RPC.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A required field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The volume id is empty, malformed or not one of ours.
    #[error(transparent)]
    VolumeId(#[from] IdError),
    /// A field has a value that cannot be used.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A StorageClass parameter is unknown or invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The capacity range is invalid or cannot be served.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// A volume capability this driver does not serve.
    #[error("unsupported volume capability: {0}")]
    Capability(String),
    /// No volume of ours has this id.
    #[error("volume {id} does not exist")]
    VolumeNotFound {
        /// The volume id.
        id: String,
    },
    /// The StorageClass names a volume group this storage node does not have.
    #[error("volume group {vg:?} does not exist on the storage node")]
    NoVolumeGroup {
        /// The VG.
        vg: String,
    },
    /// The StorageClass names a thin pool that does not exist.
    #[error("thin pool {vg}/{pool} does not exist (or is not a thin pool)")]
    NoThinPool {
        /// The VG.
        vg: String,
        /// The pool.
        pool: String,
    },
    /// The node's initiator could not be found.
    #[error("cannot find the initiator of node {node_id:?}")]
    Resolve {
        /// The node id.
        node_id: String,
        /// Why (boxed: a Kubernetes error is large).
        source: Box<ResolveError>,
    },
    /// The CSI name already belongs to a volume that does not match the request.
    #[error("volume name {name:?} already exists as {id}, which is incompatible: {detail}")]
    NameConflict {
        /// The CSI name.
        name: String,
        /// The existing volume's id.
        id: String,
        /// What differs.
        detail: String,
    },
    /// The LV name derived from the CSI name is taken by an LV that is not that volume.
    #[error("logical volume {id} already exists and does not belong to volume name {name:?}")]
    LvNameTaken {
        /// The LV's id.
        id: String,
        /// The CSI name.
        name: String,
    },
    /// The volume is already published to this node with other settings.
    #[error("volume {id} is already published to node {node_id:?} with {detail}")]
    PublishConflict {
        /// The volume id.
        id: String,
        /// The node.
        node_id: String,
        /// What differs.
        detail: String,
    },
    /// A single-node volume is published to another node.
    #[error("volume {id} is published to node(s) {} and its access mode allows one node at a time", .nodes.join(", "))]
    PublishedElsewhere {
        /// The volume id.
        id: String,
        /// Where it is published.
        nodes: Vec<String>,
    },
    /// DeleteVolume of a volume that is still published.
    #[error("volume {id} is still published to node(s) {}: unpublish it first", .nodes.join(", "))]
    StillPublished {
        /// The volume id.
        id: String,
        /// Where it is published.
        nodes: Vec<String>,
    },
    /// ControllerExpandVolume with a limit below the current size: shrinking is not
    /// supported.
    #[error("volume {id} is {size} bytes, more than capacity_range.limit_bytes ({limit}): shrinking a volume is not supported")]
    Shrink {
        /// The volume id.
        id: String,
        /// Its current size.
        size: u64,
        /// The limit asked for.
        limit: u64,
    },
    /// The VG or thin pool has not enough room.
    #[error("not enough space: {0}")]
    NoSpace(String),
    /// Another operation on the same volume (or name) is running.
    #[error("an operation on {0} is already in progress")]
    Busy(String),
    /// ListVolumes got a starting_token it did not hand out.
    #[error("invalid starting_token {0:?}: start listing again without a token")]
    BadToken(String),
    /// The exports are being rebuilt after start-up; target operations wait for it.
    #[error("the controller is restoring iSCSI exports after start-up; retry shortly")]
    Restoring,
    /// The volume_content_source names no snapshot or volume of ours.
    #[error("source {kind} {id} does not exist")]
    SourceNotFound {
        /// `snapshot` or `volume`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The content source cannot give a volume of the StorageClass asked for.
    #[error("cannot create the volume from {id}: {reason}")]
    SourceIncompatible {
        /// The source's id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The requested size is smaller than the content source.
    #[error(
        "the volume would be {size} bytes, smaller than its source {id} ({source_size} bytes)"
    )]
    SourceTooLarge {
        /// The source's id.
        id: String,
        /// The source's size.
        source_size: u64,
        /// The size the request allows.
        size: u64,
    },
    /// No snapshot of ours has this id.
    #[error("snapshot {id} does not exist")]
    SnapshotNotFound {
        /// The snapshot id.
        id: String,
    },
    /// The CSI snapshot name already belongs to a snapshot of another volume.
    #[error("snapshot name {name:?} already exists as {id}, a snapshot of {source_volume}")]
    SnapshotConflict {
        /// The CSI name.
        name: String,
        /// The existing snapshot's id.
        id: String,
        /// Its source volume.
        source_volume: String,
    },
    /// A classic snapshot whose COW area filled up: LVM invalidated it and its data is lost.
    #[error("snapshot {id} is invalid: its copy-on-write area filled up (cowSizePercent too small for the changes made to the volume); delete it")]
    SnapshotInvalid {
        /// The snapshot id.
        id: String,
    },
    /// DeleteVolume of a thick volume that has classic snapshots.
    #[error("volume {id} has snapshots that depend on it ({}): delete them first", .snapshots.join(", "))]
    HasSnapshots {
        /// The volume id.
        id: String,
        /// The dependent snapshots (or a clone's temporary snapshot).
        snapshots: Vec<String>,
    },
    /// The volume's creation from a source has not finished (its data copy was interrupted).
    #[error("volume {id} is not ready: its creation from {from} has not finished; repeat CreateVolume to complete it")]
    NotReady {
        /// The volume id.
        id: String,
        /// The source being copied.
        from: String,
    },
    /// The data copy of a new volume failed (the volume was removed again).
    #[error("copying the data of volume {id}")]
    Copy {
        /// The new volume.
        id: String,
        /// The copy failure.
        source: CopyError,
    },
    /// The task running the operation died.
    #[error("the operation's task failed: {0}")]
    TaskFailed(String),
    /// An RPC this driver does not offer.
    #[error("{0} is not supported by this driver")]
    Unimplemented(&'static str),
    /// An LVM command failed.
    #[error("{context}")]
    Lvm {
        /// What was being done.
        context: String,
        /// The LVM failure.
        source: LvmError,
    },
    /// The iSCSI target backend failed.
    #[error("{context}")]
    Target {
        /// What was being done.
        context: String,
        /// The backend failure.
        source: TargetError,
    },
    /// The CHAP key in the request's secrets is unusable.
    #[error("invalid CHAP key in the request's secrets")]
    Chap(#[from] ChapError),
    /// A value too long for an LV tag.
    #[error(transparent)]
    Tag(#[from] TagError),
}

/// Attaches context to a layer error.
pub(crate) trait Context<T> {
    /// Wraps the error with what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ControllerError>;
}

impl<T> Context<T> for Result<T, LvmError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ControllerError> {
        self.map_err(|source| ControllerError::Lvm {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, TargetError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ControllerError> {
        self.map_err(|source| ControllerError::Target {
            context: what(),
            source,
        })
    }
}
