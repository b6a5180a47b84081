//! The Controller service: runs on the storage node, makes LVs ([`crate::lvm`]) and exports
//! them over iSCSI ([`crate::export`]).
//!
//! # Layout
//! - [`service`]: `impl Controller`: each RPC is validate -> guard -> one function below.
//! - [`create`]: CreateVolume, DeleteVolume.
//! - [`publish`]: ControllerPublishVolume, ControllerUnpublishVolume.
//! - [`expand`]: ControllerExpandVolume (lvextend, then the export resized).
//! - [`query`]: ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerGetVolume.
//! - [`snapshot`]: CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot.
//! - [`content_source`]: CreateVolume from a snapshot or a volume; [`copy`]: the block copy
//!   of thick volumes.
//! - [`restore`]: rebuild the kernel target from LV tags at start-up.
//! - [`readiness`]: Probe, answered from a background check of LVM and the target.
//! - `gauges`: volume, VG and thin pool gauges, refreshed after every change.
//! - [`params`], [`capability`], [`capacity`]: pure checks of the request (volume ids, IQNs,
//!   portals, the CHAP key, publish_context and access modes are [`crate::domain`]'s).
//! - [`resolver`]: node id -> initiator IQN.
//! - `tag_cache`: the last known tags of each volume, checked by LVM on every write.
//! - [`error`]: [`ControllerError`] (mapped to gRPC codes in `crate::error`).
//!
//! State lives only in LV tags ([`crate::lvm::tags`]); the kernel target is derived from them.

pub mod capability;
pub mod capacity;
pub mod content_source;
pub mod copy;
pub mod create;
pub mod error;
pub mod expand;
mod gauges;
mod page;
pub mod params;
pub mod publish;
pub mod query;
pub mod readiness;
pub mod resolver;
pub mod restore;
pub mod service;
pub mod snapshot;
mod tag_cache;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use error::ControllerError;
pub use service::ControllerService;

use crate::cli::{ControllerArgs, TargetBackendKind};
use crate::csi;
use crate::domain::{ChapKey, Portal, VolumeId};
use crate::exec::{SharedRunner, TokioRunner};
use crate::export::{ExportSpec, TargetBackend};
use crate::identity::IdentityService;
use crate::lvm::tags::VolumeTags;
use crate::lvm::{Lv, LvKind, Lvm, Vg};
use crate::ops::{VolumeGuard, VolumeLocks};
use copy::BlockCopier;
use error::Context;
use resolver::InitiatorResolver;

/// Controller configuration (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    /// IQN prefix of our targets.
    pub iqn_prefix: String,
    /// Portals initiators log in to; the first is also where the target listens.
    pub portals: Vec<Portal>,
    /// VG used when a StorageClass names none.
    pub default_volume_group: Option<String>,
    /// Size of a volume requested without capacity, in bytes.
    pub default_volume_size: u64,
    /// How far thin volumes may overcommit their pool (1.0: not at all).
    pub thin_overprovision_ratio: f64,
    /// The CHAP key from `--chap-key-file`: for restore, and for requests without a key.
    pub chap_key: Option<ChapKey>,
}

/// What every RPC works with.
pub(crate) struct Core {
    /// LVM.
    lvm: Lvm,
    /// The kernel iSCSI target.
    target: Arc<dyn TargetBackend>,
    /// Node id -> initiator IQN.
    resolver: Arc<dyn InitiatorResolver>,
    /// Configuration.
    settings: Settings,
    /// One operation per volume (or CSI name) at a time.
    locks: VolumeLocks,
    /// Set once start-up restore has made the kernel target match the tags.
    restored: AtomicBool,
    /// Set while a gauge refresh is scheduled and has not started reading.
    gauges_scheduled: AtomicBool,
    /// Copies thick volumes' data (restore from snapshot, clone).
    copier: Arc<dyn BlockCopier>,
    /// The last known tags of our volumes.
    tags: tag_cache::TagCache,
}

impl Core {
    /// Takes the guard of `key`, or fails with ABORTED.
    fn lock(&self, key: &str) -> Result<VolumeGuard, ControllerError> {
        self.locks
            .try_lock(key)
            .ok_or_else(|| ControllerError::Busy(key.to_string()))
    }

    /// Fails until restore is done: target changes made meanwhile could be undone by it.
    fn check_restored(&self) -> Result<(), ControllerError> {
        if self.restored.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ControllerError::Restoring)
        }
    }

    /// Our volume with id `id`, or `None` (an LV without our name tag is not a volume).
    async fn volume(&self, id: &VolumeId) -> Result<Option<Volume>, ControllerError> {
        let lv = self
            .lvm
            .get(id.vg(), id.lv())
            .await
            .context(|| format!("reading volume {id}"))?;
        let v = lv.and_then(Volume::from_lv);
        match &v {
            Some(v) => self.tags.put(id, v.lv.tags.clone()),
            None => self.tags.forget(id),
        }
        Ok(v)
    }

    /// VG `name`; one that does not exist is [`ControllerError::NoVolumeGroup`].
    async fn volume_group(&self, name: &str) -> Result<Vg, ControllerError> {
        self.lvm
            .vg(name)
            .await
            .context(|| format!("reading volume group {name}"))?
            .ok_or_else(|| ControllerError::NoVolumeGroup {
                vg: name.to_string(),
            })
    }

    /// Every volume of ours, in one `lvs` call.
    async fn volumes(&self) -> Result<Vec<Volume>, ControllerError> {
        let lvs = self
            .lvm
            .list()
            .await
            .context(|| "listing logical volumes".to_string())?;
        let volumes: Vec<Volume> = lvs.into_iter().filter_map(Volume::from_lv).collect();
        for v in &volumes {
            self.tags.put(&v.id, v.lv.tags.clone());
        }
        Ok(volumes)
    }

    /// The target IQN of `id`.
    fn iqn(&self, id: &VolumeId) -> String {
        id.target_iqn(&self.settings.iqn_prefix)
    }

    /// The export of `id`.
    fn export_spec(&self, id: &VolumeId) -> ExportSpec {
        ExportSpec {
            iqn: self.iqn(id),
            device: id.device(),
            backstore: id.backstore_name(),
            portals: self.settings.portals.clone(),
        }
    }
}

