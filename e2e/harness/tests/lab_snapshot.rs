//! Snapshots and clones on a real kernel: the real controller (LIO) and node plugin binaries,
//! driven over gRPC the way external-snapshotter, external-provisioner and kubelet drive
//! them, thin and thick:
//! - data with a known checksum is written to a staged, published ext4 volume; a snapshot is
//!   taken; the data is changed; a volume created from the snapshot and staged shows the old
//!   checksum;
//! - a clone of the volume shows its current checksum and is independent afterwards (a write
//!   to either leaves the other unchanged);
//! - a thick volume with a snapshot cannot be deleted (FAILED_PRECONDITION); a thin one can,
//!   and its snapshot still restores;
//! - everything is deleted in several orders and nothing is left: no LV, no target, no
//!   session;
//! - timings: snapshot creation, restore, and the clone of a 1 GiB volume (thin and thick;
//!   thick copies 1 GiB with a little data in it).
//!
//! Times are printed and appended to `$CSI_LAB_OUT/lab_snapshot-timings.txt`. `#[ignore]`d:
//! run by e2e/lab-test.sh in the guest (`--ignored --test-threads=1`), with CSI_BIN, CSI_VG,
//! CSI_THINPOOL and CSI_LAB_OUT set.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use lvm_iscsi_csi::csi::*;
use tonic::Code;

use lvm_iscsi_csi_e2e::lab::node::*;
use lvm_iscsi_csi_e2e::lab::*;

const TIMINGS: &str = "lab_snapshot-timings.txt";

/// The StorageClass parameters of a thin or thick volume.
fn params(thin: bool) -> HashMap<String, String> {
    if thin {
        HashMap::from([("thinPool".to_string(), lab_env("CSI_THINPOOL"))])
    } else {
        HashMap::new()
    }
}

fn from_snapshot(id: &str) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    }
}

fn from_volume(id: &str) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    }
}

/// The LVs of the lab VG whose name contains `part`.
fn lvs_named(part: &str) -> Vec<String> {
    must(&["lvs", "--noheadings", "-o", "lv_name", &lab_env("CSI_VG")])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.contains(part))
        .collect()
}

/// LIO targets whose IQN contains `part`.
fn targets_named(part: &str) -> Vec<String> {
    std::fs::read_dir("/sys/kernel/config/target/iscsi")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

/// The snapshot tests' view of the lab.
struct Snaps {
    /// Controller, node, clients.
    lab: Lab,
}

impl Snaps {
    async fn start(name: &str) -> Snaps {
        // 1 GiB thin volumes and their clones need room beyond the pool's size: thin
        // clones share their blocks.
        std::env::set_var("CSI_THIN_OVERPROVISION_RATIO", "8");
        Snaps {
            lab: Lab::start(name).await,
        }
    }

    /// CreateVolume (twice: the repeat answers the same), timed under `label`.
    async fn create(
        &mut self,
        name: &str,
        size: i64,
        thin: bool,
        source: Option<VolumeContentSource>,
        label: &str,
    ) -> Volume {
        let req = CreateVolumeRequest {
            name: format!("{}-{name}", self.lab.name),
            capacity_range: Some(CapacityRange {
                required_bytes: size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability(Kind::Fs("ext4"), Mode::SingleNodeWriter)],
            parameters: params(thin),
            secrets: secrets(Some(KEY)),
            volume_content_source: source.clone(),
            ..Default::default()
        };
        let v = self
            .lab
            .t
            .time(label, self.lab.ctl.create_volume(req.clone()))
            .await
            .unwrap_or_else(|s| panic!("CreateVolume {name}: {s}"))
            .into_inner()
            .volume
            .expect("a volume");
        assert_eq!(v.content_source, source, "content_source echoed");
        let again = self.lab.ctl.create_volume(req).await.expect("repeat");
        assert_eq!(again.into_inner().volume.as_ref(), Some(&v));
        v
    }

    /// ControllerPublishVolume to this node, NodeStage, NodePublish at `pods/<name>`.
    async fn attach(&mut self, v: &Volume, name: &str) -> (Vol, String) {
        let ctx = self
            .lab
            .ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: self.lab.node_id.clone(),
                volume_capability: Some(capability(Kind::Fs("ext4"), Mode::SingleNodeWriter)),
                readonly: false,
                secrets: secrets(Some(KEY)),
                volume_context: v.volume_context.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("ControllerPublishVolume {name}: {s}"))
            .into_inner()
            .publish_context;
        let vol = Vol {
            iqn: ctx["targetIqn"].clone(),
            id: v.volume_id.clone(),
            ctx,
            kind: Kind::Fs("ext4"),
            staging: self.lab.path(&format!("staging/{name}")),
        };
        let disk = self.lab.stage(&vol, "NodeStageVolume ext4").await;
        let pod = self.lab.path(&format!("pods/{name}"));
        self.lab.publish(&vol, &pod, false).await;
        (vol, disk)
    }

    /// NodeUnpublish, NodeUnstage (nothing left on the node), ControllerUnpublish.
    async fn detach(&mut self, vol: &Vol, disk: &str, name: &str) {
        let pod = self.lab.path(&format!("pods/{name}"));
        self.lab.unpublish(vol, &pod).await;
        self.lab.unstage(vol, disk).await;
        self.lab
            .ctl
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: vol.id.clone(),
                node_id: self.lab.node_id.clone(),
                secrets: secrets(Some(KEY)),
            })
            .await
            .unwrap_or_else(|s| panic!("ControllerUnpublishVolume {}: {s}", vol.id));
    }

    fn pod(&self, name: &str) -> std::path::PathBuf {
        self.lab.path(&format!("pods/{name}"))
    }

    async fn snapshot(&mut self, name: &str, source: &str, label: &str) -> Snapshot {
        let req = CreateSnapshotRequest {
            source_volume_id: source.into(),
            name: format!("{}-{name}", self.lab.name),
            secrets: HashMap::new(),
            parameters: HashMap::new(),
        };
        let s = self
            .lab
            .t
            .time(label, self.lab.ctl.create_snapshot(req.clone()))
            .await
            .unwrap_or_else(|s| panic!("CreateSnapshot {name}: {s}"))
            .into_inner()
            .snapshot
            .expect("a snapshot");
        assert!(s.ready_to_use, "{s:?}");
        assert_eq!(s.source_volume_id, source);
        assert!(s.creation_time.is_some());
        let again = self.lab.ctl.create_snapshot(req).await.expect("repeat");
        assert_eq!(again.into_inner().snapshot.as_ref(), Some(&s));
        s
    }

    async fn delete_volume(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.lab
            .ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                secrets: HashMap::new(),
            })
            .await
            .map(drop)
    }

    async fn delete_snapshot(&mut self, id: &str) {
        for _ in 0..2 {
            self.lab
                .ctl
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: id.into(),
                    secrets: HashMap::new(),
                })
                .await
                .unwrap_or_else(|s| panic!("DeleteSnapshot {id}: {s}"));
        }
    }

    async fn snapshot_ids(&mut self) -> Vec<String> {
        self.lab
            .ctl
            .list_snapshots(ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots")
            .into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot.map(|s| s.snapshot_id))
            .collect()
    }

    /// Nothing of this test is left on the storage side.
    fn assert_clean(&self) {
        let prefix = &self.lab.name;
        assert!(
            lvs_named(prefix).is_empty(),
            "LVs left: {:?}",
            lvs_named(prefix)
        );
        assert!(lvs_named("clone.").is_empty(), "clone snapshots left");
        assert!(
            targets_named(prefix).is_empty(),
            "targets left: {:?}",
            targets_named(prefix)
        );
        assert!(sessions_under_prefix().is_empty());
    }
}

