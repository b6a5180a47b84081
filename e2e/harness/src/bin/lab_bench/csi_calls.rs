//! The CSI calls of a volume's life, made the way the sidecars and kubelet make them, each
//! timed into a shared table of samples by RPC name.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::node_client::NodeClient;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use lvm_iscsi_csi::csi::*;
use tonic::transport::Channel;

/// Latency samples by RPC name.
pub type Samples = Arc<Mutex<BTreeMap<String, Vec<Duration>>>>;

/// The ext4, single-node-writer capability every call here uses.
pub fn capability() -> VolumeCapability {
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

/// A volume as the sidecars and kubelet know it.
#[derive(Debug, Clone)]
pub struct Vol {
    /// The driver's volume id.
    pub id: String,
    /// volume_context from CreateVolume.
    pub context: HashMap<String, String>,
    /// publish_context from ControllerPublishVolume.
    pub publish: HashMap<String, String>,
    /// kubelet's staging path.
    pub staging: PathBuf,
    /// The pod's target path.
    pub target: PathBuf,
}

/// Clients of both services, cheap to clone (one HTTP/2 connection each).
#[derive(Clone)]
pub struct Csi {
    /// Controller service.
    pub ctl: ControllerClient<Channel>,
    /// Node service.
    pub node: NodeClient<Channel>,
    /// The StorageClass's CHAP key.
    pub key: String,
    /// The node's id (its initiator IQN).
    pub node_id: String,
    /// The thin pool volumes are created in.
    pub pool: String,
    /// Where staging and target directories go.
    pub kubelet: PathBuf,
    /// Latencies.
    pub samples: Samples,
    /// Sessions found alive after a successful NodeUnstageVolume (see `clean_up`).
    pub leaked_sessions: Arc<AtomicUsize>,
}

impl Csi {
    fn secrets(&self) -> HashMap<String, String> {
        HashMap::from([("chapKey".to_string(), self.key.clone())])
    }

    fn record(&self, rpc: &str, took: Duration) {
        if let Ok(mut s) = self.samples.lock() {
            s.entry(rpc.to_string()).or_default().push(took);
        }
    }

    /// CreateVolume: a thin ext4 volume of `size` bytes named `name`.
    pub async fn create(&mut self, name: &str, size: i64) -> Result<Vol, String> {
        let req = CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability()],
            parameters: HashMap::from([
                ("thinPool".to_string(), self.pool.clone()),
                ("fsType".to_string(), "ext4".to_string()),
            ]),
            ..Default::default()
        };
        let started = Instant::now();
        let res = self.ctl.create_volume(req).await;
        self.record("CreateVolume", started.elapsed());
        let v = res
            .map_err(|s| format!("CreateVolume {name}: {s}"))?
            .into_inner()
            .volume
            .ok_or_else(|| format!("CreateVolume {name}: no volume in the answer"))?;
        let dir = self.kubelet.join(name);
        Ok(Vol {
            id: v.volume_id,
            context: v.volume_context,
            publish: HashMap::new(),
            staging: dir.join("globalmount"),
            target: dir.join("pod/mount"),
        })
    }

    /// ControllerPublishVolume to `node_id`; returns publish_context.
    pub async fn publish_to(
        &mut self,
        v: &Vol,
        node_id: &str,
    ) -> Result<HashMap<String, String>, String> {
        let req = ControllerPublishVolumeRequest {
            volume_id: v.id.clone(),
            node_id: node_id.to_string(),
            volume_capability: Some(capability()),
            readonly: false,
            secrets: self.secrets(),
            volume_context: v.context.clone(),
        };
        let started = Instant::now();
        let res = self.ctl.controller_publish_volume(req).await;
        self.record("ControllerPublishVolume", started.elapsed());
        Ok(res
            .map_err(|s| format!("ControllerPublishVolume {}: {s}", v.id))?
            .into_inner()
            .publish_context)
    }

    /// Create + ControllerPublish + NodeStage + NodePublish: a pod's volume, from nothing.
    pub async fn attach(&mut self, name: &str, size: i64) -> Result<Vol, String> {
        let mut v = self.create(name, size).await?;
        self.attach_existing(&mut v).await?;
        Ok(v)
    }

    /// ControllerPublish + NodeStage + NodePublish of a created volume.
    pub async fn attach_existing(&mut self, v: &mut Vol) -> Result<(), String> {
        let node_id = self.node_id.clone();
        v.publish = self.publish_to(v, &node_id).await?;
        std::fs::create_dir_all(&v.staging).map_err(|e| format!("mkdir staging: {e}"))?;
        if let Some(p) = v.target.parent() {
            std::fs::create_dir_all(p).map_err(|e| format!("mkdir pod dir: {e}"))?;
        }
        let req = NodeStageVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: v.publish.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
            volume_capability: Some(capability()),
            secrets: self.secrets(),
            volume_context: v.context.clone(),
        };
        let started = Instant::now();
        let res = self.node.node_stage_volume(req).await;
        self.record("NodeStageVolume", started.elapsed());
        res.map_err(|s| format!("NodeStageVolume {}: {s}", v.id))?;
        let req = NodePublishVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: v.publish.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
            target_path: v.target.to_string_lossy().into_owned(),
            volume_capability: Some(capability()),
            readonly: false,
            secrets: HashMap::new(),
            volume_context: v.context.clone(),
        };
        let started = Instant::now();
        let res = self.node.node_publish_volume(req).await;
        self.record("NodePublishVolume", started.elapsed());
        res.map_err(|s| format!("NodePublishVolume {}: {s}", v.id))?;
        Ok(())
    }

    /// NodeUnpublish + NodeUnstage + ControllerUnpublish: the pod went away.
    pub async fn detach(&mut self, v: &Vol) -> Result<(), String> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            target_path: v.target.to_string_lossy().into_owned(),
        };
        let started = Instant::now();
        let res = self.node.node_unpublish_volume(req).await;
        self.record("NodeUnpublishVolume", started.elapsed());
        res.map_err(|s| format!("NodeUnpublishVolume {}: {s}", v.id))?;
        let req = NodeUnstageVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
        };
        let started = Instant::now();
        let res = self.node.node_unstage_volume(req).await;
        self.record("NodeUnstageVolume", started.elapsed());
        res.map_err(|s| format!("NodeUnstageVolume {}: {s}", v.id))?;
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            node_id: self.node_id.clone(),
            secrets: self.secrets(),
        };
        let started = Instant::now();
        let res = self.ctl.controller_unpublish_volume(req).await;
        self.record("ControllerUnpublishVolume", started.elapsed());
        res.map_err(|s| format!("ControllerUnpublishVolume {}: {s}", v.id))?;
        Ok(())
    }

    /// After a failure: the undo calls, errors ignored (the failure is reported already),
    /// so that what is left does not skew later measurements. NodeUnstage is tried a few
    /// times, and the export is left alone if it keeps failing: removing a target under a
    /// live session leaves a disk whose I/O hangs for iSCSI's replacement timeout (120 s),
    /// and every LVM command on this host scans that disk.
    pub async fn clean_up(&mut self, v: &Vol) {
        let _ = self
            .node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: v.target.to_string_lossy().into_owned(),
            })
            .await;
        let mut unstaged = false;
        for _ in 0..5 {
            let res = self
                .node
                .node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: v.id.clone(),
                    staging_target_path: v.staging.to_string_lossy().into_owned(),
                })
                .await;
            if res.is_ok() {
                unstaged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !unstaged {
            println!("  left {} attached: NodeUnstageVolume keeps failing", v.id);
            return;
        }
        // A stage that failed after its login succeeded can leave a session that
        // NodeUnstageVolume no longer knows about: log it out by hand, and say so.
        if let Some(iqn) = v.publish.get("targetIqn") {
            if let Ok(Some(portal)) = lvm_iscsi_csi_e2e::observe::Observed::session(iqn) {
                println!("  {}: a session to {iqn} survived NodeUnstageVolume (leaked); logging it out by hand", v.id);
                self.leaked_sessions.fetch_add(1, Ordering::Relaxed);
                let node = ["iscsiadm", "-m", "node", "-T", iqn, "-p", &portal];
                let _ = lvm_iscsi_csi_e2e::observe::quiet(&[&node[..], &["--logout"]].concat());
                let _ = lvm_iscsi_csi_e2e::observe::quiet(&[&node[..], &["-o", "delete"]].concat());
            }
        }
        let _ = self
            .ctl
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: self.node_id.clone(),
                secrets: self.secrets(),
            })
            .await;
        let _ = self
            .ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.id.clone(),
                secrets: HashMap::new(),
            })
            .await;
    }

    /// DeleteVolume.
    pub async fn delete(&mut self, v: &Vol) -> Result<(), String> {
        let req = DeleteVolumeRequest {
            volume_id: v.id.clone(),
            secrets: HashMap::new(),
        };
        let started = Instant::now();
        let res = self.ctl.delete_volume(req).await;
        self.record("DeleteVolume", started.elapsed());
        res.map_err(|s| format!("DeleteVolume {}: {s}", v.id))?;
        Ok(())
    }
}
