//! The node side of the lab tests (`tests/lab_node.rs`; lab_expand, lab_ops and lab_snapshot
//! use parts): the controller and the node plugin as child processes with their gRPC clients
//! (the sidecars' and kubelet's view), each call made twice and timed, and what the kernel
//! shows about a volume on this node (sysfs, `iscsiadm`, `/proc/self/mountinfo`, blkid), read
//! without the driver.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::node_client::NodeClient;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use lvm_iscsi_csi::csi::*;
use lvm_iscsi_csi::domain::chap;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::Status;

use super::*;

/// Where the target listens and the node logs in.
pub const PORTAL: &str = "127.0.0.1:3260";
/// The StorageClass's CHAP key (publish and stage secrets).
pub const KEY: &str = "lab-node-chap-key-0123456789abcdef";
/// A key that is not the StorageClass's.
pub const WRONG_KEY: &str = "some-other-key-0123456789abcdef";
/// The driver's default IQN prefix: sessions under it belong to these tests.
pub const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
/// Everything the tests mount lives under here.
pub const WORK: &str = "/tmp/lab-node";
/// Where the stage and unstage times go.
pub const TIMINGS: &str = "lab_node-timings.txt";
/// One MiB.
pub const MIB: i64 = 1 << 20;
/// EROFS.
pub const READ_ONLY_FS: i32 = 30;

/// How a volume is used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A filesystem of this type.
    Fs(&'static str),
    /// The raw device.
    Block,
}

/// A volume capability for `kind` with access mode `mode` (`noatime` for filesystems).
pub fn capability(kind: Kind, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(match kind {
            Kind::Fs(fs) => AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: vec!["noatime".into()],
                volume_mount_group: String::new(),
            }),
            Kind::Block => AccessType::Block(BlockVolume {}),
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A secrets map holding `key` as the CHAP key, or nothing.
pub fn secrets(key: Option<&str>) -> HashMap<String, String> {
    key.map(|k| HashMap::from([(chap::SECRET_KEY.to_string(), k.to_string())]))
        .unwrap_or_default()
}

/// Owned copies of `v`.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A volume as the test tracks it.
pub struct Vol {
    /// Volume id.
    pub id: String,
    /// What ControllerPublishVolume returned.
    pub ctx: HashMap<String, String>,
    /// Its target.
    pub iqn: String,
    /// How it is used.
    pub kind: Kind,
    /// Its staging path.
    pub staging: PathBuf,
}

/// Undoes what an earlier, failed test may have left: mounts under [`WORK`], sessions and
/// node records of this driver's targets.
pub fn sweep() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(WORK))
        .collect();
    points.reverse();
    for p in points {
        sh(&["umount", "-l", p]);
    }
    for iqn in sessions_under_prefix() {
        sh(&["iscsiadm", "-m", "node", "-T", &iqn, "--logout"]);
    }
    for line in sh(&["iscsiadm", "-m", "node"]).stdout.lines() {
        if let Some(iqn) = line
            .split_whitespace()
            .nth(1)
            .filter(|t| t.starts_with(PREFIX))
        {
            sh(&["iscsiadm", "-m", "node", "-T", iqn, "-o", "delete"]);
        }
    }
    let _ = std::fs::remove_dir_all(WORK);
}

/// The targets under [`PREFIX`] this host has a session to.
pub fn sessions_under_prefix() -> Vec<String> {
    sh(&["iscsiadm", "-m", "session"])
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .filter(|t| t.starts_with(PREFIX))
        .collect()
}

