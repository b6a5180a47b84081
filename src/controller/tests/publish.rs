//! ControllerPublishVolume and ControllerUnpublishVolume.

use super::*;
use crate::domain::chap;
use crate::lvm::tags::VolumeTags;

async fn volume(h: &Harness, name: &str) -> String {
    h.create(create_req(name, 8 * MIB)).await.volume_id
}

fn pubs(h: &Harness, lv: &str) -> Vec<String> {
    let lv = h.lvm.lv("csivg", lv).unwrap();
    VolumeTags::parse(&lv.tags)
        .publications
        .iter()
        .map(|p| p.node_id.clone())
        .collect()
}

#[tokio::test]
async fn publishes_with_chap_and_never_leaks_a_secret() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    let ctx = h.publish(publish_req(&id, "node-1")).await.unwrap();
    let iqn = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1";
    assert_eq!(
        ctx,
        HashMap::from([
            ("targetIqn".to_string(), iqn.to_string()),
            (
                "portals".to_string(),
                "10.0.0.1:3260,10.0.0.2:3260".to_string()
            ),
            ("lun".to_string(), "0".to_string()),
            ("authMethod".to_string(), "CHAP".to_string()),
        ])
    );
    let exports = h.target.exports();
    let e = &exports[iqn];
    assert_eq!(e.spec.device, "/dev/csivg/pvc-1");
    assert_eq!(e.spec.backstore, "csivg-pvc-1");
    assert_eq!(e.spec.portals, ["10.0.0.1:3260", "10.0.0.2:3260"]);
    let acl = &e.acls[IQN1];
    let expected = chap::derive(KEY.as_bytes(), "csivg/pvc-1", IQN1);
    assert_eq!(acl.chap.as_ref(), Some(&expected));
    // The intent tag: node, initiator, key id (not the key), scope, access.
    let tags = h.lvm.lv("csivg", "pvc-1").unwrap().tags;
    let tag = format!(
        "lvm-iscsi-csi/pub=node-1/{IQN1}/chap.{}/single/rw",
        key().id()
    );
    assert!(tags.contains(&tag), "{tags:?}");
    for secret in [KEY, &expected.initiator.password, &expected.target.password] {
        assert!(!ctx.values().any(|v| v.contains(secret)));
        assert!(!tags.iter().any(|t| t.contains(secret)));
    }
}

#[tokio::test]
async fn a_repeat_gives_the_same_context_without_writing_again() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    let first = h.publish(publish_req(&id, "node-1")).await.unwrap();
    h.runner.clear();
    assert_eq!(h.publish(publish_req(&id, "node-1")).await.unwrap(), first);
    assert!(h.calls("lvchange").is_empty());
    assert_eq!(pubs(&h, "pvc-1"), ["node-1"]);
}

#[tokio::test]
async fn without_a_key_the_acl_stands_alone_and_the_key_file_is_the_fallback() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    let mut req = publish_req(&id, "node-1");
    req.secrets.clear();
    let ctx = h.publish(req.clone()).await.unwrap();
    assert_eq!(ctx["authMethod"], "None");
    let iqn = &ctx["targetIqn"];
    assert_eq!(h.target.exports()[iqn].acls[IQN1].chap, None);

    let with_file = Settings {
        chap_key: Some(key()),
        ..settings()
    };
    let h = Harness::with(with_file, lvm()).await;
    let id = volume(&h, "pvc-1").await;
    let ctx = h.publish(req_for(&id, req)).await.unwrap();
    assert_eq!(ctx["authMethod"], "CHAP");
    assert_eq!(
        h.target.exports()[&ctx["targetIqn"]].acls[IQN1].chap,
        Some(chap::derive(KEY.as_bytes(), &id, IQN1))
    );
}

fn req_for(id: &str, mut req: ControllerPublishVolumeRequest) -> ControllerPublishVolumeRequest {
    req.volume_id = id.into();
    req
}

