//! `impl Controller`: each RPC records the volume id on the RPC's span ([`crate::rpc`]),
//! validates the request (INVALID_ARGUMENT before any lock or command), takes the
//! per-volume guard (ABORTED when busy; CreateVolume locks the name) and calls one function
//! of [`super::create`], [`super::publish`], [`super::expand`] or [`super::query`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::*;
use crate::export::TargetBackend;
use crate::lvm::Lvm;
use crate::ops::VolumeLocks;
use crate::rpc::annotate;

use super::copy::{BlockCopier, DeviceCopier};
use super::create::{parse_known, validate_create, validate_delete};
use super::expand::validate_expand;
use super::publish::{validate_publish, validate_unpublish};
use super::resolver::InitiatorResolver;
use super::snapshot::validate_create_snapshot;
use super::{ControllerError, Core, Settings};
use crate::domain::volume_id::VolumeId;

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
    /// Shared with the restore task and the readiness check.
    pub(super) core: Arc<Core>,
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
        ControllerService {
            core: Arc::new(Core {
                lvm,
                target,
                resolver,
                settings,
                locks: VolumeLocks::new(),
                restored: AtomicBool::new(false),
                gauges_scheduled: AtomicBool::new(false),
                copier,
                tags: Default::default(),
            }),
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
        let core = &self.core;
        reply("CreateVolume", async {
            let plan = validate_create(&req, core.settings.default_volume_group.as_deref())?;
            let guard = core.lock(&format!("name:{}", plan.name))?;
            // A task of its own, holding the guard: a caller that gives up (a copy of a big
            // volume outlasts the provisioner's timeout) does not stop the work half-way, and
            // its retries get ABORTED until the work is done.
            let worker = Arc::clone(core);
            let volume = tokio::spawn(
                async move {
                    let _guard = guard;
                    worker.create_volume(&plan).await
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| ControllerError::TaskFailed(e.to_string()))??;
            core.refresh_gauges_later();
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
        let core = &self.core;
        reply(
            "DeleteVolume",
            async {
                if let Some(id) = validate_delete(&req)? {
                    let _guard = core.lock(&id.to_string())?;
                    core.delete_volume(&id).await?;
                }
                core.refresh_gauges_later();
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
        let core = &self.core;
        reply(
            "ControllerPublishVolume",
            async {
                let plan = validate_publish(&req)?;
                let initiator = core
                    .resolver
                    .initiator(&plan.node_id)
                    .await
                    .map_err(|source| ControllerError::Resolve {
                        node_id: plan.node_id.clone(),
                        source: Box::new(source),
                    })?;
                let _guard = core.lock(&plan.id.to_string())?;
                core.check_restored()?;
                let publish_context = core.publish(&plan, &initiator).await?;
                core.refresh_gauges_later();
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
        let core = &self.core;
        reply(
            "ControllerUnpublishVolume",
            async {
                if let Some(id) = validate_unpublish(&req)? {
                    let _guard = core.lock(&id.to_string())?;
                    core.unpublish(&id, &req.node_id).await?;
                }
                core.refresh_gauges_later();
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
            self.core.validate_capabilities(&req).await,
        )
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        reply(
            "ListVolumes",
            self.core.list_volumes(request.get_ref()).await,
        )
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        reply("GetCapacity", self.core.capacity(request.get_ref()).await)
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
        let core = &self.core;
        reply(
            "ControllerGetVolume",
            async {
                let id: VolumeId = request.get_ref().volume_id.parse()?;
                core.get_volume(&id).await
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
        let core = &self.core;
        reply(
            "CreateSnapshot",
            async {
                let plan = validate_create_snapshot(&req)?;
                let _name = core.lock(&format!("snapshot:{}", plan.name))?;
                let _source = core.lock(&plan.source.to_string())?;
                let snapshot = core.create_snapshot(&plan).await?;
                core.refresh_gauges_later();
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
        let core = &self.core;
        reply(
            "DeleteSnapshot",
            async {
                if req.snapshot_id.is_empty() {
                    return Err(ControllerError::Missing("snapshot_id"));
                }
                if let Some(id) = parse_known(&req.snapshot_id)? {
                    let _guard = core.lock(&id.to_string())?;
                    core.delete_snapshot(&id).await?;
                }
                core.refresh_gauges_later();
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
            self.core.list_snapshots(request.get_ref()).await,
        )
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        annotate(&request);
        let core = &self.core;
        reply(
            "GetSnapshot",
            async {
                let raw = &request.get_ref().snapshot_id;
                if raw.is_empty() {
                    return Err(ControllerError::Missing("snapshot_id"));
                }
                let id = parse_known(raw)?
                    .ok_or_else(|| ControllerError::SnapshotNotFound { id: raw.clone() })?;
                Ok(GetSnapshotResponse {
                    snapshot: Some(core.get_snapshot(&id).await?),
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
        let core = &self.core;
        reply(
            "ControllerExpandVolume",
            async {
                let plan = validate_expand(&req)?;
                let _guard = core.lock(&plan.id.to_string())?;
                let answer = core.expand_volume(&plan).await?;
                core.refresh_gauges_later();
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
