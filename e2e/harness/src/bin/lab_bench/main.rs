//! The benchmark: the driver against the raw-tool floor, in one lab guest (`e2e/bench.sh`
//! boots it and runs this with the release build of the driver).
//!
//! 1. attach: Create + ControllerPublish + NodeStage + NodePublish over gRPC, vs
//!    `e2e/bench/floor-attach.sh` doing the same work by hand; 5. detach likewise
//!    (`floor-detach.sh`). Alternating, median of `BENCH_RUNS` (5) each.
//! 2. `BENCH_CONCURRENT` (50) concurrent CreateVolume calls vs as many serial `lvcreate`.
//! 4. VmRSS of both binaries idle, then after `BENCH_LIVES` (100) volumes went through their
//!    whole life (`BENCH_PARALLEL` (8) at a time).
//! 3. controller start-up with `BENCH_RESTORE` (500) published volumes: one is created and
//!    published to a fake node through the driver, the others are made by hand with the very
//!    tags that publication wrote (the driver would need far longer than the lab's budget to
//!    make them one by one); the controller is killed with SIGKILL, its LIO configuration
//!    torn down as a reboot would, and restarted: time until Probe says ready, with the
//!    targets and ACLs counted in configfs.
//!
//! The driver runs with `--log-format json --log-level lvm_iscsi_csi=debug`, so every command
//! it runs is in its log with its duration and RPC: the per-RPC command profile of the
//! attach/detach runs goes into the report. Output: `$CSI_LAB_OUT/results.json` and
//! `results.md`.

mod bench_restore;
mod csi_calls;
mod lio;
mod profile;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::identity_client::IdentityClient;
use lvm_iscsi_csi::csi::ProbeRequest;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::csi_calls::{Csi, Vol};
use self::report::{ms, Pair, Results};
use lvm_iscsi_csi_e2e::lab;
use lvm_iscsi_csi_e2e::observe::{hex, quiet, LIO_ISCSI};

/// The portal on the guest's loopback.
const PORTAL: &str = "127.0.0.1:3260";
/// The driver's default target IQN prefix (its restore clears only targets under it).
const IQN_PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi:";
/// The driver's LIO HBA.
const DRIVER_HBA: &str = "iblock_3260";
/// The node the restored volumes are published to; it never logs in.
const FAKE_NODE: &str = "iqn.2004-10.com.example:restore-node";
/// Size of the attach/detach volumes.
const ATTACH_SIZE: i64 = 64 << 20;
/// Size of the many-volume phases (one 4 MiB extent).
const SMALL: i64 = 4 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut f = std::fs::File::open("/dev/urandom").expect("opening /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut buf).expect("reading /dev/urandom");
    hex(&buf)
}

/// VmRSS (and VmHWM) of a process, KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs a floor script with `env`; (stdout, milliseconds).
fn floor(script: &Path, args: &[&str], env: &[(&str, String)]) -> Result<(String, f64), String> {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let took = ms(started.elapsed());
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        took,
    ))
}

/// Fails unless `argv` exits 0.
fn must(argv: &[&str]) -> Result<String, String> {
    let (code, out, err) = quiet(argv)?;
    if code != 0 {
        return Err(format!("{} exited {code}: {}", argv.join(" "), err.trim()));
    }
    Ok(out)
}

/// The benchmark's state.
struct Bench {
    /// gRPC clients.
    csi: Csi,
    /// The controller process.
    controller: lab::Driver,
    /// The node process.
    node: lab::Driver,
    /// The controller's arguments (for restarts).
    controller_args: Vec<String>,
    /// The controller's socket.
    controller_sock: PathBuf,
    /// Volume group and thin pool.
    vg: String,
    /// Thin pool.
    pool: String,
    /// The floor scripts' directory.
    floor_dir: PathBuf,
    /// Scratch directory (sockets, key, mount points).
    run: PathBuf,
    /// What was measured.
    results: Results,
}

