//! CreateVolume of an empty volume: an LV per volume, named after its CSI name (which its
//! name tag records), found again by that LV name. With a content source, CreateVolume is
//! [`super::content_source`]'s; both use the checks of an existing volume here.

use crate::csi::{self, CreateVolumeRequest};
use crate::domain::volume_id::{lv_name_for, VolumeId};
use crate::lvm::tags::{fs_type_tag, name_tag, ContentSource};
use crate::lvm::{Lv, LvKind, LvmError, NewLv};

use super::capability;
use super::capacity::{Room, SizeRequest};
use super::params::{self, Params};
use super::request::{check_name, parse_content_source, RequestError};
use super::volumes::{Volume, Volumes, VolumesError};
use super::ControllerError;

/// A checked CreateVolume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePlan {
    /// The CSI name.
    pub name: String,
    /// The LV name derived from it.
    pub lv_name: String,
    /// StorageClass parameters.
    pub params: Params,
    /// The capacity range.
    pub size: SizeRequest,
    /// The snapshot or volume to take the data from.
    pub source: Option<ContentSource>,
}

/// Checks a CreateVolume request before anything runs.
pub fn validate_create(
    req: &CreateVolumeRequest,
    default_vg: Option<&str>,
) -> Result<CreatePlan, RequestError> {
    if req.name.is_empty() {
        return Err(RequestError::Missing("name"));
    }
    check_name(&req.name)?;
    if req.volume_capabilities.is_empty() {
        return Err(RequestError::Missing("volume_capabilities"));
    }
    capability::check_all(&req.volume_capabilities).map_err(RequestError::Capability)?;
    if !req.mutable_parameters.is_empty() {
        return Err(RequestError::Invalid {
            field: "mutable_parameters",
            reason: "this driver has no mutable parameters (no MODIFY_VOLUME capability)".into(),
        });
    }
    let params = Params::parse(&req.parameters, default_vg)?;
    if let Some(fs) = &params.fs_type {
        if let Some(other) = capability::mount_fs_types(&req.volume_capabilities).find(|f| f != fs)
        {
            return Err(RequestError::Invalid {
                field: "volume_capabilities",
                reason: format!(
                    "mount filesystem {other:?} contradicts the StorageClass fsType {fs:?}"
                ),
            });
        }
    }
    let size = SizeRequest::parse(req.capacity_range.as_ref())?;
    let source = parse_content_source(req.volume_content_source.as_ref())?;
    Ok(CreatePlan {
        lv_name: lv_name_for(&req.name),
        name: req.name.clone(),
        params,
        size,
        source,
    })
}

/// What the requested VG has room for, read before `lvcreate`.
enum Space {
    /// An LV with the volume's LV name is there already.
    Taken(Lv),
    /// The VG's extent size and the bytes a new volume may take.
    Free {
        /// Every LV size is a multiple of it.
        extent_size: u64,
        /// The VG's free bytes (thick) or the thin pool's headroom (thin).
        room: Room,
        /// Whether the read listed the VG's LVs (so the volume is known not to exist yet).
        listed: bool,
    },
}

/// CreateVolume without a content source, over LVM alone.
pub(crate) struct Create<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
    /// Size of a volume requested without capacity, in bytes.
    pub(crate) default_size: u64,
}

