//! CreateVolume and DeleteVolume.

use super::*;
use crate::controller::create::validate_create;
use crate::controller::ControllerError;
use crate::csi::controller_server::Controller;
use crate::csi::volume_content_source::{Type as SourceType, VolumeSource};
use tonic::Request;

async fn create_code(h: &Harness, req: CreateVolumeRequest) -> (Code, String) {
    match h.svc.create_volume(Request::new(req)).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

#[tokio::test]
async fn creates_a_thick_volume_once() {
    let h = Harness::new().await;
    let req = with_params(create_req("pvc-1", 10 * MIB + 1), &[("fsType", "xfs")]);
    let v = h.create(req.clone()).await;
    assert_eq!(v.volume_id, "csivg/pvc-1");
    assert_eq!(
        v.capacity_bytes,
        12 * MIB as i64,
        "rounded up to 4 MiB extents"
    );
    assert_eq!(
        v.volume_context,
        HashMap::from([("fsType".into(), "xfs".into())])
    );
    assert_eq!(
        h.calls("lvcreate"),
        [
            "lvcreate --yes --wipesignatures y --zero y --size 12582912b --name pvc-1 csivg \
          --addtag lvm-iscsi-csi/name=pvc-1 --addtag lvm-iscsi-csi/fs=xfs"
        ]
    );
    // The repeat finds it (lvcreate refuses the name) and answers the same.
    assert_eq!(h.create(req).await, v);
    assert_eq!(h.lvm.lv("csivg", "pvc-1").unwrap().size, 12 * MIB);
}

#[tokio::test]
async fn creates_a_thin_volume_and_hashes_odd_names() {
    let h = Harness::new().await;
    let name = format!("sanity-{}", "x".repeat(121));
    assert_eq!(name.len(), 128);
    let v = h
        .create(with_params(
            create_req(&name, 64 * MIB),
            &[("thinPool", "pool0")],
        ))
        .await;
    let lv = v.volume_id.strip_prefix("csivg/").unwrap();
    assert!(lv.starts_with("vol-") && lv.len() == 24, "{lv}");
    let fake = h.lvm.lv("csivg", lv).unwrap();
    assert_eq!(fake.pool.as_deref(), Some("pool0"));
    assert!(fake.attr.starts_with('V'));
    assert_eq!(fake.tags, [format!("lvm-iscsi-csi/name={name}")]);
    assert!(h.calls("lvcreate")[0].contains("--thin --virtualsize 67108864b"));
    assert_eq!(
        h.create(with_params(
            create_req(&name, 64 * MIB),
            &[("thinPool", "pool0")]
        ))
        .await,
        v
    );
}

#[tokio::test]
async fn default_size_and_limits() {
    let h = Harness::new().await;
    // No capacity: --default-volume-size (64 MiB in these tests).
    assert_eq!(
        h.create(create_req("a", 0)).await.capacity_bytes,
        64 * MIB as i64
    );
    // Only a limit: the default capped by it.
    let mut req = create_req("b", 0);
    req.capacity_range = Some(CapacityRange {
        required_bytes: 0,
        limit_bytes: 8 * MIB as i64,
    });
    assert_eq!(h.create(req).await.capacity_bytes, 8 * MIB as i64);
}

#[tokio::test]
async fn same_name_with_other_size_or_parameters_already_exists() {
    let h = Harness::new().await;
    let mut req = create_req("pvc-1", 64 * MIB);
    req.capacity_range = Some(CapacityRange {
        required_bytes: 64 * MIB as i64,
        limit_bytes: 64 * MIB as i64,
    });
    h.create(req).await;
    let (c, msg) = create_code(&h, create_req("pvc-1", 128 * MIB)).await;
    assert_eq!(c, Code::AlreadyExists);
    assert!(msg.contains("size"), "{msg}");
    let (c, msg) = create_code(
        &h,
        with_params(create_req("pvc-1", 64 * MIB), &[("thinPool", "pool0")]),
    )
    .await;
    assert_eq!(c, Code::AlreadyExists, "{msg}");
    let (c, _) = create_code(
        &h,
        with_params(create_req("pvc-1", 64 * MIB), &[("fsType", "ext4")]),
    )
    .await;
    assert_eq!(c, Code::AlreadyExists);
}

#[tokio::test]
async fn invalid_requests_fail_before_any_command() {
    let h = Harness::new().await;
    let mut cases: Vec<(CreateVolumeRequest, Code, &str)> = vec![
        (create_req("", 0), Code::InvalidArgument, "name"),
        (create_req("a\u{1}b", 0), Code::InvalidArgument, "control"),
        (
            create_req(&"a".repeat(129), 0),
            Code::InvalidArgument,
            "128",
        ),
        (
            with_params(create_req("a", 0), &[("volumegroup", "x")]),
            Code::InvalidArgument,
            "`volumegroup`",
        ),
        (
            with_params(create_req("a", 0), &[("fsType", "btrfs")]),
            Code::InvalidArgument,
            "fsType",
        ),
        (
            with_params(create_req("a", 0), &[("volumeGroup", "a;b")]),
            Code::InvalidArgument,
            "volumeGroup",
        ),
    ];
    let mut no_caps = create_req("a", 0);
    no_caps.volume_capabilities.clear();
    cases.push((no_caps, Code::InvalidArgument, "volume_capabilities"));
    for mode in [Mode::MultiNodeMultiWriter, Mode::MultiNodeSingleWriter] {
        let mut r = create_req("a", 0);
        r.volume_capabilities.push(block(mode));
        cases.push((r, Code::InvalidArgument, "MULTI_NODE"));
    }
    let mut clone = create_req("a", 0);
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: "csivg/a b".into(),
        })),
    });
    cases.push((clone, Code::InvalidArgument, "volume_content_source"));
    let mut mutable = create_req("a", 0);
    mutable.mutable_parameters.insert("iops".into(), "1".into());
    cases.push((mutable, Code::InvalidArgument, "mutable"));
    let mut fs = with_params(create_req("a", 0), &[("fsType", "xfs")]);
    fs.volume_capabilities = vec![mount(Mode::SingleNodeWriter, "ext4")];
    cases.push((fs, Code::InvalidArgument, "contradicts"));
    let ranges = [
        (-1, 0, Code::InvalidArgument),
        (0, -1, Code::InvalidArgument),
        (10 * MIB as i64, 5 * MIB as i64, Code::InvalidArgument),
        ((1 << 62) + 1, 0, Code::OutOfRange),
    ];
    for (required, limit, c) in ranges {
        let mut r = create_req("a", 0);
        r.capacity_range = Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        });
        cases.push((r, c, "capacity_range"));
    }
    for (req, want, needle) in cases {
        let (c, msg) = create_code(&h, req).await;
        assert_eq!(c, want, "{msg}");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    assert!(h.runner.calls().is_empty(), "{:?}", h.runner.calls());
}

