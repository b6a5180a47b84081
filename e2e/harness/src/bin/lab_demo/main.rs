//! The life of a PersistentVolumeClaim, step by step, the way Kubernetes drives a CSI driver:
//! this program plays external-provisioner, external-attacher and kubelet over the driver's
//! unix sockets, against the real controller and node binaries in the kernel lab.
//!
//! Each step prints one line: the Kubernetes event that triggers it, the CSI call, how long
//! the call took, and what the kernel and the tools show afterwards, looked at here (LVM,
//! configfs, iscsiadm, /dev, mountinfo), not taken from the driver's answer. The last line is
//! PASS or FAIL and the exit status follows it.
//!
//! Run by `e2e/demo.sh` inside the lab guest, with `CSI_BIN` (the driver), `CSI_VG`,
//! `CSI_THINPOOL` and `CSI_LAB_OUT` (where the driver logs go) set.

mod node;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::node_client::NodeClient;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use lvm_iscsi_csi::csi::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use lvm_iscsi_csi_e2e::lab;
use lvm_iscsi_csi_e2e::observe::{hex, mount_at, Observed};

/// The driver name kubelet and the attacher know it by.
const DRIVER: &str = "lvm-iscsi.csi.io";
/// Where the controller's target listens (the guest's loopback).
const PORTAL: &str = "127.0.0.1:3260";
/// A second node, by its initiator IQN (standalone mode: node ids are IQNs).
const NODE2: &str = "iqn.2004-10.com.example:node2";
/// The PVC's requested size.
const SIZE: i64 = 64 << 20;
/// The PVC, as a StatefulSet's volumeClaimTemplate names it.
const PVC: &str = "data-web-0";
/// The pod using it.
const POD: &str = "web-0";
/// The file the pod writes.
const FILE: &str = "index.html";

/// What the sidecars and kubelet keep about the volume between calls.
struct Volume {
    /// The PV name (CreateVolume's name).
    pv: String,
    /// The driver's volume id.
    id: String,
    /// volume_context from CreateVolume.
    context: HashMap<String, String>,
    /// publish_context from the latest ControllerPublishVolume.
    publish: HashMap<String, String>,
    /// kubelet's staging path (the "global mount").
    staging: PathBuf,
    /// kubelet's per-pod target path.
    target: PathBuf,
}

/// The clients and settings of the cluster this program plays.
struct Cluster {
    /// Controller service (external-provisioner, external-attacher).
    ctl: ControllerClient<Channel>,
    /// Node service (kubelet on node1).
    node: NodeClient<Channel>,
    /// The StorageClass's CHAP key (the Secret both secret refs point at).
    key: String,
    /// node1's id: this guest's initiator IQN.
    node1: String,
    /// Volume group and thin pool.
    vg: String,
    /// Thin pool of the StorageClass.
    pool: String,
    /// Steps done so far.
    step: usize,
    /// The PV name, shortened in every line after the first that shows it.
    pv: Option<String>,
}

/// A failed step: what went wrong, in one line.
type Fail = String;

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// Awaits a call, returning its result and how long it took.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = fut.await;
    (out, started.elapsed())
}

/// Random lowercase hex, `bytes` bytes of it.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut f = std::fs::File::open("/dev/urandom").expect("opening /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut buf).expect("reading /dev/urandom");
    hex(&buf)
}

