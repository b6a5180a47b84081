//! Helpers shared by the lab tests (`tests/lab_*.rs`) and the lab programs (demo, benchmark)
//! that drive the real driver binary inside the lab guest: the environment e2e/lab-test.sh
//! sets, the driver as a child process, the generated gRPC clients over its unix socket (the
//! way the sidecars and kubelet talk to it), open-iscsi from the initiator side, and per-RPC
//! timings. [`node`] and [`storage`] look at a volume from the node's and the storage
//! side's point of view.

pub mod node;
pub mod storage;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::identity_client::IdentityClient;
use lvm_iscsi_csi::csi::ProbeRequest;
use lvm_iscsi_csi::domain::chap::Chap;
use tonic::transport::{Channel, Endpoint};

/// A variable the lab sets; a clear panic when it is missing.
pub fn lab_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through e2e/lab-test.sh (it needs the lab guest)")
    })
}

/// A variable with a default.
pub fn lab_env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Where logs and results go: `$CSI_LAB_OUT` (shared with the host), else the temp dir.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var("CSI_LAB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    std::fs::create_dir_all(&dir).expect("creating the output directory");
    dir
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Runs `argv` (never through a shell) and prints what it did.
pub fn sh(argv: &[&str]) -> Ran {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "$ {} -> {}{}",
        argv.join(" "),
        ran.code,
        match ran.stderr.trim() {
            "" => String::new(),
            e => format!(" ({e})"),
        }
    );
    ran
}

/// Runs `argv` and returns its stdout; panics unless it exits 0.
pub fn must(argv: &[&str]) -> String {
    let ran = sh(argv);
    assert!(
        ran.ok(),
        "{argv:?} failed with {}: {}",
        ran.code,
        ran.stderr.trim()
    );
    ran.stdout
}

