//! The user's path, end to end: install the chart, claim a volume, write a file with a
//! known checksum from one node, read it back from another, optionally grow it, delete
//! everything, and check that no LV, target or iSCSI session is left on the hosts.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::cluster::{self, wait_for};
use super::helm;
use super::settings::Settings;

/// The claim's name.
const CLAIM: &str = "e2e-data";
/// The file the writer fills with `seq 1 LINES`.
const LINES: u32 = 200_000;

/// What the scenario learnt along the way, for the leak checks.
#[derive(Default)]
pub struct Seen {
    /// The volume handle (`<vg>/<lv>`) of the claim's PV.
    pub volume_handle: Option<String>,
    /// The PV's name.
    pub pv: Option<String>,
    /// Nodes that attached the volume.
    pub nodes: BTreeSet<String>,
    /// The node the controller runs on.
    pub storage_node: Option<String>,
}

/// The sha256 of `seq 1 LINES` (each number on its own line).
fn expected_checksum() -> String {
    let mut h = Sha256::new();
    for i in 1..=LINES {
        h.update(format!("{i}\n"));
    }
    hex::encode(h.finalize())
}

/// Installs the chart and runs the volume's life cycle.
pub async fn run(client: &Client, s: &Settings, seen: &mut Seen) -> Result<(), String> {
    cluster::ensure_namespace(client, &s.namespace).await?;
    cluster::ensure_namespace(client, &s.work_namespace()).await?;
    helm::uninstall(s).await?;
    println!("helm install {} ({})", helm::RELEASE, s.image());
    helm::install(s, false).await?;
    chap_key_survives_upgrade(client, s).await?;

    let sc: Api<StorageClass> = Api::all(client.clone());
    let class = sc
        .get(&s.storage_class)
        .await
        .map_err(|e| format!("StorageClass {}: {e}", s.storage_class))?;
    let driver = class.provisioner;
    let plugin_nodes = node_plugin_nodes(client, s).await?;
    wait_for(
        "every node plugin published its initiator IQN",
        s.timeout,
        || initiators_published(client, &driver, &plugin_nodes),
    )
    .await?;
    seen.storage_node = controller_node(client, s).await?;

    let ns = s.work_namespace();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": CLAIM},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": s.storage_class,
            "resources": {"requests": {"storage": "1Gi"}},
        }
    }))
    .map_err(|e| e.to_string())?;
    claims
        .create(&PostParams::default(), &claim)
        .await
        .map_err(|e| format!("create claim: {e}"))?;

    let first = plugin_nodes
        .first()
        .cloned()
        .ok_or("no node runs the node plugin")?;
    let second = plugin_nodes
        .iter()
        .find(|n| **n != first)
        .cloned()
        .unwrap_or_else(|| {
            println!("  only one node runs the node plugin: reading back on the same node");
            first.clone()
        });
    let want = expected_checksum();
    let script = format!("seq 1 {LINES} > /data/file && sync && sha256sum /data/file");
    let writer = cluster::shell_pod(
        "e2e-writer",
        &first,
        &s.workload_image,
        &script,
        Some(CLAIM),
    )?;
    let logs = cluster::run_pod(client, &ns, writer, s.timeout).await?;
    check_checksum("writer", &logs, &want)?;
    seen.nodes.insert(first.clone());

    let pv_name = claims
        .get(CLAIM)
        .await
        .map_err(|e| e.to_string())?
        .spec
        .and_then(|sp| sp.volume_name)
        .ok_or("the claim is not bound")?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await.map_err(|e| e.to_string())?;
    seen.volume_handle = pv.spec.and_then(|sp| sp.csi).map(|c| c.volume_handle);
    seen.pv = Some(pv_name.clone());
    println!("  volume {pv_name} = {:?}", seen.volume_handle);

    cluster::delete_pod(client, &ns, "e2e-writer", s.timeout).await?;
    wait_detached(client, &pv_name, s).await?;

    let reader = cluster::shell_pod(
        "e2e-reader",
        &second,
        &s.workload_image,
        "sha256sum /data/file",
        Some(CLAIM),
    )?;
    let logs = cluster::run_pod(client, &ns, reader, s.timeout).await?;
    check_checksum("reader", &logs, &want)?;
    seen.nodes.insert(second.clone());
    cluster::delete_pod(client, &ns, "e2e-reader", s.timeout).await?;
    wait_detached(client, &pv_name, s).await?;

    if s.expand {
        expand(client, s, &claims, &second).await?;
        wait_detached(client, &pv_name, s).await?;
    }

    claims
        .delete(CLAIM, &DeleteParams::default())
        .await
        .map_err(|e| format!("delete claim: {e}"))?;
    wait_for(&format!("PV {pv_name} deleted"), s.timeout, || async {
        let gone = pvs
            .get_opt(&pv_name)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    no_leftover_objects(client, &driver).await
}

/// The generated CHAP key is kept by `helm upgrade` (the chart's `lookup`).
async fn chap_key_survives_upgrade(client: &Client, s: &Settings) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    let name = format!("{}-chap", helm::FULLNAME);
    let key = |sec: Option<Secret>| {
        sec.and_then(|s| s.data)
            .and_then(|d| d.get("chapKey").cloned())
    };
    let before = key(secrets.get_opt(&name).await.map_err(|e| e.to_string())?);
    println!("helm upgrade (same values)");
    helm::install(s, true).await?;
    let after = key(secrets.get_opt(&name).await.map_err(|e| e.to_string())?);
    match (before, after) {
        (None, None) => {
            println!("  no chart-generated CHAP Secret (CHAP off or existingSecret): not checked");
            Ok(())
        }
        (b, a) if b == a => Ok(()),
        _ => Err(format!(
            "helm upgrade changed the CHAP key in Secret {name}"
        )),
    }
}