/// Snapshot, restore, clone and delete orders for a thin or a thick volume.
async fn snapshot_restore_clone(thin: bool) {
    let kind = if thin { "thin" } else { "thick" };
    let mut s = Snaps::start(&format!("snap-{kind}")).await;
    let a = s
        .create("a", 64 * MIB, thin, None, "CreateVolume 64 MiB")
        .await;
    let (va, da) = s.attach(&a, "a").await;
    let old = write_random(&s.pod("a").join("data.bin"), 4 << 20);
    must(&["sync"]);
    let snap = s
        .snapshot(
            "s1",
            &a.volume_id,
            &format!("CreateSnapshot {kind} (64 MiB)"),
        )
        .await;
    assert_eq!(snap.size_bytes, 64 * MIB);
    assert_eq!(s.snapshot_ids().await, vec![snap.snapshot_id.clone()]);
    let new = write_random(&s.pod("a").join("data.bin"), 4 << 20);
    assert_ne!(old, new);

    // Restore: the data as it was at the snapshot, in a larger volume.
    let b = s
        .create(
            "b",
            96 * MIB,
            thin,
            Some(from_snapshot(&snap.snapshot_id)),
            &format!("CreateVolume {kind} from snapshot (64 -> 96 MiB)"),
        )
        .await;
    assert_eq!(b.capacity_bytes, 96 * MIB);
    let (vb, db) = s.attach(&b, "b").await;
    assert_eq!(sum(&s.pod("b").join("data.bin")), old, "restored data");
    assert_eq!(lab_mkfs(&s, &vb), 0, "the restored filesystem was kept");
    // NodeStage grew the 64 MiB filesystem to the 96 MiB volume (kubelet calls no
    // NodeExpandVolume for a restore).
    let st = nix::sys::statvfs::statvfs(&s.pod("b")).expect("statvfs of the restored volume");
    let total = st.blocks() * st.fragment_size();
    assert!(
        total > 80 << 20,
        "restored filesystem is {total} bytes, not grown to 96 MiB"
    );

    // Clone: the current data, independent afterwards.
    must(&["sync"]);
    let c = s
        .create(
            "c",
            64 * MIB,
            thin,
            Some(from_volume(&a.volume_id)),
            &format!("CreateVolume {kind} clone (64 MiB)"),
        )
        .await;
    let (vc, dc) = s.attach(&c, "c").await;
    assert_eq!(sum(&s.pod("c").join("data.bin")), new, "cloned data");
    let in_c = write_random(&s.pod("c").join("data.bin"), 1 << 20);
    let in_a = write_random(&s.pod("a").join("other.bin"), 1 << 20);
    assert_eq!(
        sum(&s.pod("a").join("data.bin")),
        new,
        "the source is unchanged"
    );
    assert!(
        !s.pod("c").join("other.bin").exists(),
        "the clone is unchanged"
    );
    assert_eq!(sum(&s.pod("c").join("data.bin")), in_c);
    assert_eq!(sum(&s.pod("a").join("other.bin")), in_a);

    s.detach(&va, &da, "a").await;
    s.detach(&vb, &db, "b").await;
    s.detach(&vc, &dc, "c").await;

    if thin {
        // Thin snapshots are independent: the origin goes first, the snapshot still restores.
        s.delete_volume(&a.volume_id)
            .await
            .expect("DeleteVolume origin");
        assert_eq!(s.snapshot_ids().await, vec![snap.snapshot_id.clone()]);
        let d = s
            .create(
                "d",
                64 * MIB,
                thin,
                Some(from_snapshot(&snap.snapshot_id)),
                "CreateVolume thin from snapshot, origin deleted",
            )
            .await;
        let (vd, dd) = s.attach(&d, "d").await;
        assert_eq!(sum(&s.pod("d").join("data.bin")), old);
        s.detach(&vd, &dd, "d").await;
        s.delete_snapshot(&snap.snapshot_id).await;
        for v in [&d, &c, &b] {
            s.delete_volume(&v.volume_id).await.expect("DeleteVolume");
        }
    } else {
        // A classic snapshot lives in its origin: the origin cannot go first.
        let refused = s.delete_volume(&a.volume_id).await.expect_err("refused");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
        assert!(refused.message().contains(&snap.snapshot_id), "{refused}");
        // The restored volume and the clone are independent of both.
        s.delete_volume(&b.volume_id).await.expect("DeleteVolume b");
        s.delete_snapshot(&snap.snapshot_id).await;
        s.delete_volume(&a.volume_id).await.expect("DeleteVolume a");
        s.delete_volume(&c.volume_id).await.expect("DeleteVolume c");
    }
    assert!(s.snapshot_ids().await.is_empty());
    s.assert_clean();
    s.lab.t.publish(&format!("lab_snapshot: {kind}"), TIMINGS);
}

