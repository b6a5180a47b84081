//! The Kubernetes API, only for the one thing CSI does not carry: a node's initiator IQN.
//! The node plugin writes it as an annotation on its Node object; the controller reads it
//! in ControllerPublishVolume when the node id is a node name rather than an IQN.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// Failures talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error(
        "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG): {0}"
    )]
    Config(String),
    /// The Node object does not exist.
    #[error("Kubernetes Node `{0}` not found")]
    NodeNotFound(String),
    /// The Node has no initiator annotation (its node plugin has not started yet).
    #[error(
        "Kubernetes Node `{node}` has no `{key}` annotation: is the node plugin running on it?"
    )]
    NoInitiator {
        /// Node name.
        node: String,
        /// The annotation key.
        key: String,
    },
    /// Any other API error.
    #[error("Kubernetes API call failed: {0}")]
    Api(#[from] kube::Error),
}

/// The annotation key holding a node's initiator IQN, named after the driver.
pub fn initiator_annotation(driver_name: &str) -> String {
    format!("{driver_name}/initiator-iqn")
}

/// A client from the in-cluster service account or KUBECONFIG.
pub async fn client() -> Result<Client, KubeError> {
    Client::try_default()
        .await
        .map_err(|e| KubeError::Config(e.to_string()))
}

/// Reads `node`'s initiator IQN annotation.
pub async fn read_initiator(
    client: &Client,
    driver_name: &str,
    node: &str,
) -> Result<String, KubeError> {
    let key = initiator_annotation(driver_name);
    let api: Api<Node> = Api::all(client.clone());
    let found = api
        .get_opt(node)
        .await?
        .ok_or_else(|| KubeError::NodeNotFound(node.to_string()))?;
    found
        .metadata
        .annotations
        .and_then(|mut a| a.remove(&key))
        .ok_or(KubeError::NoInitiator {
            node: node.to_string(),
            key,
        })
}

/// Writes `node`'s initiator IQN annotation (a merge patch), retrying with backoff.
pub async fn write_initiator(
    client: &Client,
    driver_name: &str,
    node: &str,
    iqn: &str,
) -> Result<(), KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({
        "metadata": { "annotations": { initiator_annotation(driver_name): iqn } }
    });
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 6 => {
                tracing::warn!(node, attempt, error = %e, "annotating the Node failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    fn mock() -> (
        Client,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(svc, "default"), handle)
    }

    #[tokio::test]
    async fn reads_the_annotation() {
        let (client, mut handle) = mock();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
            let node = serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": { "name": "n1", "annotations": { "d.io/initiator-iqn": "iqn.2000-01.x:n1" } }
            });
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&node).unwrap(),
            )));
        });
        assert_eq!(
            read_initiator(&client, "d.io", "n1").await.unwrap(),
            "iqn.2000-01.x:n1"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn missing_annotation_names_the_key() {
        let (client, mut handle) = mock();
        tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a request");
            let node =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&node).unwrap(),
            )));
        });
        let err = read_initiator(&client, "d.io", "n1").await.unwrap_err();
        assert!(err.to_string().contains("d.io/initiator-iqn"), "{err}");
    }

    #[tokio::test]
    async fn writes_a_merge_patch() {
        let (client, mut handle) = mock();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::PATCH);
            let body = req.into_body().collect_bytes().await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                v["metadata"]["annotations"]["d.io/initiator-iqn"],
                "iqn.2000-01.x:n1"
            );
            let node =
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&node).unwrap(),
            )));
        });
        write_initiator(&client, "d.io", "n1", "iqn.2000-01.x:n1")
            .await
            .unwrap();
        server.await.unwrap();
    }

    /// In a pod the client speaks HTTPS to the apiserver: building it needs a rustls crypto
    /// provider, whose absence is a panic at start-up (seen on the lab's real cluster).
    #[tokio::test]
    async fn an_https_client_builds() {
        let config = kube::Config::new("https://10.96.0.1:443".parse().unwrap());
        Client::try_from(config).expect("an HTTPS client");
    }
}
