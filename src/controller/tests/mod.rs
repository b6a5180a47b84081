//! RPC tests with fakes: a simulated LVM behind the real `Lvm` (through `FakeRunner`), the
//! in-memory `FakeTarget` and a `FakeResolver`. Every RPC: success, repeat, each error code.

mod create;
mod expand;
mod gauges;
mod publish;
mod query;
mod restore;
mod snapshot;
mod source;

use std::collections::HashMap;
use std::sync::Arc;

use tonic::Code;

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::*;
use crate::domain::chap::SECRET_KEY;
use crate::exec::fake::FakeRunner;
use crate::exec::Output;
use crate::export::fake::FakeTarget;
use crate::lvm::fake::FakeLvm;
use crate::lvm::Lvm;

use super::capability::tests::{block, mount};
use super::copy::CopyJob;
use super::fake::FakeCopier;
use super::fake::FakeResolver;
use super::{ControllerService, Settings};
use crate::csi::controller_server::Controller;
use crate::domain::ChapKey;
use tonic::Request;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IQN1: &str = "iqn.2004-10.com.debian:node-1";
const IQN2: &str = "iqn.2004-10.com.debian:node-2";
const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// VG `csivg` (1 GiB, 4 MiB extents) with a 256 MiB thin pool `pool0`.
fn lvm() -> FakeLvm {
    let lvm = FakeLvm::new();
    lvm.add_vg("csivg", GIB, 4 * MIB);
    lvm.add_thin_pool("csivg", "pool0", 256 * MIB);
    lvm
}

/// Removes every publication tag of `csivg/<lv>` (a crash between two steps).
fn drop_publication_tags(lvm: &FakeLvm, lv: &str) {
    lvm.edit("csivg", lv, |l| l.tags.retain(|t| !t.contains("/pub=")));
}

/// A controller over the fakes.
struct Harness {
    svc: ControllerService,
    lvm: FakeLvm,
    runner: Arc<FakeRunner>,
    target: Arc<FakeTarget>,
    copier: Arc<FakeCopier>,
}

fn settings() -> Settings {
    Settings {
        iqn_prefix: PREFIX.into(),
        portals: vec![
            "10.0.0.1:3260".parse().unwrap(),
            "10.0.0.2:3260".parse().unwrap(),
        ],
        default_volume_group: Some("csivg".into()),
        default_volume_size: 64 * MIB,
        thin_overprovision_ratio: 1.0,
        chap_key: None,
    }
}

impl Harness {
    /// A controller whose start-up restore has run.
    async fn new() -> Harness {
        Harness::with(settings(), lvm()).await
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
        let copier = Arc::new(FakeCopier::default());
        let svc = ControllerService::with_copier(
            Lvm::new(runner.clone()),
            target.clone(),
            Arc::new(resolver),
            settings,
            copier.clone(),
        );
        Harness {
            svc,
            lvm,
            runner,
            target,
            copier,
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

    /// The block copies asked of the copier.
    fn jobs(&self) -> Vec<CopyJob> {
        self.copier.jobs.lock().unwrap().clone()
    }

    /// CreateSnapshot of `source` named `name` with `params`.
    async fn snap(
        &self,
        name: &str,
        source: &str,
        params: &[(&str, &str)],
    ) -> Result<Snapshot, tonic::Status> {
        self.svc
            .create_snapshot(Request::new(CreateSnapshotRequest {
                source_volume_id: source.into(),
                name: name.into(),
                secrets: HashMap::new(),
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }))
            .await
            .map(|r| r.into_inner().snapshot.expect("a snapshot"))
    }

    async fn snapshot(&self, name: &str, source: &str) -> Snapshot {
        self.snap(name, source, &[]).await.expect("snapshot")
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), tonic::Status> {
        self.svc
            .delete_snapshot(Request::new(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                secrets: HashMap::new(),
            }))
            .await
            .map(drop)
    }

    async fn list_snapshots(
        &self,
        req: ListSnapshotsRequest,
    ) -> Result<ListSnapshotsResponse, tonic::Status> {
        self.svc
            .list_snapshots(Request::new(req))
            .await
            .map(|r| r.into_inner())
    }

    async fn list_snapshot_ids(&self, req: ListSnapshotsRequest) -> Vec<String> {
        self.list_snapshots(req)
            .await
            .expect("list")
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot.map(|s| s.snapshot_id))
            .collect()
    }

    async fn volume_ids(&self) -> Vec<String> {
        self.svc
            .list_volumes(Request::new(ListVolumesRequest::default()))
            .await
            .expect("list volumes")
            .into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.volume.map(|v| v.volume_id))
            .collect()
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
