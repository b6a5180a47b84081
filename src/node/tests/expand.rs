//! NodeExpandVolume.

use super::*;

const GROWN: u64 = 256 << 20;

fn expand_req(v: &Vol, path: &str, required: u64) -> NodeExpandVolumeRequest {
    NodeExpandVolumeRequest {
        volume_id: v.id.into(),
        volume_path: path.into(),
        capacity_range: (required > 0).then_some(CapacityRange {
            required_bytes: required as i64,
            limit_bytes: 0,
        }),
        staging_target_path: String::new(),
        volume_capability: None,
        secrets: HashMap::new(),
    }
}

async fn expand(f: &Fixture, req: NodeExpandVolumeRequest) -> Result<i64, tonic::Status> {
    f.svc
        .node_expand_volume(Request::new(req))
        .await
        .map(|r| r.into_inner().capacity_bytes)
}

/// Stages `v` with filesystem `fs` and publishes it at `pods/p1/vol`.
async fn staged_fs(f: &Fixture, v: &Vol, fs: &str) -> String {
    f.stage(f.stage_req(v, fs, Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.publish(
        v,
        "pods/p1/vol",
        mount_cap(fs, Mode::SingleNodeWriter),
        false,
    )
    .await
    .unwrap();
    f.path("pods/p1/vol")
}

fn grow_calls(f: &Fixture) -> Vec<String> {
    f.tools
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("resize2fs") || c.starts_with("xfs_growfs"))
        .collect()
}

#[tokio::test]
async fn ext4_is_rescanned_and_grown_online_at_either_path() {
    let f = Fixture::new();
    let published = staged_fs(&f, &A, "ext4").await;
    f.sysfs.set_size(A.disk, GROWN);
    f.clear();
    let size = expand(&f, expand_req(&A, &published, GROWN)).await.unwrap();
    assert_eq!(size, GROWN as i64);
    assert_eq!(f.sysfs.read_rescan(A.disk).as_deref(), Some("1"));
    let disk = f.disk(&A).display().to_string();
    assert_eq!(grow_calls(&f), [format!("resize2fs {disk}")]);
    assert!(f.iscsi.calls().is_empty(), "no iscsiadm call");
    assert!(f.mounter.calls().is_empty(), "nothing mounted or unmounted");
    // The repeat, and the same through the staging path (where kubelet may call it).
    let staging = f.path("staging/sda");
    for path in [&published, &staging] {
        assert_eq!(
            expand(&f, expand_req(&A, path, GROWN)).await.unwrap(),
            GROWN as i64
        );
    }
    // Without a capacity range: the size the disk has.
    assert_eq!(
        expand(&f, expand_req(&A, &published, 0)).await.unwrap(),
        GROWN as i64
    );
}

#[tokio::test]
async fn xfs_is_grown_through_its_mount_point() {
    let f = Fixture::new();
    let published = staged_fs(&f, &A, "xfs").await;
    f.sysfs.set_size(A.disk, GROWN);
    f.clear();
    let mut req = expand_req(&A, &published, GROWN);
    req.volume_capability = Some(mount_cap("xfs", Mode::SingleNodeWriter));
    expand(&f, req).await.unwrap();
    assert_eq!(grow_calls(&f), [format!("xfs_growfs {published}")]);
}

#[tokio::test]
async fn block_volumes_are_only_rescanned() {
    let f = Fixture::new();
    let mut stage = f.stage_req(&B, "", Mode::SingleNodeWriter);
    stage.volume_capability = Some(block_cap());
    f.stage(stage).await.unwrap();
    f.publish(&B, "pods/p1/dev", block_cap(), false)
        .await
        .unwrap();
    f.sysfs.set_size(B.disk, GROWN);
    f.clear();
    // The published device node, found to be the disk without a capability...
    let size = expand(&f, expand_req(&B, &f.path("pods/p1/dev"), GROWN))
        .await
        .unwrap();
    assert_eq!(size, GROWN as i64);
    assert_eq!(f.sysfs.read_rescan(B.disk).as_deref(), Some("1"));
    // ...and the staging directory (kubelet makes it), with the block capability.
    std::fs::create_dir_all(f.path("staging/sdb")).unwrap();
    let mut req = expand_req(&B, &f.path("staging/sdb"), GROWN);
    req.volume_capability = Some(block_cap());
    expand(&f, req).await.unwrap();
    assert!(
        grow_calls(&f).is_empty(),
        "no filesystem tool on a block volume"
    );
}

#[tokio::test]
async fn a_disk_that_does_not_grow_is_reported_after_a_bounded_wait() {
    let f = Fixture::with_timeout(Duration::from_millis(300));
    let published = staged_fs(&f, &A, "ext4").await;
    f.clear();
    let started = std::time::Instant::now();
    let err = expand(&f, expand_req(&A, &published, GROWN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("ControllerExpandVolume"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(grow_calls(&f).is_empty(), "no resize before the disk grew");
}

#[tokio::test]
async fn requests_are_checked_and_the_volume_must_be_staged_here() {
    let f = Fixture::new();
    let published = staged_fs(&f, &A, "ext4").await;
    let other = f.path("pods/p2");
    std::fs::create_dir_all(&other).unwrap();
    let cases = [
        (
            expand_req(&Vol { id: "", ..A }, &published, 0),
            Code::InvalidArgument,
        ),
        (expand_req(&A, "", 0), Code::InvalidArgument),
        (
            NodeExpandVolumeRequest {
                capacity_range: Some(CapacityRange {
                    required_bytes: -1,
                    limit_bytes: 0,
                }),
                ..expand_req(&A, &published, 0)
            },
            Code::InvalidArgument,
        ),
        (
            NodeExpandVolumeRequest {
                volume_capability: Some(mount_cap("btrfs", Mode::SingleNodeWriter)),
                ..expand_req(&A, &published, 0)
            },
            Code::InvalidArgument,
        ),
        // Not staged here (csi-sanity's "volume is not found", with a relative path).
        (expand_req(&B, "some/path", 0), Code::NotFound),
        (expand_req(&B, &published, 0), Code::NotFound),
        // Staged, but the path does not exist or does not hold it.
        (expand_req(&A, &f.path("nowhere"), 0), Code::NotFound),
        (expand_req(&A, &other, 0), Code::NotFound),
    ];
    for (req, want) in cases {
        let got = expand(&f, req.clone())
            .await
            .map(drop)
            .map_err(|s| s.code());
        assert_eq!(got, Err(want), "{req:?}");
    }
    // The disk is gone (session lost): not something a retry fixes.
    f.sysfs.remove_session(1);
    let err = expand(&f, expand_req(&A, &published, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
}
