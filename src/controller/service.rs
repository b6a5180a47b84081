//! `impl Controller`: each RPC records the volume id on the RPC's span ([`crate::rpc`]),
//! validates the request (INVALID_ARGUMENT before any lock or command), takes the
//! per-volume guard (ABORTED when busy; CreateVolume locks the name), runs one flow over the
//! parts it names ([`Volumes`], [`Exports`]) and replies. This is the one place the parts are
//! put together.

use std::sync::Arc;

use async_trait::async_trait;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::*;
use crate::domain::volume_id::VolumeId;
use crate::export::TargetBackend;
use crate::lvm::Lvm;
use crate::ops::{VolumeGuard, VolumeLocks};
use crate::rpc::annotate;

use super::content_source::FromSource;
use super::copy::{BlockCopier, DeviceCopier};
use super::create::{validate_create, Create, CreatePlan};
use super::delete::{validate_delete, Delete};
use super::expand::{validate_expand, Expand};
use super::exports::Exports;
use super::gauges::Gauges;
use super::publish::{validate_publish, validate_unpublish, Publish};
use super::query::Query;
use super::readiness::ControllerReadiness;
use super::request::{parse_known, RequestError};
use super::resolver::InitiatorResolver;
use super::restore::{Restore, RestoreReport};
use super::snapshot::{validate_create_snapshot, Snapshots};
use super::volumes::Volumes;
use super::{ControllerError, Settings};

/// The capabilities advertised: no modification (VolumeAttributesClass) yet.
pub const CAPABILITIES: [rpc::Type; 14] = [
    rpc::Type::CreateDeleteVolume,
    rpc::Type::PublishUnpublishVolume,
    rpc::Type::ListVolumes,
    rpc::Type::ListVolumesPublishedNodes,
    rpc::Type::GetCapacity,
    rpc::Type::GetVolume,
    rpc::Type::VolumeCondition,
    rpc::Type::PublishReadonly,
    rpc::Type::SingleNodeMultiWriter,
    rpc::Type::ExpandVolume,
    rpc::Type::CreateDeleteSnapshot,
    rpc::Type::ListSnapshots,
    rpc::Type::CloneVolume,
    rpc::Type::GetSnapshot,
];

/// The Controller service.
#[derive(Clone)]
pub struct ControllerService {
    /// Our LVs.
    pub(super) volumes: Arc<Volumes>,
    /// Their exports.
    pub(super) exports: Arc<Exports>,
    /// One operation per volume (or CSI name) at a time.
    pub(super) locks: VolumeLocks,
    /// Node id -> initiator IQN.
    pub(super) resolver: Arc<dyn InitiatorResolver>,
    /// Copies thick volumes' data (restore from snapshot, clone).
    pub(super) copier: Arc<dyn BlockCopier>,
    /// The volume gauges.
    pub(super) gauges: Gauges,
    /// VG used when a StorageClass names none.
    pub(super) default_vg: Option<String>,
    /// Size of a volume requested without capacity, in bytes.
    pub(super) default_size: u64,
}

impl ControllerService {
    /// A controller over `lvm` and `target`, finding initiators with `resolver`. Target RPCs
    /// answer UNAVAILABLE until [`Self::restore`] (or `restore_until_done`) has run.
    pub fn new(
        lvm: Lvm,
        target: Arc<dyn TargetBackend>,
        resolver: Arc<dyn InitiatorResolver>,
        settings: Settings,
    ) -> Self {
        Self::with_copier(lvm, target, resolver, settings, Arc::new(DeviceCopier))
    }