#[tokio::test]
async fn unknown_volume_or_node_is_not_found() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    for (vol, node) in [
        ("fake-vol-id-123", "node-1"),
        ("csivg/nope", "node-1"),
        ("novg/x", "node-1"),
        ("csivg/pool0", "node-1"),
        (id.as_str(), "fake-node-id-123"),
    ] {
        assert_eq!(
            code(h.publish(publish_req(vol, node)).await),
            Code::NotFound,
            "{vol} {node}"
        );
    }
    assert!(h.target.exports().is_empty());
    assert!(pubs(&h, "pvc-1").is_empty());
}

#[tokio::test]
async fn invalid_requests_fail_before_any_command() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.runner.clear();
    let mut no_cap = publish_req(&id, "node-1");
    no_cap.volume_capability = None;
    let mut writer = publish_req(&id, "node-1");
    writer.volume_capability = Some(block(Mode::MultiNodeMultiWriter));
    let mut unknown_no_cap = publish_req("fake-vol-id-1", "node-1");
    unknown_no_cap.volume_capability = None;
    let mut short_key = publish_req(&id, "node-1");
    short_key.secrets.insert(SECRET_KEY.into(), "short".into());
    for (req, what) in [
        (publish_req("", "node-1"), "volume_id"),
        (publish_req(&id, ""), "node_id"),
        // An unknown volume is NOT_FOUND only when the request is otherwise complete.
        (publish_req("fake-vol-id-1", ""), "node_id"),
        (publish_req("csivg/a b", "node-1"), "invalid"),
        (publish_req(&id, "node 1"), "node_id"),
        (no_cap, "volume_capability"),
        (unknown_no_cap, "volume_capability"),
        (writer, "MULTI_NODE_MULTI_WRITER"),
        (short_key, "CHAP key"),
    ] {
        let err = h.publish(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(what),
            "{} should mention {what}",
            err.message()
        );
    }
    assert!(h.runner.calls().is_empty());
}

#[tokio::test]
async fn readonly_or_mode_change_on_the_same_node_already_exists() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    let mut ro = publish_req(&id, "node-1");
    ro.readonly = true;
    assert_eq!(code(h.publish(ro).await), Code::AlreadyExists);
    let mut multi = publish_req(&id, "node-1");
    multi.volume_capability = Some(block(Mode::MultiNodeReaderOnly));
    assert_eq!(code(h.publish(multi).await), Code::AlreadyExists);
}

#[tokio::test]
async fn a_single_node_volume_is_refused_on_a_second_node() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    let err = h.publish(publish_req(&id, "node-2")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("node-1"), "{}", err.message());
    let acls = &h.target.exports().into_values().next().unwrap().acls;
    assert!(!acls.contains_key(IQN2));
    assert_eq!(pubs(&h, "pvc-1"), ["node-1"]);
}

#[tokio::test]
async fn multi_node_readers_share_the_export() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    let reader = |node: &str| {
        let mut r = publish_req(&id, node);
        r.volume_capability = Some(mount(Mode::MultiNodeReaderOnly, ""));
        r.readonly = true;
        r
    };
    let a = h.publish(reader("node-1")).await.unwrap();
    let b = h.publish(reader("node-2")).await.unwrap();
    assert_eq!(a, b);
    let e = h.target.exports().into_values().next().unwrap();
    assert_eq!(e.acls.keys().collect::<Vec<_>>(), [IQN1, IQN2]);
    // A single-node writer cannot join them.
    assert_eq!(
        code(h.publish(publish_req(&id, "node-3")).await),
        Code::NotFound
    );
    let mut writer = publish_req(&id, "iqn.2004-10.com.debian:node-3");
    writer.volume_capability = Some(block(Mode::SingleNodeWriter));
    assert_eq!(code(h.publish(writer).await), Code::FailedPrecondition);
    // Unpublishing one reader keeps the export for the other.
    h.unpublish(&id, "node-1").await.unwrap();
    let e = h.target.exports().into_values().next().unwrap();
    assert_eq!(e.acls.keys().collect::<Vec<_>>(), [IQN2]);
    assert_eq!(pubs(&h, "pvc-1"), ["node-2"]);
    h.unpublish(&id, "node-2").await.unwrap();
    assert!(h.target.exports().is_empty());
}

