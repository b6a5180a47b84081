//! RPC-level tests of the node service against fakes that behave like the real thing
//! ([`super::fake`]): a simulated host whose iscsiadm logins create sessions and disks in a
//! fake sysfs tree, blkid and mkfs over an in-memory device table, and the recording mounter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Code, Request};

use super::device::DevNum;
use super::fake::{
    iscsiadm_runner, tools_runner, FakeHost, FakeIscsiadm, FakeMounter, FakeSysfs, MountCall,
};
use super::iscsi::Iscsiadm;
use super::state::StateDir;
use super::{NodeConfig, NodeDeps, NodeService};
use crate::csi::node_server::Node;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use crate::csi::*;
use crate::domain::publish_context::{AUTH_METHOD, LUN, PORTALS, TARGET_IQN};
use crate::exec::fake::FakeRunner;

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

struct Fixture {
    svc: NodeService,
    iscsi: Arc<FakeRunner>,
    timed: Arc<FakeIscsiadm>,
    tools: Arc<FakeRunner>,
    mounter: Arc<FakeMounter>,
    sysfs: FakeSysfs,
    world: Arc<Mutex<FakeHost>>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self::with_timeout(Duration::from_secs(2))
    }

    fn with_timeout(device_timeout: Duration) -> Self {
        let sysfs = FakeSysfs::new();
        let mounter = Arc::new(FakeMounter::new());
        let world = Arc::new(Mutex::new(FakeHost::default()));
        let iscsi = iscsiadm_runner(&world, &sysfs, &mounter);
        let tools = tools_runner(&world, &sysfs);
        let timed = Arc::new(FakeIscsiadm::new(iscsi.clone()));
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