    /// [`Self::new`] with the block copier of thick volumes' data given.
    pub fn with_copier(
        lvm: Lvm,
        target: Arc<dyn TargetBackend>,
        resolver: Arc<dyn InitiatorResolver>,
        settings: Settings,
        copier: Arc<dyn BlockCopier>,
    ) -> Self {
        let volumes = Arc::new(Volumes::new(lvm, settings.thin_overprovision_ratio));
        let exports = Arc::new(Exports::new(
            target,
            settings.iqn_prefix,
            settings.portals,
            settings.chap_key,
        ));
        ControllerService {
            gauges: Gauges::new(Arc::clone(&volumes)),
            volumes,
            exports,
            locks: VolumeLocks::new(),
            resolver,
            copier,
            default_vg: settings.default_volume_group,
            default_size: settings.default_volume_size,
        }
    }

    /// Probe's view of this controller.
    pub fn readiness(&self) -> ControllerReadiness {
        ControllerReadiness::new(
            Arc::clone(&self.volumes),
            Arc::clone(&self.exports),
            self.default_vg.clone(),
        )
    }

    /// Runs one restore pass and opens the target RPCs (tests and [`Self::restore_until_done`]).
    pub async fn restore(&self) -> Result<RestoreReport, ControllerError> {
        self.restorer().first_pass().await
    }

    /// Restores in the background: the first pass is retried until it can list LVs and
    /// targets (then the gauges are read); then volumes that failed are retried with backoff
    /// until they succeed.
    pub async fn restore_until_done(self) {
        let gauges = self.gauges.clone();
        self.restorer()
            .until_done(async move { gauges.refresh(crate::metrics::global()).await })
            .await
    }

    fn restorer(&self) -> Restore {
        Restore {
            volumes: Arc::clone(&self.volumes),
            exports: Arc::clone(&self.exports),
            locks: self.locks.clone(),
        }
    }

    /// Takes the guard of `key`, or fails with ABORTED.
    pub(super) fn lock(&self, key: &str) -> Result<VolumeGuard, ControllerError> {
        self.locks
            .try_lock(key)
            .ok_or_else(|| ControllerError::Busy(key.to_string()))
    }

    /// CreateVolume's work, with or without a content source.
    pub(super) async fn create(
        volumes: &Volumes,
        copier: &dyn BlockCopier,
        default_size: u64,
        plan: &CreatePlan,
    ) -> Result<Volume, ControllerError> {
        match &plan.source {
            None => {
                Create {
                    volumes,
                    default_size,
                }
                .run(plan)
                .await
            }
            Some(source) => FromSource { volumes, copier }.run(plan, source).await,
        }
    }

    fn query(&self) -> Query<'_> {
        Query {
            volumes: &self.volumes,
            default_vg: self.default_vg.as_deref(),
        }
    }

    fn publisher(&self) -> Publish<'_> {
        Publish {
            volumes: &self.volumes,
            exports: &self.exports,
        }
    }

    fn snapshots(&self) -> Snapshots<'_> {
        Snapshots {
            volumes: &self.volumes,
        }
    }
}

/// [`crate::rpc::reply`] for controller errors (which also tells `?` in the RPCs' blocks
/// what to convert to).
fn reply<T>(rpc: &'static str, result: Result<T, ControllerError>) -> Result<Response<T>, Status> {
    crate::rpc::reply(rpc, result)
}