impl Bench {
    fn take_samples(&self) -> BTreeMap<String, Vec<f64>> {
        let mut s = self.csi.samples.lock().expect("samples lock");
        std::mem::take(&mut *s)
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(ms).collect()))
            .collect()
    }

    /// One attach and detach by hand; (attach ms, detach ms). The LV is removed afterwards.
    fn floor_once(&self, i: usize) -> Result<(f64, f64), String> {
        let name = format!("floor-a-{i}");
        let dir = self.run.join("kubelet").join(&name);
        let env = vec![
            ("VG", self.vg.clone()),
            ("POOL", self.pool.clone()),
            ("NAME", name.clone()),
            ("SIZE", format!("{ATTACH_SIZE}b")),
            (
                "IQN",
                format!("iqn.2003-01.org.example.floor:{}.{name}", self.vg),
            ),
            ("PORTAL", PORTAL.to_string()),
            ("INITIATOR", self.csi.node_id.clone()),
            ("CHAP_USER", format!("floor-{}", random_hex(6))),
            ("CHAP_PASS", random_hex(12)),
            ("CHAP_USER_IN", format!("floor-t-{}", random_hex(6))),
            ("CHAP_PASS_IN", random_hex(12)),
            (
                "STAGING",
                dir.join("globalmount").to_string_lossy().into_owned(),
            ),
            (
                "TARGET",
                dir.join("pod/mount").to_string_lossy().into_owned(),
            ),
        ];
        let (disk, attach) = floor(&self.floor_dir.join("floor-attach.sh"), &[], &env)?;
        let mut env = env;
        env.push(("DISK", disk));
        let (_, detach) = floor(&self.floor_dir.join("floor-detach.sh"), &[], &env)?;
        must(&["lvremove", "-qy", &format!("{}/{name}", self.vg)])?;
        Ok((attach, detach))
    }

    /// One attach, detach and delete through the driver; (attach ms, detach ms).
    async fn driver_once(&mut self, i: usize) -> Result<(f64, f64), String> {
        let started = Instant::now();
        let v = self
            .csi
            .attach(&format!("bench-a-{i}"), ATTACH_SIZE)
            .await?;
        let attach = ms(started.elapsed());
        let started = Instant::now();
        self.csi.detach(&v).await?;
        let detach = ms(started.elapsed());
        self.csi.delete(&v).await?;
        Ok((attach, detach))
    }

    /// (1) and (5).
    async fn attach_detach(&mut self, runs: usize) -> Result<(), String> {
        // One unmeasured round first: the first mkfs, login and lvcreate of a boot pay for
        // loading binaries and caches.
        let (a, d) = self.floor_once(runs)?;
        println!("  warm-up floor : attach {a:>6.0} ms, detach {d:>6.0} ms (not counted)");
        let (a, d) = self.driver_once(runs).await?;
        println!("  warm-up driver: attach {a:>6.0} ms, detach {d:>6.0} ms (not counted)");
        self.take_samples();
        let (c0, n0) = (
            profile::mark(&self.controller.log),
            profile::mark(&self.node.log),
        );
        for i in 0..runs {
            // Alternate who goes first, so that drift in the guest's speed hits both alike.
            for driver_turn in [i % 2 == 1, i % 2 == 0] {
                let (a, d) = if driver_turn {
                    self.driver_once(i).await?
                } else {
                    self.floor_once(i)?
                };
                let p = if driver_turn { "driver" } else { "floor" };
                println!("  run {i} {p:<6}: attach {a:>6.0} ms, detach {d:>6.0} ms");
                let (att, det) = (&mut self.results.attach, &mut self.results.detach);
                if driver_turn {
                    att.driver.push(a);
                    det.driver.push(d);
                } else {
                    att.floor.push(a);
                    det.floor.push(d);
                }
            }
        }
        self.results.rpcs = self.take_samples();
        let mut prof = profile::profile(
            &self.controller.log,
            c0,
            profile::mark(&self.controller.log),
        );
        prof.extend(profile::profile(
            &self.node.log,
            n0,
            profile::mark(&self.node.log),
        ));
        self.results.profile = prof;
        Ok(())
    }

    /// (2): returns the created volumes (they live on in phase 4).
    async fn concurrent_creates(&mut self, n: usize) -> Result<Vec<Vol>, String> {
        let (_, serial) = floor(
            &self.floor_dir.join("floor-lvcreate.sh"),
            &[
                &self.vg,
                &self.pool,
                &format!("{SMALL}b"),
                "floor-c-",
                &n.to_string(),
            ],
            &[],
        )?;
        println!("  {n} serial lvcreate by hand: {serial:.0} ms");
        let names: Vec<String> = (1..=n)
            .map(|i| format!("{}/floor-c-{i}", self.vg))
            .collect();
        let mut argv = vec!["lvremove", "-qy"];
        argv.extend(names.iter().map(String::as_str));
        must(&argv)?;

        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 1..=n {
            let mut csi = self.csi.clone();
            tasks.spawn(async move { csi.create(&format!("bench-c-{i}"), SMALL).await });
        }
        let mut vols = Vec::new();
        let mut failures = 0;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(v)) => vols.push(v),
                Ok(Err(e)) => {
                    failures += 1;
                    println!("  failed: {e}");
                }
                Err(e) => {
                    failures += 1;
                    println!("  task failed: {e}");
                }
            }
        }
        let concurrent = ms(started.elapsed());
        println!("  {n} concurrent CreateVolume: {concurrent:.0} ms, {failures} failed");
        self.results.creates = Pair {
            floor: vec![serial],
            driver: vec![concurrent],
        };
        self.results.creates_n = n;
        self.results.create_failures = failures;
        self.take_samples();
        Ok(vols)
    }

    /// (4): the rest of the lives, `parallel` at a time, starting with `vols` (already
    /// created); `more` further volumes are created on the way.
    async fn lives(&mut self, vols: Vec<Vol>, more: usize, parallel: usize) -> usize {
        let limit = Arc::new(Semaphore::new(parallel.max(1)));
        let mut tasks = JoinSet::new();
        let existing = vols.into_iter().map(Some);
        let fresh = (0..more).map(|_| None);
        for (i, v) in existing.chain(fresh).enumerate() {
            let mut csi = self.csi.clone();
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let mut v = match v {
                    Some(v) => v,
                    None => csi.create(&format!("bench-l-{i}"), SMALL).await?,
                };
                let outcome = life(&mut csi, &mut v).await;
                if outcome.is_err() {
                    csi.clean_up(&v).await;
                }
                outcome
            });
        }
        let mut failures = 0;
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r) {
                failures += 1;
                println!("  a life failed: {e}");
            }
        }
        self.take_samples();
        failures
    }
}

