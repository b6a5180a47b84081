//! CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot: an LV per snapshot, found
//! again by its snapshot-name tag.
//!
//! - Thin volume: a thin snapshot (instant, no space reserved, shares the pool). LVM creates
//!   it with activation skipped and it is made read-only: it has no device until a volume is
//!   made from it.
//! - Thick volume: a classic copy-on-write snapshot, read-only. By default its COW area is as
//!   large as LVM allows for the origin (the origin's size plus its exception table), so it
//!   can never fill up. The VolumeSnapshotClass parameter `cowSizePercent` (1..100) makes it
//!   smaller; if the origin then changes more than that, LVM invalidates the snapshot: it is
//!   reported with ready_to_use=false and a volume cannot be created from it.
//!
//! A snapshot's id is `<vg>/<lv>` like a volume's; its LV name is `snap.` plus the LV name a
//! volume of the same CSI name would get, so the two never meet (volume LV names have no
//! `.`). Snapshot LVs carry no volume name tag: they are never listed, exported, restored or
//! deleted as volumes.

use std::collections::HashMap;

use crate::csi::{self, CreateSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse};
use crate::domain::volume_id::{lv_name_for, VolumeId};
use crate::lvm::tags::{snapshot_tag, source_volume_tag};
use crate::lvm::{LvKind, LvmError, NewSnapshot};

use super::page::page;
use super::params::PROVISIONER_PREFIX;
use super::request::{check_name, parse_known, RequestError};
use super::volumes::{Volumes, VolumesError};
use super::ControllerError;

/// The VolumeSnapshotClass parameter: the COW size of a thick volume's snapshot, in percent
/// of the volume's size.
pub const COW_SIZE_PERCENT: &str = "cowSizePercent";

/// The LV name prefix of snapshots.
pub const SNAPSHOT_PREFIX: &str = "snap.";

/// Parsed VolumeSnapshotClass parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotParams {
    /// `cowSizePercent`: 1..=99 gives a smaller COW area than the safe default; `None` (or
    /// 100) is the default, large enough never to be invalidated.
    pub cow_percent: Option<u64>,
}

impl SnapshotParams {
    /// Parses `params`: unknown keys are INVALID_ARGUMENT naming them (external-snapshotter's
    /// `csi.storage.k8s.io/*` keys are accepted and ignored).
    pub fn parse(params: &HashMap<String, String>) -> Result<SnapshotParams, RequestError> {
        let mut keys: Vec<&String> = params.keys().collect();
        keys.sort();
        let mut out = SnapshotParams::default();
        for key in keys {
            if key == COW_SIZE_PERCENT {
                let value = &params[key];
                match value.trim().parse::<u64>() {
                    Ok(p @ 1..=99) => out.cow_percent = Some(p),
                    Ok(100) => {}
                    _ => {
                        return Err(RequestError::Invalid {
                            field: "parameters",
                            reason: format!(
                                "VolumeSnapshotClass parameter `{COW_SIZE_PERCENT}` = {value:?} \
                                 is not a whole number from 1 to 100"
                            ),
                        })
                    }
                }
            } else if !key.starts_with(PROVISIONER_PREFIX) {
                return Err(RequestError::Invalid {
                    field: "parameters",
                    reason: format!(
                        "unknown VolumeSnapshotClass parameter `{key}` (supported: \
                         {COW_SIZE_PERCENT})"
                    ),
                });
            }
        }
        Ok(out)
    }

    /// The COW size of a classic snapshot of an `origin`-byte LV in a VG of `extent`-byte
    /// extents. The default asks for more than the origin can ever need (its size plus a
    /// margin for the exception table), which LVM reduces to the maximum usable size.
    pub fn cow_size(&self, origin: u64, extent: u64) -> u64 {
        let extent = extent.max(1);
        let want = match self.cow_percent {
            Some(p) => origin.saturating_mul(p) / 100,
            None => origin.saturating_add((origin / 64).max(2 * extent)),
        };
        want.div_ceil(extent).max(1) * extent
    }
}

