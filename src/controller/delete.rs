//! DeleteVolume: the export (if one was left) and the LV go. An unknown volume is success.
//!
//! A published volume is refused (FAILED_PRECONDITION, naming the nodes) rather than
//! unexported behind the attacher's back: external-attacher unpublishes before the
//! provisioner deletes, so a publication left here means a node may still be using the
//! volume. An export left without any publication (a crash between the two) is removed.
//!
//! A thick volume with classic snapshots cannot be removed without removing them (LVM takes
//! them along), so it is refused, naming them; thin snapshots are independent of their
//! origin. A volume whose copy was interrupted loses the temporary snapshot of its clone
//! source as well.

use crate::csi::DeleteVolumeRequest;
use crate::domain::VolumeId;
use crate::lvm::LvKind;

use super::content_source::clone_snapshot_id;
use super::exports::Exports;
use super::request::{parse_known, RequestError};
use super::volumes::{Volume, Volumes};
use super::ControllerError;

/// Checks a DeleteVolume request: `None` when the id cannot name a volume of ours (OK).
pub fn validate_delete(req: &DeleteVolumeRequest) -> Result<Option<VolumeId>, RequestError> {
    parse_known(&req.volume_id)
}

/// DeleteVolume, over LVM and the target.
pub(crate) struct Delete<'a> {
    /// Our LVs.
    pub(crate) volumes: &'a Volumes,
    /// Their exports.
    pub(crate) exports: &'a Exports,
}

impl Delete<'_> {
    /// Deletes volume `id` (see the module doc).
    pub(crate) async fn run(&self, id: &VolumeId) -> Result<(), ControllerError> {
        let Some(v) = self.volumes.volume(id).await? else {
            tracing::info!(volume_id = %id, "volume does not exist: nothing to delete");
            return Ok(());
        };
        if !v.tags.publications.is_empty() {
            return Err(ControllerError::StillPublished {
                id: id.to_string(),
                nodes: v.tags.node_ids(),
            });
        }
        self.exports.check_restored()?;
        self.check_no_snapshots(&v).await?;
        if v.tags.copying.is_some() {
            self.volumes.remove(&clone_snapshot_id(id)?).await?;
        }
        self.exports.remove(&self.exports.iqn(id)).await?;
        self.volumes.remove(id).await?;
        tracing::info!(volume_id = %id, "volume deleted");
        Ok(())
    }

    /// Refuses a thick volume that is the origin of classic snapshots, naming them.
    async fn check_no_snapshots(&self, v: &Volume) -> Result<(), ControllerError> {
        if !v.lv.attr.starts_with(['o', 'O']) {
            return Ok(());
        }
        let dependents: Vec<String> = self
            .volumes
            .lvs_of(v.id.vg())
            .await?
            .iter()
            .filter(|lv| lv.kind() == LvKind::Snapshot && lv.origin.as_deref() == Some(v.id.lv()))
            .map(|lv| format!("{}/{}", lv.vg, lv.name))
            .collect();
        if dependents.is_empty() {
            return Ok(());
        }
        Err(ControllerError::HasSnapshots {
            id: v.id.to_string(),
            snapshots: dependents,
        })
    }
}