/// The rest of a created volume's life: attach, detach, delete.
async fn life(csi: &mut Csi, v: &mut Vol) -> Result<(), String> {
    csi.attach_existing(v).await?;
    csi.detach(v).await?;
    csi.delete(v).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let t0 = Instant::now();
    let runs = env_usize("BENCH_RUNS", 5);
    let concurrent = env_usize("BENCH_CONCURRENT", 50);
    let restore_n = env_usize("BENCH_RESTORE", 500);
    let lives = env_usize("BENCH_LIVES", 100);
    let parallel = env_usize("BENCH_PARALLEL", 8);
    let vg = lab::lab_env_or("CSI_VG", "csivg");
    let pool = lab::lab_env_or("CSI_THINPOOL", "pool0");
    let out = lab::out_dir();
    let floor_dir = PathBuf::from(lab::lab_env("BENCH_FLOOR_DIR"));
    let run = std::env::temp_dir().join("lvm-iscsi-csi-bench");
    std::fs::create_dir_all(&run).expect("creating the scratch directory");

    let key = random_hex(32);
    let key_file = run.join("chap.key");
    std::fs::write(&key_file, &key).expect("writing the CHAP key file");
    let node1 = lab::initiator_name();
    let controller_sock = run.join("controller.sock");
    let node_sock = run.join("node.sock");
    let logging = [
        "--log-format=json".to_string(),
        "--log-level=info,lvm_iscsi_csi=debug".to_string(),
    ];
    let mut controller_args = vec![
        "controller".to_string(),
        format!("--endpoint=unix://{}", controller_sock.display()),
        "--standalone".into(),
        "--target-backend=lio".into(),
        format!("--portal={PORTAL}"),
        format!("--default-volume-group={vg}"),
        format!("--chap-key-file={}", key_file.display()),
        // The restore phase's volumes add up to more than the pool (they are never written).
        "--thin-overprovision-ratio=8".into(),
    ];
    controller_args.extend(logging.iter().cloned());
    let mut node_args = vec![
        "node".to_string(),
        format!("--endpoint=unix://{}", node_sock.display()),
        "--standalone".into(),
        "--iscsiadm-mode=direct".into(),
        format!("--node-id={node1}"),
    ];
    node_args.extend(logging.iter().cloned());
    let controller = lab::Driver::start("controller", &controller_args, &controller_sock);
    let node = lab::Driver::start("node", &node_args, &node_sock);
    let ctl_channel = lab::connect(&controller_sock).await;
    let node_channel = lab::connect(&node_sock).await;
    lab::wait_ready(&ctl_channel, Duration::from_secs(120)).await;
    lab::wait_ready(&node_channel, Duration::from_secs(120)).await;

    let csi = Csi {
        ctl: lvm_iscsi_csi::csi::controller_client::ControllerClient::new(ctl_channel),
        node: lvm_iscsi_csi::csi::node_client::NodeClient::new(node_channel),
        key,
        node_id: node1,
        pool: pool.clone(),
        kubelet: run.join("kubelet"),
        samples: Default::default(),
        leaked_sessions: Default::default(),
    };
    let mut b = Bench {
        csi,
        controller,
        node,
        controller_args,
        controller_sock,
        vg,
        pool,
        floor_dir,
        run,
        results: Results::default(),
    };
    let facts: HashMap<&str, serde_json::Value> = HashMap::from([
        (
            "kernel",
            json!(must(&["uname", "-r"]).unwrap_or_default().trim()),
        ),
        (
            "cpus",
            json!(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)),
        ),
        ("driver", json!(lab::lab_env("CSI_BIN"))),
        ("runs", json!(runs)),
        ("parallel", json!(parallel)),
    ]);
    b.results.facts = facts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();

    let outcome = run_all(&mut b, runs, concurrent, lives, parallel, restore_n).await;
    b.results
        .phases
        .push(("total".into(), t0.elapsed().as_secs_f64()));
    let md = b.results.markdown();
    let js = serde_json::to_string_pretty(&b.results.json()).unwrap_or_default();
    let _ = std::fs::write(out.join("results.md"), &md);
    let _ = std::fs::write(out.join("results.json"), js + "\n");
    println!("\n{md}");
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("bench FAILED: {e}");
            println!("controller log ends with:\n{}", b.controller.log_tail(10));
            println!("node log ends with:\n{}", b.node.log_tail(10));
            ExitCode::FAILURE
        }
    }
}