/// The SCSI disks of `iqn`'s sessions, read from sysfs: `class/iscsi_session/*/targetname`,
/// then `device/target*/H:C:T:L/block/*`.
pub fn disks_of(iqn: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in std::fs::read_dir("/sys/class/iscsi_session")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = std::fs::read_to_string(s.path().join("targetname")).unwrap_or_default();
        if name.trim() != iqn {
            continue;
        }
        for t in std::fs::read_dir(s.path().join("device"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !t.file_name().to_string_lossy().starts_with("target") {
                continue;
            }
            for lun in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                for d in std::fs::read_dir(lun.path().join("block"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    out.push(d.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// How many sessions to `iqn` this host has.
pub fn session_count(iqn: &str) -> usize {
    sh(&["iscsiadm", "-m", "session"])
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(iqn))
        .count()
}

/// Whether open-iscsi has a node record for `iqn`.
pub fn has_record(iqn: &str) -> bool {
    sh(&["iscsiadm", "-m", "node"])
        .stdout
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(iqn))
}

/// Whether something is mounted at `path` (mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&p))
}

/// The filesystem UUID on a disk, read with blkid.
pub fn fs_uuid(disk: &str) -> String {
    must(&[
        "blkid",
        "-p",
        "-o",
        "value",
        "-s",
        "UUID",
        &format!("/dev/{disk}"),
    ])
    .trim()
    .to_string()
}

/// Writes `len` random bytes to `path`, synced, and returns their SHA-256.
pub fn write_random(path: &Path, len: usize) -> String {
    let mut data = vec![0u8; len];
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut random, &mut data).unwrap();
    let mut f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    hex(&Sha256::digest(&data))
}

/// The SHA-256 of a file's content.
pub fn sum(path: &Path) -> String {
    hex(&Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    ))
}

/// A log line without terminal colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The controller and the node plugin, with clients, as the sidecars and kubelet see them.
pub struct Lab {
    /// Test name (logs, paths).
    pub name: String,
    /// Per-test directory under [`WORK`].
    pub dir: PathBuf,
    /// The controller process.
    pub _controller: Driver,
    /// The node plugin process.
    pub node: Driver,
    /// Its command line (for restarts).
    pub node_args: Vec<String>,
    /// external-provisioner / external-attacher.
    pub ctl: ControllerClient<Channel>,
    /// kubelet.
    pub kubelet: NodeClient<Channel>,
    /// What NodeGetInfo says.
    pub node_id: String,
    /// RPC latencies.
    pub t: Timings,
}

impl Lab {
    /// Starts the controller (LIO, on `$CSI_VG`) and the node plugin for test `name`.
    pub async fn start(name: &str) -> Lab {
        Lab::start_with(name, "lio").await
    }

    /// The same with the target backend `backend` (`lio` or `tgt`; tgtd must be running).
    pub async fn start_with(name: &str, backend: &str) -> Lab {
        sweep();
        let dir = PathBuf::from(WORK).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let vg = lab_env("CSI_VG");
        let ctl_sock = dir.join("controller.sock");
        let controller = Driver::start(
            &format!("lab_node-{name}-controller"),
            &strings(&[
                "controller",
                "--endpoint",
                &format!("unix://{}", ctl_sock.display()),
                "--standalone",
                "--target-backend",
                backend,
                "--portal",
                PORTAL,
                "--default-volume-group",
                &vg,
            ]),
            &ctl_sock,
        );
        let node_sock = dir.join("node.sock");
        let node_args = strings(&[
            "node",
            "--endpoint",
            &format!("unix://{}", node_sock.display()),
            "--standalone",
            "--iscsiadm-mode",
            "direct",
            "--state-dir",
            &dir.join("state").to_string_lossy(),
            "--device-timeout",
            "60",
        ]);
        let node = Driver::start(&format!("lab_node-{name}-node"), &node_args, &node_sock);
        let ctl_channel = connect(&ctl_sock).await;
        wait_ready(&ctl_channel, Duration::from_secs(120)).await;
        let node_channel = connect(&node_sock).await;
        wait_ready(&node_channel, Duration::from_secs(60)).await;
        let mut kubelet = NodeClient::new(node_channel);
        let node_id = kubelet
            .node_get_info(NodeGetInfoRequest {})
            .await
            .expect("NodeGetInfo")
            .into_inner()
            .node_id;
        assert_eq!(
            node_id,
            initiator_name(),
            "standalone: the node id is the IQN"
        );
        Lab {
            name: name.to_string(),
            dir,
            _controller: controller,
            node,
            node_args,
            ctl: ControllerClient::new(ctl_channel),
            kubelet,
            node_id,
            t: Timings::default(),
        }
    }

    /// kill -9 of the node plugin, then the same command line again.
    pub async fn restart_node(&mut self) {
        self.node.kill9();
        let socket = self.node.socket.clone();
        self.node = Driver::start(
            &format!("lab_node-{}-node", self.name),
            &self.node_args,
            &socket,
        );
        let channel = connect(&socket).await;
        wait_ready(&channel, Duration::from_secs(60)).await;
        self.kubelet = NodeClient::new(channel);
    }

    /// Panics with `status` and the end of the node plugin's log.
    pub fn fail(&self, what: &str, status: &Status) -> ! {
        panic!(
            "{what}: {status}\nnode log ends with:\n{}",
            self.node.log_tail(40)
        )
    }

    /// A path in this test's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// CreateVolume (thin, in `$CSI_THINPOOL`) + ControllerPublishVolume to this node
    /// (what the sidecars do).
    pub async fn create(&mut self, name: &str, size: i64, kind: Kind) -> Vol {
        let params = HashMap::from([("thinPool".to_string(), lab_env("CSI_THINPOOL"))]);
        self.create_with(name, size, kind, params).await
    }

    /// The same with the StorageClass parameters `params` (none: a thick LV).
    pub async fn create_with(
        &mut self,
        name: &str,
        size: i64,
        kind: Kind,
        params: HashMap<String, String>,
    ) -> Vol {
        let cap = capability(kind, Mode::SingleNodeWriter);
        let created = self
            .ctl
            .create_volume(CreateVolumeRequest {
                name: format!("{}-{name}", self.name),
                capacity_range: Some(CapacityRange {
                    required_bytes: size,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                parameters: params,
                secrets: secrets(Some(KEY)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("CreateVolume {name}: {s}"))
            .into_inner()
            .volume
            .expect("a volume");
        let ctx = self
            .ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: created.volume_id.clone(),
                node_id: self.node_id.clone(),
                volume_capability: Some(cap),
                readonly: false,
                secrets: secrets(Some(KEY)),
                volume_context: created.volume_context.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("ControllerPublishVolume {name}: {s}"))
            .into_inner()
            .publish_context;
        assert_eq!(ctx.get("authMethod").map(String::as_str), Some("CHAP"));
        Vol {
            iqn: ctx["targetIqn"].clone(),
            id: created.volume_id,
            ctx,
            kind,
            staging: self.path(&format!("staging/{name}")),
        }
    }

    /// ControllerUnpublishVolume + DeleteVolume.
    pub async fn destroy(&mut self, v: &Vol) {
        self.ctl
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: self.node_id.clone(),
                secrets: secrets(Some(KEY)),
            })
            .await
            .unwrap_or_else(|s| panic!("ControllerUnpublishVolume {}: {s}", v.id));
        self.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.id.clone(),
                secrets: HashMap::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("DeleteVolume {}: {s}", v.id));
    }

    /// The NodeStageVolumeRequest kubelet would send for `v`.
    pub fn stage_request(&self, v: &Vol, key: Option<&str>, mode: Mode) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: v.ctx.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
            volume_capability: Some(capability(v.kind, mode)),
            secrets: secrets(key),
            volume_context: HashMap::new(),
        }
    }

    /// One NodeStageVolume with `key`, returning what the node answered.
    pub async fn try_stage(&mut self, v: &Vol, key: Option<&str>) -> Result<(), Status> {
        std::fs::create_dir_all(&v.staging).unwrap();
        let req = self.stage_request(v, key, Mode::SingleNodeWriter);
        self.kubelet.node_stage_volume(req).await.map(drop)
    }

    /// NodeStageVolume, twice (the repeat must answer the same); returns the SCSI disk.
    pub async fn stage(&mut self, v: &Vol, label: &str) -> String {
        std::fs::create_dir_all(&v.staging).unwrap();
        let req = self.stage_request(v, Some(KEY), Mode::SingleNodeWriter);
        for l in [label.to_string(), "NodeStageVolume (repeat)".to_string()] {
            let r = self
                .t
                .time(&l, self.kubelet.node_stage_volume(req.clone()))
                .await;
            if let Err(s) = r {
                self.fail(&format!("{l} {}", v.id), &s);
            }
        }
        let disks = disks_of(&v.iqn);
        assert_eq!(disks.len(), 1, "one disk for {}: {disks:?}", v.iqn);
        assert_eq!(session_count(&v.iqn), 1, "one session to {}", v.iqn);
        assert_eq!(
            is_mounted(&v.staging),
            v.kind != Kind::Block,
            "staging mount of {}",
            v.id
        );
        disks[0].clone()
    }

    /// NodeUnstageVolume, twice; then nothing of the volume may be left on the node.
    pub async fn unstage(&mut self, v: &Vol, disk: &str) {
        let req = NodeUnstageVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
        };
        for l in ["NodeUnstageVolume", "NodeUnstageVolume (repeat)"] {
            let r = self
                .t
                .time(l, self.kubelet.node_unstage_volume(req.clone()))
                .await;
            if let Err(s) = r {
                self.fail(&format!("{l} {}", v.id), &s);
            }
        }
        self.assert_nothing_left(v, disk);
    }

    /// Checks from the kernel's side that nothing of `v` is left on this node.
    pub fn assert_nothing_left(&self, v: &Vol, disk: &str) {
        assert_eq!(session_count(&v.iqn), 0, "a session to {} is left", v.iqn);
        assert!(disks_of(&v.iqn).is_empty(), "a disk of {} is left", v.iqn);
        assert!(
            !Path::new("/sys/block").join(disk).exists(),
            "SCSI disk {disk} is left"
        );
        assert!(!has_record(&v.iqn), "a node record of {} is left", v.iqn);
        assert!(
            !is_mounted(&v.staging),
            "{} is still mounted",
            v.staging.display()
        );
        let records: Vec<_> = std::fs::read_dir(self.dir.join("state"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains(&v.id.replace('/', "%2F"))
            })
            .collect();
        assert!(records.is_empty(), "a stage record of {} is left", v.id);
    }

    /// The NodePublishVolumeRequest kubelet would send for `v` at `target`.
    pub fn publish_request(
        &self,
        v: &Vol,
        target: &Path,
        readonly: bool,
    ) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: v.ctx.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
            target_path: target.to_string_lossy().into_owned(),
            volume_capability: Some(capability(v.kind, Mode::SingleNodeWriter)),
            readonly,
            secrets: HashMap::new(),
            volume_context: HashMap::new(),
        }
    }

    /// NodePublishVolume, twice.
    pub async fn publish(&mut self, v: &Vol, target: &Path, readonly: bool) {
        let req = self.publish_request(v, target, readonly);
        for l in ["NodePublishVolume", "NodePublishVolume (repeat)"] {
            let r = self
                .t
                .time(l, self.kubelet.node_publish_volume(req.clone()))
                .await;
            if let Err(s) = r {
                self.fail(&format!("{l} {} at {}", v.id, target.display()), &s);
            }
        }
        assert!(is_mounted(target), "{} is not mounted", target.display());
    }

    /// NodeUnpublishVolume, twice; the path is gone.
    pub async fn unpublish(&mut self, v: &Vol, target: &Path) {
        let req = NodeUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            target_path: target.to_string_lossy().into_owned(),
        };
        for l in ["NodeUnpublishVolume", "NodeUnpublishVolume (repeat)"] {
            let r = self
                .t
                .time(l, self.kubelet.node_unpublish_volume(req.clone()))
                .await;
            if let Err(s) = r {
                self.fail(&format!("{l} {}", v.id), &s);
            }
        }
        assert!(
            !is_mounted(target) && !target.exists(),
            "{} is left",
            target.display()
        );
    }

    /// NodeGetVolumeStats of `v` at `path`.
    pub async fn stats(&mut self, v: &Vol, path: &Path) -> NodeGetVolumeStatsResponse {
        self.kubelet
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: v.id.clone(),
                volume_path: path.to_string_lossy().into_owned(),
                staging_target_path: String::new(),
            })
            .await
            .unwrap_or_else(|s| self.fail("NodeGetVolumeStats", &s))
            .into_inner()
    }

    /// How many filesystems the node plugin made on `v`, from its log.
    pub fn mkfs_count(&self, v: &Vol) -> usize {
        std::fs::read_to_string(&self.node.log)
            .unwrap_or_default()
            .lines()
            .map(strip_ansi)
            .filter(|l| {
                // The RPC's span carries the id: `rpc{method=NodeStageVolume volume_id=vg/lv}`.
                l.contains("filesystem created")
                    && [' ', '}']
                        .iter()
                        .any(|end| l.contains(&format!("volume_id={}{end}", v.id)))
            })
            .count()
    }

    /// Prints the timings and appends them to [`TIMINGS`].
    pub fn report(&self, title: &str) {
        self.t.publish(title, TIMINGS);
    }
}
