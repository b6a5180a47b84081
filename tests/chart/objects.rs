//! Every rendered document as its Kubernetes type: k8s-openapi for the built-in kinds, a
//! checked shape for VolumeSnapshotClass and ServiceMonitor (CRDs). Unknown kinds fail. A document must also
//! survive a round trip through its type unchanged, so a misspelt or misplaced field (which
//! serde would silently drop) fails too.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A VolumeSnapshotClass (snapshot.storage.k8s.io/v1), field by field.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    /// Always snapshot.storage.k8s.io/v1.
    pub api_version: String,
    /// Always VolumeSnapshotClass.
    pub kind: String,
    /// Standard metadata.
    pub metadata: ObjectMeta,
    /// The CSI driver name.
    pub driver: String,
    /// Delete or Retain.
    pub deletion_policy: DeletionPolicy,
    /// Opaque parameters for CreateSnapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// What happens to the snapshot content when the VolumeSnapshot goes.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the snapshot.
    Delete,
    /// Keep the snapshot.
    Retain,
}

/// A prometheus-operator ServiceMonitor (monitoring.coreos.com/v1), the fields we render.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    /// Always monitoring.coreos.com/v1.
    pub api_version: String,
    /// Always ServiceMonitor.
    pub kind: String,
    /// Standard metadata.
    pub metadata: ObjectMeta,
    /// Which Services and ports to scrape.
    pub spec: ServiceMonitorSpec,
}

/// The spec of a [`ServiceMonitor`].
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services to scrape, by label.
    pub selector: LabelSelector,
    /// The ports and paths to scrape.
    pub endpoints: Vec<ScrapeEndpoint>,
}

/// One scraped port of a [`ServiceMonitor`].
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScrapeEndpoint {
    /// The Service port's name.
    pub port: String,
    /// The HTTP path.
    pub path: String,
    /// The scrape interval.
    pub interval: String,
}

/// One rendered object, typed.
#[derive(Debug)]
pub enum Object {
    /// v1 ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// v1 Secret.
    Secret(Secret),
    /// v1 Service.
    Service(Service),
    /// apps/v1 Deployment.
    Deployment(Deployment),
    /// apps/v1 DaemonSet.
    DaemonSet(DaemonSet),
    /// rbac/v1 ClusterRole.
    ClusterRole(ClusterRole),
    /// rbac/v1 ClusterRoleBinding.
    ClusterRoleBinding(ClusterRoleBinding),
    /// rbac/v1 Role.
    Role(Role),
    /// rbac/v1 RoleBinding.
    RoleBinding(RoleBinding),
    /// storage/v1 StorageClass.
    StorageClass(StorageClass),
    /// storage/v1 CSIDriver.
    CSIDriver(CSIDriver),
    /// snapshot.storage.k8s.io/v1 VolumeSnapshotClass.
    VolumeSnapshotClass(VolumeSnapshotClass),
    /// monitoring.coreos.com/v1 ServiceMonitor.
    ServiceMonitor(ServiceMonitor),
}

/// Parses a document into its type, checking nothing was lost on the way.
pub fn parse(doc: &Value) -> Result<Object, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    Ok(match (api_version, kind) {
        ("v1", "ServiceAccount") => Object::ServiceAccount(typed(doc)?),
        ("v1", "Secret") => Object::Secret(typed(doc)?),
        ("v1", "Service") => Object::Service(typed(doc)?),
        ("apps/v1", "Deployment") => Object::Deployment(typed(doc)?),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(typed(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(typed(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(typed(doc)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(typed(doc)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(typed(doc)?),
        ("storage.k8s.io/v1", "StorageClass") => Object::StorageClass(typed(doc)?),
        ("storage.k8s.io/v1", "CSIDriver") => Object::CSIDriver(typed(doc)?),
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass") => {
            Object::VolumeSnapshotClass(typed(doc)?)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(typed(doc)?),
        other => return Err(format!("unexpected kind {other:?}")),
    })
}

/// Deserializes `doc` as `T` and checks the round trip kept every field and value.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let value: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    missing(doc, &back, String::new(), &mut lost);
    if lost.is_empty() {
        Ok(value)
    } else {
        Err(format!(
            "fields unknown to the type, or changed by it: {lost:?}"
        ))
    }
}

/// Collects the paths of `original` that `back` lacks or holds with another value.
fn missing(original: &Value, back: &Value, path: String, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => missing(v, w, p, out),
                    // An explicit null is the same as an absent field.
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                missing(v, w, format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_is_caught() {
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "x", "lables": {"a": "b"}}
        });
        let err = parse(&doc).unwrap_err();
        assert!(err.contains(".metadata.lables"), "{err}");
    }
}
