//! Our LVs as the RPCs see them: a [`Volume`] carries our name tag, a [`Snapshot`] our
//! snapshot tag; any other LV is not ours and never touched.

use crate::csi;
use crate::domain::VolumeId;
use crate::lvm::tags::VolumeTags;
use crate::lvm::{Lv, LvKind};

use crate::controller::params;
use crate::controller::request::content_source_to_csi;

/// One of our volumes: an LV with our name tag.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    /// Its id.
    pub(crate) id: VolumeId,
    /// The LV.
    pub(crate) lv: Lv,
    /// Our tags on it.
    pub(crate) tags: VolumeTags,
}

impl Volume {
    /// `lv` as a volume, if it is a thick or thin LV carrying our name tag (and not our
    /// snapshot tag: a snapshot is never a volume).
    pub(crate) fn from_lv(lv: Lv) -> Option<Volume> {
        if !matches!(lv.kind(), LvKind::Thick | LvKind::Thin) {
            return None;
        }
        let tags = VolumeTags::parse(&lv.tags);
        tags.name.as_ref()?;
        if tags.snapshot.is_some() {
            return None;
        }
        let id = VolumeId::new(&lv.vg, &lv.name).ok()?;
        Some(Volume { id, lv, tags })
    }

    /// The CSI name.
    pub(crate) fn name(&self) -> &str {
        self.tags.name.as_deref().unwrap_or_default()
    }

    /// The CSI view of the volume.
    pub(crate) fn to_csi(&self) -> csi::Volume {
        csi::Volume {
            capacity_bytes: i64::try_from(self.lv.size).unwrap_or(i64::MAX),
            volume_id: self.id.to_string(),
            volume_context: params::volume_context(self.tags.fs_type.as_deref()),
            content_source: self.tags.content_source.as_ref().map(content_source_to_csi),
            accessible_topology: Vec::new(),
        }
    }

    /// Whether the volume can serve I/O: its LV must be active (device present) and healthy.
    pub(crate) fn condition(&self) -> csi::VolumeCondition {
        let problem = if let Some(from) = &self.tags.copying {
            Some(format!(
                "its creation from {from} has not finished (interrupted copy): repeat CreateVolume"
            ))
        } else if !self.lv.is_active() {
            Some("the logical volume is not active: its device does not exist".to_string())
        } else if !self.lv.health.is_empty() {
            Some(format!("LVM reports the logical volume {}", self.lv.health))
        } else {
            None
        };
        csi::VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_else(|| "the logical volume is active and healthy".into()),
        }
    }
}

/// One of our snapshots: an LV with our snapshot-name tag.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Its id.
    pub(crate) id: VolumeId,
    /// The LV.
    pub(crate) lv: Lv,
    /// Our tags on it.
    pub(crate) tags: VolumeTags,
}

impl Snapshot {
    /// `lv` as a snapshot, if it is a thin or classic snapshot LV with our snapshot tag.
    pub(crate) fn from_lv(lv: Lv) -> Option<Snapshot> {
        if !matches!(lv.kind(), LvKind::Thin | LvKind::Snapshot) {
            return None;
        }
        let tags = VolumeTags::parse(&lv.tags);
        tags.snapshot.as_ref()?;
        let id = VolumeId::new(&lv.vg, &lv.name).ok()?;
        Some(Snapshot { id, lv, tags })
    }

    /// The CSI snapshot name.
    pub(crate) fn name(&self) -> &str {
        self.tags.snapshot.as_deref().unwrap_or_default()
    }

    /// The id of the volume it was taken of.
    pub(crate) fn source_volume(&self) -> &str {
        self.tags.source_volume.as_deref().unwrap_or_default()
    }

    /// Whether it is a thin snapshot.
    pub(crate) fn is_thin(&self) -> bool {
        self.lv.kind() == LvKind::Thin
    }

    /// The size of the data it holds: the source volume's size when it was taken (a classic
    /// snapshot's own LV size is its COW area).
    pub(crate) fn size(&self) -> u64 {
        if self.is_thin() {
            self.lv.size
        } else {
            self.lv.origin_size.unwrap_or(self.lv.size)
        }
    }

    /// Whether it can be used: false once LVM has invalidated a classic snapshot.
    pub(crate) fn is_valid(&self) -> bool {
        !self.lv.is_invalid_snapshot()
    }

    /// The CSI view of the snapshot.
    pub(crate) fn to_csi(&self) -> csi::Snapshot {
        csi::Snapshot {
            size_bytes: i64::try_from(self.size()).unwrap_or(i64::MAX),
            snapshot_id: self.id.to_string(),
            source_volume_id: self.source_volume().to_string(),
            creation_time: self
                .lv
                .created
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            ready_to_use: self.is_valid(),
            group_snapshot_id: String::new(),
        }
    }
}
