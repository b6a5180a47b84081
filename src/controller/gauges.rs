//! The controller's gauges: volumes and published volumes per VG, VG and thin pool size and
//! free bytes. Refreshed from one `lvs` and one `vgs` after start-up restore and after every
//! successful CreateVolume, DeleteVolume, ControllerPublishVolume and
//! ControllerUnpublishVolume, in a background task: a refresh never delays or fails an RPC.
//!
//! Every VG of the storage node is reported (a StorageClass may name any of them), with 0
//! volumes where it holds none of ours, so a VG's count drops back to 0 after its last delete.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::full_message;
use crate::lvm::LvKind;
use crate::metrics::Metrics;

use super::error::Context;
use super::{ControllerError, Core, Volume};

impl Core {
    /// Refreshes the process-wide gauges in the background.
    pub(crate) fn refresh_gauges_later(self: &Arc<Self>) {
        let core = Arc::clone(self);
        tokio::spawn(async move { core.refresh_gauges(crate::metrics::global()).await });
    }

    /// Refreshes the gauges of `metrics`; a failure is logged, the old values stay.
    pub(crate) async fn refresh_gauges(&self, metrics: &Metrics) {
        if let Err(e) = self.record_gauges(metrics).await {
            tracing::warn!(error = %full_message(&e), "cannot refresh the volume gauges");
        }
    }

    /// Reads LVs and VGs, then sets every gauge.
    async fn record_gauges(&self, metrics: &Metrics) -> Result<(), ControllerError> {
        let lvs = self
            .lvm
            .list()
            .await
            .context(|| "listing logical volumes for the gauges".to_string())?;
        let vgs = self
            .lvm
            .vgs(&[])
            .await
            .context(|| "listing volume groups for the gauges".to_string())?;
        // (volumes, published volumes) per VG.
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        for lv in &lvs {
            if lv.kind() == LvKind::ThinPool {
                if let Some(free) = lv.data_free() {
                    metrics.set_thin_pool(&lv.vg, &lv.name, lv.size, free);
                }
            }
        }
        for v in lvs.into_iter().filter_map(Volume::from_lv) {
            let c = counts.entry(v.lv.vg.clone()).or_default();
            c.0 += 1;
            c.1 += u64::from(!v.tags.publications.is_empty());
        }
        for vg in &vgs {
            metrics.set_volume_group(&vg.name, vg.size, vg.free);
            let (volumes, published) = counts.get(&vg.name).copied().unwrap_or_default();
            metrics.set_volumes(&vg.name, volumes);
            metrics.set_published_volumes(&vg.name, published);
        }
        Ok(())
    }
}
