//! The controller's gauges: volumes and published volumes per VG, VG and thin pool size and
//! free bytes. Refreshed from one `lvs` and one `vgs` after start-up restore and, in a
//! background task, [`REFRESH_DELAY`] after a successful CreateVolume, DeleteVolume,
//! ControllerPublishVolume or ControllerUnpublishVolume: a refresh never delays or fails an
//! RPC, and the changes of one burst share one refresh (50 concurrent CreateVolume calls
//! would otherwise queue 100 LVM reads on the VG lock behind their `lvcreate`s).
//!
//! Every VG of the storage node is reported (a StorageClass may name any of them), with 0
//! volumes where it holds none of ours, so a VG's count drops back to 0 after its last delete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::full_message;
use crate::lvm::LvKind;
use crate::metrics::Metrics;

use super::volumes::{Volume, Volumes, VolumesError};

/// How long after a change the gauges are read again (Prometheus scrapes every 15–60 s).
pub const REFRESH_DELAY: Duration = Duration::from_secs(3);

/// The gauges of our volumes, read from LVM.
#[derive(Clone)]
pub(crate) struct Gauges {
    /// Our LVs.
    volumes: Arc<Volumes>,
    /// Set while a refresh is scheduled and has not started reading.
    scheduled: Arc<AtomicBool>,
}

impl Gauges {
    /// The gauges of `volumes`.
    pub(crate) fn new(volumes: Arc<Volumes>) -> Self {
        Gauges {
            volumes,
            scheduled: Arc::default(),
        }
    }

    /// Refreshes the process-wide gauges [`REFRESH_DELAY`] from now, unless a refresh that
    /// has not started reading yet is scheduled already (it will see this change too).
    pub(crate) fn refresh_later(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let gauges = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFRESH_DELAY).await;
            // Cleared before reading: a change from now on schedules the next refresh.
            gauges.scheduled.store(false, Ordering::Release);
            gauges.refresh(crate::metrics::global()).await
        });
    }

    /// Refreshes the gauges of `metrics`; a failure is logged, the old values stay.
    pub(crate) async fn refresh(&self, metrics: &Metrics) {
        if let Err(e) = self.record(metrics).await {
            tracing::warn!(error = %full_message(&e), "cannot refresh the volume gauges");
        }
    }

    /// Reads LVs and VGs, then sets every gauge.
    async fn record(&self, metrics: &Metrics) -> Result<(), VolumesError> {
        let lvs = self.volumes.lvs().await?;
        let vgs = self.volumes.volume_groups().await?;
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
