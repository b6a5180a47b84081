//! Operations on a real kernel: the real controller (JSON logs) and node plugin (text logs)
//! binaries at `--log-level debug` with `--metrics-address`, one CHAP-enabled lifecycle over
//! gRPC (CreateVolume -> ControllerPublishVolume -> NodeStageVolume -> NodePublishVolume ->
//! NodeGetVolumeStats -> NodeUnpublishVolume -> NodeUnstageVolume ->
//! ControllerUnpublishVolume -> DeleteVolume), and then:
//! - `/metrics` of both, scraped while the volume is staged, shows the RPC counters, the
//!   command durations (lvcreate, iscsiadm) and the gauges (volumes, published volumes, VG,
//!   thin pool, node sessions) moved;
//! - neither the CHAP key nor any password derived from it appears in either binary's log or
//!   in any gRPC response;
//! - each RPC's log lines carry its volume id (one span per RPC).
//!
//! `#[ignore]`d: run in the lab guest (`--ignored --test-threads=1`), with CSI_BIN, CSI_VG,
//! CSI_THINPOOL and CSI_LAB_OUT set.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::node_client::NodeClient;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::*;
use lvm_iscsi_csi::domain::chap;

use lvm_iscsi_csi_e2e::lab::node::*;
use lvm_iscsi_csi_e2e::lab::*;

/// Where the controller serves its metrics.
const CONTROLLER_METRICS: &str = "127.0.0.1:9841";
/// Where the node plugin serves its metrics.
const NODE_METRICS: &str = "127.0.0.1:9842";

/// `GET /metrics` from `addr`: the body, after checking the status line.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{addr}: {head}");
    body.to_string()
}

/// The value of `series` (name and labels exactly as exposed), or `None`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Asserts `series` is at least `min`, prints its line, and returns it.
fn at_least(text: &str, series: &str, min: f64) -> String {
    let value = sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(value >= min, "{series} is {value}, expected >= {min}");
    let line = format!("{series} {value}");
    println!("  {line}");
    line
}

