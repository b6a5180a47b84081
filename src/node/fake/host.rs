//! A simulated initiator host for the node service's tests: iscsiadm whose logins create
//! sessions and disks in a [`FakeSysfs`] tree (and device nodes in the [`FakeMounter`]),
//! with open-iscsi's exit codes and messages (CHAP checked against the target's password, a
//! dead portal, a database race that logs in anyway, an existing session), and blkid, mkfs
//! and the grow tools over an in-memory table of what each disk holds.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::Portal;
use crate::exec::fake::FakeRunner;
use crate::exec::{Cmd, ExecError, Output, Runner};
use crate::node::device::DevNum;

use super::{FakeMounter, FakeSysfs};

/// The state of the simulated host that iscsiadm and the tools act on: node records,
/// sessions, and what the targets out there export.
#[derive(Default)]
pub struct FakeHost {
    /// Node records: (target, portal) -> settings.
    pub records: BTreeMap<(String, String), HashMap<String, String>>,
    /// Sessions: (sid, target, portal).
    pub sessions: Vec<(u32, String, String)>,
    /// The last session id handed out.
    pub next_sid: u32,
    /// What each target exports: (lun, disk, dev).
    pub exports: HashMap<String, Vec<(u32, String, DevNum)>>,
    /// CHAP password each target expects.
    pub passwords: HashMap<String, String>,
    /// Portals that do not answer (login exit 8).
    pub dead_portals: Vec<String>,
    /// Filesystem on each disk node (absent: blank); `dos` stands for a partition table.
    pub content: HashMap<PathBuf, String>,
    /// Logins to come that fail with exit 6 (a database race), each after bringing the
    /// session up in the given state when it names one (iscsiadm logs in anyway).
    pub racing_logins: Vec<Option<&'static str>>,
    /// Logouts fail (exit 1).
    pub logout_fails: bool,
    /// resize2fs and xfs_growfs fail (exit 1).
    pub grow_fails: bool,
}

/// iscsiadm as the node service sees it: the fake, with each node record edit (`-o`)
/// taking a moment, and the most edits seen running at once.
pub struct FakeIscsiadm {
    /// The simulated iscsiadm.
    fake: Arc<FakeRunner>,
    /// Record edits running now.
    editing: AtomicUsize,
    /// The most record edits seen running at once.
    pub most_editing: AtomicUsize,
}