/// A PV name the way external-provisioner makes one: `pvc-<uid of the PVC>`.
fn pv_name() -> String {
    let h = random_hex(16);
    format!(
        "pvc-{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

impl Cluster {
    /// Prints one step's line.
    fn line(&mut self, trigger: &str, rpc: &str, took: Duration, seen: &str) {
        self.step += 1;
        let seen = match &self.pv {
            Some(pv) => seen.replace(pv, &format!("{}…", &pv[..12])),
            None => seen.to_string(),
        };
        let seen = seen.replace(&self.node1, "node1's IQN");
        println!(
            "{:>2}. {trigger:<52} {rpc:<26} {:>5} ms  {seen}",
            self.step,
            took.as_millis()
        );
    }

    fn secrets(&self) -> HashMap<String, String> {
        HashMap::from([("chapKey".to_string(), self.key.clone())])
    }

    /// external-provisioner: the PVC's CreateVolume.
    async fn create(&mut self) -> Result<Volume, Fail> {
        let pv = pv_name();
        let req = CreateVolumeRequest {
            name: pv.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: SIZE,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability()],
            parameters: HashMap::from([
                ("thinPool".to_string(), self.pool.clone()),
                ("fsType".to_string(), "ext4".to_string()),
                ("csi.storage.k8s.io/pvc/name".to_string(), PVC.to_string()),
                (
                    "csi.storage.k8s.io/pvc/namespace".to_string(),
                    "default".to_string(),
                ),
                ("csi.storage.k8s.io/pv/name".to_string(), pv.clone()),
            ]),
            ..Default::default()
        };
        let (res, took) = timed(self.ctl.create_volume(req)).await;
        let v = res
            .map_err(|s| format!("CreateVolume failed: {s}"))?
            .into_inner()
            .volume
            .ok_or("CreateVolume returned no volume")?;
        let (vg, lv) = v
            .volume_id
            .split_once('/')
            .ok_or_else(|| format!("volume id {} is not VG/LV", v.volume_id))?;
        let seen =
            Observed::lv(vg, lv)?.ok_or_else(|| format!("no LV {vg}/{lv} after CreateVolume"))?;
        if seen.size < SIZE as u64 {
            return Err(format!(
                "LV {vg}/{lv} has {} bytes, asked {SIZE}",
                seen.size
            ));
        }
        let kind = match &seen.pool {
            Some(p) => format!("thin in {p}"),
            None => "thick".into(),
        };
        let staging = PathBuf::from(format!(
            "/var/lib/kubelet/plugins/kubernetes.io/csi/{DRIVER}/{}/globalmount",
            sha256_hex(v.volume_id.as_bytes())
        ));
        let pod_uid = pv_name()[4..].to_string();
        let target = PathBuf::from(format!(
            "/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv}/mount"
        ));
        self.line(
            &format!("PVC {PVC} created"),
            "CreateVolume",
            took,
            &format!("LV {vg}/{lv}, {} MiB, {kind}", seen.size >> 20),
        );
        self.pv = Some(pv.clone());
        Ok(Volume {
            pv,
            id: v.volume_id,
            context: v.volume_context,
            publish: HashMap::new(),
            staging,
            target,
        })
    }

    /// external-attacher: a VolumeAttachment for `node`.
    fn attach_request(&self, v: &Volume, node: &str) -> ControllerPublishVolumeRequest {
        ControllerPublishVolumeRequest {
            volume_id: v.id.clone(),
            node_id: node.to_string(),
            volume_capability: Some(capability()),
            readonly: false,
            secrets: self.secrets(),
            volume_context: v.context.clone(),
        }
    }

    /// The VolumeAttachment's name, as external-attacher derives it.
    fn attachment(v: &Volume, node: &str) -> String {
        let h = sha256_hex(format!("{}{DRIVER}{node}", v.pv).as_bytes());
        format!("csi-{}", &h[..8])
    }

    /// external-attacher: ControllerPublishVolume to node1; `trigger` names the event
    /// (`{va}` stands for the VolumeAttachment's name).
    async fn publish(&mut self, v: &mut Volume, trigger: &str) -> Result<(), Fail> {
        let req = self.attach_request(v, &self.node1.clone());
        let (res, took) = timed(self.ctl.controller_publish_volume(req)).await;
        v.publish = res
            .map_err(|s| format!("ControllerPublishVolume failed: {s}"))?
            .into_inner()
            .publish_context;
        let iqn = v
            .publish
            .get("targetIqn")
            .cloned()
            .ok_or("publish_context has no targetIqn")?;
        let t = Observed::target(&iqn, &self.node1);
        if !t.enabled || !t.lun || !t.acl {
            return Err(format!(
                "after ControllerPublishVolume, configfs shows {t:?} for {iqn}"
            ));
        }
        let auth = if t.chap_user.is_some() {
            " with CHAP"
        } else {
            ", no CHAP"
        };
        self.line(
            &trigger.replace("{va}", &Self::attachment(v, "node1")),
            "ControllerPublishVolume",
            took,
            &format!("target {iqn}, LUN 0, ACL for {}{auth}", self.node1),
        );
        Ok(())
    }

    /// external-attacher: ControllerUnpublishVolume from node1.
    async fn unpublish(&mut self, v: &Volume) -> Result<(), Fail> {
        let iqn = v.publish["targetIqn"].clone();
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            node_id: self.node1.clone(),
            secrets: self.secrets(),
        };
        let (res, took) = timed(self.ctl.controller_unpublish_volume(req)).await;
        res.map_err(|s| format!("ControllerUnpublishVolume failed: {s}"))?;
        let t = Observed::target(&iqn, &self.node1);
        if t.acl || t.exists {
            return Err(format!(
                "after ControllerUnpublishVolume, configfs shows {t:?} for {iqn}"
            ));
        }
        self.line(
            &format!("VolumeAttachment {} deleted", Self::attachment(v, "node1")),
            "ControllerUnpublishVolume",
            took,
            &format!("ACL for node1 removed, target {iqn} removed (no ACL left)"),
        );
        Ok(())
    }

    /// external-attacher: a VolumeAttachment for node2 while node1 has the volume.
    async fn publish_elsewhere(&mut self, v: &Volume) -> Result<(), Fail> {
        let req = self.attach_request(v, NODE2);
        let (res, took) = timed(self.ctl.controller_publish_volume(req)).await;
        let code = match res {
            Ok(_) => {
                return Err(format!(
                    "ControllerPublishVolume to {NODE2} succeeded while node1 has the volume"
                ))
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => s.code(),
            Err(s) => {
                return Err(format!(
                    "ControllerPublishVolume to {NODE2}: {s}, expected FAILED_PRECONDITION"
                ))
            }
        };
        let t = Observed::target(&v.publish["targetIqn"], NODE2);
        if t.acl {
            return Err(format!(
                "an ACL for {NODE2} exists after the refused publish"
            ));
        }
        self.line(
            &format!(
                "VolumeAttachment {} for node2 (pod web-1)",
                Self::attachment(v, "node2")
            ),
            "ControllerPublishVolume",
            took,
            &format!("refused: {code:?} (ReadWriteOnce, in use on node1); no ACL for node2"),
        );
        Ok(())
    }

    /// external-provisioner: the PVC is deleted.
    async fn delete(&mut self, v: &Volume) -> Result<(), Fail> {
        let req = DeleteVolumeRequest {
            volume_id: v.id.clone(),
            secrets: HashMap::new(),
        };
        let (res, took) = timed(self.ctl.delete_volume(req)).await;
        res.map_err(|s| format!("DeleteVolume failed: {s}"))?;
        let (vg, lv) = v.id.split_once('/').unwrap_or((&self.vg, &v.id));
        if Observed::lv(vg, lv)?.is_some() {
            return Err(format!("LV {} still there after DeleteVolume", v.id));
        }
        self.line(
            &format!("PVC {PVC} deleted (reclaimPolicy Delete)"),
            "DeleteVolume",
            took,
            &format!("LV {} removed", v.id),
        );
        Ok(())
    }

    /// The whole life, stopping at the first failure.
    async fn life(&mut self, v: &mut Option<Volume>) -> Result<(), Fail> {
        let vol = v.insert(self.create().await?);
        self.publish(
            vol,
            &format!("VolumeAttachment {{va}} for node1 (pod {POD})"),
        )
        .await?;
        self.stage(vol).await?;
        self.node_publish(vol).await?;
        let sum = self.write_file(vol)?;
        self.node_unpublish(vol, &format!("pod {POD} deleted: kubelet unmounts it"))
            .await?;
        self.unstage(vol).await?;
        self.unpublish(vol).await?;
        // The StatefulSet recreates the pod; it lands on node1 again.
        vol.target = PathBuf::from(format!(
            "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/{}/mount",
            &pv_name()[4..],
            vol.pv
        ));
        self.publish(
            vol,
            &format!("pod {POD} recreated: VolumeAttachment {{va}}"),
        )
        .await?;
        self.stage(vol).await?;
        self.node_publish(vol).await?;
        self.read_file(vol, &sum)?;
        self.publish_elsewhere(vol).await?;
        self.node_unpublish(vol, &format!("StatefulSet scaled to 0: pod {POD} deleted"))
            .await?;
        self.unstage(vol).await?;
        self.unpublish(vol).await?;
        self.delete(vol).await?;
        Ok(())
    }

    /// After a failure: undo what may be left, ignoring errors (the step already failed).
    async fn clean_up(&mut self, v: &Volume) {
        let _ = self
            .node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: v.target.to_string_lossy().into_owned(),
            })
            .await;
        let _ = self
            .node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: v.staging.to_string_lossy().into_owned(),
            })
            .await;
        for node in [self.node1.clone(), NODE2.to_string()] {
            let _ = self
                .ctl
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: v.id.clone(),
                    node_id: node,
                    secrets: self.secrets(),
                })
                .await;
        }
        let _ = self
            .ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.id.clone(),
                secrets: HashMap::new(),
            })
            .await;
    }
}

