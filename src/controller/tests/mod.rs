//! RPC tests with fakes: a simulated LVM behind the real `Lvm` (through `FakeRunner`), the
//! in-memory `FakeTarget` and a `FakeResolver`. Every RPC: success, repeat, each error code.

mod create;
mod publish;
mod query;
mod restore;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tonic::Code;

use crate::chap::SECRET_KEY;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::*;
use crate::exec::{FakeRunner, Output};
use crate::lvm::Lvm;
use crate::target::fake::FakeTarget;

use super::capability::tests::{block, mount};
use super::chap_key::ChapKey;
use super::resolver::FakeResolver;
use super::{ControllerService, Settings};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IQN1: &str = "iqn.2004-10.com.debian:node-1";
const IQN2: &str = "iqn.2004-10.com.debian:node-2";
const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// One simulated LV.
#[derive(Debug, Clone)]
struct FakeLv {
    vg: String,
    name: String,
    size: u64,
    attr: String,
    tags: Vec<String>,
    pool: Option<String>,
}

/// A scripted failure: the first command whose line contains `pattern` gets `out`, after
/// its effect when `after` is set (a command killed half-way).
struct Failure {
    pattern: String,
    out: Output,
    after: bool,
}

#[derive(Default)]
struct LvmState {
    /// (name, size, extent size).
    vgs: Vec<(String, u64, u64)>,
    lvs: Vec<FakeLv>,
    failures: Vec<Failure>,
    /// LVs held open (lvremove says "in use").
    open: Vec<String>,
}

/// A simulated LVM answering the exact commands `Lvm` runs, with LVM's real messages and
/// exit codes (as captured in the lab).
#[derive(Clone)]
struct FakeLvm {
    state: Arc<Mutex<LvmState>>,
}

impl FakeLvm {
    /// VG `csivg` (1 GiB, 4 MiB extents) with a 256 MiB thin pool `pool0`.
    fn new() -> Self {
        let lvm = FakeLvm {
            state: Arc::new(Mutex::new(LvmState::default())),
        };
        lvm.with(|s| {
            s.vgs.push(("csivg".into(), GIB, 4 * MIB));
            s.lvs.push(FakeLv {
                vg: "csivg".into(),
                name: "pool0".into(),
                size: 256 * MIB,
                attr: "twi-aotz--".into(),
                tags: vec![],
                pool: None,
            });
        });
        lvm
    }

