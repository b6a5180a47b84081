//! The Node and Identity services served on a unix socket (through `server::builder` and
//! `serve`, as in production) and driven with the generated tonic client the way kubelet
//! drives them. iscsiadm is a script on PATH run by the real runner, so that what the runner
//! logs is what production logs; mounts, sysfs and the other tools are fakes.
//!
//! The point: a request's CHAP key, and the passwords derived from it, reach neither a log
//! line (at TRACE level) nor an error message, while the codes and messages kubelet sees are
//! the documented ones.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use lvm_iscsi_csi::csi::identity_client::IdentityClient;
use lvm_iscsi_csi::csi::identity_server::IdentityServer;
use lvm_iscsi_csi::csi::node_client::NodeClient;
use lvm_iscsi_csi::csi::node_server::NodeServer;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use lvm_iscsi_csi::csi::*;
use lvm_iscsi_csi::domain::chap;
use lvm_iscsi_csi::exec::fake::FakeRunner;
use lvm_iscsi_csi::exec::{Output, TokioRunner};
use lvm_iscsi_csi::identity::{Health, IdentityService, Readiness};
use lvm_iscsi_csi::node::device::Sysfs;
use lvm_iscsi_csi::node::fake::FakeMounter;
use lvm_iscsi_csi::node::iscsi::Iscsiadm;
use lvm_iscsi_csi::node::state::StateDir;
use lvm_iscsi_csi::node::{NodeConfig, NodeDeps, NodeService};
use lvm_iscsi_csi::server;
use tonic::transport::Channel;
use tonic::Code;

const NODE_IQN: &str = "iqn.2004-10.com.debian:worker-1";
const KEY: &str = "node-grpc-test-key-4f1d2a9c7b";
const VOLUME: &str = "csivg/pvc-secret";
const TARGET: &str = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-secret";

/// iscsiadm as the tests need it: no sessions, records accepted, logins refused for
/// authentication (exit 24, with open-iscsi's own words).
const ISCSIADM: &str = r#"#!/bin/sh
case "$*" in
  "-m session") echo "iscsiadm: No active sessions." >&2; exit 21 ;;
  *--login*)
    echo "iscsiadm: Could not login to [iface: default, target: $4, portal: 127.0.0.1,3260]." >&2
    echo "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)" >&2
    exit 24 ;;
  *) exit 0 ;;
esac
"#;

/// Everything the process logs, at TRACE level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        buf
    })
}

/// A log writer appending to a shared buffer.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory holding the fake iscsiadm, put first on PATH once for the whole binary.
fn fake_iscsiadm_on_path() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("iscsiadm");
        std::fs::write(&script, ISCSIADM).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::env::set_var("PATH", path);
        dir
    })
    .path()
}

struct Ready;

#[async_trait]
impl Readiness for Ready {
    async fn check(&self) -> Health {
        Health::Ready
    }
}

struct Running {
    node: NodeClient<Channel>,
    identity: IdentityClient<Channel>,
    dir: tempfile::TempDir,
}

async fn start() -> Running {
    logs();
    fake_iscsiadm_on_path();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let service = NodeService::new(
        NodeConfig {
            node_id: "worker-1".into(),
            initiator_iqn: NODE_IQN.parse().unwrap(),
            max_volumes_per_node: 0,
            device_timeout: Duration::from_secs(1),
        },
        NodeDeps {
            iscsiadm: Iscsiadm::new(Arc::new(TokioRunner::new())),
            tools: Arc::new(FakeRunner::new(|_| Output::failed(127, "not expected"))),
            mounter: Arc::new(FakeMounter::new()),
            sysfs: Sysfs::new(dir.path().join("sys"), dir.path().join("dev")),
            state: StateDir::new(dir.path().join("state")),
        },
    );
    let identity = IdentityService::new("lvm-iscsi.csi.io", Arc::new(Ready), true);
    let router = server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(service));
    let listener = server::bind(&sock).unwrap();
    tokio::spawn(server::serve(listener, router, std::future::pending()));
    let channel = connect(sock).await;
    Running {
        node: NodeClient::new(channel.clone()),
        identity: IdentityClient::new(channel),
        dir,
    }
}

async fn connect(path: PathBuf) -> Channel {
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

fn stage_request(staging: &Path) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context: HashMap::from([
            ("targetIqn".to_string(), TARGET.to_string()),
            ("portals".to_string(), "127.0.0.1:3260".to_string()),
            ("lun".to_string(), "0".to_string()),
            ("authMethod".to_string(), "CHAP".to_string()),
        ]),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }),
        secrets: HashMap::from([(chap::SECRET_KEY.to_string(), KEY.to_string())]),
        volume_context: HashMap::new(),
    }
}

#[tokio::test]
async fn secrets_reach_neither_logs_nor_errors() {
    let mut r = start().await;
    let err = r
        .node
        .node_stage_volume(stage_request(&r.dir.path().join("staging")))
        .await
        .expect_err("the fake target refuses the login");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("authentication failure"), "{err}");
    assert!(err.message().contains(TARGET), "{err}");

    let derived = chap::derive(KEY.as_bytes(), VOLUME, NODE_IQN);
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logged.contains("node.session.auth.password -v ***"),
        "the runner logs the iscsiadm command lines, redacted:\n{logged}"
    );
    assert!(
        logged.contains(VOLUME),
        "the RPC span carries the volume id"
    );
    for secret in [KEY, &derived.initiator.password, &derived.target.password] {
        assert!(
            !logged.contains(secret),
            "a secret reached the logs:\n{logged}"
        );
        assert!(
            !err.message().contains(secret),
            "a secret reached the error: {err}"
        );
    }
}

#[tokio::test]
async fn kubelet_sees_the_documented_codes() {
    let mut r = start().await;
    let info = r
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "worker-1");
    let plugin = r
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plugin.name, "lvm-iscsi.csi.io");
    let ready = r
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready.ready, Some(true));

    let staging = r.dir.path().join("staging");
    let mut no_key = stage_request(&staging);
    no_key.secrets.clear();
    let mut bad_portal = stage_request(&staging);
    bad_portal
        .publish_context
        .insert("portals".into(), "10.0.0.5:3260;reboot".into());
    let mut relative = stage_request(&staging);
    relative.staging_target_path = "staging".into();
    for (req, code) in [
        (no_key, Code::FailedPrecondition),
        (bad_portal, Code::InvalidArgument),
        (relative, Code::InvalidArgument),
    ] {
        let err = r.node.node_stage_volume(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    let err = r
        .node
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging.display().to_string(),
            target_path: r.dir.path().join("pod").display().to_string(),
            volume_capability: stage_request(&staging).volume_capability,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "not staged: {err}");
    r.node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: VOLUME.into(),
            target_path: r.dir.path().join("pod").display().to_string(),
        })
        .await
        .expect("unpublishing what is not there is fine");
    r.node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstaging what is not there is fine");
}