/// A kubelet path, shortened for the line: long components (hashes, uids, PV names) cut.
fn short(p: &Path) -> String {
    p.to_string_lossy()
        .split('/')
        .map(|c| {
            if c.chars().count() > 20 {
                format!("{}…", c.chars().take(12).collect::<String>())
            } else {
                c.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    let vg = lab::lab_env_or("CSI_VG", "csivg");
    let pool = lab::lab_env_or("CSI_THINPOOL", "pool0");
    let run = std::env::temp_dir().join("lvm-iscsi-csi-demo");
    std::fs::create_dir_all(&run).expect("creating the demo's run directory");
    let key = random_hex(32);
    let key_file = run.join("chap.key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&key_file)
            .expect("creating the CHAP key file");
        std::io::Write::write_all(&mut f, key.as_bytes()).expect("writing the CHAP key file");
    }
    let node1 = lab::initiator_name();

    let ctl_sock = run.join("controller.sock");
    let node_sock = run.join("node.sock");
    let s = |v: &str| v.to_string();
    let controller = lab::Driver::start(
        "controller",
        &[
            s("controller"),
            format!("--endpoint=unix://{}", ctl_sock.display()),
            s("--standalone"),
            s("--target-backend=lio"),
            format!("--portal={PORTAL}"),
            format!("--default-volume-group={vg}"),
            format!("--chap-key-file={}", key_file.display()),
        ],
        &ctl_sock,
    );
    let node = lab::Driver::start(
        "node",
        &[
            s("node"),
            format!("--endpoint=unix://{}", node_sock.display()),
            s("--standalone"),
            s("--iscsiadm-mode=direct"),
            format!("--node-id={node1}"),
        ],
        &node_sock,
    );
    let ctl_channel = lab::connect(&ctl_sock).await;
    let node_channel = lab::connect(&node_sock).await;
    lab::wait_ready(&ctl_channel, Duration::from_secs(60)).await;
    lab::wait_ready(&node_channel, Duration::from_secs(60)).await;
    println!(
        "controller (pid {}) and node1 (pid {}, initiator {node1}) answer Probe: ready {} ms after start\n",
        controller.pid(),
        node.pid(),
        started.elapsed().as_millis()
    );
    println!(
        "    {:<52} {:<26} {:>8}  what the lab shows afterwards",
        "what Kubernetes does", "CSI call", "took"
    );

    let mut cluster = Cluster {
        ctl: ControllerClient::new(ctl_channel),
        node: NodeClient::new(node_channel),
        key,
        node1,
        vg,
        pool,
        step: 0,
        pv: None,
    };
    let life_started = Instant::now();
    let mut volume = None;
    let outcome = cluster.life(&mut volume).await;
    let took = life_started.elapsed();
    let code = match outcome {
        Ok(()) => {
            println!(
                "\nPASS: the PVC's whole life in {} steps, {:.1} s (driver logs: {})",
                cluster.step,
                took.as_secs_f64(),
                lab::out_dir().display()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("\nFAIL at step {}: {why}", cluster.step + 1);
            if let Some(v) = &volume {
                cluster.clean_up(v).await;
            }
            println!("controller log ends with:\n{}", controller.log_tail(15));
            println!("node log ends with:\n{}", node.log_tail(15));
            ExitCode::FAILURE
        }
    };
    drop(controller);
    drop(node);
    let _ = std::fs::remove_file(&key_file);
    code
}
