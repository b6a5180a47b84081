//! CreateVolume with a volume_content_source: a volume from a snapshot, or a clone of a
//! volume.
//!
//! - Thin (source and StorageClass in the same thin pool): a writable thin snapshot of the
//!   snapshot or volume: instant, sharing blocks. Grown with lvextend when the request is
//!   larger.
//! - Thick: a new thick LV with the data copied block by block ([`super::copy`]) from the
//!   classic snapshot, or, for a clone, from a temporary classic snapshot of the source
//!   (`clone.<new LV>`, removed afterwards) so the copy is consistent while the source is in
//!   use.
//!
//! Crash safety: a volume that is not finished in one `lvcreate` (a copy, a grow) is created
//! with the `copying=<source>` tag, removed only once the data is complete and synced. A
//! repeated CreateVolume that finds the tag redoes the work; ControllerPublishVolume refuses
//! such a volume. The work runs in a task of its own (see `service.rs`), so a caller that
//! gives up does not stop a copy half-way.
//!
//! Source and StorageClass must agree: same VG, thin pool for thin sources, no thin pool for
//! thick ones (INVALID_ARGUMENT otherwise). A size below the source's is OUT_OF_RANGE.

use std::path::PathBuf;

use crate::csi;
use crate::domain::volume_id::{IdError, VolumeId};
use crate::lvm::tags::{copying_tag, fs_type_tag, name_tag, ContentSource};
use crate::lvm::{Lv, LvKind, LvmError, NewLv, NewSnapshot};

use super::capacity::Room;
use super::copy::{BlockCopier, CopyJob};
use super::create::{incompatibility, CreatePlan};
use super::request::RequestError;
use super::snapshot::SnapshotParams;
use super::volumes::{Snapshot, Volume, Volumes, VolumesError};
use super::ControllerError;

/// The LV name prefix of the temporary snapshot a thick clone copies from.
pub const CLONE_PREFIX: &str = "clone.";

/// The temporary snapshot a thick clone `id` copies from.
pub(crate) fn clone_snapshot_id(id: &VolumeId) -> Result<VolumeId, IdError> {
    VolumeId::new(id.vg(), &format!("{CLONE_PREFIX}{}", id.lv()))
}

/// A resolved source: the LV the new volume's data comes from.
struct Origin {
    /// The source LV (a snapshot, or the volume itself).
    lv: Lv,
    /// Its data size in bytes.
    size: u64,
}

/// CreateVolume with a content source, over LVM and the block copier.
pub(crate) struct FromSource<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
    /// Copies thick volumes' data.
    pub(crate) copier: &'a dyn BlockCopier,
}

