//! CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot; snapshots are never volumes.

use super::*;
use crate::csi::controller_server::Controller;
use tonic::Request;

/// A thin volume `pvc-1` (64 MiB) in pool0.
pub(super) async fn thin_volume(h: &Harness, name: &str) -> Volume {
    h.create(with_params(
        create_req(name, 64 * MIB),
        &[("thinPool", "pool0")],
    ))
    .await
}

#[tokio::test]
async fn a_thin_snapshot_is_instant_read_only_and_idempotent() {
    let h = Harness::new().await;
    thin_volume(&h, "pvc-1").await;
    h.runner.clear();
    let s = h.snapshot("snapshot-1", "csivg/pvc-1").await;
    assert_eq!(s.snapshot_id, "csivg/snap.snapshot-1");
    assert_eq!(s.source_volume_id, "csivg/pvc-1");
    assert_eq!(s.size_bytes, 64 * MIB as i64);
    assert!(s.ready_to_use);
    assert!(s.creation_time.is_some_and(|t| t.seconds > 1_700_000_000));
    assert_eq!(
        h.calls("lvcreate"),
        [
            "lvcreate --yes --snapshot --name snap.snapshot-1 --permission r csivg/pvc-1 \
          --addtag lvm-iscsi-csi/snap=snapshot-1 --addtag lvm-iscsi-csi/src=csivg#2fpvc-1"
        ]
    );
    let lv = h.lvm.lv("csivg", "snap.snapshot-1").unwrap();
    assert_eq!(
        lv.attr, "Vri---tz-k",
        "inactive, activation skipped, read-only"
    );
    // The repeat finds it by name; the same name for another volume is ALREADY_EXISTS.
    h.runner.clear();
    assert_eq!(h.snapshot("snapshot-1", "csivg/pvc-1").await, s);
    assert!(h.calls("lvcreate").is_empty());
    thin_volume(&h, "pvc-2").await;
    let e = h.snap("snapshot-1", "csivg/pvc-2", &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    // Snapshots are not volumes.
    assert_eq!(h.volume_ids().await, ["csivg/pvc-1", "csivg/pvc-2"]);
}

#[tokio::test]
async fn a_thick_snapshot_is_a_classic_snapshot_with_a_safe_cow() {
    let h = Harness::new().await;
    h.create(create_req("pvc-1", 64 * MIB)).await;
    h.runner.clear();
    let s = h.snapshot("s1", "csivg/pvc-1").await;
    assert_eq!(
        s.size_bytes,
        64 * MIB as i64,
        "the origin's size, not the COW's"
    );
    // 64 MiB + two extents, which LVM reduces to what the origin can use.
    assert_eq!(
        h.calls("lvcreate"),
        [
            "lvcreate --yes --snapshot --name snap.s1 --size 75497472b --permission r csivg/pvc-1 \
          --addtag lvm-iscsi-csi/snap=s1 --addtag lvm-iscsi-csi/src=csivg#2fpvc-1"
        ]
    );
    let small = h
        .snap("s2", "csivg/pvc-1", &[("cowSizePercent", "25")])
        .await
        .unwrap();
    assert!(small.ready_to_use);
    assert_eq!(h.lvm.lv("csivg", "snap.s2").unwrap().size, 16 * MIB);
    // The origin is still a volume, listed once.
    assert_eq!(h.volume_ids().await, ["csivg/pvc-1"]);
    // An invalidated snapshot is reported as not ready.
    h.lvm
        .edit("csivg", "snap.s2", |l| l.attr = "sri-I-s---".into());
    let got = h
        .svc
        .get_snapshot(Request::new(GetSnapshotRequest {
            snapshot_id: "csivg/snap.s2".into(),
            secrets: HashMap::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(!got.ready_to_use);
}

#[tokio::test]
async fn create_snapshot_errors() {
    let h = Harness::new().await;
    h.create(create_req("pvc-1", 8 * MIB)).await;
    h.runner.clear();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Code, &'a str);
    let cases: [Case; 7] = [
        ("", "csivg/pvc-1", &[], Code::InvalidArgument, "name"),
        ("s", "", &[], Code::InvalidArgument, "source_volume_id"),
        ("s", "csivg/a b", &[], Code::InvalidArgument, "invalid"),
        ("s", "fake-vol", &[], Code::NotFound, "fake-vol"),
        (
            "s",
            "csivg/pvc-1",
            &[("cowSize", "1")],
            Code::InvalidArgument,
            "`cowSize`",
        ),
        (
            "s",
            "csivg/pvc-1",
            &[("cowSizePercent", "0")],
            Code::InvalidArgument,
            "cowSizePercent",
        ),
        ("s", "csivg/nope", &[], Code::NotFound, "csivg/nope"),
    ];
    for (name, source, params, want, needle) in cases {
        let e = h.snap(name, source, params).await.unwrap_err();
        assert_eq!(e.code(), want, "{}", e.message());
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle}",
            e.message()
        );
    }
    assert!(h.calls("lvcreate").is_empty());
    // No room for the COW area.
    h.create(create_req("big", 512 * MIB)).await;
    let e = h.snap("s", "csivg/big", &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(h.lvm.lv("csivg", "snap.s").is_none());
}

#[tokio::test]
async fn delete_snapshot_is_idempotent_and_touches_only_snapshots() {
    let h = Harness::new().await;
    thin_volume(&h, "pvc-1").await;
    let s = h.snapshot("s1", "csivg/pvc-1").await;
    h.delete_snapshot(&s.snapshot_id).await.unwrap();
    assert!(h.lvm.lv("csivg", "snap.s1").is_none());
    h.delete_snapshot(&s.snapshot_id).await.unwrap();
    h.delete_snapshot("not-an-id").await.unwrap();
    // A volume's id is not a snapshot: nothing is removed.
    h.delete_snapshot("csivg/pvc-1").await.unwrap();
    assert!(h.lvm.lv("csivg", "pvc-1").is_some());
    assert_eq!(
        code(h.delete_snapshot("").await),
        Code::InvalidArgument,
        "empty id"
    );
    assert_eq!(
        code(h.delete_snapshot("csivg/a;b").await),
        Code::InvalidArgument
    );
    // Held open (a copy reads it): in use.
    h.create(create_req("pvc-2", 8 * MIB)).await;
    h.snapshot("s2", "csivg/pvc-2").await;
    h.lvm.set_open("csivg", "snap.s2", true);
    assert_eq!(
        code(h.delete_snapshot("csivg/snap.s2").await),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn a_thick_volume_with_snapshots_cannot_be_deleted_a_thin_one_can() {
    let h = Harness::new().await;
    h.create(create_req("thick", 8 * MIB)).await;
    h.snapshot("s1", "csivg/thick").await;
    let e = h.delete("csivg/thick").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("csivg/snap.s1"), "{}", e.message());
    assert!(h.lvm.lv("csivg", "snap.s1").is_some(), "nothing removed");
    h.delete_snapshot("csivg/snap.s1").await.unwrap();
    h.delete("csivg/thick").await.unwrap();
    assert!(h.lvm.lv("csivg", "thick").is_none());

    thin_volume(&h, "thin").await;
    let s = h.snapshot("s2", "csivg/thin").await;
    h.delete("csivg/thin").await.unwrap();
    assert!(h.lvm.lv("csivg", "thin").is_none());
    // The snapshot lives on, listed with its source's id.
    let listed = h
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.entries[0].snapshot.as_ref(), Some(&s));
    // DeleteVolume of a snapshot's id does nothing.
    h.delete(&s.snapshot_id).await.unwrap();
    assert!(h.lvm.lv("csivg", "snap.s2").is_some());
}

#[tokio::test]
async fn list_snapshots_pages_and_filters() {
    let h = Harness::new().await;
    thin_volume(&h, "a").await;
    thin_volume(&h, "b").await;
    for (name, source) in [("s3", "a"), ("s1", "a"), ("s2", "b")] {
        h.snapshot(name, &format!("csivg/{source}")).await;
    }
    let all = h.list_snapshot_ids(ListSnapshotsRequest::default()).await;
    assert_eq!(all, ["csivg/snap.s1", "csivg/snap.s2", "csivg/snap.s3"]);
    let page = h
        .list_snapshots(ListSnapshotsRequest {
            max_entries: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.next_token, "csivg/snap.s2");
    let rest = h
        .list_snapshot_ids(ListSnapshotsRequest {
            starting_token: page.next_token,
            ..Default::default()
        })
        .await;
    assert_eq!(rest, ["csivg/snap.s3"]);
    let of_a = h
        .list_snapshot_ids(ListSnapshotsRequest {
            source_volume_id: "csivg/a".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(of_a, ["csivg/snap.s1", "csivg/snap.s3"]);
    for (id, want) in [
        ("csivg/snap.s2", vec!["csivg/snap.s2"]),
        ("csivg/snap.nope", vec![]),
        ("csivg/a", vec![]),
        ("no such id", vec![]),
    ] {
        let got = h
            .list_snapshot_ids(ListSnapshotsRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(got, want, "{id}");
    }
    let bad = h
        .list_snapshots(ListSnapshotsRequest {
            starting_token: "bad token".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad), Code::Aborted);
    let get = |id: &str| {
        h.svc.get_snapshot(Request::new(GetSnapshotRequest {
            snapshot_id: id.into(),
            secrets: HashMap::new(),
        }))
    };
    assert_eq!(code(get("csivg/snap.nope").await), Code::NotFound);
    assert_eq!(code(get("other").await), Code::NotFound);
    assert_eq!(code(get("").await), Code::InvalidArgument);
    assert_eq!(code(get("csivg/a").await), Code::NotFound, "a volume");
}

#[tokio::test]
async fn snapshots_are_never_exported_or_published() {
    // A snapshot LV that even carries a name and a publication tag (by hand): restore,
    // ListVolumes and publish leave it alone.
    let lvm = lvm();
    lvm.add_thin(
        "csivg",
        "pool0",
        "snap.s1",
        8 * MIB,
        &[
            "lvm-iscsi-csi/snap=s1",
            "lvm-iscsi-csi/name=s1",
            "lvm-iscsi-csi/pub=node-1/iqn.2004-10.com.debian:node-1/none/single/rw",
        ],
    );
    let h = Harness::with(settings(), lvm).await;
    assert!(h.target.exports().is_empty());
    assert!(h.volume_ids().await.is_empty());
    let e = h
        .publish(publish_req("csivg/snap.s1", "node-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    h.delete("csivg/snap.s1").await.unwrap();
    assert!(h.lvm.lv("csivg", "snap.s1").is_some());
}
