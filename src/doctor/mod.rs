//! `doctor`: checks this host for what a mode needs and prints one line per check, with a
//! fix for each problem. `doctor storage` looks at a storage node (LVM, the kernel target,
//! the portal port), `doctor compute` at a node that runs pods (iscsid, the initiator name,
//! iscsi_tcp, the kubelet directory). A failed check is blocking (non-zero exit); a warning
//! is not.
//!
//! Every check is a small function returning a [`Finding`]. The checks call the layers the
//! services use ([`crate::lvm::Lvm`], [`crate::node::iscsi`], the node's
//! [`Sysfs`], the export backends, [`crate::domain`]) and keep only what is doctor's own:
//! which checks run, their messages and fixes, the table, and the kernel tables nothing
//! else reads ([`procfs`]). Tools run through [`crate::exec::Runner`] and kernel tables are
//! read under injectable roots, so the checks are unit-tested with a fake runner and
//! temporary files.

pub mod compute;
mod distro;
mod port;
pub mod procfs;
pub mod storage;
#[cfg(test)]
mod testutil;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cli::{DoctorArgs, DoctorRole, IscsiadmMode};
use crate::exec::{Cmd, ExecError, Output, Runner, SharedRunner, TokioRunner};
use crate::node::device::Sysfs;

/// How long one tool may take before the check reports it as hanging.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// As the driver needs it.
    Ok,
    /// Works, but something deserves a look; not blocking.
    Warn,
    /// The driver cannot work until this is fixed.
    Fail,
}

impl Status {
    /// The word printed in the table.
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Short name of the check, e.g. `volume-group`.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (warnings and failures).
    pub fix: Option<String>,
}

impl Finding {
    /// A passed check.
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A non-blocking problem and its fix.
    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A blocking problem and its fix.
    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Whether any finding blocks the driver.
pub fn blocking(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.status == Status::Fail)
}

/// The findings as an aligned table: `CHECK  STATUS  DETAIL`, each fix on its own line
/// under its row.
pub fn render(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.name.len())
        .chain(std::iter::once("CHECK".len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<6}  DETAIL", "CHECK", "STATUS");
    for f in findings {
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {}",
            f.name,
            f.status.label(),
            f.detail
        );
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "{:<width$}  {:<6}  fix: {fix}", "", "");
        }
    }
    let (fails, warns) = findings.iter().fold((0, 0), |(f, w), x| match x.status {
        Status::Fail => (f + 1, w),
        Status::Warn => (f, w + 1),
        Status::Ok => (f, w),
    });
    let _ = writeln!(
        out,
        "{} checks: {} failed, {} warnings",
        findings.len(),
        fails,
        warns
    );
    out
}

/// A runner holding every tool to [`TOOL_TIMEOUT`], also those the layers run.
struct TimeLimited(SharedRunner);

#[async_trait]
impl Runner for TimeLimited {
    async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let limit = cmd.time_limit().min(TOOL_TIMEOUT);
        self.0.output(&cmd.clone().timeout(limit)).await
    }
}

/// What the checks may touch: a runner for tools and where the kernel tables live.
pub struct Host {
    /// Runs tools.
    pub runner: SharedRunner,
    /// Where procfs is mounted (`/proc`).
    pub proc_root: PathBuf,
    /// sysfs, read as the node reads it.
    pub sysfs: Sysfs,
}

impl Host {
    /// The real host: tools through `runner` (held to the doctor's time limit), `/proc` and
    /// `/sys`.
    pub fn real(runner: SharedRunner) -> Self {
        Host {
            runner: Arc::new(TimeLimited(runner)),
            proc_root: PathBuf::from("/proc"),
            sysfs: Sysfs::default(),
        }
    }

    /// A path under procfs (`rel` without a leading slash).
    fn proc(&self, rel: &str) -> PathBuf {
        self.proc_root.join(rel)
    }

    /// Whether kernel module `name` is loaded (or built in): `/sys/module/<name>` exists,
    /// or `/proc/modules` lists it.
    fn module_loaded(&self, name: &str) -> bool {
        self.sysfs.module_loaded(name)
            || read(&self.proc("modules")).is_ok_and(|m| procfs::module_listed(&m, name))
    }

    /// Whether `modprobe -n` finds module `name` for the running kernel; `None` when
    /// modprobe cannot run.
    async fn module_loadable(&self, name: &str) -> Option<bool> {
        let cmd = Cmd::new("modprobe").args(["-n", name]);
        match self.runner.output(&cmd).await {
            Ok(out) => Some(out.success()),
            Err(_) => None,
        }
    }
}

/// Tool output on one line (whitespace collapsed), so the table stays a table.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a text file, with the path in the error.
fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Runs the checks `args` asks for on this host.
pub async fn check(args: &DoctorArgs) -> Vec<Finding> {
    match &args.role {
        DoctorRole::Storage(a) => {
            let host = Host::real(Arc::new(TokioRunner::new()));
            storage::check(&host, a).await
        }
        DoctorRole::Compute(a) => {
            let runner = match a.iscsiadm_mode {
                IscsiadmMode::Host => {
                    TokioRunner::with_prefix(TokioRunner::host_namespace_prefix())
                }
                IscsiadmMode::Direct => TokioRunner::new(),
            };
            let host = Host::real(Arc::new(runner));
            compute::check(&host, a).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every command with the time limit it was given.
    struct Limits;

    #[async_trait]
    impl Runner for Limits {
        async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError> {
            Ok(Output::ok(format!("{:?}", cmd.time_limit())))
        }
    }

    #[tokio::test]
    async fn every_tool_is_held_to_the_doctors_time_limit() {
        let host = Host::real(Arc::new(Limits));
        let run = |cmd: Cmd| {
            let runner = host.runner.clone();
            async move { runner.output(&cmd).await.unwrap().stdout_str() }
        };
        assert_eq!(run(Cmd::new("vgs")).await, "30s");
        let short = Cmd::new("modprobe").timeout(Duration::from_secs(5));
        assert_eq!(run(short).await, "5s");
    }

    #[test]
    fn table_is_aligned_with_fixes_under_rows() {
        let f = vec![
            Finding::ok("iscsiadm", "no sessions"),
            Finding::fail(
                "iscsid",
                "iscsid is not running",
                "systemctl enable --now iscsid",
            ),
            Finding::warn(
                "kubelet-dir",
                "/var/lib/kubelet not found",
                "pass --kubelet-dir",
            ),
        ];
        let t = render(&f);
        let expected = "\
CHECK        STATUS  DETAIL
iscsiadm     ok      no sessions
iscsid       FAIL    iscsid is not running
                     fix: systemctl enable --now iscsid
kubelet-dir  warn    /var/lib/kubelet not found
                     fix: pass --kubelet-dir
3 checks: 1 failed, 1 warnings
";
        assert_eq!(t, expected);
        assert!(blocking(&f));
        assert!(!blocking(&f[2..]));
    }
}