#[tokio::test]
async fn sizes_that_do_not_fit_the_extents_are_out_of_range() {
    let h = Harness::new().await;
    let mut r = create_req("a", 0);
    r.capacity_range = Some(CapacityRange {
        required_bytes: 5 * MIB as i64,
        limit_bytes: 7 * MIB as i64,
    });
    let (c, msg) = create_code(&h, r).await;
    assert_eq!(c, Code::OutOfRange, "{msg}");
    assert!(h.calls("lvcreate").is_empty());
}

#[tokio::test]
async fn not_enough_space_is_resource_exhausted() {
    let h = Harness::new().await;
    // Thick: 1 GiB VG minus the 256 MiB pool.
    let (c, msg) = create_code(&h, create_req("big", 800 * MIB)).await;
    assert_eq!(c, Code::ResourceExhausted, "{msg}");
    // Thin: the pool is 256 MiB and the ratio 1.0.
    h.create(with_params(
        create_req("t1", 200 * MIB),
        &[("thinPool", "pool0")],
    ))
    .await;
    let (c, msg) = create_code(
        &h,
        with_params(create_req("t2", 100 * MIB), &[("thinPool", "pool0")]),
    )
    .await;
    assert_eq!(c, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("pool0"), "{msg}");
    assert_eq!(h.calls("lvcreate").len(), 1, "refused before lvcreate");
    // lvcreate's own refusal (someone took the space meanwhile) is classified the same way.
    h.lvm.fail(
        "lvcreate",
        Output::failed(
            5,
            "  Volume group \"csivg\" has insufficient free space (2 extents): 16 required.\n",
        ),
    );
    let (c, _) = create_code(&h, create_req("c", 64 * MIB)).await;
    assert_eq!(c, Code::ResourceExhausted);
}

