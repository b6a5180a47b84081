//! What the Kubernetes scenario needs from its environment, and whether a cluster answers.

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

/// The scenario's settings, from environment variables (see e2e/k8s/README.md).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `E2E_IMAGE`: the driver image every node can pull, `repository:tag`.
    pub image_repository: String,
    /// The tag part of `E2E_IMAGE`.
    pub image_tag: String,
    /// `E2E_VALUES`: extra values files for the chart (storage node, volume group...),
    /// separated by `:`.
    pub values_files: Vec<PathBuf>,
    /// `E2E_NAMESPACE`: where the driver is installed (default `lvm-iscsi-csi-e2e`); the
    /// workload runs in `<namespace>-work`.
    pub namespace: String,
    /// `E2E_STORAGE_CLASS`: the StorageClass to claim from (default the chart's
    /// `lvm-iscsi`).
    pub storage_class: String,
    /// `E2E_WORKLOAD_IMAGE`: a small image with sh, seq, sha256sum and df (default
    /// `busybox:1.36`).
    pub workload_image: String,
    /// Grow the claim and check the filesystem grew (on unless `E2E_EXPAND=0`).
    pub expand: bool,
    /// `E2E_KEEP=1`: leave the release installed afterwards (debugging).
    pub keep: bool,
    /// `E2E_TIMEOUT_SECS`: the limit of each wait (default 300).
    pub timeout: Duration,
    /// `KUBECONFIG`, handed to Helm too.
    pub kubeconfig: Option<PathBuf>,
}

impl Settings {
    /// Reads the settings; `Err` names what is missing.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let image = var("E2E_IMAGE").ok_or(
            "E2E_IMAGE is unset: build the image (docker build -t <registry>/lvm-iscsi-csi:<tag> .), \
             push it where the nodes can pull it, and set E2E_IMAGE=<registry>/lvm-iscsi-csi:<tag>",
        )?;
        let (image_repository, image_tag) = split_image(&image)?;
        let timeout = match var("E2E_TIMEOUT_SECS") {
            Some(s) => s
                .parse()
                .map(Duration::from_secs)
                .map_err(|e| format!("E2E_TIMEOUT_SECS={s}: {e}"))?,
            None => Duration::from_secs(300),
        };
        Ok(Settings {
            image_repository,
            image_tag,
            values_files: var("E2E_VALUES")
                .map(|v| v.split(':').map(PathBuf::from).collect())
                .unwrap_or_default(),
            namespace: var("E2E_NAMESPACE").unwrap_or_else(|| "lvm-iscsi-csi-e2e".into()),
            storage_class: var("E2E_STORAGE_CLASS").unwrap_or_else(|| "lvm-iscsi".into()),
            workload_image: var("E2E_WORKLOAD_IMAGE").unwrap_or_else(|| "busybox:1.36".into()),
            expand: var("E2E_EXPAND").as_deref() != Some("0"),
            keep: var("E2E_KEEP").as_deref() == Some("1"),
            timeout,
            kubeconfig: var("KUBECONFIG").map(PathBuf::from),
        })
    }

    /// The workload namespace.
    pub fn work_namespace(&self) -> String {
        format!("{}-work", self.namespace)
    }

    /// The driver image as one reference.
    pub fn image(&self) -> String {
        format!("{}:{}", self.image_repository, self.image_tag)
    }
}

/// `registry:5000/a/b:tag` -> (`registry:5000/a/b`, `tag`).
fn split_image(image: &str) -> Result<(String, String), String> {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => Ok((
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        )),
        None => Err(format!("E2E_IMAGE={image} has no tag")),
    }
}

/// A client for a cluster that answers, or why there is none.
pub async fn reachable_cluster() -> Result<Client, String> {
    let client = Client::try_default().await.map_err(|e| {
        format!(
            "no usable kubeconfig (KUBECONFIG={}): {e}",
            std::env::var("KUBECONFIG").unwrap_or_else(|_| "unset".into())
        )
    })?;
    let version = tokio::time::timeout(Duration::from_secs(15), client.apiserver_version())
        .await
        .map_err(|_| "the API server did not answer within 15 s".to_string())?
        .map_err(|e| format!("the API server is unreachable: {e}"))?;
    println!("cluster: Kubernetes {}", version.git_version);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_image_references() {
        assert_eq!(
            split_image("reg:5000/a/lvm-iscsi-csi:v1").unwrap(),
            ("reg:5000/a/lvm-iscsi-csi".into(), "v1".into())
        );
        assert!(split_image("reg:5000/a/lvm-iscsi-csi").is_err());
    }
}
