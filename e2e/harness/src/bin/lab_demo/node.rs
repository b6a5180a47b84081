//! The node side of the demo (kubelet's calls): NodeStageVolume, NodePublishVolume, the
//! pod's file, and their reverses, each printing its line like the controller steps.

use super::*;

impl Cluster {
    /// kubelet: NodeStageVolume (the device's global mount).
    pub(super) async fn stage(&mut self, v: &Volume) -> Result<(), Fail> {
        std::fs::create_dir_all(&v.staging).map_err(|e| format!("mkdir staging: {e}"))?;
        let req = NodeStageVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: v.publish.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
            volume_capability: Some(capability()),
            secrets: self.secrets(),
            volume_context: v.context.clone(),
        };
        let (res, took) = timed(self.node.node_stage_volume(req)).await;
        res.map_err(|s| format!("NodeStageVolume failed: {s}"))?;
        let iqn = &v.publish["targetIqn"];
        let session = Observed::session(iqn)?
            .ok_or_else(|| format!("no iSCSI session to {iqn} after NodeStageVolume"))?;
        let dev = Observed::device(PORTAL, iqn, 0)
            .ok_or_else(|| format!("no disk of {iqn} LUN 0 in sysfs after NodeStageVolume"))?;
        let m = mount_at(&v.staging)?
            .ok_or_else(|| format!("nothing mounted at {}", v.staging.display()))?;
        if Path::new(&m.source) != dev {
            return Err(format!(
                "{} is {} mounted from {}, expected {}",
                v.staging.display(),
                m.fstype,
                m.source,
                dev.display()
            ));
        }
        self.line(
            &format!("kubelet on node1 stages it for pod {POD}"),
            "NodeStageVolume",
            took,
            &format!(
                "session to {session}, device {}, {} at {}",
                dev.display(),
                m.fstype,
                short(&v.staging)
            ),
        );
        Ok(())
    }

    /// kubelet: NodePublishVolume (the pod's own mount).
    pub(super) async fn node_publish(&mut self, v: &Volume) -> Result<(), Fail> {
        if let Some(parent) = v.target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir pod volume dir: {e}"))?;
        }
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
        let (res, took) = timed(self.node.node_publish_volume(req)).await;
        res.map_err(|s| format!("NodePublishVolume failed: {s}"))?;
        let m = mount_at(&v.target)?
            .ok_or_else(|| format!("nothing mounted at {}", v.target.display()))?;
        self.line(
            &format!("kubelet mounts it into pod {POD}"),
            "NodePublishVolume",
            took,
            &format!("{} from {} at {}", m.fstype, m.source, short(&v.target)),
        );
        Ok(())
    }

    /// The pod writes a file; returns its checksum.
    pub(super) fn write_file(&mut self, v: &Volume) -> Result<String, Fail> {
        let data = random_hex(512 * 1024).into_bytes();
        let path = v.target.join(FILE);
        let started = Instant::now();
        let mut f = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut f, &data)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        f.sync_all()
            .map_err(|e| format!("fsync {}: {e}", path.display()))?;
        let took = started.elapsed();
        let sum = sha256_hex(&data);
        self.line(
            &format!("pod {POD} writes {FILE}"),
            "(the pod: write + fsync)",
            took,
            &format!("{} KiB, sha256 {}", data.len() >> 10, &sum[..16]),
        );
        Ok(sum)
    }

    /// The pod reads the file back after the reattach.
    pub(super) fn read_file(&mut self, v: &Volume, sum: &str) -> Result<(), Fail> {
        let path = v.target.join(FILE);
        let started = Instant::now();
        let data = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let took = started.elapsed();
        let got = sha256_hex(&data);
        if got != sum {
            return Err(format!("{FILE} changed: sha256 {got}, written {sum}"));
        }
        self.line(
            &format!("the new pod {POD} reads {FILE}"),
            "(the pod: read)",
            took,
            &format!(
                "{} KiB, sha256 {} (unchanged)",
                data.len() >> 10,
                &sum[..16]
            ),
        );
        Ok(())
    }

    /// kubelet: NodeUnpublishVolume.
    pub(super) async fn node_unpublish(&mut self, v: &Volume, why: &str) -> Result<(), Fail> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            target_path: v.target.to_string_lossy().into_owned(),
        };
        let (res, took) = timed(self.node.node_unpublish_volume(req)).await;
        res.map_err(|s| format!("NodeUnpublishVolume failed: {s}"))?;
        if let Some(m) = mount_at(&v.target)? {
            return Err(format!(
                "{} still mounted at {}",
                m.source,
                v.target.display()
            ));
        }
        self.line(
            why,
            "NodeUnpublishVolume",
            took,
            &format!("bind mount at {} gone", short(&v.target)),
        );
        Ok(())
    }

    /// kubelet: NodeUnstageVolume.
    pub(super) async fn unstage(&mut self, v: &Volume) -> Result<(), Fail> {
        let iqn = v.publish["targetIqn"].clone();
        let dev = Observed::device(PORTAL, &iqn, 0);
        let req = NodeUnstageVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: v.staging.to_string_lossy().into_owned(),
        };
        let (res, took) = timed(self.node.node_unstage_volume(req)).await;
        res.map_err(|s| format!("NodeUnstageVolume failed: {s}"))?;
        if let Some(m) = mount_at(&v.staging)? {
            return Err(format!(
                "{} still mounted at {}",
                m.source,
                v.staging.display()
            ));
        }
        if let Some(s) = Observed::session(&iqn)? {
            return Err(format!(
                "still a session to {iqn} via {s} after NodeUnstageVolume"
            ));
        }
        let gone = match &dev {
            Some(d) if d.exists() => {
                return Err(format!(
                    "{} still there after NodeUnstageVolume",
                    d.display()
                ))
            }
            Some(d) => format!("{} deleted", d.display()),
            None => "no device".into(),
        };
        self.line(
            "kubelet on node1 unstages it (no pod uses it)",
            "NodeUnstageVolume",
            took,
            &format!("unmounted, {gone}, logged out of {iqn}"),
        );
        Ok(())
    }
}