#[async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply("CreateVolume", async {
            let plan = validate_create(&req, self.default_vg.as_deref())?;
            let guard = self.lock(&format!("name:{}", plan.name))?;
            // A task of its own, holding the guard: a caller that gives up (a copy of a big
            // volume outlasts the provisioner's timeout) does not stop the work half-way, and
            // its retries get ABORTED until the work is done.
            let (volumes, copier) = (Arc::clone(&self.volumes), Arc::clone(&self.copier));
            let default_size = self.default_size;
            let volume = tokio::spawn(
                async move {
                    let _guard = guard;
                    Self::create(&volumes, copier.as_ref(), default_size, &plan).await
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| ControllerError::TaskFailed(e.to_string()))??;
            self.gauges.refresh_later();
            tracing::info!(volume_id = %volume.volume_id, capacity = volume.capacity_bytes, "volume ready");
            Ok(CreateVolumeResponse {
                volume: Some(volume),
            })
        }
        .await)
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "DeleteVolume",
            async {
                if let Some(id) = validate_delete(&req)? {
                    let _guard = self.lock(&id.to_string())?;
                    Delete {
                        volumes: &self.volumes,
                        exports: &self.exports,
                    }
                    .run(&id)
                    .await?;
                }
                self.gauges.refresh_later();
                Ok(DeleteVolumeResponse {})
            }
            .await,
        )
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "ControllerPublishVolume",
            async {
                let plan = validate_publish(&req)?;
                let initiator = self
                    .resolver
                    .initiator(&plan.node_id)
                    .await
                    .map_err(|source| ControllerError::Resolve {
                        node_id: plan.node_id.clone(),
                        source: Box::new(source),
                    })?;
                let _guard = self.lock(&plan.id.to_string())?;
                self.exports.check_restored()?;
                let publish_context = self.publisher().publish(&plan, &initiator).await?;
                self.gauges.refresh_later();
                Ok(ControllerPublishVolumeResponse { publish_context })
            }
            .await,
        )
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "ControllerUnpublishVolume",
            async {
                if let Some(id) = validate_unpublish(&req)? {
                    let _guard = self.lock(&id.to_string())?;
                    self.publisher().unpublish(&id, &req.node_id).await?;
                }
                self.gauges.refresh_later();
                Ok(ControllerUnpublishVolumeResponse {})
            }
            .await,
        )
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "ValidateVolumeCapabilities",
            self.query().validate_capabilities(&req).await,
        )
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        reply(
            "ListVolumes",
            self.query().list_volumes(request.get_ref()).await,
        )
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        reply(
            "GetCapacity",
            self.query().capacity(request.get_ref()).await,
        )
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        annotate(&request);
        reply(
            "ControllerGetVolume",
            async {
                let id: VolumeId = request.get_ref().volume_id.parse()?;
                self.query().get_volume(&id).await
            }
            .await,
        )
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "CreateSnapshot",
            async {
                let plan = validate_create_snapshot(&req)?;
                let _name = self.lock(&format!("snapshot:{}", plan.name))?;
                let _source = self.lock(&plan.source.to_string())?;
                let snapshot = self.snapshots().create(&plan).await?;
                self.gauges.refresh_later();
                Ok(CreateSnapshotResponse {
                    snapshot: Some(snapshot),
                })
            }
            .await,
        )
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "DeleteSnapshot",
            async {
                if req.snapshot_id.is_empty() {
                    return Err(RequestError::Missing("snapshot_id").into());
                }
                if let Some(id) = parse_known(&req.snapshot_id)? {
                    let _guard = self.lock(&id.to_string())?;
                    self.snapshots().delete(&id).await?;
                }
                self.gauges.refresh_later();
                Ok(DeleteSnapshotResponse {})
            }
            .await,
        )
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        reply(
            "ListSnapshots",
            self.snapshots().list(request.get_ref()).await,
        )
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        annotate(&request);
        reply(
            "GetSnapshot",
            async {
                let raw = &request.get_ref().snapshot_id;
                if raw.is_empty() {
                    return Err(RequestError::Missing("snapshot_id").into());
                }
                let id = parse_known(raw)?
                    .ok_or_else(|| ControllerError::SnapshotNotFound { id: raw.clone() })?;
                Ok(GetSnapshotResponse {
                    snapshot: Some(self.snapshots().get(&id).await?),
                })
            }
            .await,
        )
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "ControllerExpandVolume",
            async {
                let plan = validate_expand(&req)?;
                let _guard = self.lock(&plan.id.to_string())?;
                let answer = Expand {
                    volumes: &self.volumes,
                    exports: &self.exports,
                }
                .run(&plan)
                .await?;
                self.gauges.refresh_later();
                tracing::info!(capacity = answer.capacity_bytes, "volume expanded");
                Ok(answer)
            }
            .await,
        )
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        reply(
            "ControllerModifyVolume",
            Err(ControllerError::Unimplemented("ControllerModifyVolume")),
        )
    }
}
