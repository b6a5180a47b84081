//! Runs Helm's own engine (tests/chart/helm_sdk.py over the helm-python-sdk package) on
//! the chart: `helm lint --strict` and a client-side dry-run install per case, in one
//! Python process for all cases.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

/// How to get what this needs; printed whenever Python or the package is missing.
pub const INSTALL_HINT: &str = "the chart tests need Python 3.10+ with helm-python-sdk: run \
     `e2e/python-env.sh` (it makes the project's virtualenv e2e/out/venv from \
     tests/chart/requirements.txt, which these tests then use; e2e/test-all.sh runs it), or \
     set HELM_SDK_PYTHON to an interpreter that has the package";

/// The project's virtualenv that e2e/python-env.sh makes (relative to the repository root).
const VENV_PYTHON: &str = "e2e/out/venv/bin/python";

/// One set of values to lint and render.
pub struct Case {
    /// Short name, used in messages.
    pub name: &'static str,
    /// Values files (relative to the repository root), merged left to right.
    pub values_files: Vec<PathBuf>,
    /// Values applied last (like `--set-json`).
    pub values: Value,
}

impl Case {
    /// A case from inline values only.
    pub fn inline(name: &'static str, values: Value) -> Self {
        Case {
            name,
            values_files: Vec::new(),
            values,
        }
    }
}

/// `helm lint`'s report.
#[derive(Debug, Deserialize)]
pub struct LintReport {
    /// Findings: severity 1 info, 2 warning, 3 error.
    #[serde(default)]
    pub messages: Vec<LintMessage>,
    /// Fatal lint errors.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One lint finding.
#[derive(Debug, Deserialize)]
pub struct LintMessage {
    /// 1 info, 2 warning, 3 error.
    pub severity: u8,
    /// The file it is about.
    pub path: String,
    /// What is wrong.
    pub error: String,
}

impl LintReport {
    /// What `helm lint --strict` fails on: any warning or error.
    pub fn failures(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.severity >= 2)
            .map(|m| format!("{}: {}", m.path, m.error))
            .chain(self.errors.iter().cloned())
            .collect()
    }
}

/// What Helm made of one case.
#[derive(Debug, Deserialize)]
pub struct Rendered {
    /// The case's name.
    pub name: String,
    /// The lint report (absent when the values were rejected before linting).
    pub lint: Option<LintReport>,
    /// Rendered NOTES.txt.
    #[serde(default)]
    pub notes: String,
    /// Every manifest document, as JSON.
    #[serde(default)]
    pub documents: Vec<Value>,
    /// Helm's error, when the install was refused (schema, `fail`, template error).
    pub error: Option<String>,
}

impl Rendered {
    /// The documents of a successful, lint-clean render; panics with Helm's words otherwise.
    pub fn ok(&self) -> &[Value] {
        if let Some(e) = &self.error {
            panic!("case `{}`: helm refused to render: {e}", self.name);
        }
        let failures = self.lint.as_ref().map(LintReport::failures);
        if let Some(f) = failures.filter(|f| !f.is_empty()) {
            panic!("case `{}`: helm lint --strict failed: {f:#?}", self.name);
        }
        &self.documents
    }
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter that runs helm_sdk.py: `HELM_SDK_PYTHON`, else the project's virtualenv
/// when e2e/python-env.sh has made it, else `python3` from the PATH.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM_SDK_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(VENV_PYTHON);
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Lints and renders every case with Helm; fails (never skips) when Helm is unavailable.
pub fn render_all(cases: &[Case]) -> Vec<Rendered> {
    let root = repo_root();
    let input: Vec<Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "values_files": c.values_files.iter().map(|f| root.join(f)).collect::<Vec<_>>(),
                "values": c.values,
            })
        })
        .collect();
    let python = python();
    let mut child = Command::new(&python)
        .arg(root.join("tests/chart/helm_sdk.py"))
        .arg("batch")
        .arg(root.join("deploy/helm/lvm-iscsi-csi"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}` ({e}): {INSTALL_HINT}", python.display()));
    let stdin = serde_json::to_vec(&input).expect("cases serialize");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&stdin)
        .expect("write the cases to helm_sdk.py");
    let out = child.wait_with_output().expect("wait for helm_sdk.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helm_sdk.py failed with `{}` ({}): {stderr}\n{INSTALL_HINT}",
        python.display(),
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("helm_sdk.py printed no valid JSON ({e}); stderr: {stderr}"))
}
