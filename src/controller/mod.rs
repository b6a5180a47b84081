//! The Controller service: runs on the storage node, makes LVs ([`crate::lvm`]) and exports
//! them over iSCSI ([`crate::export`]).
//!
//! # Layout
//! Two parts hold the dependencies; each RPC is a short flow over the ones it names.
//!
//! ```text
//! service ──> create ─────────┐        (validate -> guard -> flow -> reply, a span per RPC)
//!   │   ├──> content_source ──┤──> volumes  (LVM + tag cache: Volume, Snapshot, tag writes)
//!   │   ├──> snapshot ────────┤
//!   │   ├──> query ───────────┤
//!   │   ├──> gauges ──────────┘
//!   │   ├──> delete ──────────┬──> volumes
//!   │   ├──> publish ─────────┤
//!   │   ├──> expand ──────────┤
//!   │   ├──> restore ─────────┤
//!   │   └──> readiness ───────┴──> exports  (target backend + portals + CHAP key)
//!   └──> request, params, capability, capacity, page  (pure checks)
//! ```
//!
//! - [`service`]: `impl Controller`, the only place the parts are put together.
//! - [`volumes`]: [`volumes::Volumes`], every LVM read and write, and the publication
//!   records (compare-and-set tag writes from the cache of each volume's tags).
//! - [`exports`]: [`exports::Exports`], every target change: `ensure(volume, acl)`, `deny`,
//!   `remove`, `resize`, the publish_context; refused until start-up restore is done.
//! - [`create`]: CreateVolume of an empty volume; [`content_source`]: from a snapshot or a
//!   volume, with [`copy`], the block copy of thick volumes; [`delete`]: DeleteVolume.
//! - [`publish`]: ControllerPublishVolume, ControllerUnpublishVolume.
//! - [`expand`]: ControllerExpandVolume (lvextend, then the export resized).
//! - [`query`]: ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerGetVolume.
//! - [`snapshot`]: CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot.
//! - [`restore`]: rebuild the kernel target from LV tags at start-up.
//! - [`readiness`]: Probe, answered from a background check through the same parts.
//! - `gauges`: volume, VG and thin pool gauges, refreshed after every change.
//! - [`request`], [`params`], [`capability`], [`capacity`]: pure checks of the request
//!   (volume ids, IQNs, portals, the CHAP key, publish_context and access modes are
//!   [`crate::domain`]'s); `page`: ListVolumes/ListSnapshots paging.
//! - [`resolver`]: node id -> initiator IQN; `fake`: the resolver and copier doubles (tests
//!   and the `testing` feature only).
//! - [`error`]: [`ControllerError`], wrapping each part's own error (mapped to gRPC codes in
//!   `crate::error`).
//!
//! State lives only in LV tags ([`crate::lvm::tags`]); the kernel target is derived from them.

pub mod capability;
pub mod capacity;
pub mod content_source;
pub mod copy;
pub mod create;
pub mod delete;
pub mod error;
pub mod expand;
pub mod exports;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod gauges;
mod page;
pub mod params;
pub mod publish;
pub mod query;
pub mod readiness;
pub mod request;
pub mod resolver;
pub mod restore;
pub mod service;
pub mod snapshot;
pub mod volumes;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use error::ControllerError;
pub use service::ControllerService;

use crate::cli::{ControllerArgs, TargetBackendKind};
use crate::csi;
use crate::domain::{ChapKey, Portal};
use crate::exec::{SharedRunner, TokioRunner};
use crate::export::TargetBackend;
use crate::identity::IdentityService;
use crate::lvm::Lvm;
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