/// Nodes where a node plugin pod of the release runs.
async fn node_plugin_nodes(client: &Client, s: &Settings) -> Result<Vec<String>, String> {
    pods_of(client, s, "node").await
}

/// The node of the controller pod.
async fn controller_node(client: &Client, s: &Settings) -> Result<Option<String>, String> {
    Ok(pods_of(client, s, "controller").await?.into_iter().next())
}

async fn pods_of(client: &Client, s: &Settings, component: &str) -> Result<Vec<String>, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &s.namespace);
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
        helm::RELEASE
    );
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?;
    let mut nodes: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|p| p.spec.and_then(|sp| sp.node_name))
        .collect();
    nodes.sort();
    Ok(nodes)
}

async fn initiators_published(
    client: &Client,
    driver: &str,
    nodes: &[String],
) -> Result<Option<()>, String> {
    let api: Api<Node> = Api::all(client.clone());
    let key = lvm_iscsi_csi::kube::initiator_annotation(driver);
    for n in nodes {
        let node = api.get(n).await.map_err(|e| e.to_string())?;
        let iqn = node.metadata.annotations.and_then(|a| a.get(&key).cloned());
        if !iqn.is_some_and(|i| i.starts_with("iqn.") || i.starts_with("eui.")) {
            return Ok(None);
        }
    }
    Ok(Some(()))
}

fn check_checksum(who: &str, logs: &str, want: &str) -> Result<(), String> {
    if logs.split_whitespace().next() == Some(want) {
        Ok(())
    } else {
        Err(format!("{who} saw checksum {logs:?}, expected {want}"))
    }
}

/// Waits until no VolumeAttachment of `pv` is left (ControllerUnpublish done).
async fn wait_detached(client: &Client, pv: &str, s: &Settings) -> Result<(), String> {
    let api: Api<VolumeAttachment> = Api::all(client.clone());
    wait_for(&format!("{pv} detached"), s.timeout, || async {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let attached = list
            .items
            .iter()
            .any(|va| va.spec.source.persistent_volume_name.as_deref() == Some(pv));
        Ok((!attached).then_some(()))
    })
    .await
}

/// Grows the claim to 2Gi and checks the filesystem a new pod sees.
async fn expand(
    client: &Client,
    s: &Settings,
    claims: &Api<PersistentVolumeClaim>,
    node: &str,
) -> Result<(), String> {
    let patch = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
    claims
        .patch(CLAIM, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("grow claim: {e}"))?;
    let script = "df -k /data | awk 'NR==2 {print $2}'";
    let pod = cluster::shell_pod("e2e-grown", node, &s.workload_image, script, Some(CLAIM))?;
    let logs = cluster::run_pod(client, &s.work_namespace(), pod, s.timeout).await?;
    cluster::delete_pod(client, &s.work_namespace(), "e2e-grown", s.timeout).await?;
    let kib: u64 = logs
        .trim()
        .parse()
        .map_err(|e| format!("df said {logs:?}: {e}"))?;
    if kib < 3 * 512 * 1024 {
        return Err(format!(
            "filesystem is {kib} KiB after growing the claim to 2Gi"
        ));
    }
    Ok(())
}

/// No PV or VolumeAttachment of the driver is left.
async fn no_leftover_objects(client: &Client, driver: &str) -> Result<(), String> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let list = pvs
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let left: Vec<_> = list
        .items
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == driver)
        })
        .filter_map(|pv| pv.metadata.name.clone())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("PVs of {driver} left behind: {left:?}"))
    }
}

/// On the hosts: the LV is gone from the storage node, and no target or iSCSI session
/// names it anywhere. Volume ids are `<vg>/<lv>`; target IQNs and sessions carry the LV.
pub async fn no_leftovers_on_hosts(
    client: &Client,
    s: &Settings,
    seen: &Seen,
) -> Result<(), String> {
    let Some(handle) = &seen.volume_handle else {
        return Ok(());
    };
    let lv = handle.rsplit('/').next().unwrap_or(handle);
    let mut problems = Vec::new();
    let mut nodes: Vec<(String, &str)> = seen
        .nodes
        .iter()
        .map(|n| (n.clone(), "iscsiadm -m session 2>&1 || true"))
        .collect();
    if let Some(storage) = &seen.storage_node {
        nodes.push((
            storage.clone(),
            "lvs --noheadings -o lv_full_name 2>&1; ls /sys/kernel/config/target/iscsi 2>&1; \
             tgtadm --lld iscsi --mode target --op show 2>&1 | grep '^Target' || true",
        ));
    }
    for (i, (node, script)) in nodes.iter().enumerate() {
        let name = format!("e2e-host-check-{i}");
        let pod = cluster::host_pod(&name, node, &s.image(), script)?;
        let out = cluster::run_pod(client, &s.namespace, pod, s.timeout).await?;
        cluster::delete_pod(client, &s.namespace, &name, s.timeout).await?;
        if out.contains(lv) {
            problems.push(format!("{node} still shows {lv}:\n{out}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