#[tokio::test]
async fn thin_overprovisioning_follows_the_ratio() {
    let s = Settings {
        thin_overprovision_ratio: 2.0,
        ..settings()
    };
    let h = Harness::with(s, lvm()).await;
    let thin = |n: &str| with_params(create_req(n, 256 * MIB), &[("thinPool", "pool0")]);
    h.create(thin("t1")).await;
    h.create(thin("t2")).await;
    assert_eq!(create_code(&h, thin("t3")).await.0, Code::ResourceExhausted);
}

#[tokio::test]
async fn unknown_volume_group_or_pool_is_invalid() {
    let h = Harness::new().await;
    let (c, msg) = create_code(
        &h,
        with_params(create_req("a", 0), &[("volumeGroup", "novg")]),
    )
    .await;
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("novg"), "{msg}");
    let (c, msg) = create_code(
        &h,
        with_params(create_req("a", 0), &[("thinPool", "nopool")]),
    )
    .await;
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("nopool"), "{msg}");
    let no_default = Settings {
        default_volume_group: None,
        ..settings()
    };
    let h = Harness::with(no_default, lvm()).await;
    let (c, msg) = create_code(&h, create_req("a", 0)).await;
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("volumeGroup"), "{msg}");
}

#[tokio::test]
async fn an_lv_that_is_not_this_volume_is_never_taken_over() {
    let lvm = lvm();
    lvm.add_lv("csivg", "pvc-1", 4 * MIB, &["owner=dba"]);
    let h = Harness::with(settings(), lvm).await;
    let (c, msg) = create_code(&h, create_req("pvc-1", 4 * MIB)).await;
    assert_eq!(c, Code::AlreadyExists, "{msg}");
    assert_eq!(h.lvm.lv("csivg", "pvc-1").unwrap().tags, ["owner=dba"]);
}

#[tokio::test]
async fn a_failed_lvcreate_that_made_the_lv_removes_it() {
    let h = Harness::new().await;
    // lvcreate made the LV, then failed (here: in activation).
    h.lvm.fail_after(
        "lvcreate",
        Output::failed(5, "  Device mapper is confused\n"),
    );
    let (c, msg) = create_code(&h, create_req("pvc-1", 8 * MIB)).await;
    assert_eq!(c, Code::Internal, "{msg}");
    assert!(h.lvm.lv("csivg", "pvc-1").is_none(), "rolled back");
    assert_eq!(h.calls("lvremove"), ["lvremove --yes csivg/pvc-1"]);
    // lvcreate killed after it made the LV: removed too, and the next try works.
    h.lvm.fail_after("lvcreate", Output::failed(-1, ""));
    let (c, _) = create_code(&h, create_req("pvc-1", 8 * MIB)).await;
    assert_eq!(c, Code::Internal);
    assert!(h.lvm.lv("csivg", "pvc-1").is_none(), "rolled back");
    assert_eq!(
        h.create(create_req("pvc-1", 8 * MIB)).await.volume_id,
        "csivg/pvc-1"
    );
    // Someone else's LV of that name is never rolled back.
    h.lvm.add_lv("csivg", "other", 4 * MIB, &["owner=dba"]);
    h.lvm.fail("lvcreate", Output::failed(-1, ""));
    assert_eq!(
        create_code(&h, create_req("other", 8 * MIB)).await.0,
        Code::Internal
    );
    assert!(h.lvm.lv("csivg", "other").is_some());
}

/// The LVM commands one CreateVolume runs (the Core function: the RPC also schedules a gauge
/// refresh), as `program last-argument`, and its outcome.
async fn create_commands(
    h: &Harness,
    req: CreateVolumeRequest,
) -> (Result<Volume, ControllerError>, Vec<String>) {
    let plan = validate_create(&req, Some("csivg")).expect("a valid request");
    h.runner.clear();
    let result = ControllerService::create(
        &h.svc.volumes,
        h.svc.copier.as_ref(),
        h.svc.default_size,
        &plan,
    )
    .await;
    let calls = h
        .runner
        .calls()
        .iter()
        .map(|c| {
            let program = c.split(' ').next().unwrap_or_default();
            match program {
                "lvs" | "vgs" => format!("{program} {}", c.rsplit(' ').next().unwrap_or_default()),
                _ => program.to_string(),
            }
        })
        .collect();
    (result, calls)
}

