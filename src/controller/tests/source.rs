//! CreateVolume from a snapshot or a volume: thin snapshots, thick copies, crash safety.

use super::snapshot::thin_volume;
use super::*;
use crate::controller::copy::CopyJob;
use crate::csi::controller_server::Controller;
use crate::csi::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use std::sync::atomic::Ordering;
use tonic::Request;

fn from_snapshot(mut req: CreateVolumeRequest, id: &str) -> CreateVolumeRequest {
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    });
    req
}

fn from_volume(mut req: CreateVolumeRequest, id: &str) -> CreateVolumeRequest {
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    });
    req
}

fn thin(req: CreateVolumeRequest) -> CreateVolumeRequest {
    with_params(req, &[("thinPool", "pool0")])
}

async fn try_create(h: &Harness, req: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
    h.svc
        .create_volume(Request::new(req))
        .await
        .map(|r| r.into_inner().volume.expect("a volume"))
}

#[tokio::test]
async fn a_thin_restore_is_a_writable_thin_snapshot_echoing_its_source() {
    let h = Harness::new().await;
    thin_volume(&h, "pvc-1").await;
    h.snapshot("s1", "csivg/pvc-1").await;
    h.runner.clear();
    let req = thin(from_snapshot(create_req("pvc-2", 0), "csivg/snap.s1"));
    let v = h.create(req.clone()).await;
    assert_eq!(v.volume_id, "csivg/pvc-2");
    assert_eq!(v.capacity_bytes, 64 * MIB as i64, "the snapshot's size");
    assert_eq!(v.content_source, req.volume_content_source);
    assert_eq!(
        h.calls("lvcreate"),
        [
            "lvcreate --yes --snapshot --name pvc-2 --permission rw --setactivationskip n \
          csivg/snap.s1 --addtag lvm-iscsi-csi/name=pvc-2 \
          --addtag lvm-iscsi-csi/from=snapshot/csivg#2fsnap.s1"
        ]
    );
    assert!(h.calls("lvextend").is_empty() && h.jobs().is_empty());
    assert_eq!(h.lvm.lv("csivg", "pvc-2").unwrap().attr, "Vwi-a-tz--");
    // Repeat: the same answer; without the source, or from another one: ALREADY_EXISTS.
    h.runner.clear();
    assert_eq!(h.create(req.clone()).await, v);
    assert!(h.calls("lvcreate").is_empty());
    let plain = try_create(&h, thin(create_req("pvc-2", 0)))
        .await
        .unwrap_err();
    assert_eq!(plain.code(), Code::AlreadyExists, "{}", plain.message());
    let other = try_create(&h, thin(from_volume(create_req("pvc-2", 0), "csivg/pvc-1")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    // The restored volume is a volume: publishable, listed with its source.
    h.publish(publish_req("csivg/pvc-2", "node-1"))
        .await
        .unwrap();
    let got = h
        .svc
        .controller_get_volume(Request::new(ControllerGetVolumeRequest {
            volume_id: "csivg/pvc-2".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.volume.unwrap().content_source,
        req.volume_content_source
    );
}

#[tokio::test]
async fn a_larger_thin_restore_or_clone_is_grown() {
    let h = Harness::new().await;
    thin_volume(&h, "pvc-1").await;
    h.runner.clear();
    let v = h
        .create(thin(from_volume(
            create_req("pvc-2", 100 * MIB),
            "csivg/pvc-1",
        )))
        .await;
    assert_eq!(v.capacity_bytes, 100 * MIB as i64);
    let created = &h.calls("lvcreate")[0];
    assert!(
        created.contains("--addtag lvm-iscsi-csi/copying=csivg#2fpvc-1"),
        "{created}"
    );
    assert_eq!(
        h.calls("lvextend"),
        ["lvextend --size 104857600b csivg/pvc-2"]
    );
    let tags = h.lvm.lv("csivg", "pvc-2").unwrap().tags;
    assert!(!tags.iter().any(|t| t.contains("copying")), "{tags:?}");
    assert_eq!(
        tags,
        [
            "lvm-iscsi-csi/name=pvc-2",
            "lvm-iscsi-csi/from=volume/csivg#2fpvc-1"
        ]
    );
}

#[tokio::test]
async fn source_errors() {
    let h = Harness::new().await;
    thin_volume(&h, "thin").await;
    h.create(create_req("thick", 64 * MIB)).await;
    h.snapshot("s-thin", "csivg/thin").await;
    h.snapshot("s-thick", "csivg/thick").await;
    h.runner.clear();
    let cases = [
        (
            from_snapshot(create_req("n", 0), "csivg/snap.nope"),
            Code::NotFound,
            "does not exist",
        ),
        (
            from_snapshot(create_req("n", 0), "csivg/thin"),
            Code::NotFound,
            "snapshot csivg/thin",
        ),
        (
            from_volume(create_req("n", 0), "csivg/snap.s-thin"),
            Code::NotFound,
            "volume",
        ),
        (
            from_volume(create_req("n", 0), "other"),
            Code::NotFound,
            "other",
        ),
        (
            from_snapshot(create_req("n", 0), "csivg/snap.s-thin"),
            Code::InvalidArgument,
            "a thick volume",
        ),
        (
            thin(from_snapshot(create_req("n", 0), "csivg/snap.s-thick")),
            Code::InvalidArgument,
            "thin pool pool0",
        ),
        (
            with_params(
                from_volume(create_req("n", 0), "csivg/thick"),
                &[("volumeGroup", "other")],
            ),
            Code::InvalidArgument,
            "volume group csivg",
        ),
        (
            thin(from_volume(create_req("n", 32 * MIB), "csivg/thin")),
            Code::OutOfRange,
            "smaller than its source",
        ),
        (
            {
                let mut r = from_snapshot(create_req("n", 0), "csivg/snap.s-thick");
                r.capacity_range = Some(CapacityRange {
                    required_bytes: 0,
                    limit_bytes: 32 * MIB as i64,
                });
                r
            },
            Code::OutOfRange,
            "smaller",
        ),
    ];
    for (req, want, needle) in cases {
        let e = try_create(&h, req).await.unwrap_err();
        assert_eq!(e.code(), want, "{}", e.message());
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }
    assert!(h.calls("lvcreate").is_empty(), "{:?}", h.calls("lvcreate"));
    // An invalidated snapshot cannot be restored.
    h.lvm
        .edit("csivg", "snap.s-thick", |l| l.attr = "sri-I-s---".into());
    let e = try_create(&h, from_snapshot(create_req("n", 0), "csivg/snap.s-thick"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("copy-on-write"), "{}", e.message());
}

#[tokio::test]
async fn a_thick_restore_copies_the_snapshot_then_clears_the_marker() {
    let h = Harness::new().await;
    h.create(with_params(
        create_req("pvc-1", 64 * MIB),
        &[("fsType", "xfs")],
    ))
    .await;
    h.snapshot("s1", "csivg/pvc-1").await;
    h.runner.clear();
    let req = with_params(
        from_snapshot(create_req("pvc-2", 80 * MIB), "csivg/snap.s1"),
        &[("fsType", "xfs")],
    );
    let v = h.create(req.clone()).await;
    assert_eq!(v.capacity_bytes, 80 * MIB as i64);
    assert_eq!(
        h.calls("lvcreate"),
        [
            "lvcreate --yes --wipesignatures y --zero y --size 83886080b --name pvc-2 csivg \
          --addtag lvm-iscsi-csi/name=pvc-2 --addtag lvm-iscsi-csi/from=snapshot/csivg#2fsnap.s1 \
          --addtag lvm-iscsi-csi/fs=xfs --addtag lvm-iscsi-csi/copying=csivg#2fsnap.s1"
        ]
    );
    assert_eq!(
        h.jobs(),
        [CopyJob {
            source: "/dev/csivg/snap.s1".into(),
            dest: "/dev/csivg/pvc-2".into(),
            data_len: 64 * MIB,
            total_len: 80 * MIB,
        }]
    );
    assert_eq!(
        h.calls("lvchange"),
        ["lvchange --deltag lvm-iscsi-csi/copying=csivg#2fsnap.s1 csivg/pvc-2"]
    );
    // A temporary clone snapshot exists only for clones.
    assert!(h.calls("lvremove").is_empty());
    h.runner.clear();
    assert_eq!(h.create(req).await, v);
    assert_eq!(h.jobs().len(), 1, "a finished volume is not copied again");
}

#[tokio::test]
async fn a_thick_clone_copies_from_a_temporary_snapshot() {
    let h = Harness::new().await;
    h.create(create_req("pvc-1", 64 * MIB)).await;
    h.runner.clear();
    let v = h
        .create(from_volume(create_req("pvc-2", 0), "csivg/pvc-1"))
        .await;
    assert_eq!(v.capacity_bytes, 64 * MIB as i64);
    let lvcreate = h.calls("lvcreate");
    assert_eq!(lvcreate.len(), 2, "{lvcreate:?}");
    assert_eq!(
        lvcreate[1],
        "lvcreate --yes --snapshot --name clone.pvc-2 --size 75497472b --permission r csivg/pvc-1"
    );
    assert_eq!(
        h.jobs()[0].source,
        std::path::PathBuf::from("/dev/csivg/clone.pvc-2")
    );
    assert_eq!(h.calls("lvremove"), ["lvremove --yes csivg/clone.pvc-2"]);
    assert!(h.lvm.lv("csivg", "clone.pvc-2").is_none());
    // The source is deletable again (no snapshot left on it), the clone independent.
    h.delete("csivg/pvc-1").await.unwrap();
    assert!(h.lvm.lv("csivg", "pvc-2").is_some());
}

#[tokio::test]
async fn a_failed_copy_leaves_nothing_behind() {
    let h = Harness::new().await;
    h.create(create_req("pvc-1", 64 * MIB)).await;
    h.copier.fail_next.store(true, Ordering::SeqCst);
    let e = try_create(&h, from_volume(create_req("pvc-2", 0), "csivg/pvc-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("/dev/csivg/pvc-2"), "{}", e.message());
    assert!(h.lvm.lv("csivg", "pvc-2").is_none());
    assert!(h.lvm.lv("csivg", "clone.pvc-2").is_none());
    // And the retry works.
    h.create(from_volume(create_req("pvc-2", 0), "csivg/pvc-1"))
        .await;
}

#[tokio::test]
async fn an_interrupted_copy_is_never_a_finished_volume() {
    // What a crash half-way through a clone leaves: the new LV with its marker, and the
    // temporary snapshot of the source.
    let lvm = lvm();
    lvm.add_lv("csivg", "pvc-1", 64 * MIB, &["lvm-iscsi-csi/name=pvc-1"]);
    lvm.add_lv(
        "csivg",
        "pvc-2",
        64 * MIB,
        &[
            "lvm-iscsi-csi/name=pvc-2",
            "lvm-iscsi-csi/from=volume/csivg#2fpvc-1",
            "lvm-iscsi-csi/copying=csivg#2fpvc-1",
        ],
    );
    let h = Harness::with(settings(), lvm).await;
    Lvm::new(h.runner.clone())
        .snapshot(&crate::lvm::NewSnapshot {
            vg: "csivg".into(),
            origin: "pvc-1".into(),
            name: "clone.pvc-2".into(),
            cow_size: Some(72 * MIB),
            writable: false,
            tags: vec![],
        })
        .await
        .unwrap();
    h.runner.clear();
    // Not publishable, reported abnormal, the source not deletable (the snapshot on it).
    let e = h
        .publish(publish_req("csivg/pvc-2", "node-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("not ready"), "{}", e.message());
    let listed = h
        .svc
        .list_volumes(Request::new(ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let status = listed.entries[1].status.clone().unwrap();
    assert!(status.volume_condition.unwrap().abnormal);
    let e = h.delete("csivg/pvc-1").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("clone.pvc-2"), "{}", e.message());
    // The retried CreateVolume redoes the copy from the existing temporary snapshot.
    let v = h
        .create(from_volume(create_req("pvc-2", 0), "csivg/pvc-1"))
        .await;
    assert_eq!(v.volume_id, "csivg/pvc-2");
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(
        h.jobs()[0].source,
        std::path::PathBuf::from("/dev/csivg/clone.pvc-2")
    );
    assert!(h.calls("lvcreate").is_empty(), "the snapshot was reused");
    assert!(h.lvm.lv("csivg", "clone.pvc-2").is_none());
    h.publish(publish_req("csivg/pvc-2", "node-1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_an_interrupted_clone_removes_its_temporary_snapshot() {
    let h = Harness::new().await;
    h.create(create_req("pvc-1", 64 * MIB)).await;
    h.create(from_volume(create_req("pvc-2", 0), "csivg/pvc-1"))
        .await;
    // As a crash would leave it.
    h.lvm.edit("csivg", "pvc-2", |l| {
        l.tags.push("lvm-iscsi-csi/copying=csivg#2fpvc-1".into())
    });
    Lvm::new(h.runner.clone())
        .snapshot(&crate::lvm::NewSnapshot {
            vg: "csivg".into(),
            origin: "pvc-1".into(),
            name: "clone.pvc-2".into(),
            cow_size: Some(72 * MIB),
            writable: false,
            tags: vec![],
        })
        .await
        .unwrap();
    h.delete("csivg/pvc-2").await.unwrap();
    assert!(h.lvm.lv("csivg", "pvc-2").is_none());
    assert!(h.lvm.lv("csivg", "clone.pvc-2").is_none());
    h.delete("csivg/pvc-1").await.unwrap();
}
