//! The read-only RPCs: ValidateVolumeCapabilities, ListVolumes, GetCapacity,
//! ControllerGetVolume.

use crate::csi::{
    controller_get_volume_response, list_volumes_response, validate_volume_capabilities_response,
    ControllerGetVolumeResponse, GetCapacityRequest, GetCapacityResponse, ListVolumesRequest,
    ListVolumesResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use crate::domain::VolumeId;
use crate::lvm::LvKind;

use super::capability;
use super::page::page;
use super::params::{self, Params};
use super::request::{parse_known, RequestError};
use super::volumes::{Volume, Volumes, VolumesError};
use super::ControllerError;

/// The read-only RPCs, over LVM alone.
pub(crate) struct Query<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
    /// The VG used when the parameters name none.
    pub(crate) default_vg: Option<&'a str>,
}

impl Query<'_> {
    /// ValidateVolumeCapabilities: confirmed only when every capability is served and the
    /// parameters and context given are this volume's.
    pub(crate) async fn validate_capabilities(
        &self,
        req: &ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, ControllerError> {
        let id = parse_known(&req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(RequestError::Missing("volume_capabilities").into());
        }
        let id = id.ok_or_else(|| ControllerError::VolumeNotFound {
            id: req.volume_id.clone(),
        })?;
        let v = self
            .volumes
            .volume(&id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        let answer = match self.mismatch(&v, req) {
            Some(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context.clone(),
                    volume_capabilities: req.volume_capabilities.clone(),
                    parameters: req.parameters.clone(),
                    mutable_parameters: Default::default(),
                }),
                message: String::new(),
            },
        };
        Ok(answer)
    }

    /// Why `req` does not fit volume `v`, if it does not.
    fn mismatch(&self, v: &Volume, req: &ValidateVolumeCapabilitiesRequest) -> Option<String> {
        if let Err(why) = capability::check_all(&req.volume_capabilities) {
            return Some(why);
        }
        let fs = v.tags.fs_type.as_deref();
        if let (Some(fs), Some(other)) = (
            fs,
            capability::mount_fs_types(&req.volume_capabilities).find(|f| Some(*f) != fs),
        ) {
            return Some(format!("the volume's filesystem is {fs}, not {other}"));
        }
        let context = params::volume_context(fs);
        for (k, val) in &req.volume_context {
            if context.get(k) != Some(val) {
                return Some(format!(
                    "volume_context {k}={val:?} is not this volume's ({:?})",
                    context.get(k)
                ));
            }
        }
        if !req.mutable_parameters.is_empty() {
            return Some("this driver has no mutable parameters".into());
        }
        if !req.parameters.is_empty() {
            let p = match Params::parse(&req.parameters, self.default_vg) {
                Ok(p) => p,
                Err(e) => return Some(e.to_string()),
            };
            let pool = match v.lv.kind() {
                LvKind::Thin => v.lv.pool.clone(),
                _ => None,
            };
            if p.volume_group != v.id.vg() || p.thin_pool != pool || p.fs_type.as_deref() != fs {
                return Some(format!(
                    "the parameters describe volume group {}, thin pool {:?}, fsType {:?}; \
                     the volume is in {}, thin pool {pool:?}, fsType {fs:?}",
                    p.volume_group,
                    p.thin_pool,
                    p.fs_type,
                    v.id.vg()
                ));
            }
        }
        None
    }

    /// ListVolumes: volumes sorted by id, paged by [`page`].
    pub(crate) async fn list_volumes(
        &self,
        req: &ListVolumesRequest,
    ) -> Result<ListVolumesResponse, ControllerError> {
        let (page, next_token) = page(
            self.volumes.volumes().await?,
            |v| &v.id,
            req.max_entries,
            &req.starting_token,
        )?;
        let entries = page
            .into_iter()
            .map(|v| list_volumes_response::Entry {
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: v.tags.node_ids(),
                    volume_condition: Some(v.condition()),
                }),
                volume: Some(v.to_csi()),
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    /// GetCapacity: free bytes of the VG (thick) or room left in the thin pool, for the
    /// StorageClass parameters given. A VG or pool this node does not have, or capabilities
    /// it does not serve, have capacity 0.
    pub(crate) async fn capacity(
        &self,
        req: &GetCapacityRequest,
    ) -> Result<GetCapacityResponse, ControllerError> {
        let p = Params::parse(&req.parameters, self.default_vg)?;
        let none = GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: None,
            minimum_volume_size: None,
        };
        if req
            .volume_capabilities
            .iter()
            .any(|c| capability::check(c).is_err())
        {
            return Ok(none);
        }
        let Some(vg) = self.volumes.find_volume_group(&p.volume_group).await? else {
            return Ok(none);
        };
        let available = match &p.thin_pool {
            None => vg.free,
            Some(pool) => {
                let lvs = self.volumes.lvs_of(&vg.name).await?;
                match self.volumes.thin_room(&lvs, &vg.name, pool) {
                    Ok(room) => room.available,
                    Err(VolumesError::NoThinPool { .. }) => return Ok(none),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // Sizes are extents: what is usable is a whole number of them.
        let available = available / vg.extent_size * vg.extent_size;
        let bytes = i64::try_from(available).unwrap_or(i64::MAX);
        Ok(GetCapacityResponse {
            available_capacity: bytes,
            maximum_volume_size: Some(bytes),
            minimum_volume_size: Some(i64::try_from(vg.extent_size).unwrap_or(i64::MAX)),
        })
    }

    /// ControllerGetVolume: the volume, where it is published, and whether it is healthy.
    pub(crate) async fn get_volume(
        &self,
        id: &VolumeId,
    ) -> Result<ControllerGetVolumeResponse, ControllerError> {
        let v = self
            .volumes
            .volume(id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        Ok(ControllerGetVolumeResponse {
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: v.tags.node_ids(),
                volume_condition: Some(v.condition()),
            }),
            volume: Some(v.to_csi()),
        })
    }
}