/// Every response, as `{:?}`, for the secret check.
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    /// Keeps `r`'s debug form and returns it.
    fn keep<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        r: Result<tonic::Response<T>, tonic::Status>,
    ) -> T {
        self.0.push(format!("{what}: {r:?}"));
        r.unwrap_or_else(|s| panic!("{what}: {s}")).into_inner()
    }
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn chap_lifecycle_with_debug_logs_and_metrics() {
    sweep();
    let dir = PathBuf::from(WORK).join("ops");
    std::fs::create_dir_all(&dir).unwrap();
    let out = out_dir();
    for log in ["lab_ops-controller.log", "lab_ops-node.log"] {
        let _ = std::fs::remove_file(out.join(log));
    }
    let vg = lab_env("CSI_VG");
    let ctl_sock = dir.join("controller.sock");
    let controller = Driver::start(
        "lab_ops-controller",
        &strings(&[
            "controller",
            "--endpoint",
            &format!("unix://{}", ctl_sock.display()),
            "--standalone",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--metrics-address",
            CONTROLLER_METRICS,
            "--target-backend",
            "lio",
            "--portal",
            PORTAL,
            "--default-volume-group",
            &vg,
        ]),
        &ctl_sock,
    );
    let node_sock = dir.join("node.sock");
    let node = Driver::start(
        "lab_ops-node",
        &strings(&[
            "node",
            "--endpoint",
            &format!("unix://{}", node_sock.display()),
            "--standalone",
            "--log-level",
            "debug",
            "--log-format",
            "text",
            "--metrics-address",
            NODE_METRICS,
            "--iscsiadm-mode",
            "direct",
            "--state-dir",
            &dir.join("state").to_string_lossy(),
            "--device-timeout",
            "60",
        ]),
        &node_sock,
    );
    let ctl_channel = connect(&ctl_sock).await;
    wait_ready(&ctl_channel, Duration::from_secs(120)).await;
    let node_channel = connect(&node_sock).await;
    wait_ready(&node_channel, Duration::from_secs(60)).await;
    let mut ctl = ControllerClient::new(ctl_channel);
    let mut kubelet = NodeClient::new(node_channel);
    let t = Timings::default();
    let mut answers = Answers::default();

    let node_id = answers
        .keep(
            "NodeGetInfo",
            kubelet.node_get_info(NodeGetInfoRequest {}).await,
        )
        .node_id;
    let cap = capability(Kind::Fs("ext4"), Mode::SingleNodeWriter);
    let created = t
        .time(
            "CreateVolume",
            ctl.create_volume(CreateVolumeRequest {
                name: "lab-ops-chap".into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 64 * MIB,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                parameters: HashMap::from([("thinPool".to_string(), lab_env("CSI_THINPOOL"))]),
                secrets: secrets(Some(KEY)),
                ..Default::default()
            }),
        )
        .await;
    let volume = answers
        .keep("CreateVolume", created)
        .volume
        .expect("a volume");
    let id = volume.volume_id.clone();
    let published = t
        .time(
            "ControllerPublishVolume",
            ctl.controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: id.clone(),
                node_id: node_id.clone(),
                volume_capability: Some(cap.clone()),
                readonly: false,
                secrets: secrets(Some(KEY)),
                volume_context: volume.volume_context.clone(),
            }),
        )
        .await;
    let ctx = answers
        .keep("ControllerPublishVolume", published)
        .publish_context;
    assert_eq!(ctx.get("authMethod").map(String::as_str), Some("CHAP"));
    let iqn = ctx["targetIqn"].clone();
    let staging = dir.join("staging");
    let target = dir.join("target");
    std::fs::create_dir_all(&staging).unwrap();
    let staged = t
        .time(
            "NodeStageVolume",
            kubelet.node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.clone(),
                publish_context: ctx.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
                volume_capability: Some(cap.clone()),
                secrets: secrets(Some(KEY)),
                volume_context: HashMap::new(),
            }),
        )
        .await;
    answers.keep("NodeStageVolume", staged);
    assert_eq!(session_count(&iqn), 1, "one session to {iqn}");
    let node_published = t
        .time(
            "NodePublishVolume",
            kubelet.node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.clone(),
                publish_context: ctx.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
                target_path: target.to_string_lossy().into_owned(),
                volume_capability: Some(cap.clone()),
                readonly: false,
                secrets: HashMap::new(),
                volume_context: HashMap::new(),
            }),
        )
        .await;
    answers.keep("NodePublishVolume", node_published);
    assert!(is_mounted(&target), "{} is not mounted", target.display());
    let stats = kubelet
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.to_string_lossy().into_owned(),
            staging_target_path: String::new(),
        })
        .await;
    let stats = answers.keep("NodeGetVolumeStats", stats);
    assert!(!stats.usage.is_empty(), "no usage in {stats:?}");

    // Scraped while staged and published (the gauges refresh in the background).
    let vg_label = format!("vg=\"{vg}\"");
    let pool_label = format!("{vg_label},pool=\"{}\"", lab_env("CSI_THINPOOL"));
    let mut lines = Vec::new();
    println!("controller metrics:");
    let published_series = format!("lvm_iscsi_csi_published_volumes{{{vg_label}}}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            sample(&scrape(CONTROLLER_METRICS), &published_series).is_some_and(|v| v >= 1.0)
        }),
        "{published_series} never reached 1:\n{}",
        scrape(CONTROLLER_METRICS)
    );
    let text = scrape(CONTROLLER_METRICS);
    for (series, min) in [
        (
            r#"lvm_iscsi_csi_rpc_calls_total{service="Controller",method="CreateVolume",code="Ok"}"#
                .to_string(),
            1.0,
        ),
        (
            r#"lvm_iscsi_csi_rpc_calls_total{service="Controller",method="ControllerPublishVolume",code="Ok"}"#
                .to_string(),
            1.0,
        ),
        (
            r#"lvm_iscsi_csi_rpc_duration_seconds_count{service="Controller",method="CreateVolume"}"#
                .to_string(),
            1.0,
        ),
        (
            r#"lvm_iscsi_csi_command_duration_seconds_count{tool="lvcreate"}"#.to_string(),
            1.0,
        ),
        (format!("lvm_iscsi_csi_volumes{{{vg_label}}}"), 1.0),
        (published_series.clone(), 1.0),
        (format!("lvm_iscsi_csi_volume_group_size_bytes{{{vg_label}}}"), 1.0),
        (format!("lvm_iscsi_csi_volume_group_free_bytes{{{vg_label}}}"), 0.0),
        (format!("lvm_iscsi_csi_thin_pool_size_bytes{{{pool_label}}}"), 1.0),
        (format!("lvm_iscsi_csi_thin_pool_free_bytes{{{pool_label}}}"), 1.0),
    ] {
        lines.push(at_least(&text, &series, min));
    }
    println!("node metrics:");
    let text = scrape(NODE_METRICS);
    for (series, min) in [
        (
            r#"lvm_iscsi_csi_rpc_calls_total{service="Node",method="NodeStageVolume",code="Ok"}"#,
            1.0,
        ),
        (
            r#"lvm_iscsi_csi_rpc_calls_total{service="Node",method="NodePublishVolume",code="Ok"}"#,
            1.0,
        ),
        (
            r#"lvm_iscsi_csi_command_duration_seconds_count{tool="iscsiadm"}"#,
            1.0,
        ),
        ("lvm_iscsi_csi_iscsi_sessions", 1.0),
    ] {
        lines.push(at_least(&text, series, min));
    }
    assert_eq!(sample(&text, "lvm_iscsi_csi_iscsi_sessions"), Some(1.0));
    assert_eq!(
        sample(&text, "lvm_iscsi_csi_stage_failures_total"),
        Some(0.0)
    );

    let r = t
        .time(
            "NodeUnpublishVolume",
            kubelet.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.to_string_lossy().into_owned(),
            }),
        )
        .await;
    answers.keep("NodeUnpublishVolume", r);
    let r = t
        .time(
            "NodeUnstageVolume",
            kubelet.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
            }),
        )
        .await;
    answers.keep("NodeUnstageVolume", r);
    assert_eq!(session_count(&iqn), 0, "a session to {iqn} is left");
    let r = t
        .time(
            "ControllerUnpublishVolume",
            ctl.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: node_id.clone(),
                secrets: secrets(Some(KEY)),
            }),
        )
        .await;
    answers.keep("ControllerUnpublishVolume", r);
    let r = t
        .time(
            "DeleteVolume",
            ctl.delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: HashMap::new(),
            }),
        )
        .await;
    answers.keep("DeleteVolume", r);
    let text = scrape(NODE_METRICS);
    assert_eq!(sample(&text, "lvm_iscsi_csi_iscsi_sessions"), Some(0.0));
    lines.push(at_least(
        &scrape(CONTROLLER_METRICS),
        r#"lvm_iscsi_csi_rpc_calls_total{service="Controller",method="DeleteVolume",code="Ok"}"#,
        1.0,
    ));
    drop(controller);
    drop(node);

    // No secret anywhere: the key, and both derived passwords (and user names, which are
    // not secret but derived from the key too: their absence is not required).
    let derived = chap::derive(KEY.as_bytes(), &id, &node_id);
    let secrets = [
        ("the CHAP key", KEY.to_string()),
        ("the initiator password", derived.initiator.password.clone()),
        ("the target password", derived.target.password.clone()),
    ];
    let ctl_log = std::fs::read_to_string(out.join("lab_ops-controller.log")).unwrap();
    let node_log = std::fs::read_to_string(out.join("lab_ops-node.log")).unwrap();
    let responses = answers.0.join("\n");
    for (what, secret) in &secrets {
        assert!(secret.len() >= 12, "{what} is too short to search for");
        for (place, text) in [
            ("the controller log", &ctl_log),
            ("the node log", &node_log),
            ("a gRPC response", &responses),
        ] {
            assert!(!text.contains(secret.as_str()), "{what} appears in {place}");
        }
    }
    // Debug level really was on: commands are logged with their argv.
    assert!(
        ctl_log.contains("lvcreate"),
        "no lvcreate in the controller log"
    );
    assert!(node_log.contains("iscsiadm"), "no iscsiadm in the node log");
    // Every line of the controller log is JSON.
    for line in ctl_log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    // One span per RPC: its lines name the method and carry the volume id.
    for method in [
        "CreateVolume",
        "ControllerPublishVolume",
        "ControllerUnpublishVolume",
        "DeleteVolume",
    ] {
        let n = ctl_log
            .lines()
            .filter(|l| l.contains(&format!("\"method\":\"{method}\"")) && l.contains(&id))
            .count();
        assert!(
            n >= 1,
            "no {method} line with volume id {id} in the controller log"
        );
    }
    for method in [
        "NodeStageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeUnstageVolume",
    ] {
        let n = node_log
            .lines()
            .map(strip_ansi)
            .filter(|l| l.contains(&format!("method={method}")) && l.contains(&id))
            .count();
        assert!(
            n >= 1,
            "no {method} line with volume id {id} in the node log"
        );
    }
    t.publish(
        "lab_ops: one CHAP lifecycle at debug level",
        "lab_ops-timings.txt",
    );
    std::fs::write(out.join("lab_ops-metrics.txt"), lines.join("\n") + "\n").unwrap();
}