    fn with<T>(&self, f: impl FnOnce(&mut LvmState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn runner(&self) -> Arc<FakeRunner> {
        let me = self.clone();
        Arc::new(FakeRunner::new(move |argv| me.with(|s| s.answer(argv))))
    }

    fn fail(&self, pattern: &str, out: Output) {
        self.with(|s| {
            s.failures.push(Failure {
                pattern: pattern.into(),
                out,
                after: false,
            })
        });
    }

    fn fail_after(&self, pattern: &str, out: Output) {
        self.with(|s| {
            s.failures.push(Failure {
                pattern: pattern.into(),
                out,
                after: true,
            })
        });
    }

    fn lv(&self, vg: &str, name: &str) -> Option<FakeLv> {
        self.with(|s| s.lvs.iter().find(|l| l.vg == vg && l.name == name).cloned())
    }

    fn add_lv(&self, vg: &str, name: &str, size: u64, tags: &[&str]) {
        self.with(|s| {
            s.lvs.push(FakeLv {
                vg: vg.into(),
                name: name.into(),
                size,
                attr: "-wi-a-----".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                pool: None,
            })
        });
    }

    fn set_attr(&self, name: &str, attr: &str) {
        self.with(|s| {
            if let Some(l) = s.lvs.iter_mut().find(|l| l.name == name) {
                l.attr = attr.into();
            }
        });
    }
}

impl LvmState {
    fn answer(&mut self, argv: &[String]) -> Output {
        let line = argv.join(" ");
        if let Some(i) = self.failures.iter().position(|f| line.contains(&f.pattern)) {
            let f = self.failures.remove(i);
            if f.after {
                self.run(argv);
            }
            return f.out;
        }
        self.run(argv)
    }

    fn vg_free(&self, vg: &str) -> u64 {
        let size = self.vgs.iter().find(|v| v.0 == vg).map_or(0, |v| v.1);
        let used: u64 = self
            .lvs
            .iter()
            .filter(|l| l.vg == vg && !l.attr.starts_with('V'))
            .map(|l| l.size)
            .sum();
        size.saturating_sub(used)
    }

    fn run(&mut self, argv: &[String]) -> Output {
        let selection = argv.get(8..).unwrap_or_default();
        match argv[0].as_str() {
            "lvs" => {
                let mut rows = Vec::new();
                for sel in selection {
                    let (vg, lv) = sel.split_once('/').unwrap_or((sel, ""));
                    if !self.vgs.iter().any(|v| v.0 == vg) {
                        return not_found_vg(vg);
                    }
                    let found: Vec<&FakeLv> = self
                        .lvs
                        .iter()
                        .filter(|l| l.vg == vg && (lv.is_empty() || l.name == lv))
                        .collect();
                    if found.is_empty() && !lv.is_empty() {
                        return Output::failed(
                            5,
                            format!("  Failed to find logical volume \"{sel}\"\n"),
                        );
                    }
                    rows.extend(found.into_iter().map(lv_row));
                }
                if selection.is_empty() {
                    rows.extend(self.lvs.iter().map(lv_row));
                }
                Output::ok(json!({"report": [{"lv": rows}]}).to_string())
            }
            "vgs" => {
                let mut rows = Vec::new();
                for (name, size, extent) in &self.vgs {
                    if selection.is_empty() || selection.contains(name) {
                        rows.push(json!({
                            "vg_name": name, "vg_size": size.to_string(),
                            "vg_free": self.vg_free(name).to_string(),
                            "vg_extent_size": extent.to_string(),
                        }));
                    }
                }
                if let Some(missing) = selection
                    .iter()
                    .find(|n| !self.vgs.iter().any(|v| &v.0 == *n))
                {
                    return not_found_vg(missing);
                }
                Output::ok(json!({"report": [{"vg": rows}]}).to_string())
            }
            "lvcreate" => self.lvcreate(argv),
            "lvremove" => {
                let target = &argv[2];
                let (vg, name) = target.split_once('/').unwrap();
                if self.open.contains(target) {
                    return Output::failed(5, format!("  Logical volume {target} in use.\n"));
                }
                let before = self.lvs.len();
                self.lvs.retain(|l| !(l.vg == vg && l.name == name));
                if before == self.lvs.len() {
                    return Output::failed(
                        5,
                        format!("  Failed to find logical volume \"{target}\"\n"),
                    );
                }
                Output::ok("")
            }
            "lvchange" => {
                let target = argv.last().unwrap();
                let (vg, name) = target.split_once('/').unwrap();
                let Some(lv) = self.lvs.iter_mut().find(|l| l.vg == vg && l.name == name) else {
                    return Output::failed(
                        5,
                        format!("  Failed to find logical volume \"{target}\"\n"),
                    );
                };
                for pair in argv[1..argv.len() - 1].chunks(2) {
                    match pair[0].as_str() {
                        "--addtag" if !lv.tags.contains(&pair[1]) => lv.tags.push(pair[1].clone()),
                        "--deltag" => lv.tags.retain(|t| *t != pair[1]),
                        _ => {}
                    }
                }
                Output::ok("")
            }
            other => panic!("unexpected command {other}"),
        }
    }

    fn lvcreate(&mut self, argv: &[String]) -> Output {
        let (mut size, mut name, mut tags, mut target, mut thin) =
            (0, String::new(), vec![], String::new(), false);
        let mut i = 1;
        while i < argv.len() {
            match argv[i].as_str() {
                "--yes" => {}
                "--thin" => thin = true,
                "--size" | "--virtualsize" => {
                    i += 1;
                    size = argv[i].trim_end_matches('b').parse().unwrap();
                }
                "--name" => {
                    i += 1;
                    name = argv[i].clone();
                }
                "--addtag" => {
                    i += 1;
                    tags.push(argv[i].clone());
                }
                "--wipesignatures" | "--zero" => i += 1,
                positional => target = positional.to_string(),
            }
            i += 1;
        }
        let (vg, pool) = match target.split_once('/') {
            Some((vg, pool)) => (vg.to_string(), Some(pool.to_string())),
            None => (target.clone(), None),
        };
        assert_eq!(thin, pool.is_some(), "--thin goes with a pool");
        if !self.vgs.iter().any(|v| v.0 == vg) {
            return not_found_vg(&vg);
        }
        if self.lvs.iter().any(|l| l.vg == vg && l.name == name) {
            return Output::failed(
                5,
                format!("  Logical Volume \"{name}\" already exists in volume group \"{vg}\"\n"),
            );
        }
        if let Some(p) = &pool {
            if !self.lvs.iter().any(|l| l.vg == vg && &l.name == p) {
                return Output::failed(5, format!("  Pool {p} not found in Volume group {vg}.\n"));
            }
        } else if self.vg_free(&vg) < size {
            return Output::failed(
                5,
                format!("  Volume group \"{vg}\" has insufficient free space (1 extents): 2 required.\n"),
            );
        }
        self.lvs.push(FakeLv {
            vg,
            name,
            size,
            attr: if thin { "Vwi-a-tz--" } else { "-wi-a-----" }.into(),
            tags,
            pool,
        });
        Output::ok("")
    }
}

fn not_found_vg(vg: &str) -> Output {
    Output::failed(
        5,
        format!("  Volume group \"{vg}\" not found\n  Cannot process volume group {vg}\n"),
    )
}

fn lv_row(l: &FakeLv) -> serde_json::Value {
    json!({
        "vg_name": l.vg, "lv_name": l.name, "lv_size": l.size.to_string(), "lv_attr": l.attr,
        "lv_tags": l.tags.join(","), "pool_lv": l.pool.clone().unwrap_or_default(),
        "lv_health_status": "",
    })
}

/// A controller over the fakes.
struct Harness {
    svc: ControllerService,
    lvm: FakeLvm,
    runner: Arc<FakeRunner>,
    target: Arc<FakeTarget>,
}

fn settings() -> Settings {
    Settings {
        iqn_prefix: PREFIX.into(),
        portals: vec!["10.0.0.1:3260".into(), "10.0.0.2:3260".into()],
        default_volume_group: Some("csivg".into()),
        default_volume_size: 64 * MIB,
        thin_overprovision_ratio: 1.0,
        chap_key: None,
    }
}

impl Harness {
    /// A controller whose start-up restore has run.
    async fn new() -> Harness {
        Harness::with(settings(), FakeLvm::new()).await
    }

    async fn with(settings: Settings, lvm: FakeLvm) -> Harness {
        let h = Harness::unrestored(settings, lvm);
        h.svc.restore().await.expect("restore");
        h.runner.clear();
        h
    }

    fn unrestored(settings: Settings, lvm: FakeLvm) -> Harness {
        let runner = lvm.runner();
        let target = Arc::new(FakeTarget::new());
        let resolver = FakeResolver::new([("node-1", IQN1), ("node-2", IQN2)]);
        let svc = ControllerService::new(
            Lvm::new(runner.clone()),
            target.clone(),
            Arc::new(resolver),
            settings,
        );
        Harness {
            svc,
            lvm,
            runner,
            target,
        }
    }

    /// Commands run so far whose program is `program`.
    fn calls(&self, program: &str) -> Vec<String> {
        self.runner
            .calls()
            .into_iter()
            .filter(|c| c.split(' ').next() == Some(program))
            .collect()
    }

    /// Creates a volume that must succeed.
    async fn create(&self, req: CreateVolumeRequest) -> Volume {
        use crate::csi::controller_server::Controller;
        self.svc
            .create_volume(tonic::Request::new(req))
            .await
            .expect("create")
            .into_inner()
            .volume
            .expect("a volume")
    }

    /// Publishes, returning publish_context or the code.
    async fn publish(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<HashMap<String, String>, tonic::Status> {
        use crate::csi::controller_server::Controller;
        self.svc
            .controller_publish_volume(tonic::Request::new(req))
            .await
            .map(|r| r.into_inner().publish_context)
    }

    async fn unpublish(&self, volume_id: &str, node_id: &str) -> Result<(), Code> {
        use crate::csi::controller_server::Controller;
        self.svc
            .controller_unpublish_volume(tonic::Request::new(ControllerUnpublishVolumeRequest {
                volume_id: volume_id.into(),
                node_id: node_id.into(),
                secrets: HashMap::new(),
            }))
            .await
            .map(drop)
            .map_err(|s| s.code())
    }

    async fn delete(&self, volume_id: &str) -> Result<(), tonic::Status> {
        use crate::csi::controller_server::Controller;
        self.svc
            .delete_volume(tonic::Request::new(DeleteVolumeRequest {
                volume_id: volume_id.into(),
                secrets: HashMap::new(),
            }))
            .await
            .map(drop)
    }
}

/// A CreateVolume request for `name` of exactly `size` bytes (0: none given).
fn create_req(name: &str, size: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: (size > 0).then_some(CapacityRange {
            required_bytes: size as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount(Mode::SingleNodeWriter, "")],
        ..Default::default()
    }
}

fn with_params(mut req: CreateVolumeRequest, params: &[(&str, &str)]) -> CreateVolumeRequest {
    req.parameters = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    req
}

/// A publish request of `volume_id` to `node_id`, single-node writer, with the CHAP key.
fn publish_req(volume_id: &str, node_id: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume_id.into(),
        node_id: node_id.into(),
        volume_capability: Some(block(Mode::SingleNodeWriter)),
        readonly: false,
        secrets: HashMap::from([(SECRET_KEY.to_string(), KEY.to_string())]),
        volume_context: HashMap::new(),
    }
}

fn key() -> ChapKey {
    ChapKey::new(KEY.into()).unwrap()
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}