impl FakeIscsiadm {
    /// `fake`, with record edits taking a moment.
    pub fn new(fake: Arc<FakeRunner>) -> Self {
        FakeIscsiadm {
            fake,
            editing: AtomicUsize::new(0),
            most_editing: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Runner for FakeIscsiadm {
    async fn output(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        if !cmd.argv().iter().any(|a| a == "-o") {
            return self.fake.output(cmd).await;
        }
        let now = self.editing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_editing.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = self.fake.output(cmd).await;
        self.editing.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

fn arg_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// A new session to `t` through `p` with the target's disks; returns its id.
fn log_in(w: &mut FakeHost, t: &str, p: &str, sysfs: &FakeSysfs, mounter: &FakeMounter) -> u32 {
    w.next_sid += 1;
    let sid = w.next_sid;
    w.sessions.push((sid, t.to_string(), p.to_string()));
    let luns = w.exports.get(t).cloned().unwrap_or_default();
    let luns: Vec<(u32, &str, DevNum)> =
        luns.iter().map(|(l, d, n)| (*l, d.as_str(), *n)).collect();
    sysfs.add_session(sid, t, &p.parse::<Portal>().unwrap(), &luns);
    for (_, disk, num) in &luns {
        mounter.add_device(sysfs.dev_path(disk), *num);
    }
    sid
}

/// What iscsiadm answers to `argv` on host `w`.
fn iscsiadm(argv: &[String], w: &mut FakeHost, sysfs: &FakeSysfs, mounter: &FakeMounter) -> Output {
    let target = arg_after(argv, "-T").map(String::from);
    let portal = arg_after(argv, "-p").map(String::from);
    let has = |f: &str| argv.iter().any(|a| a == f);
    match (arg_after(argv, "-m"), target, portal) {
        (Some("session"), _, _) if w.sessions.is_empty() => {
            Output::failed(21, "iscsiadm: No active sessions.\n")
        }
        (Some("session"), _, _) => Output::ok(
            w.sessions
                .iter()
                .map(|(sid, t, p)| format!("tcp: [{sid}] {p},1 {t} (non-flash)\n"))
                .collect::<String>(),
        ),
        (Some("node"), Some(t), Some(p)) if arg_after(argv, "-o") == Some("new") => {
            w.records.insert((t, p), HashMap::new());
            Output::ok("New iSCSI node added\n")
        }
        (Some("node"), Some(t), Some(p)) if arg_after(argv, "-o") == Some("update") => {
            let Some(rec) = w.records.get_mut(&(t, p)) else {
                return Output::failed(21, "iscsiadm: No records found\n");
            };
            for pair in argv.windows(4) {
                if pair[0] == "-n" && pair[2] == "-v" {
                    rec.insert(pair[1].clone(), pair[3].clone());
                }
            }
            Output::ok("")
        }
        (Some("node"), Some(t), Some(p)) if has("--login") => {
            let Some(rec) = w.records.get(&(t.clone(), p.clone())) else {
                return Output::failed(21, "iscsiadm: No records found\n");
            };
            if !w.racing_logins.is_empty() {
                if let Some(state) = w.racing_logins.remove(0) {
                    if !w.sessions.iter().any(|(_, st, _)| *st == t) {
                        let sid = log_in(w, &t, &p, sysfs, mounter);
                        sysfs.set_session_state(sid, state);
                    }
                }
                return Output::failed(6, "iscsiadm: encountered iSCSI database failure\n");
            }
            if w.sessions.iter().any(|(_, st, sp)| *st == t && *sp == p) {
                return Output::failed(
                    15,
                    "iscsiadm: default: 1 session requested, but 1 already present.\n",
                );
            }
            if w.dead_portals.contains(&p) {
                return Output::failed(
                    8,
                    "iscsiadm: initiator reported error (8 - connection timed out)\n",
                );
            }
            if let Some(pw) = w.passwords.get(&t) {
                let chap =
                    rec.get("node.session.auth.authmethod").map(String::as_str) == Some("CHAP");
                if !chap || rec.get("node.session.auth.password") != Some(pw) {
                    return Output::failed(24, "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n");
                }
            }
            log_in(w, &t, &p, sysfs, mounter);
            Output::ok("Login successful.\n")
        }
        (Some("node"), Some(_), None) if has("--logout") && w.logout_fails => {
            Output::failed(1, "iscsiadm: logout failed\n")
        }
        (Some("node"), Some(t), None) if has("--logout") => {
            let gone: Vec<u32> = w
                .sessions
                .iter()
                .filter(|(_, st, _)| *st == t)
                .map(|(sid, _, _)| *sid)
                .collect();
            if gone.is_empty() {
                return Output::failed(21, "iscsiadm: No matching sessions found\n");
            }
            for sid in &gone {
                sysfs.remove_session(*sid);
            }
            w.sessions.retain(|(sid, _, _)| !gone.contains(sid));
            Output::ok("Logout successful.\n")
        }
        (Some("node"), Some(t), None) if arg_after(argv, "-o") == Some("delete") => {
            let before = w.records.len();
            w.records.retain(|(rt, _), _| *rt != t);
            if before == w.records.len() {
                Output::failed(21, "iscsiadm: No records found\n")
            } else {
                Output::ok("")
            }
        }
        _ => Output::failed(7, format!("unexpected iscsiadm call {argv:?}")),
    }
}

/// What blkid, mkfs, blockdev, resize2fs and xfs_growfs answer to `argv` on host `w`.
fn tools(argv: &[String], w: &mut FakeHost, sysfs: &FakeSysfs) -> Output {
    let dev = PathBuf::from(argv.last().cloned().unwrap_or_default());
    match argv[0].as_str() {
        "blkid" => match w.content.get(&dev).map(String::as_str) {
            None => Output::failed(2, ""),
            Some("dos") => Output::ok(format!("DEVNAME={}\nPTTYPE=dos\n", dev.display())),
            Some(fs) => Output::ok(format!(
                "DEVNAME={}\nTYPE={fs}\nUSAGE=filesystem\n",
                dev.display()
            )),
        },
        "mkfs.ext4" | "mkfs.xfs" => {
            w.content
                .insert(dev, argv[0].trim_start_matches("mkfs.").to_string());
            Output::ok("")
        }
        "blockdev" if argv[1] == "--setro" => {
            let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            sysfs.set_read_only(name);
            Output::ok("")
        }
        "resize2fs" | "xfs_growfs" if w.grow_fails => Output::failed(1, "Permission denied\n"),
        "blockdev" | "resize2fs" | "xfs_growfs" => Output::ok(""),
        _ => Output::failed(127, "no such tool"),
    }
}

/// iscsiadm acting on `host`, `sysfs` and `mounter`.
pub fn iscsiadm_runner(
    host: &Arc<Mutex<FakeHost>>,
    sysfs: &FakeSysfs,
    mounter: &Arc<FakeMounter>,
) -> Arc<FakeRunner> {
    let (w, s, m) = (host.clone(), sysfs.clone(), mounter.clone());
    Arc::new(FakeRunner::new(move |argv| {
        iscsiadm(argv, &mut lock(&w), &s, &m)
    }))
}

/// blkid, mkfs and the other tools acting on `host` and `sysfs`.
pub fn tools_runner(host: &Arc<Mutex<FakeHost>>, sysfs: &FakeSysfs) -> Arc<FakeRunner> {
    let (w, s) = (host.clone(), sysfs.clone());
    Arc::new(FakeRunner::new(move |argv| tools(argv, &mut lock(&w), &s)))
}

/// The host's state, even after a test thread panicked holding it.
fn lock(host: &Mutex<FakeHost>) -> std::sync::MutexGuard<'_, FakeHost> {
    host.lock().unwrap_or_else(|e| e.into_inner())
}