/// This host's initiator name.
pub fn initiator_name() -> String {
    std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi")
        .expect("reading /etc/iscsi/initiatorname.iscsi")
        .lines()
        .find_map(|l| l.trim().strip_prefix("InitiatorName=").map(String::from))
        .expect("no InitiatorName= in /etc/iscsi/initiatorname.iscsi")
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The driver binary (`$CSI_BIN`) running in one mode; killed when dropped.
pub struct Driver {
    /// The process.
    child: Child,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Driver {
    /// Starts `$CSI_BIN args...`, logging to `<out>/<log_name>.log` (appended: restarts
    /// share one log), and waits for `socket` to appear.
    pub fn start(log_name: &str, args: &[String], socket: &Path) -> Driver {
        let bin = lab_env("CSI_BIN");
        let log = out_dir().join(format!("{log_name}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening the driver log");
        let err = file.try_clone().expect("cloning the log handle");
        let _ = std::fs::remove_file(socket);
        println!("$ {bin} {}", args.join(" "));
        let child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut d = Driver {
            child,
            socket: socket.to_path_buf(),
            log,
        };
        let up = wait_until(Duration::from_secs(60), || {
            socket.exists() || !matches!(d.child.try_wait(), Ok(None))
        });
        if !up || !socket.exists() {
            panic!(
                "the driver did not create {} ({:?}); its log ends with:\n{}",
                socket.display(),
                d.child.try_wait(),
                d.log_tail(40)
            );
        }
        d
    }

    /// The driver's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, the way a crash or an OOM kill ends it; waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A gRPC channel to a driver's unix socket.
pub async fn connect(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()))
}

/// Waits until Identity.Probe answers ready (the controller restores its exports first).
pub async fn wait_ready(channel: &Channel, timeout: Duration) -> Duration {
    let started = Instant::now();
    let mut identity = IdentityClient::new(channel.clone());
    loop {
        let answer = identity.probe(ProbeRequest {}).await;
        match answer {
            Ok(r) if r.get_ref().ready != Some(false) => return started.elapsed(),
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => panic!("Probe failed: {s}"),
        }
        assert!(started.elapsed() < timeout, "not ready after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per-RPC latencies, printed as a table at the end of a test.
#[derive(Default)]
pub struct Timings {
    /// Samples by name.
    samples: Mutex<BTreeMap<String, Vec<Duration>>>,
}

impl Timings {
    /// Awaits `fut`, recording how long it took under `name`.
    pub async fn time<T>(&self, name: &str, fut: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = fut.await;
        self.record(name, started.elapsed());
        out
    }

    /// Records one sample.
    pub fn record(&self, name: &str, d: Duration) {
        self.samples
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .push(d);
    }

    /// A table: name, count, min, median, max (milliseconds).
    pub fn report(&self, title: &str) -> String {
        let mut out = format!(
            "{title}\n{:<54} {:>3} {:>8} {:>8} {:>8}\n",
            "step", "n", "min ms", "med ms", "max ms"
        );
        for (name, v) in self.samples.lock().unwrap().iter() {
            let mut v = v.clone();
            v.sort();
            let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
            out.push_str(&format!(
                "{name:<54} {:>3} {:>8.0} {:>8.0} {:>8.0}\n",
                v.len(),
                ms(&v[0]),
                ms(&v[v.len() / 2]),
                ms(&v[v.len() - 1])
            ));
        }
        out
    }

    /// Prints the report and appends it to `<out>/<file>`.
    pub fn publish(&self, title: &str, file: &str) {
        let text = self.report(title);
        println!("{text}");
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_dir().join(file))
        {
            use std::io::Write;
            let _ = writeln!(f, "{text}");
        }
    }
}

/// open-iscsi, from the initiator side, through `iscsiadm` (records per target, portal and
/// iface: `iface` `None` is iscsiadm's `default`).
pub mod iscsi {
    use super::*;

    fn node<'a>(iqn: &'a str, portal: &'a str, iface: Option<&'a str>) -> Vec<&'a str> {
        let mut v = vec!["iscsiadm", "-m", "node", "-T", iqn, "-p", portal];
        if let Some(i) = iface {
            v.extend(["-I", i]);
        }
        v
    }

    /// SendTargets discovery: the target IQNs the portal shows this initiator.
    pub fn discover(portal: &str) -> Vec<String> {
        let ran = sh(&[
            "iscsiadm",
            "-m",
            "discovery",
            "-t",
            "sendtargets",
            "-p",
            portal,
        ]);
        ran.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect()
    }

    /// An iface named `name` that logs in as `initiator` (another node, as far as the
    /// target can tell).
    pub fn iface_as(name: &str, initiator: &str) {
        sh(&["iscsiadm", "-m", "iface", "-I", name, "-o", "new"]);
        must(&[
            "iscsiadm",
            "-m",
            "iface",
            "-I",
            name,
            "-o",
            "update",
            "-n",
            "iface.initiatorname",
            "-v",
            initiator,
        ]);
    }

    /// Creates the node record (fresh: an old one is deleted first) with `chap`, or with no
    /// authentication; `password` overrides the initiator password (to try a wrong one).
    pub fn record(
        iqn: &str,
        portal: &str,
        iface: Option<&str>,
        chap: Option<&Chap>,
        password: Option<&str>,
    ) {
        let base = node(iqn, portal, iface);
        sh(&[&base[..], &["-o", "delete"]].concat());
        must(&[&base[..], &["-o", "new"]].concat());
        let set = |k: &str, v: &str| {
            must(&[&base[..], &["-o", "update", "-n", k, "-v", v]].concat());
        };
        set("node.startup", "manual");
        // One attempt: a refused login must fail now, not after iscsid's retries.
        set("node.session.initial_login_retry_max", "1");
        match chap {
            Some(c) => {
                set("node.session.auth.authmethod", "CHAP");
                set("node.session.auth.username", &c.initiator.user);
                set(
                    "node.session.auth.password",
                    password.unwrap_or(&c.initiator.password),
                );
                set("node.session.auth.username_in", &c.target.user);
                set("node.session.auth.password_in", &c.target.password);
            }
            None => set("node.session.auth.authmethod", "None"),
        }
    }

    /// Logs in; the result says whether the target accepted.
    pub fn login(iqn: &str, portal: &str, iface: Option<&str>) -> Ran {
        sh(&[&node(iqn, portal, iface)[..], &["--login"]].concat())
    }

    /// Logs out (fine when there is no session).
    pub fn logout(iqn: &str, portal: &str, iface: Option<&str>) -> Ran {
        sh(&[&node(iqn, portal, iface)[..], &["--logout"]].concat())
    }

    /// Logs out and deletes the record.
    pub fn forget(iqn: &str, portal: &str, iface: Option<&str>) {
        logout(iqn, portal, iface);
        sh(&[&node(iqn, portal, iface)[..], &["-o", "delete"]].concat());
    }

    /// Whether a session to `iqn` exists.
    pub fn has_session(iqn: &str) -> bool {
        sh(&["iscsiadm", "-m", "session"])
            .stdout
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == iqn))
    }

    /// The udev by-path link of a LUN.
    pub fn by_path(portal: &str, iqn: &str, lun: &str) -> PathBuf {
        PathBuf::from(format!(
            "/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"
        ))
    }
}

/// Size of a block device in bytes.
pub fn device_size(dev: &Path) -> u64 {
    must(&["blockdev", "--getsize64", &dev.to_string_lossy()])
        .trim()
        .parse()
        .expect("blockdev --getsize64 prints a number")
}

/// Writes 1 MiB of fresh random data at 1 MiB into `written` (O_DIRECT) and reads it back
/// through `read_back` (O_DIRECT): the data went through the iSCSI path to the LV.
pub fn write_and_verify(written: &Path, read_back: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pattern = dir.path().join("pattern");
    let back = dir.path().join("back");
    let p = pattern.to_string_lossy().into_owned();
    let b = back.to_string_lossy().into_owned();
    must(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={p}"),
        "bs=1M",
        "count=1",
        "status=none",
    ]);
    must(&[
        "dd",
        &format!("if={p}"),
        &format!("of={}", written.display()),
        "bs=1M",
        "seek=1",
        "oflag=direct",
        "conv=fsync",
        "status=none",
    ]);
    must(&[
        "dd",
        &format!("if={}", read_back.display()),
        &format!("of={b}"),
        "bs=1M",
        "skip=1",
        "count=1",
        "iflag=direct",
        "status=none",
    ]);
    let (a, c) = (
        std::fs::read(&pattern).unwrap(),
        std::fs::read(&back).unwrap(),
    );
    assert!(
        a == c,
        "{} read back other bytes than were written to {}",
        read_back.display(),
        written.display()
    );
}

/// Creates `path` holding `content` (for key files).
pub fn write_file(path: &Path, content: &str) {
    use std::io::Write;
    let mut f = File::create(path).expect("creating a file");
    f.write_all(content.as_bytes()).expect("writing a file");
}