impl FromSource<'_> {
    /// CreateVolume of `plan`, whose content source is `source`.
    pub(crate) async fn run(
        &self,
        plan: &CreatePlan,
        source: &ContentSource,
    ) -> Result<csi::Volume, ControllerError> {
        let lvs = self.volumes.lvs().await?;
        if let Some(v) = lvs
            .iter()
            .cloned()
            .filter_map(Volume::from_lv)
            .find(|v| v.name() == plan.name)
        {
            return self.existing_from_source(v, plan, source, &lvs).await;
        }
        let origin = resolve(source, &lvs)?;
        check_source_fits(plan, source, &origin)?;
        let vg_name = &plan.params.volume_group;
        let vg = self.volumes.volume_group(vg_name).await?;
        let size = plan.size.size(origin.size, vg.extent_size)?;
        if size < origin.size {
            return Err(ControllerError::SourceTooLarge {
                id: source.id().to_string(),
                source_size: origin.size,
                size,
            });
        }
        let id = VolumeId::new(vg_name, &plan.lv_name)?;
        let room = match &plan.params.thin_pool {
            None => Room::thick(vg_name, vg.free),
            Some(pool) => self.volumes.thin_room(&lvs, vg_name, pool)?,
        };
        room.take(size, || format!("{size} needed"))
            .map_err(ControllerError::NoSpace)?;
        if lvs
            .iter()
            .any(|lv| lv.vg == *vg_name && lv.name == plan.lv_name)
        {
            return Err(ControllerError::LvNameTaken {
                id: id.to_string(),
                name: plan.name.clone(),
            });
        }
        let thin = origin.lv.kind() == LvKind::Thin;
        let mut tags = vec![name_tag(&plan.name)?, source.to_tag()?];
        if let Some(fs) = &plan.params.fs_type {
            tags.push(fs_type_tag(fs)?);
        }
        // Unfinished until the copy (thick) or the grow (thin, larger) is done.
        let unfinished = !thin || size > origin.size;
        if unfinished {
            tags.push(copying_tag(source.id())?);
        }
        tracing::info!(volume_id = %id, size, thin, source = source.id(), "creating volume from source");
        let created = if thin {
            let origin_id = VolumeId::new(&origin.lv.vg, &origin.lv.name)?;
            let snap = NewSnapshot {
                vg: vg_name.clone(),
                origin: origin.lv.name.clone(),
                name: plan.lv_name.clone(),
                cow_size: None,
                writable: true,
                tags,
            };
            self.volumes.create_snapshot(&id, &origin_id, &snap).await
        } else {
            let new = NewLv {
                vg: vg_name.clone(),
                name: plan.lv_name.clone(),
                size,
                thin_pool: None,
                tags,
            };
            self.volumes.create(&id, &new).await
        };
        if let Err(e) = created {
            if !matches!(
                e,
                VolumesError::Lvm {
                    source: LvmError::AlreadyExists { .. } | LvmError::InsufficientSpace { .. },
                    ..
                }
            ) {
                self.volumes.roll_back(&id, &plan.name).await;
            }
            return Err(e.into());
        }
        if unfinished {
            if let Err(e) = self.finish(&id, source, &origin, size).await {
                self.volumes.roll_back(&id, &plan.name).await;
                if !thin && matches!(source, ContentSource::Volume(_)) {
                    // Best effort: the error returned is the copy's.
                    let _ = self.remove_clone_snapshot(&id).await;
                }
                return Err(e);
            }
        }
        let v = self.read_back(&id, plan).await?;
        tracing::info!(volume_id = %id, "volume created from source");
        Ok(v.to_csi())
    }

    /// A repeat: the volume of that name exists. Finished and from the same source: the same
    /// answer. Unfinished (interrupted): the work is redone. Otherwise ALREADY_EXISTS.
    async fn existing_from_source(
        &self,
        v: Volume,
        plan: &CreatePlan,
        source: &ContentSource,
        lvs: &[Lv],
    ) -> Result<csi::Volume, ControllerError> {
        let conflict = |detail| ControllerError::NameConflict {
            name: plan.name.clone(),
            id: v.id.to_string(),
            detail,
        };
        if v.tags.copying.is_none() {
            return match incompatibility(&v, plan) {
                None => Ok(v.to_csi()),
                Some(detail) => Err(conflict(detail)),
            };
        }
        // Unfinished: its size may still be the source's (a thin volume not grown yet).
        let mut relaxed = plan.clone();
        relaxed.size.required = 0;
        if let Some(detail) = incompatibility(&v, &relaxed) {
            return Err(conflict(detail));
        }
        let origin = resolve(source, lvs)?;
        let size = v.lv.size.max(plan.size.required);
        tracing::warn!(volume_id = %v.id, source = source.id(), "volume creation was interrupted: doing it again");
        self.finish(&v.id, source, &origin, size).await?;
        Ok(self.read_back(&v.id, plan).await?.to_csi())
    }

    /// Reads the new volume back and checks it is what was asked.
    async fn read_back(&self, id: &VolumeId, plan: &CreatePlan) -> Result<Volume, ControllerError> {
        let v = self
            .volumes
            .volume(id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        match incompatibility(&v, plan) {
            None => Ok(v),
            Some(detail) => Err(ControllerError::NameConflict {
                name: plan.name.clone(),
                id: id.to_string(),
                detail: format!("the new logical volume does not match the request: {detail}"),
            }),
        }
    }

    /// The part after `lvcreate`: grow a thin volume, or copy a thick one's data; then clear
    /// the unfinished marker.
    async fn finish(
        &self,
        id: &VolumeId,
        source: &ContentSource,
        origin: &Origin,
        size: u64,
    ) -> Result<(), ControllerError> {
        let current = self
            .volumes
            .lv(id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        if current.size < size {
            self.volumes.extend(id, size).await?;
        }
        if current.kind() != LvKind::Thin {
            let from = match source {
                ContentSource::Snapshot(_) => origin.lv.name.clone(),
                ContentSource::Volume(_) => self.ensure_clone_snapshot(id, &origin.lv).await?,
            };
            let job = CopyJob {
                source: PathBuf::from(format!("/dev/{}/{from}", id.vg())),
                dest: PathBuf::from(id.device()),
                data_len: origin.size,
                total_len: size,
            };
            tracing::info!(volume_id = %id, source = %job.source.display(), bytes = origin.size, "copying data");
            self.copier
                .copy(job)
                .await
                .map_err(|source| ControllerError::Copy {
                    id: id.to_string(),
                    source,
                })?;
        }
        self.volumes
            .mark_complete(id, copying_tag(source.id())?)
            .await?;
        if matches!(source, ContentSource::Volume(_)) && current.kind() != LvKind::Thin {
            self.remove_clone_snapshot(id).await?;
        }
        Ok(())
    }

    /// The temporary classic snapshot of clone source `source` for new volume `id`, made if
    /// missing; its LV name.
    async fn ensure_clone_snapshot(
        &self,
        id: &VolumeId,
        source: &Lv,
    ) -> Result<String, ControllerError> {
        let clone = clone_snapshot_id(id)?;
        if self.volumes.lv(&clone).await?.is_some() {
            return Ok(clone.lv().to_string());
        }
        let vg = self.volumes.volume_group(id.vg()).await?;
        let snap = NewSnapshot {
            vg: id.vg().to_string(),
            origin: source.name.clone(),
            name: clone.lv().to_string(),
            cow_size: Some(SnapshotParams::default().cow_size(source.size, vg.extent_size)),
            writable: false,
            tags: Vec::new(),
        };
        let origin = VolumeId::new(&source.vg, &source.name)?;
        self.volumes.create_snapshot(&clone, &origin, &snap).await?;
        Ok(clone.lv().to_string())
    }

    /// Removes the temporary clone snapshot of new volume `id`, if there is one.
    async fn remove_clone_snapshot(&self, id: &VolumeId) -> Result<(), ControllerError> {
        Ok(self.volumes.remove(&clone_snapshot_id(id)?).await?)
    }
}

/// INVALID_ARGUMENT when the source cannot give a volume of the StorageClass asked for.
fn check_source_fits(
    plan: &CreatePlan,
    source: &ContentSource,
    origin: &Origin,
) -> Result<(), ControllerError> {
    let p = &plan.params;
    let lv = &origin.lv;
    let reason = if lv.vg != p.volume_group {
        Some(format!(
            "it is in volume group {}, the StorageClass asks for {}",
            lv.vg, p.volume_group
        ))
    } else {
        match (lv.kind(), &p.thin_pool) {
            (LvKind::Thin, Some(pool)) if lv.pool.as_deref() == Some(pool.as_str()) => None,
            (LvKind::Thin, want) => Some(format!(
                "it is thin (pool {}), the StorageClass asks for {}",
                lv.pool.as_deref().unwrap_or("?"),
                want.as_deref()
                    .map_or("a thick volume".to_string(), |w| format!("thin pool {w}"))
            )),
            (_, Some(pool)) => Some(format!(
                "it is thick, the StorageClass asks for thin pool {pool}"
            )),
            (_, None) => None,
        }
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ControllerError::SourceIncompatible {
            id: source.id().to_string(),
            reason,
        }),
    }
}

