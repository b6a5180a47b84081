//! The controller on a real kernel, for each target backend: the real binary in `controller
//! --standalone` mode on the lab's volume group, driven over gRPC the way external-provisioner
//! and external-attacher drive it, and checked from the initiator side with open-iscsi in the
//! same guest and from the storage side by reading configfs / tgtadm directly (never through
//! the driver):
//! - thick and thin volumes are created; each call repeated gives the same answer;
//! - published to this guest's initiator (twice, same publish_context); discovery and a login
//!   with the CHAP credentials derived from the key give a block device of exactly the
//!   volume's size, and data written through it is on the LV;
//! - a wrong password, no CHAP, and an initiator without an ACL (with the right credentials)
//!   are refused;
//! - `kill -9` of the controller and a restart leave the exports as they were (nothing
//!   duplicated); a restart after the target configuration is lost (a storage-node reboot)
//!   rebuilds it from the LV tags and the login works again;
//! - unpublish (twice): the export is gone and the login refused; delete (twice): no LV, no
//!   target, no ACL, no backstore or account left.
//!
//! Per-RPC latencies are printed and appended to `$CSI_LAB_OUT/lab_controller-timings.txt`.
//! The two backends share port 3260, so each test clears the other's leftovers first; the tgt
//! test starts tgtd and stops it when done. `#[ignore]`d: run by e2e/lab-test.sh in the guest
//! (`--ignored --test-threads=1`), with CSI_BIN, CSI_VG, CSI_THINPOOL and CSI_LAB_OUT set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::controller_client::ControllerClient;
use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume};
use lvm_iscsi_csi::csi::*;
use lvm_iscsi_csi::domain::chap;
use tonic::transport::Channel;

use lvm_iscsi_csi_e2e::lab::storage::{clear_port, Backend, Seen, Tgtd};
use lvm_iscsi_csi_e2e::lab::*;

/// Where the target listens and the initiator logs in.
const PORTAL: &str = "127.0.0.1:3260";
/// The StorageClass's CHAP key (in the publish secrets and in --chap-key-file).
const KEY: &str = "lab-chap-key-0123456789abcdef0123456789";
/// An initiator with no ACL anywhere.
const INTRUDER: &str = "iqn.2000-01.io.csi.lab:intruder";
const MIB: i64 = 1 << 20;

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// The driver under test and its client.
struct Controller {
    driver: Driver,
    client: ControllerClient<Channel>,
    args: Vec<String>,
    log_name: String,
}

impl Controller {
    async fn start(
        log_name: &str,
        args: Vec<String>,
        socket: &Path,
        t: &Timings,
        what: &str,
    ) -> Controller {
        let started = Instant::now();
        let driver = Driver::start(log_name, &args, socket);
        let channel = connect(socket).await;
        wait_ready(&channel, Duration::from_secs(180)).await;
        t.record(what, started.elapsed());
        Controller {
            driver,
            client: ControllerClient::new(channel),
            args,
            log_name: log_name.to_string(),
        }
    }

    /// kill -9, then the same command line again.
    async fn crash_and_restart(&mut self, t: &Timings, what: &str) {
        self.driver.kill9();
        let socket = self.driver.socket.clone();
        let next = Controller::start(&self.log_name, self.args.clone(), &socket, t, what).await;
        *self = next;
    }

    fn fail(&self, what: &str, status: tonic::Status) -> ! {
        panic!(
            "{what}: {status}\ncontroller log ends with:\n{}",
            self.driver.log_tail(40)
        )
    }

    async fn create(
        &mut self,
        t: &Timings,
        name: &str,
        size: i64,
        params: &[(&str, &str)],
    ) -> Volume {
        let req = CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: size,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![block_cap()],
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mut answers = Vec::new();
        for label in ["CreateVolume (new)", "CreateVolume (repeat)"] {
            let r = t.time(label, self.client.create_volume(req.clone())).await;
            let v = r
                .unwrap_or_else(|s| self.fail(&format!("CreateVolume {name}"), s))
                .into_inner()
                .volume
                .expect("CreateVolume returns a volume");
            answers.push(v);
        }
        assert_eq!(
            answers[0], answers[1],
            "a repeated CreateVolume answers the same"
        );
        answers.remove(0)
    }

