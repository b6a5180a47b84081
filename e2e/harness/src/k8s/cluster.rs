//! Small kube-rs helpers for the scenario: namespaces, one-shot pods and their logs, and
//! bounded waits (no sleeping on hope: every wait has a limit and says what it waited for).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Polls `check` every 2 s until it yields a value, fails, or `limit` passes.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            println!("  {what}: after {:.0?}", start.elapsed());
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Whether an API error is "not found".
pub fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404)
}

/// Creates namespace `name` (privileged pod security: the driver's pods need it) unless it
/// exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), String> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}
    }))
    .map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("create namespace {name}: {e}"))?;
    Ok(())
}

/// Deletes namespace `name` and waits until it is gone.
pub async fn delete_namespace(client: &Client, name: &str, limit: Duration) -> Result<(), String> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(format!("delete namespace {name}: {e}")),
        Ok(_) => {}
    }
    wait_for(&format!("namespace {name} gone"), limit, || async {
        let gone = api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await
}

/// Runs `pod` to completion and returns its logs; fails if it fails or never finishes.
pub async fn run_pod(
    client: &Client,
    ns: &str,
    pod: Pod,
    limit: Duration,
) -> Result<String, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = pod.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| format!("create pod {name}: {e}"))?;
    let phase = wait_for(&format!("pod {name} finished"), limit, || async {
        let p = api.get(&name).await.map_err(|e| e.to_string())?;
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await;
    let logs = api
        .logs(&name, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"));
    match phase {
        Ok(p) if p == "Succeeded" => Ok(logs),
        Ok(p) => Err(format!("pod {name} ended {p}; logs:\n{logs}")),
        Err(e) => Err(format!(
            "{e}; describe it: kubectl -n {ns} describe pod {name}"
        )),
    }
}

/// Deletes pod `name` and waits until it is gone (its volume unmounted by kubelet).
pub async fn delete_pod(
    client: &Client,
    ns: &str,
    name: &str,
    limit: Duration,
) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(format!("delete pod {name}: {e}")),
        Ok(_) => {}
    }
    wait_for(&format!("pod {name} gone"), limit, || async {
        let gone = api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await
}

/// A one-shot pod on `node` running `script` with `sh -c`, the claim (if any) at /data.
pub fn shell_pod(
    name: &str,
    node: &str,
    image: &str,
    script: &str,
    claim: Option<&str>,
) -> Result<Pod, String> {
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["sh", "-c", script],
            }],
        }
    });
    if let Some(claim) = claim {
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    serde_json::from_value(pod).map_err(|e| e.to_string())
}

/// A privileged one-shot pod on `node` running `script` in the host's namespaces (through
/// PID 1 with nsenter, from the driver image), to look at LVM, targets and sessions there.
pub fn host_pod(name: &str, node: &str, image: &str, script: &str) -> Result<Pod, String> {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "hostPID": true,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--",
                            "sh", "-c", script],
                "securityContext": {"privileged": true},
            }],
        }
    }))
    .map_err(|e| e.to_string())
}
