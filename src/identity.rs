//! The Identity service, shared by both modes: plugin name and version, capabilities, and a
//! Probe that reports real readiness (the mode decides what "ready" means).

use std::sync::Arc;

use async_trait::async_trait;
use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::{
    plugin_capability, GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse,
    GetPluginInfoRequest, GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};

/// What a Probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Ready,
    /// Still starting (e.g. restoring exports); the CO should wait.
    Starting,
    /// Cannot serve; the message says what is wrong and what to do.
    Broken(String),
}

/// Checks whether this plugin can serve right now.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// Looks at the real dependencies (VG, target backend, iscsid...).
    async fn check(&self) -> Health;
}

/// The Identity service.
pub struct IdentityService {
    /// Driver name (GetPluginInfo).
    name: String,
    /// What this mode checks in Probe.
    readiness: Arc<dyn Readiness>,
    /// Whether to advertise the Controller service.
    controller: bool,
}

impl IdentityService {
    /// The identity of a plugin named `name`; `controller` says whether this process also
    /// serves the Controller service.
    pub fn new(name: impl Into<String>, readiness: Arc<dyn Readiness>, controller: bool) -> Self {
        IdentityService {
            name: name.into(),
            readiness,
            controller,
        }
    }
}

#[async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type as Svc;
        use plugin_capability::volume_expansion::Type as Expansion;
        // Volumes grow while published and in use: ControllerExpandVolume, then
        // NodeExpandVolume on the node that has it staged.
        let mut capabilities = vec![PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: Expansion::Online as i32,
                },
            )),
        }];
        if self.controller {
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: Svc::ControllerService as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        match self.readiness.check().await {
            Health::Ready => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Health::Starting => Ok(Response::new(ProbeResponse { ready: Some(false) })),
            Health::Broken(why) => {
                tracing::warn!(%why, "probe failed");
                Err(Status::failed_precondition(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Health);

    #[async_trait]
    impl Readiness for Fixed {
        async fn check(&self) -> Health {
            self.0.clone()
        }
    }

    async fn probe(h: Health) -> Result<Option<bool>, tonic::Code> {
        let s = IdentityService::new("d", Arc::new(Fixed(h)), true);
        s.probe(Request::new(ProbeRequest {}))
            .await
            .map(|r| r.into_inner().ready)
            .map_err(|e| e.code())
    }

    #[tokio::test]
    async fn probe_reflects_readiness() {
        assert_eq!(probe(Health::Ready).await, Ok(Some(true)));
        assert_eq!(probe(Health::Starting).await, Ok(Some(false)));
        assert_eq!(
            probe(Health::Broken("vg".into())).await,
            Err(tonic::Code::FailedPrecondition)
        );
    }

    async fn capabilities(controller: bool) -> Vec<plugin_capability::Type> {
        let s = IdentityService::new("d", Arc::new(Fixed(Health::Ready)), controller);
        s.get_plugin_capabilities(Request::new(GetPluginCapabilitiesRequest {}))
            .await
            .unwrap()
            .into_inner()
            .capabilities
            .into_iter()
            .filter_map(|c| c.r#type)
            .collect()
    }

    #[tokio::test]
    async fn online_expansion_in_both_modes_controller_service_in_one() {
        use plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
        let online = Type::VolumeExpansion(VolumeExpansion {
            r#type: volume_expansion::Type::Online as i32,
        });
        let controller = Type::Service(Service {
            r#type: service::Type::ControllerService as i32,
        });
        assert_eq!(capabilities(true).await, [online, controller]);
        assert_eq!(capabilities(false).await, [online]);
    }

    #[tokio::test]
    async fn info_has_name_and_version() {
        let s = IdentityService::new("drv", Arc::new(Fixed(Health::Ready)), false);
        let info = s
            .get_plugin_info(Request::new(GetPluginInfoRequest {}))
            .await
            .unwrap();
        assert_eq!(info.get_ref().name, "drv");
        assert_eq!(info.get_ref().vendor_version, env!("CARGO_PKG_VERSION"));
    }
}
