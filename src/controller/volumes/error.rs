//! What reading and writing volumes fails with: an LVM command, named by the step it was
//! for (a typed subject: the volume, VG or LV), or a VG or thin pool that is not there.

use std::fmt;

use crate::domain::VolumeId;
use crate::lvm::LvmError;

/// A failed read or write of our LVs.
#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    /// An LVM command failed.
    #[error("{}", lvm_message(.step, .source))]
    Lvm {
        /// What was being done (boxed: errors travel in every `Result`).
        step: Box<Step>,
        /// The LVM failure.
        source: LvmError,
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
}

/// The LVM step that failed, with what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Reading one of our volumes.
    ReadVolume(VolumeId),
    /// Reading one of our snapshots.
    ReadSnapshot(VolumeId),
    /// Reading an LV that may or may not be ours.
    ReadLv(VolumeId),
    /// Reading a VG.
    ReadVg(String),
    /// Listing every LV.
    ListLvs,
    /// Listing the LVs of a VG.
    ListVg(String),
    /// Listing every VG.
    ListVgs,
    /// `lvcreate` of a volume.
    Create(VolumeId),
    /// `lvcreate --snapshot`.
    Snapshot {
        /// The new snapshot LV.
        id: VolumeId,
        /// Its origin.
        origin: VolumeId,
    },
    /// `lvextend`.
    Extend {
        /// The LV.
        id: VolumeId,
        /// The size asked for.
        size: u64,
    },
    /// `lvremove`.
    Remove(VolumeId),
    /// Writing the tag of a publication.
    Record {
        /// The volume.
        id: VolumeId,
        /// The node.
        node_id: String,
    },
    /// Deleting the tag of a publication.
    Unrecord {
        /// The volume.
        id: VolumeId,
        /// The node.
        node_id: String,
    },
    /// Deleting the unfinished-creation tag.
    MarkComplete(VolumeId),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ReadVolume(id) => write!(f, "reading volume {id}"),
            Step::ReadSnapshot(id) => write!(f, "reading snapshot {id}"),
            Step::ReadLv(id) => write!(f, "reading logical volume {id}"),
            Step::ReadVg(vg) => write!(f, "reading volume group {vg}"),
            Step::ListLvs => write!(f, "listing logical volumes"),
            Step::ListVg(vg) => write!(f, "listing the logical volumes of {vg}"),
            Step::ListVgs => write!(f, "listing volume groups"),
            Step::Create(id) => write!(f, "creating logical volume {id}"),
            Step::Snapshot { id, origin } => write!(f, "creating snapshot {id} of {origin}"),
            Step::Extend { id, size } => {
                write!(f, "extending logical volume {id} to {size} bytes")
            }
            Step::Remove(id) => write!(f, "removing logical volume {id}"),
            Step::Record { id, node_id } => {
                write!(f, "recording the publication of {id} to node {node_id}")
            }
            Step::Unrecord { id, node_id } => {
                write!(f, "removing the publication of {id} to node {node_id}")
            }
            Step::MarkComplete(id) => write!(f, "marking {id} complete"),
        }
    }
}

/// The message of a failed step: growing the origin of a classic snapshot gets the advice.
fn lvm_message(step: &Step, source: &LvmError) -> String {
    match (step, source) {
        (Step::Extend { id, .. }, LvmError::SnapshotOrigin { .. }) => format!(
            "cannot grow volume {id}: it has classic (thick) snapshots, and LVM resizes the \
             origin of a snapshot only while it is inactive; delete the volume's snapshots first"
        ),
        _ => step.to_string(),
    }
}

/// `source` as the failure of `step`.
pub(crate) fn at(step: Step) -> impl FnOnce(LvmError) -> VolumesError {
    move |source| VolumesError::Lvm {
        step: Box::new(step),
        source,
    }
}