/// A checked CreateSnapshot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// The CSI snapshot name.
    pub name: String,
    /// The LV name derived from it.
    pub lv_name: String,
    /// The volume to snapshot.
    pub source: VolumeId,
    /// VolumeSnapshotClass parameters.
    pub params: SnapshotParams,
}

/// The LV name of the snapshot named `name`.
pub fn snapshot_lv_name(name: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{}", lv_name_for(name))
}

/// Checks a CreateSnapshot request before anything runs.
pub fn validate_create_snapshot(
    req: &CreateSnapshotRequest,
) -> Result<SnapshotPlan, ControllerError> {
    if req.name.is_empty() {
        return Err(RequestError::Missing("name").into());
    }
    check_name(&req.name)?;
    if req.source_volume_id.is_empty() {
        return Err(RequestError::Missing("source_volume_id").into());
    }
    let source =
        parse_known(&req.source_volume_id)?.ok_or_else(|| ControllerError::VolumeNotFound {
            id: req.source_volume_id.clone(),
        })?;
    let params = SnapshotParams::parse(&req.parameters)?;
    Ok(SnapshotPlan {
        lv_name: snapshot_lv_name(&req.name),
        name: req.name.clone(),
        source,
        params,
    })
}

/// The snapshot RPCs, over LVM alone.
pub(crate) struct Snapshots<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
}