/// Finds the source LV among `lvs`: NOT_FOUND when it is not one of our snapshots or
/// volumes, FAILED_PRECONDITION when it cannot give data (invalidated snapshot, volume still
/// being copied).
fn resolve(source: &ContentSource, lvs: &[Lv]) -> Result<Origin, ControllerError> {
    let (kind, id) = match source {
        ContentSource::Snapshot(id) => ("snapshot", id),
        ContentSource::Volume(id) => ("volume", id),
    };
    let not_found = || RequestError::SourceNotFound {
        kind,
        id: id.clone(),
    };
    let id: VolumeId = id.parse().map_err(|_| not_found())?;
    let lv = lvs
        .iter()
        .find(|lv| lv.vg == id.vg() && lv.name == id.lv())
        .cloned()
        .ok_or_else(not_found)?;
    match source {
        ContentSource::Snapshot(_) => {
            let s = Snapshot::from_lv(lv).ok_or_else(not_found)?;
            if !s.is_valid() {
                return Err(ControllerError::SnapshotInvalid { id: id.to_string() });
            }
            Ok(Origin {
                size: s.size(),
                lv: s.lv,
            })
        }
        ContentSource::Volume(_) => {
            let v = Volume::from_lv(lv).ok_or_else(not_found)?;
            if let Some(from) = &v.tags.copying {
                return Err(ControllerError::NotReady {
                    id: id.to_string(),
                    from: from.clone(),
                });
            }
            Ok(Origin {
                size: v.lv.size,
                lv: v.lv,
            })
        }
    }
}