/// The phases, in an order that keeps the many-volume work from slowing the others: LVM gets
/// slower as the VG holds more LVs, so the restore phase's 500 come last.
async fn run_all(
    b: &mut Bench,
    runs: usize,
    concurrent: usize,
    lives: usize,
    parallel: usize,
    restore_n: usize,
) -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c, n) = (rss(b.controller.pid()).0, rss(b.node.pid()).0);
    b.results.rss_idle = (c, n);
    println!("idle VmRSS: controller {c} KiB, node {n} KiB");

    let phase = |b: &mut Bench, name: &str, started: Instant| {
        let s = started.elapsed().as_secs_f64();
        println!("  ({name}: {s:.0} s)");
        b.results.phases.push((name.to_string(), s));
    };
    println!("(1, 5) attach and detach, driver vs floor, {runs} runs each");
    let t = Instant::now();
    b.attach_detach(runs).await?;
    phase(b, "attach/detach", t);

    println!("(2) {concurrent} CreateVolume");
    let t = Instant::now();
    let vols = b.concurrent_creates(concurrent).await?;
    phase(b, "creates", t);

    let rest = lives.saturating_sub(runs);
    let more = rest.saturating_sub(vols.len());
    let vols: Vec<Vol> = vols.into_iter().take(rest).collect();
    println!(
        "(4) {rest} more volume lives ({} created above, {more} new), {parallel} at a time",
        vols.len()
    );
    let t = Instant::now();
    let failures = b.lives(vols, more, parallel).await;
    b.results.lives = runs + rest;
    b.results.life_failures = failures;
    b.results.leaked_sessions = b
        .csi
        .leaked_sessions
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c, n) = (rss(b.controller.pid()), rss(b.node.pid()));
    b.results.rss_after = (c.0, n.0);
    println!(
        "VmRSS after {} lives: controller {} KiB (peak {}), node {} KiB (peak {})",
        runs + rest,
        c.0,
        c.1,
        n.0,
        n.1
    );
    b.results.facts.insert(
        "peak_rss_kib".into(),
        json!({"controller": c.1, "node": n.1}),
    );
    phase(b, "lives", t);

    println!("(3) controller start-up with {restore_n} published volumes");
    let t = Instant::now();
    b.restore(restore_n).await?;
    phase(b, "restore", t);
    Ok(())
}
