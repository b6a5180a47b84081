//! The Controller and Identity services served on a unix socket (as in production, through
//! `server::builder`/`serve`) and driven with the generated tonic client, the way
//! external-provisioner and external-attacher drive them; LVM, the target and the Kubernetes
//! lookup are fakes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use lvm_iscsi_csi::controller::fake::FakeResolver;
use lvm_iscsi_csi::controller::{ControllerService, Settings};
use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::controller_server::ControllerServer;
use lvm_iscsi_csi::csi::identity_client::IdentityClient;
use lvm_iscsi_csi::csi::identity_server::IdentityServer;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use lvm_iscsi_csi::csi::*;
use lvm_iscsi_csi::export::fake::FakeTarget;
use lvm_iscsi_csi::identity::IdentityService;
use lvm_iscsi_csi::lvm::fake::FakeLvm;
use lvm_iscsi_csi::lvm::Lvm;
use lvm_iscsi_csi::server;
use tonic::transport::Channel;
use tonic::Code;

const MIB: u64 = 1 << 20;
const IQN: &str = "iqn.2004-10.com.debian:worker-1";

struct Running {
    controller: ControllerClient<Channel>,
    identity: IdentityClient<Channel>,
    service: ControllerService,
    target: Arc<FakeTarget>,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let lvm = FakeLvm::new();
    lvm.add_vg("csivg", 1 << 30, 4 * MIB);
    lvm.add_thin_pool("csivg", "pool0", 256 * MIB);
    let target = Arc::new(FakeTarget::new());
    let service = ControllerService::new(
        Lvm::new(lvm.runner()),
        target.clone(),
        Arc::new(FakeResolver::new([("worker-1", IQN)])),
        Settings {
            iqn_prefix: "iqn.2026-11.io.csi.lvm-iscsi".into(),
            portals: vec!["192.0.2.10:3260".parse().unwrap()],
            default_volume_group: Some("csivg".into()),
            default_volume_size: 64 * MIB,
            thin_overprovision_ratio: 1.0,
            chap_key: None,
        },
    );
    let identity = IdentityService::new("lvm-iscsi.csi.io", Arc::new(service.readiness()), true);
    let router = server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(service.clone()));
    let listener = server::bind(&sock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let channel = connect(sock).await;
    Running {
        controller: ControllerClient::new(channel.clone()),
        identity: IdentityClient::new(channel),
        service,
        target,
        stop,
        _dir: dir,
    }
}

async fn connect(path: PathBuf) -> Channel {
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap()
}

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

#[tokio::test]
async fn a_volume_lifecycle_over_the_socket() {
    let mut r = start().await;
    // Not ready until the exports are restored.
    let probe = r
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false));
    r.service.restore().await.unwrap();
    // Ready once the background check of LVM and the target has answered too.
    let mut ready = None;
    for _ in 0..100 {
        ready = r
            .identity
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready;
        if ready == Some(true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ready, Some(true));

    let create = CreateVolumeRequest {
        name: "pvc-5f2a".into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 10 * MIB as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability()],
        parameters: HashMap::from([
            ("thinPool".into(), "pool0".into()),
            ("csi.storage.k8s.io/pvc/name".into(), "data".into()),
        ]),
        ..Default::default()
    };
    let volume = r
        .controller
        .create_volume(create.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_id, "csivg/pvc-5f2a");
    assert_eq!(volume.capacity_bytes, 12 * MIB as i64);
    let again = r
        .controller
        .create_volume(create)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.volume, Some(volume.clone()));

    let publish = ControllerPublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        node_id: "worker-1".into(),
        volume_capability: Some(capability()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    };
    let ctx = r
        .controller
        .controller_publish_volume(publish)
        .await
        .unwrap()
        .into_inner()
        .publish_context;
    let iqn = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-5f2a";
    assert_eq!(ctx["targetIqn"], iqn);
    assert_eq!(ctx["portals"], "192.0.2.10:3260");
    assert_eq!(ctx["lun"], "0");
    assert_eq!(ctx["authMethod"], "None");
    assert!(r.target.exports()[iqn].acls.contains_key(IQN));

    let listed = r
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(
        listed.entries[0]
            .status
            .as_ref()
            .unwrap()
            .published_node_ids,
        ["worker-1"]
    );

    // Deleting a published volume is refused with the node's name.
    let refused = r
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("worker-1"),
        "{}",
        refused.message()
    );

    for _ in 0..2 {
        r.controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                node_id: "worker-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        r.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(r.target.exports().is_empty());
    let listed = r
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty());
    r.stop.send(()).unwrap();
}

#[tokio::test]
async fn errors_arrive_with_their_codes_and_messages() {
    let mut r = start().await;
    r.service.restore().await.unwrap();
    let bad = r
        .controller
        .create_volume(CreateVolumeRequest {
            name: "pvc-1".into(),
            volume_capabilities: vec![capability()],
            parameters: HashMap::from([("volumGroup".into(), "csivg".into())]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("`volumGroup`"), "{}", bad.message());
    let missing = r
        .controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: "csivg/nope".into(),
            node_id: "worker-1".into(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let token = r
        .controller
        .list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "invalid-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::Aborted);
    let snap = r
        .controller
        .create_snapshot(CreateSnapshotRequest::default())
        .await
        .unwrap_err();
    assert_eq!(snap.code(), Code::InvalidArgument);
    r.stop.send(()).unwrap();
}
