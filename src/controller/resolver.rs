//! Which initiator IQN a CSI node id stands for (DESIGN.md): a node id that is itself an
//! initiator name is used as is (standalone and lab use); otherwise it is a Kubernetes node
//! name and the node plugin has published the IQN in the Node's annotation
//! `<driver name>/initiator-iqn`.

use std::collections::HashMap;

use async_trait::async_trait;

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
    async fn initiator(&self, node_id: &str) -> Result<String, ResolveError>;
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
    async fn initiator(&self, node_id: &str) -> Result<String, ResolveError> {
        if is_initiator_name(node_id) {
            return Ok(node_id.to_string());
        }
        let Some((client, driver)) = &self.kube else {
            return Err(ResolveError::NotAnInitiator {
                node_id: node_id.to_string(),
            });
        };
        let value = kube::read_initiator(client, driver, node_id).await?;
        let value = value.trim().to_string();
        if !is_initiator_name(&value) {
            return Err(ResolveError::BadAnnotation {
                node_id: node_id.to_string(),
                value,
            });
        }
        Ok(value)
    }
}

/// A resolver from a fixed table, for tests: listed node ids map to their IQN, initiator
/// names pass through, anything else is an unknown node.
#[derive(Debug, Default, Clone)]
pub struct FakeResolver {
    /// Node id -> initiator IQN.
    nodes: HashMap<String, String>,
}

impl FakeResolver {
    /// A resolver knowing `nodes` (node id, IQN).
    pub fn new<I: IntoIterator<Item = (S, S)>, S: Into<String>>(nodes: I) -> Self {
        FakeResolver {
            nodes: nodes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[async_trait]
impl InitiatorResolver for FakeResolver {
    async fn initiator(&self, node_id: &str) -> Result<String, ResolveError> {
        if let Some(iqn) = self.nodes.get(node_id) {
            return Ok(iqn.clone());
        }
        if is_initiator_name(node_id) {
            return Ok(node_id.to_string());
        }
        Err(KubeError::NodeNotFound(node_id.to_string()).into())
    }
}

/// Whether `name` is an iSCSI name (RFC 3720 3.2.6.3): `iqn.YYYY-MM.reversed.domain[:any]`,
/// `eui.` + 16 hex digits, or `naa.` + 16 or 32 hex digits. The optional part of an IQN is
/// limited to characters safe as one configfs path component.
pub fn is_initiator_name(name: &str) -> bool {
    if name.len() > 223 {
        return false;
    }
    let hex = |s: &str, lens: &[usize]| {
        lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if let Some(rest) = name.strip_prefix("eui.") {
        return hex(rest, &[16]);
    }
    if let Some(rest) = name.strip_prefix("naa.") {
        return hex(rest, &[16, 32]);
    }
    let Some(rest) = name.strip_prefix("iqn.") else {
        return false;
    };
    let (head, tail) = match rest.split_once(':') {
        Some((h, t)) => (h, Some(t)),
        None => (rest, None),
    };
    let date_ok = head.len() > 8
        && head.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && head.as_bytes()[4] == b'-'
        && head.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
        && head.as_bytes()[7] == b'.';
    let domain_ok = date_ok
        && head[8..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let tail_ok = tail.is_none_or(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    });
    domain_ok && tail_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_iscsi_names() {
        for ok in [
            "iqn.1993-08.org.debian:01:5c8d368c2ff3",
            "iqn.2004-10.com.debian:lab",
            "iqn.2001-04.com.example",
            "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1",
            "eui.02004567A425678D",
            "naa.52004567BA64678D",
            "naa.62004567BA64678D0123456789ABCDEF",
        ] {
            assert!(is_initiator_name(ok), "{ok}");
        }
        for bad in [
            "",
            "node-1",
            "fake-node-id-123",
            "iqn.",
            "iqn.93-08.org.debian",
            "iqn.1993-08.",
            "iqn.1993-08.Org.debian",
            "iqn.1993-08.org.debian:",
            "iqn.1993-08.org.debian:a/b",
            "iqn.1993-08.org.debian:a b",
            "eui.0200",
            "naa.xyz",
            &format!("iqn.1993-08.org.debian:{}", "a".repeat(220)),
        ] {
            assert!(!is_initiator_name(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn standalone_accepts_only_initiator_names() {
        let r = NodeResolver::standalone();
        assert_eq!(
            r.initiator("iqn.2004-10.com.debian:lab").await.unwrap(),
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
        assert_eq!(r.initiator("n1").await.unwrap(), "iqn.2000-01.x:n1");
        assert!(matches!(
            r.initiator("n1").await,
            Err(ResolveError::BadAnnotation { .. })
        ));
        server.await.unwrap();
    }
}
