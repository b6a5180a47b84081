//! ControllerExpandVolume.

use super::*;
use crate::csi::controller_server::Controller;
use tonic::Request;

/// An expand request of `volume_id` to at least `required` bytes (at most `limit`, 0: none).
fn expand_req(volume_id: &str, required: u64, limit: u64) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: volume_id.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: required as i64,
            limit_bytes: limit as i64,
        }),
        secrets: HashMap::new(),
        volume_capability: Some(mount(Mode::SingleNodeWriter, "ext4")),
    }
}

async fn expand(
    h: &Harness,
    req: ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, tonic::Status> {
    h.svc
        .controller_expand_volume(Request::new(req))
        .await
        .map(|r| r.into_inner())
}

/// The size of `csivg/<lv>` in the simulated LVM.
fn size_of(h: &Harness, lv: &str) -> u64 {
    h.lvm.lv("csivg", lv).unwrap().size
}

#[tokio::test]
async fn validation_comes_first() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    let cases = [
        (expand_req("", 128 * MIB, 0), Code::InvalidArgument),
        (
            ControllerExpandVolumeRequest {
                capacity_range: None,
                ..expand_req(&id, 0, 0)
            },
            Code::InvalidArgument,
        ),
        (expand_req(&id, 128 * MIB, 64 * MIB), Code::InvalidArgument),
        (
            ControllerExpandVolumeRequest {
                volume_capability: Some(mount(Mode::MultiNodeMultiWriter, "ext4")),
                ..expand_req(&id, 128 * MIB, 0)
            },
            Code::InvalidArgument,
        ),
        (
            ControllerExpandVolumeRequest {
                volume_capability: Some(mount(Mode::SingleNodeWriter, "btrfs")),
                ..expand_req(&id, 128 * MIB, 0)
            },
            Code::InvalidArgument,
        ),
        (
            expand_req("csivg/../x", 128 * MIB, 0),
            Code::InvalidArgument,
        ),
        // A well-formed id of no volume, and an id that is not ours at all.
        (expand_req("csivg/nope", 128 * MIB, 0), Code::NotFound),
        (expand_req("not-ours", 128 * MIB, 0), Code::NotFound),
        (expand_req(&id, (1 << 62) + 1, 0), Code::OutOfRange),
    ];
    for (req, want) in cases {
        let got = code(expand(&h, req.clone()).await);
        assert_eq!(got, want, "{req:?}");
    }
    assert!(h.calls("lvextend").is_empty());
    assert_eq!(size_of(&h, "pvc-1"), 64 * MIB);
}

#[tokio::test]
async fn grows_a_thick_volume_to_whole_extents_once() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    h.runner.clear();
    let r = expand(&h, expand_req(&id, 100 * MIB + 1, 0)).await.unwrap();
    assert_eq!(r.capacity_bytes, 104 * MIB as i64, "rounded up to 4 MiB");
    assert!(r.node_expansion_required);
    assert_eq!(
        h.calls("lvextend"),
        ["lvextend --size 109051904b csivg/pvc-1"]
    );
    assert_eq!(size_of(&h, "pvc-1"), 104 * MIB);
    // The repeat (and a request for less) finds it large enough: the same answer, no lvextend.
    h.runner.clear();
    for required in [100 * MIB + 1, 104 * MIB, 8 * MIB] {
        let again = expand(&h, expand_req(&id, required, 0)).await.unwrap();
        assert_eq!(again, r);
    }
    assert!(h.calls("lvextend").is_empty());
}

#[tokio::test]
async fn block_volumes_also_need_the_node_to_rescan() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    let mut req = expand_req(&id, 128 * MIB, 0);
    req.volume_capability = Some(block(Mode::SingleNodeWriter));
    let r = expand(&h, req.clone()).await.unwrap();
    assert!(r.node_expansion_required);
    req.volume_capability = None;
    assert!(expand(&h, req).await.unwrap().node_expansion_required);
}

