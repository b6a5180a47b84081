//! The one way this driver runs external tools (lvm, iscsiadm, tgtadm, mkfs, blkid, ...):
//! argv only, never a shell; `LC_ALL=C` so messages can be classified; a timeout; the child
//! killed when the caller is cancelled; an optional `nsenter` prefix to reach the host's
//! namespaces. Secret arguments are redacted wherever a command is displayed. The scripted
//! runner for tests is in [`fake`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

#[cfg(any(test, feature = "testing"))]
pub mod fake;

/// How long a tool may run when the caller sets nothing else.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A command line to run: program, arguments, which arguments are secret, optional stdin.
#[derive(Clone)]
pub struct Cmd {
    /// Program name (looked up in PATH) or absolute path.
    program: String,
    /// Arguments, in order.
    args: Vec<String>,
    /// Indexes into `args` that must never be displayed.
    secret: Vec<usize>,
    /// Bytes written to the child's stdin, if any.
    stdin: Option<Vec<u8>>,
    /// Upper bound on the run time.
    timeout: Duration,
}

impl Cmd {
    /// A command running `program` with no arguments yet.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            secret: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends an argument that is shown as `***` in logs and errors.
    pub fn secret_arg(mut self, arg: impl Into<String>) -> Self {
        self.secret.push(self.args.len());
        self.args.push(arg.into());
        self
    }

    /// Feeds `data` to the child's stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The real arguments (secrets included): for the runner and for fakes, never for logs.
    pub fn argv(&self) -> &[String] {
        &self.args
    }

    /// The bytes for stdin, if any.
    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    /// The time limit.
    pub fn time_limit(&self) -> Duration {
        self.timeout
    }

    /// The command line as it may be logged: secrets replaced by `***`.
    pub fn display(&self) -> String {
        let mut out = self.program.clone();
        for (i, a) in self.args.iter().enumerate() {
            out.push(' ');
            if self.secret.contains(&i) {
                out.push_str("***");
            } else {
                out.push_str(a);
            }
        }
        out
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// A successful run printing `stdout`.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Output {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// A failed run with `code` and `stderr`.
    pub fn failed(code: i32, stderr: impl Into<String>) -> Self {
        Output {
            code,
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }

    /// Whether the exit code is 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as error messages carry it: on one line, its last few hundred bytes.
    pub fn trimmed_stderr(&self) -> String {
        trim_stderr(&self.stderr)
    }
}

/// A command that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started (missing binary, permissions).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The redacted command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program ran past its time limit and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The redacted command line.
        command: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The program exited with a non-zero code.
    #[error("`{command}` failed with exit code {code}: {stderr}")]
    Failed {
        /// The redacted command line.
        command: String,
        /// Its exit code.
        code: i32,
        /// Trimmed standard error.
        stderr: String,
    },
}

impl ExecError {
    /// The error for `cmd` having produced the failed `out`.
    pub fn failed(cmd: &Cmd, out: &Output) -> Self {
        ExecError::Failed {
            command: cmd.display(),
            code: out.code,
            stderr: out.trimmed_stderr(),
        }
    }
}

/// Keeps error messages readable: the last few hundred bytes of stderr, on one line.
fn trim_stderr(stderr: &str) -> String {
    const MAX: usize = 600;
    let one_line = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() <= MAX {
        return one_line;
    }
    let mut start = one_line.len() - MAX;
    while !one_line.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &one_line[start..])
}

/// Runs commands. The real one spawns processes; the fake answers from a script.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion and returns what it produced, whatever its exit code.
    async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError>;

    /// Runs `cmd` and fails unless it exits 0.
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let out = self.output(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(ExecError::failed(cmd, &out))
        }
    }
}

/// A shared runner.
pub type SharedRunner = Arc<dyn Runner>;

/// Spawns real processes with tokio.
#[derive(Debug, Clone, Default)]
pub struct TokioRunner {
    /// Argv put in front of every command, e.g. `nsenter --target 1 --mount --`.
    prefix: Vec<String>,
}

impl TokioRunner {
    /// A runner that starts programs directly.
    pub fn new() -> Self {
        TokioRunner::default()
    }

    /// A runner that starts every program through `prefix` (e.g. nsenter into PID 1).
    pub fn with_prefix(prefix: Vec<String>) -> Self {
        TokioRunner { prefix }
    }

