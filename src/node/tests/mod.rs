//! RPC-level tests of the node service against fakes that behave like the real thing:
//! a scripted iscsiadm whose logins create sessions and disks in a fake sysfs tree, blkid
//! and mkfs over an in-memory device table, and the recording mounter.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tonic::{Code, Request};

use super::device::DevNum;
use super::fake::{FakeMounter, MountCall};
use super::iscsi::Iscsiadm;
use super::state::StateDir;
use super::testutil::FakeSysfs;
use super::{NodeConfig, NodeDeps, NodeService};
use crate::csi::node_server::Node;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use crate::csi::*;
use crate::domain::publish_context::{AUTH_METHOD, LUN, PORTALS, TARGET_IQN};
use crate::domain::Portal;
use crate::exec::{Cmd, ExecError, FakeRunner, Output, Runner};

pub const NODE_IQN: &str = "iqn.2004-10.com.debian:node1";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const PORTAL: &str = "10.0.0.5:3260";

/// A volume the fake storage node exports.
#[derive(Clone)]
struct Vol {
    id: &'static str,
    iqn: &'static str,
    lun: u32,
    disk: &'static str,
    dev: DevNum,
}

const A: Vol = Vol {
    id: "csivg/pvc-a",
    iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-a",
    lun: 0,
    disk: "sda",
    dev: DevNum::new(8, 0),
};
const B: Vol = Vol {
    id: "csivg/pvc-b",
    iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-b",
    lun: 1,
    disk: "sdb",
    dev: DevNum::new(8, 16),
};

/// The fake world iscsiadm and the tools act on.
#[derive(Default)]
struct World {
    /// Node records: (target, portal) -> settings.
    records: BTreeMap<(String, String), HashMap<String, String>>,
    /// Sessions: (sid, target, portal).
    sessions: Vec<(u32, String, String)>,
    next_sid: u32,
    /// What each target exports: (lun, disk, dev).
    exports: HashMap<String, Vec<(u32, String, DevNum)>>,
    /// CHAP password each target expects.
    passwords: HashMap<String, String>,
    /// Portals that do not answer (login exit 8).
    dead_portals: Vec<String>,
    /// Filesystem on each disk node (absent: blank); `dos` stands for a partition table.
    content: HashMap<PathBuf, String>,
    /// Logins to come that fail with exit 6 (a database race), each after bringing the
    /// session up in the given state when it names one (iscsiadm logs in anyway).
    racing_logins: Vec<Option<&'static str>>,
    /// Logouts fail (exit 1).
    logout_fails: bool,
    /// resize2fs and xfs_growfs fail (exit 1).
    grow_fails: bool,
}

/// iscsiadm as the node service sees it: the fake, with each node record edit (`-o`)
/// taking a moment, and the most edits seen running at once.
struct Timed {
    fake: Arc<FakeRunner>,
    editing: AtomicUsize,
    most_editing: AtomicUsize,
}