    async fn publish(&mut self, t: &Timings, v: &Volume, node: &str) -> HashMap<String, String> {
        let req = ControllerPublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: node.to_string(),
            volume_capability: Some(block_cap()),
            readonly: false,
            secrets: HashMap::from([(chap::SECRET_KEY.to_string(), KEY.to_string())]),
            volume_context: v.volume_context.clone(),
        };
        let mut answers = Vec::new();
        for label in [
            "ControllerPublishVolume (new)",
            "ControllerPublishVolume (repeat)",
        ] {
            let r = t
                .time(label, self.client.controller_publish_volume(req.clone()))
                .await;
            let ctx = r
                .unwrap_or_else(|s| {
                    self.fail(&format!("ControllerPublishVolume {}", v.volume_id), s)
                })
                .into_inner()
                .publish_context;
            answers.push(ctx);
        }
        assert_eq!(
            answers[0], answers[1],
            "a repeated publish answers the same"
        );
        answers.remove(0)
    }

    async fn unpublish(&mut self, t: &Timings, v: &Volume, node: &str) {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: node.to_string(),
            secrets: HashMap::from([(chap::SECRET_KEY.to_string(), KEY.to_string())]),
        };
        for label in [
            "ControllerUnpublishVolume",
            "ControllerUnpublishVolume (repeat)",
        ] {
            let r = t
                .time(label, self.client.controller_unpublish_volume(req.clone()))
                .await;
            if let Err(s) = r {
                self.fail(&format!("ControllerUnpublishVolume {}", v.volume_id), s);
            }
        }
    }

    async fn delete(&mut self, t: &Timings, v: &Volume) {
        let req = DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: HashMap::new(),
        };
        for label in ["DeleteVolume", "DeleteVolume (repeat)"] {
            let r = t.time(label, self.client.delete_volume(req.clone())).await;
            if let Err(s) = r {
                self.fail(&format!("DeleteVolume {}", v.volume_id), s);
            }
        }
    }
}

/// One created volume, as the test tracks it.
struct Vol {
    volume: Volume,
    iqn: String,
    device: String,
    chap: chap::Chap,
}

impl Vol {
    fn by_path(&self, backend: Backend) -> PathBuf {
        iscsi::by_path(PORTAL, &self.iqn, backend.lun())
    }
}

/// Logs in with the right credentials and checks the device: exactly the volume's size, and
/// data written through it lands on the LV. Logs out again.
fn attach_and_check(backend: Backend, v: &Vol, t: &Timings) {
    iscsi::record(&v.iqn, PORTAL, None, Some(&v.chap), None);
    let started = Instant::now();
    let login = iscsi::login(&v.iqn, PORTAL, None);
    assert!(
        login.ok(),
        "login to {} with the derived CHAP credentials: {}",
        v.iqn,
        login.stderr
    );
    t.record("iscsiadm login (open-iscsi)", started.elapsed());
    let dev = v.by_path(backend);
    assert!(
        wait_until(Duration::from_secs(30), || dev.exists()),
        "{} did not appear",
        dev.display()
    );
    let size = u64::try_from(v.volume.capacity_bytes).expect("positive capacity");
    assert_eq!(
        device_size(&dev),
        size,
        "{} has the volume's size",
        dev.display()
    );
    write_and_verify(&dev, Path::new(&v.device));
    assert!(iscsi::logout(&v.iqn, PORTAL, None).ok());
    assert!(
        wait_until(Duration::from_secs(30), || !dev.exists()),
        "{} still there after logout",
        dev.display()
    );
}

fn refused(
    v: &Vol,
    iface: Option<&str>,
    chap: Option<&chap::Chap>,
    password: Option<&str>,
    what: &str,
) {
    iscsi::record(&v.iqn, PORTAL, iface, chap, password);
    let r = iscsi::login(&v.iqn, PORTAL, iface);
    if r.ok() {
        iscsi::forget(&v.iqn, PORTAL, iface);
        panic!("{what}: the login to {} was accepted", v.iqn);
    }
    iscsi::forget(&v.iqn, PORTAL, iface);
}

fn lv_exists(device: &str) -> bool {
    let lv = device.trim_start_matches("/dev/");
    sh(&["lvs", "--noheadings", lv]).ok()
}