#[tokio::test]
async fn a_thin_create_runs_one_lvs_and_lvcreate_and_a_repeat_one_lvs() {
    let h = Harness::new().await;
    let thin = || with_params(create_req("pvc-1", 10 * MIB), &[("thinPool", "pool0")]);
    let (v, calls) = create_commands(&h, thin()).await;
    let v = v.unwrap();
    assert_eq!(calls, ["lvs csivg", "lvcreate"]);
    assert_eq!(
        (v.volume_id.as_str(), v.capacity_bytes),
        ("csivg/pvc-1", 12 * MIB as i64)
    );
    assert_eq!(h.lvm.lv("csivg", "pvc-1").unwrap().size, 12 * MIB);
    let (again, calls) = create_commands(&h, thin()).await;
    assert_eq!(again.unwrap(), v);
    assert_eq!(calls, ["lvs csivg"]);
    // Even when the pool has no room left for it any more.
    h.lvm.edit("csivg", "pool0", |p| p.size = 4 * MIB);
    let (again, calls) = create_commands(&h, thin()).await;
    assert_eq!(again.unwrap(), v);
    assert_eq!(calls, ["lvs csivg"]);
    // A new one is refused before lvcreate.
    let (err, calls) = create_commands(
        &h,
        with_params(create_req("pvc-2", MIB), &[("thinPool", "pool0")]),
    )
    .await;
    assert!(matches!(err, Err(ControllerError::NoSpace(_))), "{err:?}");
    assert_eq!(calls, ["lvs csivg"]);
}

#[tokio::test]
async fn a_thick_create_runs_vgs_and_lvcreate_and_a_repeat_reads_the_lv() {
    let h = Harness::new().await;
    let (v, calls) = create_commands(&h, create_req("pvc-1", 10 * MIB)).await;
    let v = v.unwrap();
    assert_eq!(calls, ["vgs csivg", "lvcreate"]);
    assert_eq!(v.capacity_bytes, 12 * MIB as i64);
    let (again, calls) = create_commands(&h, create_req("pvc-1", 10 * MIB)).await;
    assert_eq!(again.unwrap(), v);
    assert_eq!(calls, ["vgs csivg", "lvcreate", "lvs csivg/pvc-1"]);
    // The VG is full now: the repeat still answers, a new volume is refused.
    h.lvm
        .add_lv("csivg", "filler", GIB - 256 * MIB - 12 * MIB, &[]);
    let (again, calls) = create_commands(&h, create_req("pvc-1", 10 * MIB)).await;
    assert_eq!(again.unwrap(), v);
    assert_eq!(calls, ["vgs csivg", "lvs csivg/pvc-1"]);
    let (err, calls) = create_commands(&h, create_req("pvc-2", 10 * MIB)).await;
    assert!(matches!(err, Err(ControllerError::NoSpace(_))), "{err:?}");
    assert_eq!(calls, ["vgs csivg", "lvs csivg/pvc-2"]);
}