#[async_trait]
impl Runner for Timed {
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

struct Fixture {
    svc: NodeService,
    iscsi: Arc<FakeRunner>,
    timed: Arc<Timed>,
    tools: Arc<FakeRunner>,
    mounter: Arc<FakeMounter>,
    sysfs: FakeSysfs,
    world: Arc<Mutex<World>>,
    dir: tempfile::TempDir,
}

fn arg_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// A new session to `t` through `p` with the target's disks; returns its id.
fn log_in(w: &mut World, t: &str, p: &str, sysfs: &FakeSysfs, mounter: &FakeMounter) -> u32 {
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

fn iscsiadm(argv: &[String], w: &mut World, sysfs: &FakeSysfs, mounter: &FakeMounter) -> Output {
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

fn tools(argv: &[String], w: &mut World, sysfs: &FakeSysfs) -> Output {
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

impl Fixture {
    fn new() -> Self {
        Self::with_timeout(Duration::from_secs(2))
    }

    fn with_timeout(device_timeout: Duration) -> Self {
        let sysfs = FakeSysfs::new();
        let mounter = Arc::new(FakeMounter::new());
        let world = Arc::new(Mutex::new(World::default()));
        let iscsi = {
            let (w, s, m) = (world.clone(), sysfs.clone(), mounter.clone());
            Arc::new(FakeRunner::new(move |argv| {
                iscsiadm(argv, &mut w.lock().unwrap(), &s, &m)
            }))
        };
        let tools = {
            let (w, s) = (world.clone(), sysfs.clone());
            Arc::new(FakeRunner::new(move |argv| {
                tools(argv, &mut w.lock().unwrap(), &s)
            }))
        };
        let timed = Arc::new(Timed {
            fake: iscsi.clone(),
            editing: AtomicUsize::new(0),
            most_editing: AtomicUsize::new(0),
        });
        let dir = tempfile::tempdir().unwrap();
        let svc = NodeService::new(
            NodeConfig {
                node_id: "node1".into(),
                initiator_iqn: NODE_IQN.parse().unwrap(),
                max_volumes_per_node: 7,
                device_timeout,
            },
            NodeDeps {
                iscsiadm: Iscsiadm::new(timed.clone()),
                tools: tools.clone(),
                mounter: mounter.clone(),
                sysfs: sysfs.sysfs(),
                state: StateDir::new(dir.path().join("state")),
            },
        );
        let f = Fixture {
            svc,
            iscsi,
            timed,
            tools,
            mounter,
            sysfs,
            world,
            dir,
        };
        f.export(&A);
        f.export(&B);
        f
    }

    fn export(&self, v: &Vol) {
        let pw = crate::domain::chap::derive(KEY.as_bytes(), v.id, NODE_IQN)
            .initiator
            .password;
        let mut w = self.world.lock().unwrap();
        w.exports
            .insert(v.iqn.into(), vec![(v.lun, v.disk.into(), v.dev)]);
        w.passwords.insert(v.iqn.into(), pw);
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    fn disk(&self, v: &Vol) -> PathBuf {
        self.sysfs.dev_path(v.disk)
    }

    fn set_content(&self, v: &Vol, fs: &str) {
        let d = self.disk(v);
        self.world.lock().unwrap().content.insert(d, fs.into());
    }

    fn sessions(&self) -> Vec<String> {
        self.world
            .lock()
            .unwrap()
            .sessions
            .iter()
            .map(|s| s.1.clone())
            .collect()
    }

    fn records(&self) -> usize {
        self.world.lock().unwrap().records.len()
    }

    fn clear(&self) {
        self.iscsi.clear();
        self.tools.clear();
        self.mounter.clear();
    }

    /// Every command and syscall made so far.
    fn activity(&self) -> usize {
        self.iscsi.calls().len() + self.tools.calls().len() + self.mounter.calls().len()
    }

    fn stage_req(&self, v: &Vol, fs: &str, mode: Mode) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: v.id.into(),
            publish_context: ctx(v),
            staging_target_path: self.path(&format!("staging/{}", v.disk)),
            volume_capability: Some(mount_cap(fs, mode)),
            secrets: HashMap::from([(crate::domain::chap::SECRET_KEY.into(), KEY.into())]),
            volume_context: HashMap::new(),
        }
    }

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<(), Code> {
        self.svc
            .node_stage_volume(Request::new(req))
            .await
            .map(drop)
            .map_err(|s| s.code())
    }

    async fn unstage(&self, v: &Vol) -> Result<(), Code> {
        self.svc
            .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
                volume_id: v.id.into(),
                staging_target_path: self.path(&format!("staging/{}", v.disk)),
            }))
            .await
            .map(drop)
            .map_err(|s| s.code())
    }

    async fn publish(
        &self,
        v: &Vol,
        target: &str,
        cap: VolumeCapability,
        readonly: bool,
    ) -> Result<(), Code> {
        self.svc
            .node_publish_volume(Request::new(NodePublishVolumeRequest {
                volume_id: v.id.into(),
                publish_context: ctx(v),
                staging_target_path: self.path(&format!("staging/{}", v.disk)),
                target_path: self.path(target),
                volume_capability: Some(cap),
                readonly,
                secrets: HashMap::new(),
                volume_context: HashMap::new(),
            }))
            .await
            .map(drop)
            .map_err(|s| s.code())
    }

    async fn unpublish(&self, v: &Vol, target: &str) -> Result<(), Code> {
        self.svc
            .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
                volume_id: v.id.into(),
                target_path: self.path(target),
            }))
            .await
            .map(drop)
            .map_err(|s| s.code())
    }
}

fn ctx(v: &Vol) -> HashMap<String, String> {
    HashMap::from([
        (TARGET_IQN.to_string(), v.iqn.to_string()),
        (PORTALS.to_string(), PORTAL.to_string()),
        (LUN.to_string(), v.lun.to_string()),
        (AUTH_METHOD.to_string(), "CHAP".to_string()),
    ])
}

fn mount_cap(fs: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn mounted(f: &Fixture, path: &str) -> Option<super::mount::MountEntry> {
    super::mount::mount_at(&f.mounter.table(), Path::new(&f.path(path))).cloned()
}

mod expand;
mod publish;
mod stage;
mod stats;
