//! ValidateVolumeCapabilities, ListVolumes, GetCapacity, ControllerGetVolume, capabilities
//! and the RPCs this driver does not offer.

use super::*;
use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::{rpc, Type as CapType};
use tonic::Request;

fn validate_req(id: &str, caps: Vec<VolumeCapability>) -> ValidateVolumeCapabilitiesRequest {
    ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    }
}

async fn validate(
    h: &Harness,
    req: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Code> {
    h.svc
        .validate_volume_capabilities(Request::new(req))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn validate_confirms_only_what_the_volume_serves() {
    let h = Harness::new().await;
    let id = h
        .create(with_params(
            create_req("pvc-1", 8 * MIB),
            &[("fsType", "xfs")],
        ))
        .await
        .volume_id;
    let caps = vec![
        mount(Mode::SingleNodeWriter, "xfs"),
        block(Mode::MultiNodeReaderOnly),
    ];
    let mut ok = validate_req(&id, caps.clone());
    ok.volume_context = HashMap::from([("fsType".into(), "xfs".into())]);
    ok.parameters = HashMap::from([
        ("fsType".into(), "xfs".into()),
        ("volumeGroup".into(), "csivg".into()),
    ]);
    let r = validate(&h, ok.clone()).await.unwrap();
    let confirmed = r.confirmed.expect("confirmed");
    assert_eq!(confirmed.volume_capabilities, caps);
    assert_eq!(confirmed.volume_context, ok.volume_context);
    assert_eq!(validate(&h, ok).await.unwrap().message, "", "repeatable");

    let unconfirmed = [
        validate_req(&id, vec![block(Mode::MultiNodeMultiWriter)]),
        validate_req(&id, vec![mount(Mode::SingleNodeWriter, "ext4")]),
        ValidateVolumeCapabilitiesRequest {
            volume_context: HashMap::from([("fsType".into(), "ext4".into())]),
            ..validate_req(&id, vec![block(Mode::SingleNodeWriter)])
        },
        ValidateVolumeCapabilitiesRequest {
            parameters: HashMap::from([("thinPool".into(), "pool0".into())]),
            ..validate_req(&id, vec![block(Mode::SingleNodeWriter)])
        },
        ValidateVolumeCapabilitiesRequest {
            parameters: HashMap::from([("bogus".into(), "1".into())]),
            ..validate_req(&id, vec![block(Mode::SingleNodeWriter)])
        },
    ];
    for req in unconfirmed {
        let r = validate(&h, req.clone()).await.unwrap();
        assert!(r.confirmed.is_none(), "{req:?}");
        assert!(!r.message.is_empty());
    }
    assert_eq!(
        validate(&h, validate_req("fake-vol-id", vec![]))
            .await
            .unwrap_err(),
        Code::InvalidArgument
    );
    assert_eq!(
        validate(&h, validate_req(&id, vec![])).await.unwrap_err(),
        Code::InvalidArgument
    );
    assert_eq!(
        validate(&h, validate_req("", vec![block(Mode::SingleNodeWriter)]))
            .await
            .unwrap_err(),
        Code::InvalidArgument
    );
    for unknown in ["csivg/nope", "fake-vol-id"] {
        assert_eq!(
            validate(
                &h,
                validate_req(unknown, vec![block(Mode::SingleNodeWriter)])
            )
            .await
            .unwrap_err(),
            Code::NotFound
        );
    }
}

async fn list(h: &Harness, max: i32, token: &str) -> Result<ListVolumesResponse, Code> {
    h.svc
        .list_volumes(Request::new(ListVolumesRequest {
            max_entries: max,
            starting_token: token.into(),
        }))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.code())
}

fn ids(r: &ListVolumesResponse) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect()
}

#[tokio::test]
async fn list_pages_through_our_volumes_only() {
    let lvm = lvm();
    lvm.add_lv("csivg", "root", 4 * MIB, &[]);
    let h = Harness::with(settings(), lvm).await;
    for n in ["pvc-c", "pvc-a", "pvc-b"] {
        h.create(create_req(n, 4 * MIB)).await;
    }
    h.publish(publish_req("csivg/pvc-b", "node-1"))
        .await
        .unwrap();
    let all = list(&h, 0, "").await.unwrap();
    assert_eq!(ids(&all), ["csivg/pvc-a", "csivg/pvc-b", "csivg/pvc-c"]);
    assert_eq!(all.next_token, "");
    let status = all.entries[1].status.as_ref().unwrap();
    assert_eq!(status.published_node_ids, ["node-1"]);
    assert!(!status.volume_condition.as_ref().unwrap().abnormal);

    let first = list(&h, 2, "").await.unwrap();
    assert_eq!(ids(&first), ["csivg/pvc-a", "csivg/pvc-b"]);
    assert_eq!(first.next_token, "csivg/pvc-b");
    let second = list(&h, 2, &first.next_token).await.unwrap();
    assert_eq!(ids(&second), ["csivg/pvc-c"]);
    assert_eq!(second.next_token, "");
    // The volume a token names may be gone: the listing continues after it.
    h.unpublish("csivg/pvc-b", "node-1").await.unwrap();
    h.delete("csivg/pvc-b").await.unwrap();
    assert_eq!(
        ids(&list(&h, 2, &first.next_token).await.unwrap()),
        ["csivg/pvc-c"]
    );

    assert_eq!(
        list(&h, 0, "invalid-token").await.unwrap_err(),
        Code::Aborted
    );
    assert_eq!(list(&h, 0, "csivg/a;b").await.unwrap_err(), Code::Aborted);
    assert_eq!(list(&h, -1, "").await.unwrap_err(), Code::InvalidArgument);
}