/// How many filesystems the node plugin made on `v`.
fn lab_mkfs(s: &Snaps, v: &Vol) -> usize {
    s.lab.mkfs_count(v)
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn thin_snapshot_restore_clone() {
    snapshot_restore_clone(true).await;
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn thick_snapshot_restore_clone() {
    snapshot_restore_clone(false).await;
}

/// Writes `data` at `offset` of LV `id`'s device, synced.
fn write_at(id: &str, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/{id}"))
        .unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

fn read_at(id: &str, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(format!("/dev/{id}")).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// The clone of a 1 GiB volume, thin and thick, timed; a little data at a few offsets
/// (the lab's VG lives in RAM), checked in the clone.
#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn clone_of_one_gib() {
    let mut s = Snaps::start("clone-1g").await;
    const GIB: i64 = 1 << 30;
    for thin in [true, false] {
        let kind = if thin { "thin" } else { "thick" };
        let a = s
            .create(
                &format!("{kind}-src"),
                GIB,
                thin,
                None,
                "CreateVolume 1 GiB",
            )
            .await;
        let offsets = [0u64, 300 << 20, (GIB as u64) - (1 << 20)];
        let patterns: Vec<Vec<u8>> = offsets
            .iter()
            .map(|o| format!("{kind} data at {o};").repeat(1000).into_bytes())
            .collect();
        for (o, p) in offsets.iter().zip(&patterns) {
            write_at(&a.volume_id, *o, p);
        }
        let snap = s
            .snapshot(
                &format!("{kind}-snap"),
                &a.volume_id,
                &format!("CreateSnapshot {kind} (1 GiB)"),
            )
            .await;
        let c = s
            .create(
                &format!("{kind}-clone"),
                GIB,
                thin,
                Some(from_volume(&a.volume_id)),
                &format!("CreateVolume {kind} clone (1 GiB)"),
            )
            .await;
        let r = s
            .create(
                &format!("{kind}-restore"),
                GIB,
                thin,
                Some(from_snapshot(&snap.snapshot_id)),
                &format!("CreateVolume {kind} from snapshot (1 GiB)"),
            )
            .await;
        for v in [&c, &r] {
            for (o, p) in offsets.iter().zip(&patterns) {
                assert!(
                    read_at(&v.volume_id, *o, p.len()) == *p,
                    "{} at {o}",
                    v.volume_id
                );
            }
            // Between the written places: zeros.
            assert!(read_at(&v.volume_id, 600 << 20, 4096)
                .iter()
                .all(|&b| b == 0));
        }
        s.delete_snapshot(&snap.snapshot_id).await;
        for v in [&a, &c, &r] {
            s.delete_volume(&v.volume_id).await.expect("DeleteVolume");
        }
    }
    s.assert_clean();
    s.lab.t.publish("lab_snapshot: 1 GiB", TIMINGS);
}
