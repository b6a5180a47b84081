//! ControllerExpandVolume: `lvextend` of the volume's LV (thick or thin) to the requested
//! size rounded up to the VG's extent size, then the exported LUN made to report it.
//!
//! - A request at or below the current size is success with the current size (the spec:
//!   "already larger than or equal to the target capacity ... SHOULD reply 0 OK"). Shrinking
//!   is not supported: a `limit_bytes` below the current size cannot be met and is
//!   OUT_OF_RANGE ("the capacity range is not allowed by the Plugin").
//! - Space is checked first: free extents of the VG for a thick LV, the thin pool's headroom
//!   under the overprovisioning ratio for a thin one (RESOURCE_EXHAUSTED, as for CreateVolume).
//! - The target side is refreshed whenever the volume is published, also when no lvextend was
//!   needed: a repeat after a crash between the two steps completes the work.
//! - `node_expansion_required` is always true: a mount volume's filesystem must be grown on
//!   the node, and a block volume's SCSI disk must be rescanned there before the node (and
//!   the pod) see the new size. An unpublished volume needs it too: kubelet grows the
//!   filesystem after its next stage.

use crate::csi::{ControllerExpandVolumeRequest, ControllerExpandVolumeResponse};
use crate::domain::VolumeId;
use crate::lvm::LvKind;

use super::capability;
use super::capacity::{Room, SizeRequest};
use super::exports::Exports;
use super::request::{parse_known, RequestError};
use super::volumes::{Volume, Volumes};
use super::ControllerError;

/// A checked ControllerExpandVolume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandPlan {
    /// The volume.
    pub id: VolumeId,
    /// The capacity range asked for.
    pub size: SizeRequest,
}

/// Checks a ControllerExpandVolume request before anything runs: volume id and capacity
/// range required, the capability (when given) one this driver serves. An id that names no
/// volume of ours is NOT_FOUND, once the rest of the request is known to be valid.
pub fn validate_expand(req: &ControllerExpandVolumeRequest) -> Result<ExpandPlan, ControllerError> {
    let id = parse_known(&req.volume_id)?;
    let range = req
        .capacity_range
        .as_ref()
        .ok_or(RequestError::Missing("capacity_range"))?;
    let size = SizeRequest::parse(Some(range))?;
    if let Some(cap) = &req.volume_capability {
        capability::check(cap).map_err(RequestError::Capability)?;
    }
    let id = id.ok_or_else(|| ControllerError::VolumeNotFound {
        id: req.volume_id.clone(),
    })?;
    Ok(ExpandPlan { id, size })
}

/// ControllerExpandVolume, over LVM and the target.
pub(crate) struct Expand<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
    /// Their exports.
    pub(crate) exports: &'a Exports,
}

impl Expand<'_> {
    /// Grows volume `plan.id` to the requested size and makes its export report it; returns
    /// the volume's size afterwards.
    pub(crate) async fn run(
        &self,
        plan: &ExpandPlan,
    ) -> Result<ControllerExpandVolumeResponse, ControllerError> {
        let id = &plan.id;
        let v = self
            .volumes
            .volume(id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        let current = v.lv.size;
        if plan.size.limit > 0 && current > plan.size.limit {
            return Err(ControllerError::Shrink {
                id: id.to_string(),
                size: current,
                limit: plan.size.limit,
            });
        }
        let published = !v.tags.publications.is_empty();
        if published {
            // Restore may still be rebuilding this export; resizing it meanwhile is moot.
            self.exports.check_restored()?;
        }
        let size = if plan.size.required <= current {
            tracing::info!(volume_id = %id, size = current, "volume is already large enough");
            current
        } else {
            self.grow(&v, &plan.size).await?
        };
        if published {
            self.exports.resize(id, size).await?;
        }
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            node_expansion_required: true,
        })
    }

    /// Checks the room (the VG's free extents, or the thin pool's headroom under the
    /// overprovisioning ratio: the same rules as CreateVolume) and runs lvextend; returns
    /// the new size.
    async fn grow(&self, v: &Volume, want: &SizeRequest) -> Result<u64, ControllerError> {
        let id = &v.id;
        let vg = self.volumes.volume_group(id.vg()).await?;
        let size = want.size(v.lv.size, vg.extent_size)?;
        let growth = size - v.lv.size;
        let room = match v.lv.kind() {
            LvKind::Thin => {
                let pool = v.lv.pool.clone().unwrap_or_default();
                let lvs = self.volumes.lvs_of(id.vg()).await?;
                self.volumes.thin_room(&lvs, id.vg(), &pool)?
            }
            _ => Room::thick(&vg.name, vg.free),
        };
        room.take(growth, || {
            format!(
                "{growth} more needed to grow {id} from {} to {size} bytes",
                v.lv.size
            )
        })
        .map_err(ControllerError::NoSpace)?;
        tracing::info!(volume_id = %id, from = v.lv.size, to = size, "extending logical volume");
        self.volumes.extend(id, size).await?;
        // A multiple of the extent size is what lvextend makes, exactly: no need to read back.
        tracing::info!(volume_id = %id, size, "logical volume extended");
        Ok(size)
    }
}
