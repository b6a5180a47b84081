//! CreateVolume and DeleteVolume: an LV per volume, named after its CSI name (which its name
//! tag records), found again by that LV name.

use crate::csi::{self, CreateVolumeRequest, DeleteVolumeRequest};
use crate::lvm::tags::{fs_type_tag, name_tag, ContentSource};
use crate::lvm::{Lv, LvKind, LvmError, NewLv};

use super::capability;
use super::capacity::{thin_headroom, SizeRequest};
use super::content_source::parse_content_source;
use super::error::Context;
use super::params::{self, Params};
use super::{ControllerError, Core, Volume};
use crate::domain::volume_id::{lv_name_for, IdError, VolumeId, MAX_ID_LEN};

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
) -> Result<CreatePlan, ControllerError> {
    if req.name.is_empty() {
        return Err(ControllerError::Missing("name"));
    }
    check_name(&req.name)?;
    if req.volume_capabilities.is_empty() {
        return Err(ControllerError::Missing("volume_capabilities"));
    }
    capability::check_all(&req.volume_capabilities).map_err(ControllerError::Capability)?;
    if !req.mutable_parameters.is_empty() {
        return Err(ControllerError::Invalid {
            field: "mutable_parameters",
            reason: "this driver has no mutable parameters (no MODIFY_VOLUME capability)".into(),
        });
    }
    let params = Params::parse(&req.parameters, default_vg)?;
    if let Some(fs) = &params.fs_type {
        if let Some(other) = capability::mount_fs_types(&req.volume_capabilities).find(|f| f != fs)
        {
            return Err(ControllerError::Invalid {
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

/// The spec's rules for names: at most 128 bytes, no control characters other than common
/// whitespace.
pub(crate) fn check_name(name: &str) -> Result<(), ControllerError> {
    let reason = if name.len() > MAX_ID_LEN {
        "longer than 128 bytes"
    } else if name
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(ControllerError::Invalid {
        field: "name",
        reason: reason.into(),
    })
}

/// Checks a DeleteVolume request: `None` when the id cannot name a volume of ours (OK).
pub fn validate_delete(req: &DeleteVolumeRequest) -> Result<Option<VolumeId>, ControllerError> {
    parse_known(&req.volume_id)
}

/// Parses a volume id where an unknown one means "nothing to do".
pub(crate) fn parse_known(id: &str) -> Result<Option<VolumeId>, ControllerError> {
    match id.parse::<VolumeId>() {
        Ok(id) => Ok(Some(id)),
        Err(IdError::Unknown { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What the requested VG has room for, read before `lvcreate`.
enum Room {
    /// An LV with the volume's LV name is there already.
    Taken(Lv),
    /// The VG's extent size and the bytes a new volume may take.
    Free {
        /// Every LV size is a multiple of it.
        extent_size: u64,
        /// The VG's free bytes (thick) or the thin pool's headroom (thin).
        available: u64,
        /// What `available` is, for the RESOURCE_EXHAUSTED message.
        what: String,
        /// Whether the read listed the VG's LVs (so the volume is known not to exist yet).
        listed: bool,
    },
}

impl Core {
    /// Creates the volume of `plan`, or returns the existing one with that name when it is
    /// compatible. Nothing is left behind when `lvcreate` fails.
    ///
    /// Two LVM commands on the common path: one read of the room in the VG (`lvs` of the VG
    /// for a thin volume, since the overprovisioning check sums the pool's thin volumes;
    /// `vgs` for a thick one), then `lvcreate`, whose success is the answer: the LV is what
    /// was asked, at the size rounded here to the extent size. The volume is found again by
    /// its LV name, derived from the CSI name, in the requested VG: a thin one in that
    /// listing, a thick one when `lvcreate` says the name exists (one more `lvs` then).
    pub(crate) async fn create_volume(
        &self,
        plan: &CreatePlan,
    ) -> Result<csi::Volume, ControllerError> {
        if let Some(source) = &plan.source {
            return self.create_from_source(plan, source).await;
        }
        let vg_name = &plan.params.volume_group;
        let id = VolumeId::new(vg_name, &plan.lv_name)?;
        let size = match self.room(plan).await? {
            Room::Taken(lv) => return existing(lv, &id, plan),
            Room::Free {
                extent_size,
                available,
                what,
                listed,
            } => match fit(
                plan,
                self.settings.default_volume_size,
                extent_size,
                available,
                &what,
            ) {
                Ok(size) => size,
                Err(refusal) if listed => return Err(refusal),
                // A repeat of a create that worked must not be refused for lack of room.
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
        match self.lvm.create(&new).await {
            Ok(()) => {
                self.tags.put(&id, new.tags);
                Ok(created(&id, size, plan))
            }
            Err(LvmError::AlreadyExists { .. }) => match self
                .lvm
                .get(id.vg(), id.lv())
                .await
                .context(|| format!("reading logical volume {id}"))?
            {
                Some(lv) => existing(lv, &id, plan),
                // Removed since lvcreate saw it: a DeleteVolume of it is running.
                None => Err(ControllerError::Busy(id.to_string())),
            },
            Err(e) => {
                // A refusal left nothing behind; a killed or unreadable run may have.
                if matches!(e, LvmError::Command(_) | LvmError::Parse { .. }) {
                    self.roll_back(&id, &plan.name).await;
                }
                Err(e).context(|| format!("creating logical volume {id}"))
            }
        }
    }

    /// Reads what the VG of `plan` has room for, in one command.
    async fn room(&self, plan: &CreatePlan) -> Result<Room, ControllerError> {
        let vg = &plan.params.volume_group;
        let no_vg = || ControllerError::NoVolumeGroup { vg: vg.clone() };
        let Some(pool) = &plan.params.thin_pool else {
            let found = self.volume_group(vg).await?;
            return Ok(Room::Free {
                extent_size: found.extent_size,
                available: found.free,
                what: format!("volume group {vg} has {} bytes free", found.free),
                listed: false,
            });
        };
        let listing = self
            .lvm
            .list_vg_space(vg)
            .await
            .context(|| format!("listing the logical volumes of {vg}"))?
            .ok_or_else(no_vg)?;
        if let Some(lv) = listing.lvs.iter().find(|lv| lv.name == plan.lv_name) {
            return Ok(Room::Taken(lv.clone()));
        }
        let no_pool = || ControllerError::NoThinPool {
            vg: vg.clone(),
            pool: pool.clone(),
        };
        let pool_lv = listing
            .lvs
            .iter()
            .find(|lv| lv.name == *pool && lv.kind() == LvKind::ThinPool)
            .ok_or_else(no_pool)?;
        // Every row carries the VG's space, and the pool is a row.
        let space = listing.space.ok_or_else(no_pool)?;
        let ratio = self.settings.thin_overprovision_ratio;
        let available = thin_headroom(pool_lv, &listing.lvs, ratio);
        Ok(Room::Free {
            extent_size: space.extent_size,
            available,
            what: format!(
                "thin pool {vg}/{pool} has room for {available} more bytes of thin volumes \
                 (overprovisioning ratio {ratio})"
            ),
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
        match self
            .lvm
            .get(id.vg(), id.lv())
            .await
            .context(|| format!("reading logical volume {id}"))?
        {
            Some(lv) => existing(lv, id, plan),
            None => Err(refusal),
        }
    }

    /// Removes a half-created LV, if it carries this name (never someone else's LV).
    pub(super) async fn roll_back(&self, id: &VolumeId, name: &str) {
        match self.volume(id).await {
            Ok(Some(v)) if v.name() == name => match self.lvm.remove(id.vg(), id.lv()).await {
                Ok(()) | Err(LvmError::NotFound { .. }) => {
                    tracing::warn!(volume_id = %id, "rolled back the new logical volume")
                }
                Err(e) => tracing::error!(
                    volume_id = %id, error = %crate::error::full_message(&e),
                    "cannot roll back the new logical volume; remove it by hand"
                ),
            },
            Ok(_) => {}
            Err(e) => tracing::error!(
                volume_id = %id, error = %crate::error::full_message(&e),
                "cannot check for a half-created logical volume"
            ),
        }
    }

    /// Deletes volume `id`. An unknown volume is success. A published volume is refused
    /// (FAILED_PRECONDITION, naming the nodes) rather than unexported behind the attacher's
    /// back: external-attacher unpublishes before the provisioner deletes, so a publication
    /// left here means a node may still be using the volume. An export left without any
    /// publication (a crash between the two) is removed first.
    pub(crate) async fn delete_volume(&self, id: &VolumeId) -> Result<(), ControllerError> {
        let Some(v) = self.volume(id).await? else {
            tracing::info!(volume_id = %id, "volume does not exist: nothing to delete");
            return Ok(());
        };
        if !v.tags.publications.is_empty() {
            return Err(ControllerError::StillPublished {
                id: id.to_string(),
                nodes: v.tags.node_ids(),
            });
        }
        self.check_restored()?;
        self.before_delete_volume(&v).await?;
        let iqn = self.iqn(id);
        self.target
            .remove_export(&iqn)
            .await
            .context(|| format!("removing export {iqn}"))?;
        self.tags.forget(id);
        match self.lvm.remove(id.vg(), id.lv()).await {
            Ok(()) | Err(LvmError::NotFound { .. }) => {
                tracing::info!(volume_id = %id, "volume deleted");
                Ok(())
            }
            Err(e) => Err(e).context(|| format!("removing logical volume {id}")),
        }
    }
}

/// The size of the new volume, if `available` bytes hold it.
fn fit(
    plan: &CreatePlan,
    default_size: u64,
    extent_size: u64,
    available: u64,
    what: &str,
) -> Result<u64, ControllerError> {
    let size = plan.size.size(default_size, extent_size)?;
    if available < size {
        return Err(ControllerError::NoSpace(format!("{what}, {size} needed")));
    }
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
pub(super) fn incompatibility(v: &Volume, plan: &CreatePlan) -> Option<String> {
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
