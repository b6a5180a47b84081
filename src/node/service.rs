//! `impl Node`: each RPC records its volume id on the RPC's span ([`crate::rpc`]), validates
//! the request (INVALID_ARGUMENT before any lock or side effect), takes the per-volume guard
//! (ABORTED when busy) and calls one operation of [`super::stage`], [`super::publish`],
//! [`super::stats`] or [`super::expand`], then replies. NodeGetVolumeStats only observes and
//! takes no guard.

use async_trait::async_trait;
use tonic::{Request, Response, Status};

use crate::csi::node_server::Node;
use crate::csi::node_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::*;
use crate::metrics;
use crate::rpc::annotate;

use super::expand::validate_expand;
use super::publish::{validate_publish, validate_unpublish};
use super::stage::{validate_stage, validate_unstage};
use super::stats::validate_stats;
use super::{NodeError, NodeService};

/// The capabilities advertised.
const CAPABILITIES: [rpc::Type; 4] = [
    rpc::Type::StageUnstageVolume,
    rpc::Type::GetVolumeStats,
    rpc::Type::VolumeCondition,
    rpc::Type::ExpandVolume,
];

/// [`crate::rpc::reply`] for node errors (which also tells `?` in the RPCs' blocks what
/// to convert to).
fn reply<T>(rpc: &'static str, result: Result<T, NodeError>) -> Result<Response<T>, Status> {
    crate::rpc::reply(rpc, result)
}

#[async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        let result = async {
            let stage = validate_stage(&req, &self.config.initiator_iqn)?;
            let _guard = self.lock(&req.volume_id)?;
            self.staging().stage(&stage).await
        }
        .await;
        if result.is_err() {
            metrics::global().stage_failed();
        }
        metrics::global().set_iscsi_sessions(self.sysfs.session_count());
        reply(
            "NodeStageVolume",
            result.map(|()| NodeStageVolumeResponse {}),
        )
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        let result = async {
            let unstage = validate_unstage(&req)?;
            let _guard = self.lock(&req.volume_id)?;
            self.staging().unstage(&unstage).await
        }
        .await;
        metrics::global().set_iscsi_sessions(self.sysfs.session_count());
        reply(
            "NodeUnstageVolume",
            result.map(|()| NodeUnstageVolumeResponse {}),
        )
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "NodePublishVolume",
            async {
                let publish = validate_publish(&req)?;
                let _guard = self.lock(&req.volume_id)?;
                self.publishing().publish(&publish).await?;
                Ok(NodePublishVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "NodeUnpublishVolume",
            async {
                let unpublish = validate_unpublish(&req)?;
                let _guard = self.lock(&req.volume_id)?;
                self.publishing().unpublish(&unpublish).await?;
                Ok(NodeUnpublishVolumeResponse {})
            }
            .await,
        )
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "NodeGetVolumeStats",
            async { self.volume_stats().stats(&validate_stats(&req)?).await }.await,
        )
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        annotate(&request);
        let req = request.into_inner();
        reply(
            "NodeExpandVolume",
            async {
                let expand = validate_expand(&req)?;
                let _guard = self.lock(&req.volume_id)?;
                let size = self.expansion().expand(&expand).await?;
                Ok(NodeExpandVolumeResponse {
                    capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
                })
            }
            .await,
        )
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .into_iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.config.node_id.clone(),
            max_volumes_per_node: self.config.max_volumes_per_node,
            accessible_topology: None,
        }))
    }
}
