//! CreateVolume and DeleteVolume: an LV per volume, found again by its name tag.

use crate::csi::{self, CreateVolumeRequest, DeleteVolumeRequest};
use crate::lvm::tags::{fs_type_tag, name_tag};
use crate::lvm::{Lv, LvKind, LvmError, NewLv};

use super::capability;
use super::capacity::{thin_headroom, SizeRequest};
use super::error::Context;
use super::params::Params;
use super::volume_id::{lv_name_for, IdError, VolumeId, MAX_ID_LEN};
use super::{ControllerError, Core, Volume};

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
    if req.volume_content_source.is_some() {
        return Err(ControllerError::Invalid {
            field: "volume_content_source",
            reason: "creating a volume from a snapshot or another volume is not supported yet"
                .into(),
        });
    }
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
    Ok(CreatePlan {
        lv_name: lv_name_for(&req.name),
        name: req.name.clone(),
        params,
        size,
    })
}

/// The spec's rules for names: at most 128 bytes, no control characters other than common
/// whitespace.
fn check_name(name: &str) -> Result<(), ControllerError> {
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

impl Core {
    /// Creates the volume of `plan`, or returns the existing one with that name when it is
    /// compatible. Nothing is left behind when a step after `lvcreate` fails.
    pub(crate) async fn create_volume(
        &self,
        plan: &CreatePlan,
    ) -> Result<csi::Volume, ControllerError> {
        let lvs = self
            .lvm
            .list()
            .await
            .context(|| "listing logical volumes".to_string())?;
        let existing = lvs
            .iter()
            .cloned()
            .filter_map(Volume::from_lv)
            .find(|v| v.name() == plan.name);
        if let Some(v) = existing {
            return match incompatibility(&v, plan) {
                None => Ok(v.to_csi()),
                Some(detail) => Err(ControllerError::NameConflict {
                    name: plan.name.clone(),
                    id: v.id.to_string(),
                    detail,
                }),
            };
        }
        let vg_name = &plan.params.volume_group;
        let vg = self
            .lvm
            .vg(vg_name)
            .await
            .context(|| format!("reading volume group {vg_name}"))?
            .ok_or_else(|| ControllerError::NoVolumeGroup {
                vg: vg_name.clone(),
            })?;
        let size = plan
            .size
            .size(self.settings.default_volume_size, vg.extent_size)?;
        let id = VolumeId::new(vg_name, &plan.lv_name)?;
        self.check_space(plan, &lvs, vg.free, size)?;
        if lvs
            .iter()
            .any(|lv| lv.vg == *vg_name && lv.name == plan.lv_name)
        {
            return Err(ControllerError::LvNameTaken {
                id: id.to_string(),
                name: plan.name.clone(),
            });
        }
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
        if let Err(e) = self.lvm.create(&new).await {
            // A refusal left nothing behind; a killed or unreadable run may have.
            if matches!(e, LvmError::Command(_) | LvmError::Parse { .. }) {
                self.roll_back(&id, &plan.name).await;
            }
            return Err(e).context(|| format!("creating logical volume {id}"));
        }
        match self.created(&id, plan).await {
            Ok(v) => Ok(v.to_csi()),
            Err(e) => {
                self.roll_back(&id, &plan.name).await;
                Err(e)
            }
        }
    }

    /// Refuses what the VG or the thin pool cannot hold (lvcreate would fail later anyway;
    /// checking first gives a clear message and spares a failed command).
    fn check_space(
        &self,
        plan: &CreatePlan,
        lvs: &[Lv],
        vg_free: u64,
        size: u64,
    ) -> Result<(), ControllerError> {
        let vg = &plan.params.volume_group;
        match &plan.params.thin_pool {
            None if vg_free < size => Err(ControllerError::NoSpace(format!(
                "volume group {vg} has {vg_free} bytes free, {size} needed"
            ))),
            None => Ok(()),
            Some(pool) => {
                let pool_lv = lvs
                    .iter()
                    .find(|lv| lv.vg == *vg && lv.name == *pool && lv.kind() == LvKind::ThinPool)
                    .ok_or_else(|| ControllerError::NoThinPool {
                        vg: vg.clone(),
                        pool: pool.clone(),
                    })?;
                let room = thin_headroom(pool_lv, lvs, self.settings.thin_overprovision_ratio);
                if room < size {
                    return Err(ControllerError::NoSpace(format!(
                        "thin pool {vg}/{pool} has room for {room} more bytes of thin volumes \
                         (overprovisioning ratio {}), {size} needed",
                        self.settings.thin_overprovision_ratio
                    )));
                }
                Ok(())
            }
        }
    }

    /// Reads the new LV back and checks it is what was asked.
    async fn created(&self, id: &VolumeId, plan: &CreatePlan) -> Result<Volume, ControllerError> {
        let v = self
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

    /// Removes a half-created LV, if it carries this name (never someone else's LV).
    async fn roll_back(&self, id: &VolumeId, name: &str) {
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
        let iqn = self.iqn(id);
        self.target
            .remove_export(&iqn)
            .await
            .context(|| format!("removing export {iqn}"))?;
        match self.lvm.remove(id.vg(), id.lv()).await {
            Ok(()) | Err(LvmError::NotFound { .. }) => {
                tracing::info!(volume_id = %id, "volume deleted");
                Ok(())
            }
            Err(e) => Err(e).context(|| format!("removing logical volume {id}")),
        }
    }
}

/// What makes existing volume `v` unfit for `plan`, if anything.
fn incompatibility(v: &Volume, plan: &CreatePlan) -> Option<String> {
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
