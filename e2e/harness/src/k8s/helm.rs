//! The chart installed with Helm's own engine (tests/chart/helm_sdk.py), no helm binary.

use std::path::{Path, PathBuf};

use super::settings::Settings;

/// The release name the scenario installs.
pub const RELEASE: &str = "e2e";

/// The chart's object name prefix for [`RELEASE`] (its `fullname` helper).
pub const FULLNAME: &str = "e2e-lvm-iscsi-csi";

/// The repository root (this crate lives in e2e/harness).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `helm_sdk.py <verb>` for the release; `image_values` pins the driver image.
async fn helm(settings: &Settings, verb: &str, image_values: Option<&Path>) -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(root().join("tests/chart/helm_sdk.py")).arg(verb);
    if verb != "uninstall" {
        cmd.arg(root().join("deploy/helm/lvm-iscsi-csi"));
    }
    cmd.args(["--release", RELEASE, "--namespace", &settings.namespace])
        .args(["--timeout", &settings.timeout.as_secs().to_string()]);
    if let Some(k) = &settings.kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    if verb != "uninstall" {
        for f in settings
            .values_files
            .iter()
            .map(PathBuf::as_path)
            .chain(image_values)
        {
            cmd.arg("-f").arg(f);
        }
    }
    let out = cmd.output().await.map_err(|e| {
        format!("cannot run {python}: {e} (pip install -r tests/chart/requirements.txt)")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "helm {verb} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes the values pinning the image under test (JSON is YAML).
fn image_values(settings: &Settings, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("image-values.yaml");
    let values = serde_json::json!({"image": {
        "repository": settings.image_repository,
        "tag": settings.image_tag,
        "pullPolicy": "IfNotPresent",
    }});
    std::fs::write(&path, values.to_string()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// `helm install --wait` (or `upgrade --wait` when `upgrade`).
pub async fn install(settings: &Settings, upgrade: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let values = image_values(settings, dir.path())?;
    let verb = if upgrade { "upgrade" } else { "install" };
    helm(settings, verb, Some(&values)).await
}

/// `helm uninstall --wait` (a missing release is fine).
pub async fn uninstall(settings: &Settings) -> Result<(), String> {
    helm(settings, "uninstall", None).await
}