#[tokio::test]
async fn shrinking_is_out_of_range_only_when_the_limit_excludes_the_size() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    let ok = expand(&h, expand_req(&id, 32 * MIB, 64 * MIB))
        .await
        .unwrap();
    assert_eq!(ok.capacity_bytes, 64 * MIB as i64);
    let err = expand(&h, expand_req(&id, 32 * MIB, 48 * MIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("shrinking"), "{}", err.message());
    // A range with no whole extent in it above the current size cannot be served either.
    let err = expand(&h, expand_req(&id, 65 * MIB, 67 * MIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(size_of(&h, "pvc-1"), 64 * MIB);
}

#[tokio::test]
async fn thick_growth_beyond_the_free_space_is_resource_exhausted() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    h.runner.clear();
    // 1 GiB VG, 256 MiB pool, 64 MiB volume: 704 MiB free.
    let err = expand(&h, expand_req(&id, 800 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(h.calls("lvextend").is_empty(), "checked before lvextend");
    // Exactly what is free fits.
    let r = expand(&h, expand_req(&id, 768 * MIB, 0)).await.unwrap();
    assert_eq!(r.capacity_bytes, 768 * MIB as i64);
    // LVM's own refusal (another LV took the space meanwhile) is the same code.
    h.lvm.fail(
        "lvextend",
        Output::failed(
            5,
            "  Insufficient free space: 16368 extents needed, but only 493 available\n",
        ),
    );
    let err = expand(&h, expand_req(&id, 772 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
}

#[tokio::test]
async fn thin_growth_respects_the_overprovisioning_ratio() {
    let thin = |name| with_params(create_req(name, 64 * MIB), &[("thinPool", "pool0")]);
    let h = Harness::new().await;
    let id = h.create(thin("pvc-1")).await.volume_id;
    // 256 MiB pool at ratio 1.0: 192 MiB more.
    let err = expand(&h, expand_req(&id, 260 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("overprovisioning"),
        "{}",
        err.message()
    );
    let r = expand(&h, expand_req(&id, 256 * MIB, 0)).await.unwrap();
    assert_eq!(r.capacity_bytes, 256 * MIB as i64);
    assert!(h.lvm.lv("csivg", "pvc-1").unwrap().attr.starts_with('V'));

    let mut s = settings();
    s.thin_overprovision_ratio = 4.0;
    let h = Harness::with(s, lvm()).await;
    let id = h.create(thin("pvc-1")).await.volume_id;
    // Beyond the pool and the VG: thin volumes only take what is written.
    let r = expand(&h, expand_req(&id, GIB, 0)).await.unwrap();
    assert_eq!(r.capacity_bytes, GIB as i64);
    let err = expand(&h, expand_req(&id, GIB + 4 * MIB, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_published_volume_gets_its_export_resized_even_on_a_repeat() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    let iqn = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1";
    let resized = |h: &Harness| h.target.exports()[iqn].resized;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    assert_eq!(resized(&h), 0);
    expand(&h, expand_req(&id, 128 * MIB, 0)).await.unwrap();
    assert_eq!(resized(&h), 1);
    // A crash after lvextend, before the target was told: the repeat finishes the job.
    h.lvm.edit("csivg", "pvc-1", |l| l.size = 256 * MIB);
    h.runner.clear();
    let r = expand(&h, expand_req(&id, 256 * MIB, 0)).await.unwrap();
    assert_eq!(r.capacity_bytes, 256 * MIB as i64);
    assert!(h.calls("lvextend").is_empty());
    assert_eq!(resized(&h), 2);
    // The target backend failing is reported, and the retry completes it.
    h.target.set_failure(Some("tgtd is down"));
    let err = expand(&h, expand_req(&id, 260 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(size_of(&h, "pvc-1"), 260 * MIB);
    h.target.set_failure(None);
    expand(&h, expand_req(&id, 260 * MIB, 0)).await.unwrap();
    assert_eq!(resized(&h), 3);
}

#[tokio::test]
async fn an_unpublished_volume_has_no_export_to_resize() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    h.target.set_failure(Some("must not be called"));
    expand(&h, expand_req(&id, 128 * MIB, 0)).await.unwrap();
    assert!(h.target.exports().is_empty());
}

#[tokio::test]
async fn a_classic_snapshot_origin_is_a_clear_failed_precondition() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    // LVM 2.03.16's answer, captured in the lab.
    h.lvm.fail(
        "lvextend",
        Output::failed(
            5,
            "  Snapshot origin volumes can be resized only while inactive: try lvchange -an.\n",
        ),
    );
    let err = expand(&h, expand_req(&id, 128 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("delete"), "{}", err.message());
    assert!(
        err.message().contains("Snapshot origin"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_volume_busy_with_another_call_is_aborted() {
    let h = Harness::new().await;
    let id = h.create(create_req("pvc-1", 64 * MIB)).await.volume_id;
    let _held = h.svc.lock(&id).unwrap();
    let err = expand(&h, expand_req(&id, 128 * MIB, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn expansion_is_advertised() {
    use crate::csi::controller_service_capability::{rpc, Type};
    let h = Harness::new().await;
    let caps = h
        .svc
        .controller_get_capabilities(Request::new(ControllerGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    assert!(caps.iter().any(|c| matches!(
        c.r#type,
        Some(Type::Rpc(r)) if r.r#type == rpc::Type::ExpandVolume as i32
    )));
}
