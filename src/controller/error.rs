//! [`ControllerError`]: what a Controller RPC fails with. The concerns below it have their
//! own enums next to their code, wrapped here: [`RequestError`] (the request),
//! [`VolumesError`] (LVM), [`ExportsError`] (the kernel target). The variants here are the
//! RPCs' own outcomes (not found, conflicts, no space, busy). src/error/controller.rs maps
//! all of them to gRPC codes.

use crate::domain::chap::ChapError;
use crate::domain::volume_id::IdError;
use crate::lvm::tags::TagError;

use super::capacity::CapacityError;
use super::copy::CopyError;
use super::exports::ExportsError;
use super::params::ParamError;
use super::request::RequestError;
use super::resolver::ResolveError;
use super::volumes::VolumesError;

/// A failed Controller RPC.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The request cannot be served as it is.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Reading or writing LVM failed.
    #[error(transparent)]
    Volumes(#[from] VolumesError),
    /// The kernel target failed, or is being restored.
    #[error(transparent)]
    Exports(#[from] ExportsError),
    /// No volume of ours has this id.
    #[error("volume {id} does not exist")]
    VolumeNotFound {
        /// The volume id.
        id: String,
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
}

/// Request-check failures raised with `?` where a [`ControllerError`] is returned.
macro_rules! via_request {
    ($($layer:ty),*) => {$(
        impl From<$layer> for ControllerError {
            fn from(e: $layer) -> Self {
                ControllerError::Request(e.into())
            }
        }
    )*};
}

via_request!(IdError, ParamError, CapacityError, ChapError, TagError);