impl Snapshots<'_> {
    /// CreateSnapshot: the snapshot named `plan.name`, made now or found again. The same name
    /// for another source volume is ALREADY_EXISTS.
    pub(crate) async fn create(
        &self,
        plan: &SnapshotPlan,
    ) -> Result<csi::Snapshot, ControllerError> {
        if let Some(s) = self
            .volumes
            .snapshots()
            .await?
            .into_iter()
            .find(|s| s.name() == plan.name)
        {
            return if s.source_volume() == plan.source.to_string() {
                Ok(s.to_csi())
            } else {
                Err(ControllerError::SnapshotConflict {
                    name: plan.name.clone(),
                    id: s.id.to_string(),
                    source_volume: s.source_volume().to_string(),
                })
            };
        }
        let source = &plan.source;
        let v =
            self.volumes
                .volume(source)
                .await?
                .ok_or_else(|| ControllerError::VolumeNotFound {
                    id: source.to_string(),
                })?;
        if let Some(from) = &v.tags.copying {
            return Err(ControllerError::NotReady {
                id: source.to_string(),
                from: from.clone(),
            });
        }
        let id = VolumeId::new(source.vg(), &plan.lv_name)?;
        let cow_size = match v.lv.kind() {
            LvKind::Thin => None,
            _ => {
                let vg = self.volumes.volume_group(source.vg()).await?;
                Some(plan.params.cow_size(v.lv.size, vg.extent_size))
            }
        };
        let snap = NewSnapshot {
            vg: source.vg().to_string(),
            origin: source.lv().to_string(),
            name: plan.lv_name.clone(),
            cow_size,
            writable: false,
            tags: vec![
                snapshot_tag(&plan.name)?,
                source_volume_tag(&source.to_string())?,
            ],
        };
        tracing::info!(snapshot_id = %id, source = %source, ?cow_size, "creating snapshot");
        match self.volumes.create_snapshot(&id, source, &snap).await {
            Ok(()) => {}
            Err(VolumesError::Lvm {
                source: LvmError::AlreadyExists { .. },
                ..
            }) => {
                return Err(ControllerError::LvNameTaken {
                    id: id.to_string(),
                    name: plan.name.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let s = self
            .volumes
            .snapshot(&id)
            .await?
            .ok_or_else(|| ControllerError::SnapshotNotFound { id: id.to_string() })?;
        tracing::info!(snapshot_id = %id, size = s.size(), thin = s.is_thin(), "snapshot created");
        Ok(s.to_csi())
    }

    /// DeleteSnapshot: an unknown snapshot is success; an LV that is not one of our
    /// snapshots is never touched. A snapshot being read by a copy is "in use"
    /// (FAILED_PRECONDITION).
    pub(crate) async fn delete(&self, id: &VolumeId) -> Result<(), ControllerError> {
        if self.volumes.snapshot(id).await?.is_none() {
            tracing::info!(snapshot_id = %id, "snapshot does not exist: nothing to delete");
            return Ok(());
        }
        self.volumes.remove(id).await?;
        tracing::info!(snapshot_id = %id, "snapshot deleted");
        Ok(())
    }

    /// GetSnapshot.
    pub(crate) async fn get(&self, id: &VolumeId) -> Result<csi::Snapshot, ControllerError> {
        self.volumes
            .snapshot(id)
            .await?
            .map(|s| s.to_csi())
            .ok_or_else(|| ControllerError::SnapshotNotFound { id: id.to_string() })
    }

    /// ListSnapshots: filtered by snapshot id and source volume id, sorted by id and paged by
    /// [`page`]. An unknown or malformed snapshot id filter gives an empty list.
    pub(crate) async fn list(
        &self,
        req: &ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, ControllerError> {
        let mut snapshots = if req.snapshot_id.is_empty() {
            self.volumes.snapshots().await?
        } else {
            match req.snapshot_id.parse::<VolumeId>() {
                Ok(id) => self.volumes.snapshot(&id).await?.into_iter().collect(),
                Err(_) => Vec::new(),
            }
        };
        snapshots.retain(|s| {
            req.source_volume_id.is_empty() || s.source_volume() == req.source_volume_id
        });
        let (page, next_token) = page(snapshots, |s| &s.id, req.max_entries, &req.starting_token)?;
        let entries = page
            .into_iter()
            .map(|s| csi::list_snapshots_response::Entry {
                snapshot: Some(s.to_csi()),
            })
            .collect();
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::params::tests::map;

    #[test]
    fn parameters() {
        assert_eq!(
            SnapshotParams::parse(&map(&[])).unwrap(),
            SnapshotParams::default()
        );
        let p = SnapshotParams::parse(&map(&[
            ("cowSizePercent", "25"),
            ("csi.storage.k8s.io/volumesnapshot/name", "s"),
        ]))
        .unwrap();
        assert_eq!(p.cow_percent, Some(25));
        assert_eq!(
            SnapshotParams::parse(&map(&[("cowSizePercent", "100")])).unwrap(),
            SnapshotParams::default()
        );
        for bad in ["0", "101", "-1", "1.5", "half", ""] {
            let e = SnapshotParams::parse(&map(&[("cowSizePercent", bad)])).unwrap_err();
            assert!(e.to_string().contains("cowSizePercent"), "{e}");
        }
        let e = SnapshotParams::parse(&map(&[("cowsize", "1")])).unwrap_err();
        assert!(e.to_string().contains("`cowsize`"), "{e}");
    }

    #[test]
    fn cow_sizes() {
        const MIB: u64 = 1 << 20;
        let full = SnapshotParams::default();
        // 64 MiB origin: a margin of two extents (LVM needs 68 MiB and caps there).
        assert_eq!(full.cow_size(64 * MIB, 4 * MIB), 72 * MIB);
        // 1 GiB: 1/64 of it, 16 MiB (LVM needs about 4 MiB for 4 KiB chunks).
        assert_eq!(full.cow_size(1024 * MIB, 4 * MIB), 1040 * MIB);
        let quarter = SnapshotParams {
            cow_percent: Some(25),
        };
        assert_eq!(quarter.cow_size(64 * MIB, 4 * MIB), 16 * MIB);
        // Rounded up to an extent, never zero.
        let tiny = SnapshotParams {
            cow_percent: Some(1),
        };
        assert_eq!(tiny.cow_size(8 * MIB, 4 * MIB), 4 * MIB);
    }

    #[test]
    fn snapshot_lv_names_never_meet_volume_names() {
        assert_eq!(
            snapshot_lv_name("snapshot-0b6c4a9e-1f0e-4b8a-9d8e-2a4f5e6d7c8b"),
            "snap.snapshot-0b6c4a9e-1f0e-4b8a-9d8e-2a4f5e6d7c8b"
        );
        assert_eq!(
            snapshot_lv_name("My Snap"),
            format!("snap.{}", lv_name_for("My Snap"))
        );
        for name in ["snap.x", "snap-x", "x"] {
            assert!(!lv_name_for(name).contains('.'), "{name}");
        }
    }
}
