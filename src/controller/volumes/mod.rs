//! [`Volumes`]: our LVs, read from and written to LVM, with the last known tags of each
//! volume ([`tag_cache`]). Every LVM command of the controller goes through here, named by
//! its [`Step`] when it fails ([`VolumesError`]).
//!
//! - [`model`]: [`Volume`] and [`Snapshot`], what an LV of ours is.
//! - Publication records: a publication is an LV tag; [`Change`] is a tag change, written
//!   compare-and-set from the cache ([`Volumes::write_if_unchanged`]) or after a fresh read
//!   ([`Volumes::write_tags`]).

mod error;
mod model;
mod tag_cache;

pub use error::{Step, VolumesError};
pub(crate) use model::{Snapshot, Volume};

use crate::domain::VolumeId;
use crate::error::full_message;
use crate::lvm::report::VgLvs;
use crate::lvm::{Lv, LvKind, Lvm, LvmError, NewLv, NewSnapshot, Vg};

use super::capacity::Room;
use error::at;
use tag_cache::TagCache;

type Result<T> = std::result::Result<T, VolumesError>;

/// Our LVs in LVM.
pub(crate) struct Volumes {
    /// LVM.
    lvm: Lvm,
    /// The last known tags of our volumes.
    tags: TagCache,
    /// How far thin volumes may overcommit their pool (1.0: not at all).
    thin_overprovision_ratio: f64,
}

impl Volumes {
    /// Our volumes in `lvm`, thin pools overcommitted up to `thin_overprovision_ratio`.
    pub(crate) fn new(lvm: Lvm, thin_overprovision_ratio: f64) -> Self {
        Volumes {
            lvm,
            tags: TagCache::default(),
            thin_overprovision_ratio,
        }
    }

