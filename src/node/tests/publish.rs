//! NodePublishVolume / NodeUnpublishVolume, NodeGetCapabilities, NodeGetInfo.

use super::*;
use nix::errno::Errno;
use nix::mount::MsFlags;

async fn staged(v: &Vol) -> Fixture {
    let f = Fixture::new();
    f.stage(f.stage_req(v, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.clear();
    f
}

#[tokio::test]
async fn publish_binds_the_staging_mount_and_repeats_are_no_ops() {
    let f = staged(&A).await;
    let cap = mount_cap("", Mode::SingleNodeWriter);
    f.publish(&A, "pods/p1/vol", cap.clone(), false)
        .await
        .unwrap();
    f.publish(&A, "pods/p2/vol", cap.clone(), true)
        .await
        .unwrap();
    let p1 = mounted(&f, "pods/p1/vol").unwrap();
    let p2 = mounted(&f, "pods/p2/vol").unwrap();
    assert_eq!((p1.dev, p1.read_only()), (A.dev, false));
    assert_eq!((p2.dev, p2.read_only()), (A.dev, true));
    assert!(f.mounter.calls().contains(&MountCall::Remount {
        target: f.path("pods/p2/vol").into(),
        flags: MsFlags::MS_NOATIME | MsFlags::MS_RDONLY,
    }));
    f.clear();
    f.publish(&A, "pods/p1/vol", cap.clone(), false)
        .await
        .unwrap();
    assert!(f.mounter.calls().is_empty());
    assert_eq!(
        f.publish(&A, "pods/p1/vol", cap, true).await,
        Err(Code::AlreadyExists)
    );
}

#[tokio::test]
async fn publish_before_stage_or_over_another_device_fails() {
    let f = Fixture::new();
    let cap = mount_cap("", Mode::SingleNodeWriter);
    assert_eq!(
        f.publish(&A, "pods/p1/vol", cap.clone(), false).await,
        Err(Code::FailedPrecondition)
    );
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.stage(f.stage_req(&B, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.publish(&B, "pods/p1/vol", cap.clone(), false)
        .await
        .unwrap();
    assert_eq!(
        f.publish(&A, "pods/p1/vol", cap, false).await,
        Err(Code::FailedPrecondition)
    );
}

#[tokio::test]
async fn a_failed_read_only_remount_leaves_no_writable_bind() {
    let f = staged(&A).await;
    f.mounter.fail("remount", Errno::EPERM);
    assert_eq!(
        f.publish(
            &A,
            "pods/p1/vol",
            mount_cap("", Mode::SingleNodeWriter),
            true
        )
        .await,
        Err(Code::Internal)
    );
    assert!(mounted(&f, "pods/p1/vol").is_none());
}

#[tokio::test]
async fn unpublish_unmounts_and_removes_and_tolerates_repeats() {
    let f = staged(&A).await;
    f.publish(
        &A,
        "pods/p1/vol",
        mount_cap("", Mode::SingleNodeWriter),
        false,
    )
    .await
    .unwrap();
    f.unpublish(&A, "pods/p1/vol").await.unwrap();
    assert!(mounted(&f, "pods/p1/vol").is_none());
    assert!(!f.dir.path().join("pods/p1/vol").exists());
    f.unpublish(&A, "pods/p1/vol").await.unwrap();
    // Mounted but the directory already half cleaned up by a crash: still fine.
    f.unpublish(&A, "pods/never/vol").await.unwrap();
    assert!(
        mounted(&f, "staging/sda").is_some(),
        "the staging mount stays"
    );
}

#[tokio::test]
async fn block_volumes_bind_the_device_node_onto_a_file() {
    let f = Fixture::new();
    let mut req = f.stage_req(&B, "", Mode::SingleNodeWriter);
    req.volume_capability = Some(block_cap());
    f.stage(req).await.unwrap();
    f.publish(&B, "pods/p1/dev", block_cap(), false)
        .await
        .unwrap();
    let file = f.dir.path().join("pods/p1/dev");
    assert!(file.is_file());
    assert!(f.mounter.calls().iter().any(|c| matches!(
        c,
        MountCall::Bind { source, target } if *source == f.disk(&B) && *target == file
    )));
    f.clear();
    f.publish(&B, "pods/p1/dev", block_cap(), false)
        .await
        .unwrap();
    assert!(f
        .mounter
        .calls()
        .iter()
        .all(|c| !matches!(c, MountCall::Bind { .. })));
    // A read-only bind of a device node does not stop writes (checked in the lab): a
    // read-only publication of a read-write staged disk is refused rather than pretended.
    assert_eq!(
        f.publish(&B, "pods/p2/dev", block_cap(), true).await,
        Err(Code::InvalidArgument)
    );
    assert!(mounted(&f, "pods/p2/dev").is_none());
    // The disk is in use: unstage must wait for the unpublishes.
    assert_eq!(f.unstage(&B).await, Err(Code::FailedPrecondition));
    f.unpublish(&B, "pods/p1/dev").await.unwrap();
    f.unpublish(&B, "pods/p2/dev").await.unwrap();
    assert!(!file.exists());
    f.unstage(&B).await.unwrap();
    assert!(f.sessions().is_empty());
}

#[tokio::test]
async fn reader_only_block_volumes_make_the_whole_disk_read_only() {
    let f = Fixture::new();
    let mut cap = block_cap();
    cap.access_mode = Some(AccessMode {
        mode: Mode::MultiNodeReaderOnly as i32,
    });
    let mut req = f.stage_req(&B, "", Mode::SingleNodeWriter);
    req.volume_capability = Some(cap.clone());
    f.stage(req).await.unwrap();
    assert_eq!(
        f.tools.calls(),
        [format!("blockdev --setro {}", f.disk(&B).display())]
    );
    f.publish(&B, "pods/p1/dev", cap, true).await.unwrap();
    assert!(mounted(&f, "pods/p1/dev").unwrap().read_only());
}

#[tokio::test]
async fn block_publish_without_the_disk_is_not_staged() {
    let f = Fixture::new();
    assert_eq!(
        f.publish(&B, "pods/p1/dev", block_cap(), false).await,
        Err(Code::FailedPrecondition)
    );
    let mut r = NodePublishVolumeRequest {
        volume_id: B.id.into(),
        publish_context: HashMap::new(),
        staging_target_path: f.path("staging/sdb"),
        target_path: f.path("pods/p1/dev"),
        volume_capability: Some(block_cap()),
        readonly: false,
        secrets: HashMap::new(),
        volume_context: HashMap::new(),
    };
    let code = f
        .svc
        .node_publish_volume(Request::new(r.clone()))
        .await
        .unwrap_err()
        .code();
    assert_eq!(
        code,
        Code::InvalidArgument,
        "publish_context is needed to find the disk"
    );
    r.publish_context = ctx(&B);
    r.target_path = "pods/p1/dev".into();
    let code = f
        .svc
        .node_publish_volume(Request::new(r.clone()))
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, Code::InvalidArgument);
    r.target_path = f.path("pods/p1/dev");
    r.staging_target_path.clear();
    let code = f
        .svc
        .node_publish_volume(Request::new(r))
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(f.activity(), 0);
}

#[tokio::test]
async fn capabilities_info_and_expand() {
    let f = Fixture::new();
    let caps = f
        .svc
        .node_get_capabilities(Request::new(NodeGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    use node_service_capability::{rpc::Type, Type as T};
    let types: Vec<Type> = caps
        .iter()
        .filter_map(|c| match c.r#type {
            Some(T::Rpc(r)) => Type::try_from(r.r#type).ok(),
            None => None,
        })
        .collect();
    assert_eq!(
        types,
        [
            Type::StageUnstageVolume,
            Type::GetVolumeStats,
            Type::VolumeCondition,
            Type::ExpandVolume
        ]
    );
    let info = f
        .svc
        .node_get_info(Request::new(NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.node_id.as_str(), info.max_volumes_per_node),
        ("node1", 7)
    );
    let err = f
        .svc
        .node_expand_volume(Request::new(NodeExpandVolumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
