//! Which initiator IQN a CSI node id stands for (DESIGN.md): a node id that is itself an
//! initiator name is used as is (standalone and lab use); otherwise it is a Kubernetes node
//! name and the node plugin has published the IQN in the Node's annotation
//! `<driver name>/initiator-iqn`.

use async_trait::async_trait;

use crate::domain::Iqn;
use crate::kube::{self, KubeError};

/// Why a node's initiator is not known.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Standalone mode has no API server to ask, and the node id is not an initiator name.
    #[error("node id {node_id:?} is not an initiator name (iqn., eui., naa.) and --standalone has no Kubernetes API to look it up")]
    NotAnInitiator {
        /// The node id.
        node_id: String,
    },
    /// The Kubernetes lookup failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The annotation holds something that is not an initiator name.
    #[error("node {node_id:?} announces {value:?} as its initiator name, which is not a valid iqn./eui./naa. name")]
    BadAnnotation {
        /// The node id.
        node_id: String,
        /// The annotation's value.
        value: String,
    },
}

/// Finds a node's initiator IQN.
#[async_trait]
pub trait InitiatorResolver: Send + Sync {
    /// The initiator name of node `node_id`.
    async fn initiator(&self, node_id: &str) -> Result<Iqn, ResolveError>;
}

/// The real resolver: node ids that are initiator names pass through; others are looked up
/// on the Kubernetes Node object, unless running standalone.
pub struct NodeResolver {
    /// The API client and the driver name (annotation key), or `None` when standalone.
    kube: Option<(::kube::Client, String)>,
}

impl NodeResolver {
    /// Without Kubernetes: only initiator names are accepted as node ids.
    pub fn standalone() -> Self {
        NodeResolver { kube: None }
    }

    /// Looking node names up through `client`, in the annotation of driver `driver_name`.
    pub fn kubernetes(client: ::kube::Client, driver_name: String) -> Self {
        NodeResolver {
            kube: Some((client, driver_name)),
        }
    }
}

#[async_trait]
impl InitiatorResolver for NodeResolver {
    async fn initiator(&self, node_id: &str) -> Result<Iqn, ResolveError> {
        if let Ok(iqn) = node_id.parse() {
            return Ok(iqn);
        }
        let Some((client, driver)) = &self.kube else {
            return Err(ResolveError::NotAnInitiator {
                node_id: node_id.to_string(),
            });
        };
        let value = kube::read_initiator(client, driver, node_id).await?;
        let value = value.trim();
        value.parse().map_err(|_| ResolveError::BadAnnotation {
            node_id: node_id.to_string(),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_accepts_only_initiator_names() {
        let r = NodeResolver::standalone();
        assert_eq!(
            r.initiator("iqn.2004-10.com.debian:lab")
                .await
                .unwrap()
                .as_str(),
            "iqn.2004-10.com.debian:lab"
        );
        let err = r.initiator("worker-1").await.unwrap_err();
        assert!(matches!(err, ResolveError::NotAnInitiator { .. }));
        assert!(err.to_string().contains("--standalone"), "{err}");
    }

    #[tokio::test]
    async fn kubernetes_lookup_checks_the_annotation() {
        use ::kube::client::Body;
        use http::{Request, Response};
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let r = NodeResolver::kubernetes(::kube::Client::new(svc, "default"), "d.io".into());
        let server = tokio::spawn(async move {
            for value in ["iqn.2000-01.x:n1\n", "not-an-iqn"] {
                let (req, send) = handle.next_request().await.expect("a request");
                assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
                let node = serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": { "name": "n1", "annotations": { "d.io/initiator-iqn": value } }
                });
                send.send_response(Response::new(Body::from(
                    serde_json::to_vec(&node).unwrap(),
                )));
            }
        });
        assert_eq!(
            r.initiator("n1").await.unwrap().as_str(),
            "iqn.2000-01.x:n1"
        );
        assert!(matches!(
            r.initiator("n1").await,
            Err(ResolveError::BadAnnotation { .. })
        ));
        server.await.unwrap();
    }
}