async fn scenario(backend: Backend) {
    let b = backend.name();
    let vg = lab_env_or("CSI_VG", "csivg");
    let pool = lab_env_or("CSI_THINPOOL", "pool0");
    let me = initiator_name();
    let t = Timings::default();
    clear_port(backend).await;
    let _tgtd = (backend == Backend::Tgt).then(Tgtd::start);

    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("chap.key");
    write_file(&key_file, KEY);
    let socket = dir.path().join("c.sock");
    let args: Vec<String> = [
        "controller",
        "--standalone",
        "--endpoint",
        &format!("unix://{}", socket.display()),
        "--target-backend",
        b,
        "--portal",
        PORTAL,
        "--default-volume-group",
        &vg,
        "--chap-key-file",
        &key_file.to_string_lossy(),
        // Every tool call with its duration, for the log kept in CSI_LAB_OUT.
        "--log-level",
        "info,lvm_iscsi_csi::exec=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = Controller::start(
        &format!("lab_controller-{b}"),
        args,
        &socket,
        &t,
        "start until Probe ready",
    )
    .await;

    // Create: a thick volume in the default VG and a thin one in the pool.
    let mut vols = Vec::new();
    for (kind, size, params) in [
        ("thick", 64 * MIB, vec![]),
        ("thin", 48 * MIB, vec![("thinPool", pool.as_str())]),
    ] {
        let volume = c
            .create(&t, &format!("lab-{b}-{kind}"), size, &params)
            .await;
        assert_eq!(volume.capacity_bytes, size);
        let (vg_of, lv) = volume
            .volume_id
            .split_once('/')
            .expect("volume id is VG/LV");
        assert_eq!(vg_of, vg);
        let attr = must(&["lvs", "--noheadings", "-o", "lv_attr", &volume.volume_id]);
        let want = if kind == "thin" { 'V' } else { '-' };
        assert!(
            attr.trim().starts_with(want),
            "{kind} LV has attributes {attr:?}"
        );
        let device = format!("/dev/{vg}/{lv}");
        vols.push((volume, device));
    }

    // Publish to this guest's initiator: the context names the target, portal and LUN.
    let mut published = Vec::new();
    for (volume, device) in vols {
        let ctx = c.publish(&t, &volume, &me).await;
        assert_eq!(
            ctx.get("portals").map(String::as_str),
            Some(PORTAL),
            "{ctx:?}"
        );
        assert_eq!(
            ctx.get("lun").map(String::as_str),
            Some(backend.lun()),
            "{ctx:?}"
        );
        assert_eq!(
            ctx.get("authMethod").map(String::as_str),
            Some("CHAP"),
            "{ctx:?}"
        );
        assert!(
            !ctx.values().any(|v| v.contains(KEY)),
            "no secret in {ctx:?}"
        );
        let iqn = ctx
            .get("targetIqn")
            .cloned()
            .expect("targetIqn in publish_context");
        let chap = chap::derive(KEY.as_bytes(), &volume.volume_id, &me);
        published.push(Vol {
            volume,
            iqn,
            device,
            chap,
        });
    }
    // One target, this initiator's ACL, one LUN, one backstore; tgt binds the incoming and
    // the mutual CHAP account to the target.
    let expected = Seen {
        targets: 1,
        initiators: vec![me.clone()],
        luns: 1,
        backstores: 1,
        accounts: if backend == Backend::Tgt { 2 } else { 0 },
    };
    for v in &published {
        assert_eq!(backend.observe(&v.iqn, &v.device), expected, "{}", v.iqn);
    }

    // The initiator side: discovery, login with the derived CHAP, the device, the data.
    let shown = iscsi::discover(PORTAL);
    for v in &published {
        assert!(
            shown.contains(&v.iqn),
            "discovery shows {} ({shown:?})",
            v.iqn
        );
        attach_and_check(backend, v, &t);
    }

    // Refused: a wrong password, no CHAP, an initiator without an ACL holding the right
    // credentials.
    let v = &published[0];
    refused(
        v,
        None,
        Some(&v.chap),
        Some("00000000000000000000000000000000"),
        "wrong CHAP password",
    );
    refused(v, None, None, None, "no CHAP");
    iscsi::iface_as("intruder", INTRUDER);
    refused(
        v,
        Some("intruder"),
        Some(&v.chap),
        None,
        "initiator without an ACL",
    );
    sh(&["iscsiadm", "-m", "iface", "-I", "intruder", "-o", "delete"]);
    for v in &published {
        assert_eq!(
            backend.observe(&v.iqn, &v.device),
            expected,
            "unchanged by refused logins"
        );
    }

    // kill -9 and restart: the exports stay as they were, nothing is duplicated.
    c.crash_and_restart(&t, "restart after kill -9 until Probe ready")
        .await;
    for v in &published {
        assert_eq!(
            backend.observe(&v.iqn, &v.device),
            expected,
            "after a restart"
        );
    }
    // kill -9, the target configuration lost (storage-node reboot), restart: rebuilt from
    // the LV tags, with CHAP from --chap-key-file, and the login works again.
    c.driver.kill9();
    let iqns: Vec<&str> = published.iter().map(|v| v.iqn.as_str()).collect();
    backend.wipe(&iqns).await;
    for v in &published {
        assert_eq!(backend.observe(&v.iqn, &v.device), Seen::gone(), "wiped");
    }
    c.crash_and_restart(&t, "restart after a lost target config until Probe ready")
        .await;
    for v in &published {
        assert_eq!(backend.observe(&v.iqn, &v.device), expected, "rebuilt");
        attach_and_check(backend, v, &t);
    }

    // Unpublish (twice): the export is gone and logins are refused.
    for v in &published {
        c.unpublish(&t, &v.volume, &me).await;
        assert_eq!(
            backend.observe(&v.iqn, &v.device),
            Seen::gone(),
            "unpublished"
        );
        refused(v, None, Some(&v.chap), None, "login after unpublish");
    }

    // Delete (twice): no LV, no target, no ACL, no backstore or account left.
    for v in &published {
        c.delete(&t, &v.volume).await;
        assert!(!lv_exists(&v.device), "{} still exists", v.device);
        assert_eq!(backend.observe(&v.iqn, &v.device), Seen::gone(), "deleted");
    }
    if backend == Backend::Tgt {
        let accounts = must(&[
            "tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "account",
        ]);
        assert!(
            !published
                .iter()
                .any(|v| accounts.contains(&v.chap.initiator.user)
                    || accounts.contains(&v.chap.target.user)),
            "CHAP accounts left: {accounts}"
        );
    }
    t.publish(
        &format!("lab_controller, {b} backend (latencies under QEMU TCG emulation)"),
        "lab_controller-timings.txt",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn lio_controller_end_to_end() {
    scenario(Backend::Lio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn tgt_controller_end_to_end() {
    scenario(Backend::Tgt).await;
}