#[tokio::test]
async fn the_intent_is_recorded_before_the_target_and_a_retry_finishes() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.target.set_failure(Some("tgtd is not running"));
    let err = h.publish(publish_req(&id, "node-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("tgtd is not running"),
        "{}",
        err.message()
    );
    assert_eq!(pubs(&h, "pvc-1"), ["node-1"], "the tag is the intent");
    h.target.set_failure(None);
    let ctx = h.publish(publish_req(&id, "node-1")).await.unwrap();
    assert!(h.target.exports()[&ctx["targetIqn"]]
        .acls
        .contains_key(IQN1));
}

#[tokio::test]
async fn a_changed_initiator_replaces_the_old_acl() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    let ctx = h.publish(publish_req(&id, "node-1")).await.unwrap();
    // The node was reinstalled with a new initiator name.
    let old = format!(
        "lvm-iscsi-csi/pub=node-1/{IQN2}/chap.{}/single/rw",
        key().id()
    );
    let new = format!(
        "lvm-iscsi-csi/pub=node-1/{IQN1}/chap.{}/single/rw",
        key().id()
    );
    h.lvm.edit("csivg", "pvc-1", |lv| {
        lv.tags.retain(|t| *t != new);
        lv.tags.push(old.clone());
    });
    h.target.set_failure(None);
    {
        use crate::export::{AclSpec, TargetBackend};
        h.target
            .ensure_acl(
                &ctx["targetIqn"],
                &AclSpec {
                    initiator: IQN2.into(),
                    chap: None,
                },
            )
            .await
            .unwrap();
    }
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    let tags = h.lvm.lv("csivg", "pvc-1").unwrap().tags;
    assert!(tags.contains(&new) && !tags.contains(&old), "{tags:?}");
    let acls = &h.target.exports()[&ctx["targetIqn"]].acls;
    assert_eq!(acls.keys().collect::<Vec<_>>(), [IQN1]);
}

#[tokio::test]
async fn publish_waits_for_restore_and_for_other_operations() {
    let lvm = lvm();
    lvm.add_lv("csivg", "pvc-1", 4 * MIB, &["lvm-iscsi-csi/name=pvc-1"]);
    let h = Harness::unrestored(settings(), lvm);
    assert_eq!(
        code(h.publish(publish_req("csivg/pvc-1", "node-1")).await),
        Code::Unavailable
    );
    assert_eq!(
        h.unpublish("csivg/pvc-1", "node-1").await,
        Err(Code::Unavailable)
    );
    h.svc.restore().await.unwrap();
    let _busy = h.svc.locks.try_lock("csivg/pvc-1").unwrap();
    assert_eq!(
        code(h.publish(publish_req("csivg/pvc-1", "node-1")).await),
        Code::Aborted
    );
    assert_eq!(
        h.unpublish("csivg/pvc-1", "node-1").await,
        Err(Code::Aborted)
    );
}

#[tokio::test]
async fn unpublish_removes_acl_then_tag_then_export_and_repeats() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    h.runner.clear();
    h.unpublish(&id, "node-1").await.unwrap();
    assert!(h.target.exports().is_empty());
    assert!(pubs(&h, "pvc-1").is_empty());
    assert_eq!(h.calls("lvchange").len(), 1);
    h.unpublish(&id, "node-1").await.unwrap();
    assert_eq!(h.calls("lvchange").len(), 1, "nothing left to change");
}

#[tokio::test]
async fn unpublish_of_unknown_things_is_ok() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    for (vol, node) in [
        ("fake-vol-id", "node-1"),
        ("csivg/nope", "node-1"),
        (id.as_str(), "unknown-node"),
    ] {
        h.unpublish(vol, node).await.unwrap();
    }
    assert_eq!(
        pubs(&h, "pvc-1"),
        ["node-1"],
        "other nodes' publications stay"
    );
    assert_eq!(h.unpublish("", "node-1").await, Err(Code::InvalidArgument));
    assert_eq!(h.unpublish(&id, "").await, Err(Code::InvalidArgument));
}