impl Create<'_> {
    /// Creates the volume of `plan`, or returns the existing one with that name when it is
    /// compatible. Nothing is left behind when `lvcreate` fails.
    ///
    /// Two LVM commands on the common path: one read of the room in the VG (`lvs` of the VG
    /// for a thin volume, since the overprovisioning check sums the pool's thin volumes;
    /// `vgs` for a thick one), then `lvcreate`, whose success is the answer: the LV is what
    /// was asked, at the size rounded here to the extent size. The volume is found again by
    /// its LV name, derived from the CSI name, in the requested VG: a thin one in that
    /// listing, a thick one when `lvcreate` says the name exists (one more `lvs` then).
    pub(crate) async fn run(&self, plan: &CreatePlan) -> Result<csi::Volume, ControllerError> {
        let vg_name = &plan.params.volume_group;
        let id = VolumeId::new(vg_name, &plan.lv_name)?;
        let size = match self.space(plan).await? {
            Space::Taken(lv) => return existing(lv, &id, plan),
            Space::Free {
                extent_size,
                room,
                listed,
            } => match fit(plan, self.default_size, extent_size, &room) {
                Ok(size) => size,
                Err(refusal) if listed => return Err(refusal),
                // A repeat of a volume that exists is answered even when the VG is full.
                Err(refusal) => return self.refused_unless_existing(&id, plan, refusal).await,
            },
        };
        let mut tags = vec![name_tag(&plan.name)?];
        if let Some(fs) = &plan.params.fs_type {
            tags.push(fs_type_tag(fs)?);
        }
        let new = NewLv {
            vg: vg_name.clone(),
            name: plan.lv_name.clone(),
            size,
            thin_pool: plan.params.thin_pool.clone(),
            tags,
        };
        tracing::info!(volume_id = %id, size, thin_pool = ?new.thin_pool, "creating logical volume");
        match self.volumes.create(&id, &new).await {
            Ok(()) => Ok(created(&id, size, plan)),
            Err(VolumesError::Lvm {
                source: LvmError::AlreadyExists { .. },
                ..
            }) => match self.volumes.lv(&id).await? {
                Some(lv) => existing(lv, &id, plan),
                // Removed since lvcreate saw it: a DeleteVolume of it is running.
                None => Err(ControllerError::Busy(id.to_string())),
            },
            Err(e) => {
                // A refusal left nothing behind; a killed or unreadable run may have.
                if let VolumesError::Lvm {
                    source: LvmError::Command(_) | LvmError::Parse { .. },
                    ..
                } = e
                {
                    self.volumes.roll_back(&id, &plan.name).await;
                }
                Err(e.into())
            }
        }
    }

    /// Reads what the VG of `plan` has room for, in one command.
    async fn space(&self, plan: &CreatePlan) -> Result<Space, ControllerError> {
        let vg = &plan.params.volume_group;
        let Some(pool) = &plan.params.thin_pool else {
            let found = self.volumes.volume_group(vg).await?;
            return Ok(Space::Free {
                extent_size: found.extent_size,
                room: Room::thick(vg, found.free),
                listed: false,
            });
        };
        let listing = self
            .volumes
            .lvs_and_space(vg)
            .await?
            .ok_or_else(|| VolumesError::NoVolumeGroup { vg: vg.clone() })?;
        if let Some(lv) = listing.lvs.iter().find(|lv| lv.name == plan.lv_name) {
            return Ok(Space::Taken(lv.clone()));
        }
        let room = self.volumes.thin_room(&listing.lvs, vg, pool)?;
        // Every row carries the VG's space, and the pool is a row.
        let space = listing.space.ok_or_else(|| VolumesError::NoThinPool {
            vg: vg.clone(),
            pool: pool.clone(),
        })?;
        Ok(Space::Free {
            extent_size: space.extent_size,
            room,
            listed: true,
        })
    }

    /// `refusal`, unless the volume exists already (then the answer for it).
    async fn refused_unless_existing(
        &self,
        id: &VolumeId,
        plan: &CreatePlan,
        refusal: ControllerError,
    ) -> Result<csi::Volume, ControllerError> {
        match self.volumes.lv(id).await? {
            Some(lv) => existing(lv, id, plan),
            None => Err(refusal),
        }
    }
}

/// The size of the new volume, if `room` holds it.
fn fit(
    plan: &CreatePlan,
    default_size: u64,
    extent_size: u64,
    room: &Room,
) -> Result<u64, ControllerError> {
    let size = plan.size.size(default_size, extent_size)?;
    room.take(size, || format!("{size} needed"))
        .map_err(ControllerError::NoSpace)?;
    Ok(size)
}

/// The answer for `lv`, found where the volume of `plan` would be: that volume when it is
/// ours with this name and compatible, else ALREADY_EXISTS (never someone else's LV).
fn existing(lv: Lv, id: &VolumeId, plan: &CreatePlan) -> Result<csi::Volume, ControllerError> {
    match Volume::from_lv(lv) {
        Some(v) if v.name() == plan.name => match incompatibility(&v, plan) {
            None => Ok(v.to_csi()),
            Some(detail) => Err(ControllerError::NameConflict {
                name: plan.name.clone(),
                id: id.to_string(),
                detail,
            }),
        },
        _ => Err(ControllerError::LvNameTaken {
            id: id.to_string(),
            name: plan.name.clone(),
        }),
    }
}

/// The answer for a volume `lvcreate` has just made as `plan` asked, `size` bytes.
fn created(id: &VolumeId, size: u64, plan: &CreatePlan) -> csi::Volume {
    csi::Volume {
        capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        volume_id: id.to_string(),
        volume_context: params::volume_context(plan.params.fs_type.as_deref()),
        content_source: None,
        accessible_topology: Vec::new(),
    }
}

/// What makes existing volume `v` unfit for `plan`, if anything.
pub(crate) fn incompatibility(v: &Volume, plan: &CreatePlan) -> Option<String> {
    let p = &plan.params;
    let mut diffs = Vec::new();
    if v.id.vg() != p.volume_group {
        diffs.push(format!(
            "it is in volume group {}, not {}",
            v.id.vg(),
            p.volume_group
        ));
    }
    match (&p.thin_pool, v.lv.kind(), v.lv.pool.as_deref()) {
        (None, LvKind::Thick, _) => {}
        (Some(want), LvKind::Thin, Some(pool)) if want == pool => {}
        (want, _, pool) => diffs.push(format!(
            "it is in thin pool {pool:?}, the request asks for {want:?}"
        )),
    }
    if v.tags.fs_type != p.fs_type {
        diffs.push(format!(
            "its fsType is {:?}, the request asks for {:?}",
            v.tags.fs_type, p.fs_type
        ));
    }
    if v.tags.content_source != plan.source {
        diffs.push(format!(
            "it was created from {:?}, the request asks for {:?}",
            v.tags.content_source, plan.source
        ));
    }
    if !plan.size.accepts(v.lv.size) {
        diffs.push(format!(
            "its size is {} bytes, the request asks for {}..{} bytes",
            v.lv.size,
            plan.size.required,
            if plan.size.limit == 0 {
                "unlimited".to_string()
            } else {
                plan.size.limit.to_string()
            }
        ));
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}