#[tokio::test]
async fn the_other_kind_under_the_same_name_already_exists() {
    let h = Harness::new().await;
    h.create(with_params(
        create_req("thin", 8 * MIB),
        &[("thinPool", "pool0")],
    ))
    .await;
    h.create(create_req("thick", 8 * MIB)).await;
    let (err, calls) = create_commands(&h, create_req("thin", 8 * MIB)).await;
    assert!(
        matches!(err, Err(ControllerError::NameConflict { .. })),
        "{err:?}"
    );
    assert_eq!(calls, ["vgs csivg", "lvcreate", "lvs csivg/thin"]);
    let (err, calls) = create_commands(
        &h,
        with_params(create_req("thick", 8 * MIB), &[("thinPool", "pool0")]),
    )
    .await;
    assert!(
        matches!(err, Err(ControllerError::NameConflict { .. })),
        "{err:?}"
    );
    assert_eq!(calls, ["lvs csivg"]);
    // A thin request for a foreign LV's name, found in the listing, is refused too.
    h.lvm.add_lv("csivg", "dba", 4 * MIB, &[]);
    let (err, _) = create_commands(
        &h,
        with_params(create_req("dba", 4 * MIB), &[("thinPool", "pool0")]),
    )
    .await;
    assert!(
        matches!(err, Err(ControllerError::LvNameTaken { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_lv_gone_between_lvcreate_and_the_read_is_aborted() {
    let h = Harness::new().await;
    h.lvm.fail(
        "lvcreate",
        Output::failed(
            5,
            "  Logical Volume \"pvc-1\" already exists in volume group \"csivg\"\n",
        ),
    );
    assert_eq!(
        create_code(&h, create_req("pvc-1", 8 * MIB)).await.0,
        Code::Aborted
    );
    assert!(h.calls("lvremove").is_empty());
}

#[tokio::test]
async fn a_concurrent_create_of_the_same_name_is_aborted() {
    let h = Harness::new().await;
    let _busy = h.svc.locks.try_lock("name:pvc-1").unwrap();
    let (c, _) = create_code(&h, create_req("pvc-1", 0)).await;
    assert_eq!(c, Code::Aborted);
    // Another name proceeds.
    h.create(create_req("pvc-2", 0)).await;
}

#[tokio::test]
async fn deletes_and_repeats() {
    let h = Harness::new().await;
    let v = h.create(create_req("pvc-1", 8 * MIB)).await;
    h.delete(&v.volume_id).await.unwrap();
    assert!(h.lvm.lv("csivg", "pvc-1").is_none());
    h.delete(&v.volume_id).await.unwrap();
    assert_eq!(
        h.calls("lvremove").len(),
        1,
        "the repeat has nothing to remove"
    );
}

#[tokio::test]
async fn delete_of_unknown_or_foreign_ids_is_ok_and_touches_nothing() {
    let lvm = lvm();
    lvm.add_lv("csivg", "root", 4 * MIB, &[]);
    let h = Harness::with(settings(), lvm).await;
    for id in [
        "fake-vol-id",
        "csivg/nope",
        "novg/x",
        "csivg/root",
        "csivg/pool0",
    ] {
        h.delete(id).await.unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    assert!(h.lvm.lv("csivg", "root").is_some());
    assert!(h.calls("lvremove").is_empty());
    assert_eq!(code(h.delete("").await), Code::InvalidArgument);
    assert_eq!(
        code(h.delete("csivg/a;reboot").await),
        Code::InvalidArgument
    );
    assert_eq!(code(h.delete("csivg/../x").await), Code::InvalidArgument);
}

#[tokio::test]
async fn delete_of_a_published_volume_names_the_nodes() {
    let h = Harness::new().await;
    let v = h.create(create_req("pvc-1", 8 * MIB)).await;
    h.publish(publish_req(&v.volume_id, "node-1"))
        .await
        .unwrap();
    let err = h.delete(&v.volume_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("node-1"), "{}", err.message());
    assert!(h.lvm.lv("csivg", "pvc-1").is_some());
}

#[tokio::test]
async fn delete_removes_a_leftover_export_and_reports_an_open_lv() {
    let h = Harness::new().await;
    let v = h.create(create_req("pvc-1", 8 * MIB)).await;
    h.publish(publish_req(&v.volume_id, "node-1"))
        .await
        .unwrap();
    // A crash after the tag was removed but before the export was.
    drop_publication_tags(&h.lvm, "pvc-1");
    h.lvm.set_open("csivg", "pvc-1", true);
    let err = h.delete(&v.volume_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(h.target.exports().is_empty(), "the export went first");
    h.lvm.set_open("csivg", "pvc-1", false);
    h.delete(&v.volume_id).await.unwrap();
    assert!(h.lvm.lv("csivg", "pvc-1").is_none());
}

#[tokio::test]
async fn delete_waits_for_restore() {
    let lvm = lvm();
    lvm.add_lv("csivg", "pvc-1", 4 * MIB, &["lvm-iscsi-csi/name=pvc-1"]);
    let h = Harness::unrestored(settings(), lvm);
    assert_eq!(code(h.delete("csivg/pvc-1").await), Code::Unavailable);
    // Unknown volumes need no target and answer at once.
    h.delete("csivg/nope").await.unwrap();
}