/// One of our volumes: an LV with our name tag.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    /// Its id.
    id: VolumeId,
    /// The LV.
    lv: Lv,
    /// Our tags on it.
    tags: VolumeTags,
}

impl Volume {
    /// `lv` as a volume, if it is a thick or thin LV carrying our name tag (and not our
    /// snapshot tag: a snapshot is never a volume).
    fn from_lv(lv: Lv) -> Option<Volume> {
        if !matches!(lv.kind(), LvKind::Thick | LvKind::Thin) {
            return None;
        }
        let tags = VolumeTags::parse(&lv.tags);
        tags.name.as_ref()?;
        if tags.snapshot.is_some() {
            return None;
        }
        let id = VolumeId::new(&lv.vg, &lv.name).ok()?;
        Some(Volume { id, lv, tags })
    }

    /// The CSI name.
    fn name(&self) -> &str {
        self.tags.name.as_deref().unwrap_or_default()
    }

    /// The CSI view of the volume.
    fn to_csi(&self) -> csi::Volume {
        csi::Volume {
            capacity_bytes: i64::try_from(self.lv.size).unwrap_or(i64::MAX),
            volume_id: self.id.to_string(),
            volume_context: params::volume_context(self.tags.fs_type.as_deref()),
            content_source: self
                .tags
                .content_source
                .as_ref()
                .map(content_source::to_csi),
            accessible_topology: Vec::new(),
        }
    }

    /// Whether the volume can serve I/O: its LV must be active (device present) and healthy.
    fn condition(&self) -> csi::VolumeCondition {
        let problem = if let Some(from) = &self.tags.copying {
            Some(format!(
                "its creation from {from} has not finished (interrupted copy): repeat CreateVolume"
            ))
        } else if !self.lv.is_active() {
            Some("the logical volume is not active: its device does not exist".to_string())
        } else if !self.lv.health.is_empty() {
            Some(format!("LVM reports the logical volume {}", self.lv.health))
        } else {
            None
        };
        csi::VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_else(|| "the logical volume is active and healthy".into()),
        }
    }
}

/// Runs controller mode until SIGTERM/SIGINT: binds the socket, restores the exports in the
/// background (Probe answers "not ready" until done) and serves Identity + Controller.
pub async fn run(args: ControllerArgs) -> Result<(), String> {
    let socket = args.common.socket_path()?;
    let chap_key = match &args.chap_key_file {
        Some(path) => Some(ChapKey::from_file(path)?),
        None => None,
    };
    if chap_key.is_none() {
        tracing::warn!("no --chap-key-file: exports restored after a restart come back without CHAP ACLs until the volume is published again");
    }
    let runner: SharedRunner = Arc::new(TokioRunner::new());
    let target: Arc<dyn TargetBackend> = match args.target_backend {
        TargetBackendKind::Lio => Arc::new(crate::export::lio::LioBackend::new(
            args.configfs_root.clone(),
            args.iqn_prefix.clone(),
        )),
        TargetBackendKind::Tgt => Arc::new(crate::export::tgt::TgtBackend::new(
            runner.clone(),
            args.iqn_prefix.clone(),
        )),
    };
    let resolver: Arc<dyn InitiatorResolver> = if args.common.standalone {
        Arc::new(resolver::NodeResolver::standalone())
    } else {
        let client = crate::kube::client().await.map_err(|e| e.to_string())?;
        Arc::new(resolver::NodeResolver::kubernetes(
            client,
            args.common.driver_name.clone(),
        ))
    };
    let settings = Settings {
        iqn_prefix: args.iqn_prefix.clone(),
        portals: args.portals.clone(),
        default_volume_group: args.default_volume_group.clone(),
        default_volume_size: args.default_volume_size,
        thin_overprovision_ratio: args.thin_overprovision_ratio,
        chap_key,
    };
    let service = ControllerService::new(Lvm::new(runner), target, resolver, settings);
    let listener = crate::server::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    tracing::info!(
        socket = %socket.display(),
        backend = ?args.target_backend,
        portals = ?args.portals,
        "controller listening"
    );
    tokio::spawn(service.clone().restore_until_done());
    let identity = Arc::new(IdentityService::new(
        args.common.driver_name.clone(),
        Arc::new(service.readiness()),
        true,
    ));
    crate::health::global().answer_from(identity.clone());
    let router = crate::server::builder()
        .add_service(csi::identity_server::IdentityServer::from_arc(identity))
        .add_service(csi::controller_server::ControllerServer::new(service));
    crate::server::serve(listener, router, crate::server::shutdown_signal())
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))?;
    tracing::info!("controller stopped");
    Ok(())
}