async fn capacity(
    h: &Harness,
    params: &[(&str, &str)],
    caps: Vec<VolumeCapability>,
) -> Result<GetCapacityResponse, Code> {
    h.svc
        .get_capacity(Request::new(GetCapacityRequest {
            volume_capabilities: caps,
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            accessible_topology: None,
        }))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn capacity_of_the_vg_or_the_thin_pool() {
    let h = Harness::new().await;
    h.create(create_req("a", 100 * MIB)).await;
    h.create(with_params(
        create_req("t", 56 * MIB),
        &[("thinPool", "pool0")],
    ))
    .await;
    let thick = capacity(&h, &[], vec![]).await.unwrap();
    assert_eq!(thick.available_capacity, (1024 - 256 - 100) * MIB as i64);
    assert_eq!(thick.maximum_volume_size, Some(thick.available_capacity));
    assert_eq!(thick.minimum_volume_size, Some(4 * MIB as i64));
    let thin = capacity(
        &h,
        &[("thinPool", "pool0")],
        vec![block(Mode::SingleNodeWriter)],
    )
    .await
    .unwrap();
    assert_eq!(thin.available_capacity, 200 * MIB as i64);
    for none in [
        capacity(&h, &[("volumeGroup", "othervg")], vec![]).await,
        capacity(&h, &[("thinPool", "nopool")], vec![]).await,
        capacity(&h, &[], vec![block(Mode::MultiNodeMultiWriter)]).await,
    ] {
        assert_eq!(none.unwrap().available_capacity, 0);
    }
    assert_eq!(
        capacity(&h, &[("x", "1")], vec![]).await.unwrap_err(),
        Code::InvalidArgument
    );
}

async fn get(h: &Harness, id: &str) -> Result<ControllerGetVolumeResponse, Code> {
    h.svc
        .controller_get_volume(Request::new(ControllerGetVolumeRequest {
            volume_id: id.into(),
        }))
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn get_volume_reports_nodes_and_condition() {
    let h = Harness::new().await;
    let v = h.create(create_req("pvc-1", 8 * MIB)).await;
    h.publish(publish_req(&v.volume_id, "node-1"))
        .await
        .unwrap();
    let r = get(&h, &v.volume_id).await.unwrap();
    assert_eq!(r.volume, Some(v.clone()));
    let status = r.status.unwrap();
    assert_eq!(status.published_node_ids, ["node-1"]);
    assert!(!status.volume_condition.unwrap().abnormal);
    h.lvm
        .edit("csivg", "pvc-1", |l| l.attr = "-wi-------".into());
    let cond = get(&h, &v.volume_id)
        .await
        .unwrap()
        .status
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(
        cond.abnormal && cond.message.contains("not active"),
        "{cond:?}"
    );
    assert_eq!(get(&h, "csivg/nope").await.unwrap_err(), Code::NotFound);
    assert_eq!(get(&h, "fake-vol-id").await.unwrap_err(), Code::NotFound);
    assert_eq!(get(&h, "").await.unwrap_err(), Code::InvalidArgument);
}

#[tokio::test]
async fn capabilities_and_unimplemented_rpcs() {
    let h = Harness::new().await;
    let caps: Vec<rpc::Type> = h
        .svc
        .controller_get_capabilities(Request::new(ControllerGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .map(|c| match c.r#type {
            Some(CapType::Rpc(r)) => rpc::Type::try_from(r.r#type).unwrap(),
            None => panic!("empty capability"),
        })
        .collect();
    assert_eq!(caps.len(), 14);
    assert!(!caps.contains(&rpc::Type::ModifyVolume));
    for present in [
        rpc::Type::PublishReadonly,
        rpc::Type::ExpandVolume,
        rpc::Type::CreateDeleteSnapshot,
        rpc::Type::ListSnapshots,
        rpc::Type::CloneVolume,
        rpc::Type::GetSnapshot,
    ] {
        assert!(caps.contains(&present), "{present:?}");
    }
    let s = &h.svc;
    assert_eq!(
        code(
            s.controller_modify_volume(Request::new(Default::default()))
                .await
        ),
        Code::Unimplemented
    );
}
