//! Start-up restore and readiness.

use super::*;
use crate::domain::chap;
use crate::export::{AclSpec, ExportSpec, TargetBackend};
use crate::identity::{Health, Readiness};

const CSI_PUB1: &str = "lvm-iscsi-csi/pub=node-1/iqn.2004-10.com.debian:node-1";

fn chap_pub(key_id: &str) -> String {
    format!("{CSI_PUB1}/chap.{key_id}/single/rw")
}

/// A storage node after a reboot: tags say what should be exported, the kernel has nothing
/// of it, and holds a stale export and a stray ACL from before.
async fn rebooted(chap_key: Option<ChapKey>) -> Harness {
    let lvm = lvm();
    let id = key().id();
    lvm.add_lv(
        "csivg",
        "pvc-1",
        4 * MIB,
        &["lvm-iscsi-csi/name=pvc-1", &chap_pub(&id)],
    );
    lvm.add_lv(
        "csivg",
        "pvc-2",
        4 * MIB,
        &[
            "lvm-iscsi-csi/name=pvc-2",
            "lvm-iscsi-csi/pub=node-2/iqn.2004-10.com.debian:node-2/none/single/rw",
        ],
    );
    lvm.add_lv("csivg", "pvc-3", 4 * MIB, &["lvm-iscsi-csi/name=pvc-3"]);
    let h = Harness::unrestored(
        Settings {
            chap_key,
            ..settings()
        },
        lvm,
    );
    let stale = ExportSpec {
        iqn: format!("{PREFIX}:csivg.pvc-3"),
        device: "/dev/csivg/pvc-3".into(),
        backstore: "csivg-pvc-3".into(),
        portals: vec![],
    };
    h.target.ensure_export(&stale).await.unwrap();
    let spec2 = ExportSpec {
        iqn: format!("{PREFIX}:csivg.pvc-2"),
        device: "/dev/csivg/pvc-2".into(),
        backstore: "csivg-pvc-2".into(),
        portals: vec![],
    };
    h.target.ensure_export(&spec2).await.unwrap();
    h.target
        .ensure_acl(
            &spec2.iqn,
            &AclSpec {
                initiator: "iqn.2004-10.com.debian:gone".into(),
                chap: None,
            },
        )
        .await
        .unwrap();
    h
}

#[tokio::test]
async fn restore_rebuilds_exports_from_tags_and_removes_the_rest() {
    let h = rebooted(Some(key())).await;
    let r = h.svc.restore().await.unwrap();
    assert_eq!((r.exports, r.acls, r.acls_skipped), (2, 2, 0));
    assert_eq!((r.exports_removed, r.acls_removed), (1, 1));
    assert!(r.failed.is_empty());
    let exports = h.target.exports();
    assert_eq!(
        exports.keys().collect::<Vec<_>>(),
        [
            &format!("{PREFIX}:csivg.pvc-1"),
            &format!("{PREFIX}:csivg.pvc-2")
        ]
    );
    let e1 = &exports[&format!("{PREFIX}:csivg.pvc-1")];
    assert_eq!(e1.spec.device, "/dev/csivg/pvc-1");
    assert_eq!(e1.spec.portals, ["10.0.0.1:3260", "10.0.0.2:3260"]);
    assert_eq!(
        e1.acls[IQN1].chap,
        Some(chap::derive(KEY.as_bytes(), "csivg/pvc-1", IQN1))
    );
    let e2 = &exports[&format!("{PREFIX}:csivg.pvc-2")];
    assert_eq!(e2.acls.keys().collect::<Vec<_>>(), [IQN2]);
    assert_eq!(e2.acls[IQN2].chap, None);
    // A second pass finds everything in place.
    let again = h.svc.restore().await.unwrap();
    assert_eq!((again.exports_removed, again.acls_removed), (0, 0));
    assert_eq!(h.target.exports(), exports);
    // One lvs for all volumes.
    assert_eq!(h.calls("lvs").len(), 2);
}

#[tokio::test]
async fn a_chap_acl_is_never_restored_without_its_key() {
    for file_key in [
        None,
        Some(ChapKey::new("another-key-0123456789".into()).unwrap()),
    ] {
        let h = rebooted(file_key).await;
        let r = h.svc.restore().await.unwrap();
        assert_eq!((r.exports, r.acls, r.acls_skipped), (2, 1, 1));
        let e1 = &h.target.exports()[&format!("{PREFIX}:csivg.pvc-1")];
        assert!(e1.acls.is_empty(), "no ACL rather than one without CHAP");
    }
}

#[tokio::test]
async fn restore_needs_lvm_and_the_target() {
    let h = rebooted(Some(key())).await;
    h.lvm
        .fail("lvs", Output::failed(5, "  Device mapper failure\n"));
    assert!(h.svc.restore().await.is_err());
    h.target.set_failure(Some("no configfs"));
    assert!(h.svc.restore().await.is_err());
    // Still closed to target RPCs.
    assert_eq!(
        code(h.publish(publish_req("csivg/pvc-3", "node-1")).await),
        Code::Unavailable
    );
}

#[tokio::test]
async fn many_volumes_restore_in_one_pass() {
    let lvm = lvm();
    for i in 0..500 {
        let pubtag = format!("lvm-iscsi-csi/pub=n{i}/iqn.2004-10.com.debian:n{i}/none/single/rw");
        lvm.add_lv(
            "csivg",
            &format!("pvc-{i}"),
            4 * MIB,
            &[&format!("lvm-iscsi-csi/name=pvc-{i}"), &pubtag],
        );
    }
    let h = Harness::unrestored(settings(), lvm);
    let r = h.svc.restore().await.unwrap();
    assert_eq!((r.exports, r.acls), (500, 500));
    assert_eq!(h.target.exports().len(), 500);
}

/// Lets the spawned readiness check run (the fakes answer at once).
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_lvm_target_and_restore() {
    use crate::controller::readiness::RECHECK_AFTER;
    let h = rebooted(Some(key())).await;
    let ready = h.svc.readiness();
    assert_eq!(ready.check().await, Health::Starting, "no check yet");
    settle().await;
    assert_eq!(ready.check().await, Health::Starting, "not restored yet");
    h.svc.restore().await.unwrap();
    assert_eq!(ready.check().await, Health::Ready);
    assert_eq!(h.calls("vgs").len(), 1, "probes answer from the last check");
    assert!(
        h.calls("vgs")[0].ends_with(" csivg"),
        "{:?}",
        h.calls("vgs")
    );
    h.lvm.fail(
        "vgs",
        Output::failed(5, "  Volume group \"csivg\" not found\n"),
    );
    tokio::time::sleep(RECHECK_AFTER).await;
    assert_eq!(
        ready.check().await,
        Health::Ready,
        "the recheck runs behind"
    );
    settle().await;
    assert!(matches!(ready.check().await, Health::Broken(m) if m.contains("csivg")));
    h.target.set_failure(Some("tgtd is not running"));
    tokio::time::sleep(RECHECK_AFTER).await;
    ready.check().await;
    settle().await;
    assert!(matches!(ready.check().await, Health::Broken(m) if m.contains("tgtd")));
    h.target.set_failure(None);
    tokio::time::sleep(RECHECK_AFTER).await;
    ready.check().await;
    settle().await;
    assert_eq!(ready.check().await, Health::Ready, "and back");
}