    /// The argv used to enter the host's mount namespace through PID 1.
    pub fn host_namespace_prefix() -> Vec<String> {
        [
            "nsenter", "--target", "1", "--mount", "--net", "--ipc", "--uts", "--",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }
}

#[async_trait]
impl Runner for TokioRunner {
    async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let (program, args): (&str, Vec<&str>) = match self.prefix.split_first() {
            Some((first, rest)) => (
                first,
                rest.iter()
                    .map(String::as_str)
                    .chain(std::iter::once(cmd.program()))
                    .chain(cmd.argv().iter().map(String::as_str))
                    .collect(),
            ),
            None => (
                cmd.program(),
                cmd.argv().iter().map(String::as_str).collect(),
            ),
        };
        let mut child = tokio::process::Command::new(program);
        child
            .args(&args)
            .env("LC_ALL", "C")
            // LVM warns on stderr about every inherited descriptor; keep stderr for errors.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(if cmd.stdin_data().is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = child.spawn().map_err(|source| ExecError::Spawn {
            command: cmd.display(),
            source,
        })?;
        if let (Some(data), Some(mut stdin)) = (cmd.stdin_data(), child.stdin.take()) {
            // A child that exits without reading stdin is not an error of ours.
            let _ = stdin.write_all(data).await;
        }
        let waited = tokio::time::timeout(cmd.time_limit(), child.wait_with_output()).await;
        let out = match waited {
            Ok(result) => result.map_err(|source| ExecError::Spawn {
                command: cmd.display(),
                source,
            })?,
            Err(_) => {
                crate::metrics::global().observe_command(cmd.program(), started.elapsed());
                tracing::warn!(command = %cmd.display(), "command timed out");
                return Err(ExecError::Timeout {
                    command: cmd.display(),
                    timeout: cmd.time_limit(),
                });
            }
        };
        let output = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let elapsed = started.elapsed();
        crate::metrics::global().observe_command(cmd.program(), elapsed);
        tracing::debug!(
            command = %cmd.display(),
            code = output.code,
            elapsed_ms = elapsed.as_millis() as u64,
            "ran command"
        );
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_redacts_secrets() {
        let cmd = Cmd::new("iscsiadm")
            .args(["-n", "node.session.auth.password", "-v"])
            .secret_arg("hunter2");
        assert_eq!(
            cmd.display(),
            "iscsiadm -n node.session.auth.password -v ***"
        );
        assert_eq!(format!("{cmd:?}"), cmd.display());
        assert_eq!(cmd.argv().last().map(String::as_str), Some("hunter2"));
    }

    #[tokio::test]
    async fn real_runner_reports_exit_code_and_stderr() {
        let r = TokioRunner::new();
        let out = r
            .output(&Cmd::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .await
            .unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr, "err\n");
        let err = r
            .run(&Cmd::new("sh").args(["-c", "echo boom >&2; exit 4"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exit code 4: boom"), "{err}");
    }

    #[tokio::test]
    async fn real_runner_feeds_stdin_and_times_out() {
        let r = TokioRunner::new();
        let out = r.run(&Cmd::new("cat").stdin("abc")).await.unwrap();
        assert_eq!(out.stdout, b"abc");
        let err = r
            .run(
                &Cmd::new("sleep")
                    .arg("5")
                    .timeout(Duration::from_millis(100)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }));
        let err = r.run(&Cmd::new("/nonexistent/tool")).await.unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[tokio::test]
    async fn real_runs_are_timed_by_tool() {
        TokioRunner::new()
            .run(&Cmd::new("/bin/true"))
            .await
            .unwrap();
        let text = crate::metrics::global().render();
        assert!(
            text.lines()
                .any(|l| l
                    .starts_with(r#"lvm_iscsi_csi_command_duration_seconds_count{tool="true"}"#)),
            "{text}"
        );
    }

    #[tokio::test]
    async fn prefix_is_prepended() {
        let r = TokioRunner::with_prefix(vec!["env".into()]);
        let out = r.run(&Cmd::new("echo").arg("hi")).await.unwrap();
        assert_eq!(out.stdout_str(), "hi\n");
    }

    #[test]
    fn long_stderr_is_trimmed_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let t = trim_stderr(&s);
        assert!(t.len() <= 604);
    }
}