    /// Our volume with id `id`, or `None` (an LV without our name tag is not a volume).
    pub(crate) async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        let v = self
            .get(id, Step::ReadVolume(id.clone()))
            .await?
            .and_then(Volume::from_lv);
        match &v {
            Some(v) => self.tags.put(id, v.lv.tags.clone()),
            None => self.tags.forget(id),
        }
        Ok(v)
    }

    /// Every volume of ours, in one `lvs` call.
    pub(crate) async fn volumes(&self) -> Result<Vec<Volume>> {
        let volumes: Vec<Volume> = self
            .lvs()
            .await?
            .into_iter()
            .filter_map(Volume::from_lv)
            .collect();
        for v in &volumes {
            self.tags.put(&v.id, v.lv.tags.clone());
        }
        Ok(volumes)
    }

    /// Our snapshot with id `id`, or `None`.
    pub(crate) async fn snapshot(&self, id: &VolumeId) -> Result<Option<Snapshot>> {
        let lv = self.get(id, Step::ReadSnapshot(id.clone())).await?;
        Ok(lv.and_then(Snapshot::from_lv))
    }

    /// Every snapshot of ours, in one `lvs` call.
    pub(crate) async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self
            .lvs()
            .await?
            .into_iter()
            .filter_map(Snapshot::from_lv)
            .collect())
    }

    /// LV `id`, ours or not, or `None`.
    pub(crate) async fn lv(&self, id: &VolumeId) -> Result<Option<Lv>> {
        self.get(id, Step::ReadLv(id.clone())).await
    }

    /// LV `id` read as `step`.
    async fn get(&self, id: &VolumeId, step: Step) -> Result<Option<Lv>> {
        self.lvm.get(id.vg(), id.lv()).await.map_err(at(step))
    }

    /// Every LV, in one `lvs` call.
    pub(crate) async fn lvs(&self) -> Result<Vec<Lv>> {
        self.lvm.list().await.map_err(at(Step::ListLvs))
    }

    /// The LVs of VG `vg`.
    pub(crate) async fn lvs_of(&self, vg: &str) -> Result<Vec<Lv>> {
        self.lvm
            .list_vg(vg)
            .await
            .map_err(at(Step::ListVg(vg.to_string())))
    }

    /// The LVs of VG `vg` with its space, in one command; `None` when the VG does not exist.
    pub(crate) async fn lvs_and_space(&self, vg: &str) -> Result<Option<VgLvs>> {
        self.lvm
            .list_vg_space(vg)
            .await
            .map_err(at(Step::ListVg(vg.to_string())))
    }

    /// VG `name`, or `None` when it does not exist.
    pub(crate) async fn find_volume_group(&self, name: &str) -> Result<Option<Vg>> {
        self.lvm
            .vg(name)
            .await
            .map_err(at(Step::ReadVg(name.to_string())))
    }

    /// VG `name`; one that does not exist is [`VolumesError::NoVolumeGroup`].
    pub(crate) async fn volume_group(&self, name: &str) -> Result<Vg> {
        self.find_volume_group(name)
            .await?
            .ok_or_else(|| VolumesError::NoVolumeGroup {
                vg: name.to_string(),
            })
    }

    /// Every VG of the storage node.
    pub(crate) async fn volume_groups(&self) -> Result<Vec<Vg>> {
        self.lvm.vgs(&[]).await.map_err(at(Step::ListVgs))
    }

    /// The room for more thin volumes in thin pool `vg/pool`, from the VG's LVs `vg_lvs`.
    pub(crate) fn thin_room(&self, vg_lvs: &[Lv], vg: &str, pool: &str) -> Result<Room> {
        vg_lvs
            .iter()
            .find(|lv| lv.vg == vg && lv.name == pool && lv.kind() == LvKind::ThinPool)
            .map(|pool_lv| Room::thin(pool_lv, vg_lvs, self.thin_overprovision_ratio))
            .ok_or_else(|| VolumesError::NoThinPool {
                vg: vg.to_string(),
                pool: pool.to_string(),
            })
    }

    /// `lvcreate` of `new`, volume `id`; its tags are then the known tags of the volume.
    pub(crate) async fn create(&self, id: &VolumeId, new: &NewLv) -> Result<()> {
        match self.lvm.create(new).await {
            Ok(()) => {
                self.tags.put(id, new.tags.clone());
                Ok(())
            }
            Err(e) => {
                self.tags.forget(id);
                Err(at(Step::Create(id.clone()))(e))
            }
        }
    }

    /// `lvcreate --snapshot` of `snap`: snapshot `id` of `origin`.
    pub(crate) async fn create_snapshot(
        &self,
        id: &VolumeId,
        origin: &VolumeId,
        snap: &NewSnapshot,
    ) -> Result<()> {
        self.lvm.snapshot(snap).await.map_err(at(Step::Snapshot {
            id: id.clone(),
            origin: origin.clone(),
        }))
    }

    /// `lvextend` of LV `id` to `size` bytes.
    pub(crate) async fn extend(&self, id: &VolumeId, size: u64) -> Result<()> {
        self.lvm
            .extend(id.vg(), id.lv(), size)
            .await
            .map_err(at(Step::Extend {
                id: id.clone(),
                size,
            }))
    }

    /// Removes LV `id`; one that does not exist is success.
    pub(crate) async fn remove(&self, id: &VolumeId) -> Result<()> {
        self.tags.forget(id);
        match self.lvm.remove(id.vg(), id.lv()).await {
            Ok(()) | Err(LvmError::NotFound { .. }) => Ok(()),
            Err(e) => Err(at(Step::Remove(id.clone()))(e)),
        }
    }

    /// Removes a half-created LV, if it carries this name (never someone else's LV).
    pub(crate) async fn roll_back(&self, id: &VolumeId, name: &str) {
        match self.volume(id).await {
            Ok(Some(v)) if v.name() == name => match self.remove(id).await {
                Ok(()) => tracing::warn!(volume_id = %id, "rolled back the new logical volume"),
                Err(e) => tracing::error!(
                    volume_id = %id, error = %full_message(&e),
                    "cannot roll back the new logical volume; remove it by hand"
                ),
            },
            Ok(_) => {}
            Err(e) => tracing::error!(
                volume_id = %id, error = %full_message(&e),
                "cannot check for a half-created logical volume"
            ),
        }
    }

    /// Deletes tag `tag` of volume `id`, which marked its creation unfinished.
    pub(crate) async fn mark_complete(&self, id: &VolumeId, tag: String) -> Result<()> {
        self.tags.forget(id);
        self.lvm
            .change_tags(id.vg(), id.lv(), &[], &[tag])
            .await
            .map_err(at(Step::MarkComplete(id.clone())))
    }

    /// The tags of `id` last seen, if any.
    pub(crate) fn cached_tags(&self, id: &VolumeId) -> Option<Vec<String>> {
        self.tags.get(id)
    }

    /// Writes `change` if the tags of `id` are still `cached`: `true` when written. On
    /// `false` the caller reads the LV and decides again.
    pub(crate) async fn write_if_unchanged(
        &self,
        id: &VolumeId,
        cached: &[String],
        change: &Change,
    ) -> bool {
        let written = self
            .lvm
            .change_tags_if(id.vg(), id.lv(), &change.add, &change.delete, cached)
            .await;
        match written {
            Ok(true) => {
                self.tags.put(id, change.after.clone());
                return true;
            }
            Ok(false) => {
                tracing::debug!(volume_id = %id, "the tags changed since this process saw them: reading them")
            }
            Err(e) => {
                tracing::debug!(volume_id = %id, error = %full_message(&e), "conditional tag write failed: reading the volume")
            }
        }
        self.tags.forget(id);
        false
    }

    /// Writes `change` (decided from a fresh read of the LV) as step `step`.
    pub(crate) async fn write_tags(
        &self,
        id: &VolumeId,
        change: &Change,
        step: Step,
    ) -> Result<()> {
        let written = self
            .lvm
            .change_tags(id.vg(), id.lv(), &change.add, &change.delete)
            .await;
        match &written {
            Ok(()) => self.tags.put(id, change.after.clone()),
            Err(_) => self.tags.forget(id),
        }
        written.map_err(at(step))
    }
}

/// A tag change of one LV.
#[derive(Debug)]
pub(crate) struct Change {
    /// Tags to add.
    pub(crate) add: Vec<String>,
    /// Tags to delete.
    pub(crate) delete: Vec<String>,
    /// The LV's tags once changed.
    pub(crate) after: Vec<String>,
}

impl Change {
    /// Adding `add` to and deleting `delete` from an LV tagged `tags`.
    pub(crate) fn new(tags: &[String], add: Vec<String>, delete: Vec<String>) -> Change {
        let mut after: Vec<String> = tags
            .iter()
            .filter(|t| !delete.contains(t))
            .cloned()
            .collect();
        after.extend(add.iter().filter(|t| !tags.contains(t)).cloned());
        Change { add, delete, after }
    }

    /// Whether anything is to be written.
    pub(crate) fn writes(&self) -> bool {
        !self.add.is_empty() || !self.delete.is_empty()
    }
}
