//! Kubernetes end to end (e2e/k8s): helm install -> StorageClass -> PVC -> Pod, against a
//! real cluster. Ignored by default; run it with a cluster and an image the nodes can pull:
//!
//! ```text
//! KUBECONFIG=~/.kube/config E2E_IMAGE=<registry>/lvm-iscsi-csi:<tag> \
//!   E2E_VALUES=my-values.yaml cargo test -p lvm-iscsi-csi-e2e --test k8s_e2e -- \
//!   --ignored --nocapture
//! ```
//!
//! Run that way without a reachable cluster it fails and says why; it never passes without
//! having done the work. See e2e/k8s/README.md for the host prerequisites.

use lvm_iscsi_csi_e2e::k8s::{cluster, helm, scenario, settings};

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... E2E_IMAGE=... cargo test -p lvm-iscsi-csi-e2e --test k8s_e2e -- --ignored"]
async fn volume_life_cycle_on_a_real_cluster() {
    let client = match settings::reachable_cluster().await {
        Ok(c) => c,
        Err(why) => panic!(
            "SKIPPED is not a pass: no reachable cluster (KUBECONFIG unset / API unreachable): {why}"
        ),
    };
    let settings = settings::Settings::from_env().unwrap_or_else(|e| panic!("not run: {e}"));
    let mut seen = scenario::Seen::default();
    let result = scenario::run(&client, &settings, &mut seen).await;
    // Host checks run even after a failure: a leak is worth knowing about either way.
    let hosts = scenario::no_leftovers_on_hosts(&client, &settings, &seen).await;
    let cleanup = if settings.keep {
        println!("E2E_KEEP=1: release `{}` left installed", helm::RELEASE);
        Ok(())
    } else {
        cleanup(&client, &settings).await
    };
    result.unwrap_or_else(|e| panic!("scenario failed: {e}"));
    hosts.unwrap_or_else(|e| panic!("leftovers on the hosts: {e}"));
    cleanup.unwrap_or_else(|e| panic!("cleanup failed: {e}"));
}

async fn cleanup(client: &kube::Client, s: &settings::Settings) -> Result<(), String> {
    cluster::delete_namespace(client, &s.work_namespace(), s.timeout).await?;
    helm::uninstall(s).await?;
    cluster::delete_namespace(client, &s.namespace, s.timeout).await
}