#[tokio::test]
async fn unpublish_cleans_an_export_left_without_publications() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    // A crash between removing the tag and removing the export.
    drop_publication_tags(&h.lvm, "pvc-1");
    h.unpublish(&id, "node-1").await.unwrap();
    assert!(h.target.exports().is_empty());
}

/// The LVM commands run since the last `clear`, as program and (for lvchange) whether it
/// was conditional.
fn lvm_commands(h: &Harness) -> Vec<String> {
    h.runner
        .calls()
        .iter()
        .map(|c| {
            let program = c.split(' ').next().unwrap_or_default();
            if program == "lvchange" && c.contains(" --select ") {
                "lvchange --select".to_string()
            } else {
                program.to_string()
            }
        })
        .collect()
}

#[tokio::test]
async fn publish_and_unpublish_of_known_tags_are_one_conditional_lvchange() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.runner.clear();
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    assert_eq!(lvm_commands(&h), ["lvchange --select"]);
    assert_eq!(pubs(&h, "pvc-1"), ["node-1"]);
    assert!(h
        .target
        .exports()
        .contains_key("iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1"));
    // A repeat writes nothing, so it reads the LV: the answer comes from LVM itself.
    h.runner.clear();
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    assert_eq!(lvm_commands(&h), ["lvs"]);
    h.runner.clear();
    h.unpublish(&id, "node-1").await.unwrap();
    assert_eq!(lvm_commands(&h), ["lvchange --select"]);
    assert!(pubs(&h, "pvc-1").is_empty());
    assert!(h.target.exports().is_empty());
    // A repeat reads, finds nothing to do.
    h.runner.clear();
    h.unpublish(&id, "node-1").await.unwrap();
    assert_eq!(lvm_commands(&h), ["lvs"]);
}

#[tokio::test]
async fn a_publication_the_cache_missed_still_refuses_a_second_node() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    // Another controller process (or an administrator) published it to node-2.
    let other = format!("lvm-iscsi-csi/pub=node-2/{IQN2}/none/single/rw");
    h.lvm
        .edit("csivg", "pvc-1", |lv| lv.tags.push(other.clone()));
    h.runner.clear();
    let err = h.publish(publish_req(&id, "node-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(
        lvm_commands(&h),
        ["lvchange --select", "lvs"],
        "the conditional write did nothing, the read refused"
    );
    assert_eq!(pubs(&h, "pvc-1"), ["node-2"]);
    assert!(h.target.exports().is_empty());
    // Now known: the refusal comes from the read alone.
    h.runner.clear();
    let err = h.publish(publish_req(&id, "node-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn an_unpublish_with_stale_tags_reads_and_does_the_rest() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    // Someone added a tag behind this process's back.
    h.lvm
        .edit("csivg", "pvc-1", |lv| lv.tags.push("owner=dba".into()));
    h.runner.clear();
    h.unpublish(&id, "node-1").await.unwrap();
    assert_eq!(lvm_commands(&h), ["lvchange --select", "lvs", "lvchange"]);
    assert!(pubs(&h, "pvc-1").is_empty());
    assert!(h
        .lvm
        .lv("csivg", "pvc-1")
        .unwrap()
        .tags
        .contains(&"owner=dba".to_string()));
    assert!(h.target.exports().is_empty());
}

#[tokio::test]
async fn after_a_restart_the_restored_tags_are_known() {
    let h = Harness::new().await;
    let id = volume(&h, "pvc-1").await;
    h.publish(publish_req(&id, "node-1")).await.unwrap();
    let again = Harness::with(settings(), h.lvm.clone()).await;
    again.unpublish(&id, "node-1").await.unwrap();
    assert_eq!(lvm_commands(&again), ["lvchange --select"]);
    assert!(pubs(&again, "pvc-1").is_empty());
}
