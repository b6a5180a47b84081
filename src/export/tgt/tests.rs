use std::sync::{Arc, Mutex};

use super::fake::{FakeTgtd, Tgt};
use super::*;
use crate::domain::chap;
use crate::exec::fake::FakeRunner;

const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
const IQN: &str = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1";
const NODE1: &str = "iqn.1993-08.org.debian:01:node1";
const NODE2: &str = "iqn.1993-08.org.debian:01:node2";

/// The real listing of parse.rs's tests (three targets, one foreign).
const SHOW: &str = include_str!("testdata/show-target.txt");

type Shared = Arc<Mutex<FakeTgtd>>;

fn backend_on(tgtd: FakeTgtd) -> (TgtBackend, Shared, Arc<FakeRunner>) {
    let state: Shared = Arc::new(Mutex::new(tgtd));
    let s = state.clone();
    let runner = Arc::new(FakeRunner::new(move |argv| {
        assert_eq!(argv[0], "tgtadm");
        assert_eq!(&argv[1..3], ["--lld", "iscsi"]);
        s.lock().unwrap().answer(argv)
    }));
    let b = TgtBackend::new(runner.clone(), format!("{PREFIX}:"));
    (b, state, runner)
}

fn backend() -> (TgtBackend, Shared, Arc<FakeRunner>) {
    backend_on(FakeTgtd::with_default_portals())
}

fn spec() -> ExportSpec {
    ExportSpec {
        iqn: IQN.into(),
        device: "/dev/csivg/pvc-1".into(),
        backstore: "csivg.pvc-1".into(),
        portals: vec!["127.0.0.1:3260".parse().unwrap()],
    }
}

fn acl(initiator: &str) -> AclSpec {
    AclSpec {
        initiator: initiator.into(),
        chap: Some(chap::derive(b"0123456789abcdef", "csivg/pvc-1", initiator)),
    }
}

/// A tgtd already holding the captured listing's targets (tid 1 and 3 ours, 2 foreign).
fn captured() -> FakeTgtd {
    let mut tgtd = FakeTgtd::with_default_portals();
    for t in parse_targets(SHOW).unwrap() {
        let mut x = Tgt {
            name: t.name.clone(),
            acls: t.acls.clone(),
            ..Default::default()
        };
        for l in t.luns.iter().filter(|l| l.lun != 0) {
            let path = l.path.clone().unwrap();
            x.luns
                .insert(l.lun, (path, l.scsi_id.clone(), l.scsi_sn.clone()));
        }
        for a in &t.accounts {
            x.accounts.push((a.user.clone(), a.outgoing));
            tgtd.accounts.insert(a.user.clone(), "p".into());
        }
        for n in &t.nexuses {
            x.sessions
                .push((n.sid, n.initiator.clone(), n.connections[0]));
        }
        tgtd.targets.insert(t.tid, x);
    }
    tgtd
}

#[tokio::test]
async fn export_creates_target_lun_and_serial_once() {
    let (b, tgtd, runner) = backend();
    b.ensure_export(&spec()).await.unwrap();
    {
        let d = tgtd.lock().unwrap();
        let t = &d.targets[&1];
        assert_eq!(t.name, IQN);
        let serial = unit_serial(IQN);
        assert_eq!(
            t.luns[&1],
            ("/dev/csivg/pvc-1".to_string(), serial.clone(), serial)
        );
        assert!(t.acls.is_empty(), "closed until an ACL is added");
        assert_eq!(
            d.portals.len(),
            2,
            "0.0.0.0:3260 already covers 127.0.0.1:3260"
        );
    }
    assert!(runner.calls().iter().any(|c| c.contains("--bstype rdwr")));
    runner.clear();
    b.ensure_export(&spec()).await.unwrap();
    let calls = runner.calls();
    assert!(calls.iter().all(|c| c.contains("--op show")), "{calls:?}");
    assert_eq!(b.data_lun(), 1);
}

#[tokio::test]
async fn export_takes_the_lowest_free_tid_and_adds_missing_portals() {
    let (b, tgtd, _) = backend_on(captured());
    let mut s = spec();
    s.portals = vec![
        "10.0.0.5:3260".parse().unwrap(),
        "[fd00::5]:3261".parse().unwrap(),
    ];
    b.ensure_export(&s).await.unwrap();
    let d = tgtd.lock().unwrap();
    assert_eq!(d.targets[&4].name, IQN, "tids 1-3 are taken");
    assert!(d.portals.contains(&"[fd00::5]:3261".to_string()));
    assert!(
        !d.portals.contains(&"10.0.0.5:3260".to_string()),
        "covered by 0.0.0.0:3260"
    );
}

#[tokio::test]
async fn export_of_another_device_conflicts() {
    let (b, _, _) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let mut other = spec();
    other.device = "/dev/csivg/pvc-2".into();
    let err = b.ensure_export(&other).await.unwrap_err();
    assert!(matches!(err, TargetError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn acl_binds_accounts_before_the_initiator() {
    let (b, tgtd, runner) = backend();
    b.ensure_export(&spec()).await.unwrap();
    runner.clear();
    let a = acl(NODE1);
    b.ensure_acl(IQN, &a).await.unwrap();
    let chap = a.chap.unwrap();
    {
        let d = tgtd.lock().unwrap();
        let t = &d.targets[&1];
        assert_eq!(t.acls, [NODE1]);
        assert_eq!(
            t.accounts,
            [
                (chap.initiator.user.clone(), false),
                (chap.target.user.clone(), true)
            ]
        );
        assert_eq!(d.accounts[&chap.initiator.user], chap.initiator.password);
        assert_eq!(d.accounts[&chap.target.user], chap.target.password);
    }
    let calls = runner.calls();
    let pos = |s: &str| calls.iter().position(|c| c.contains(s)).unwrap();
    assert!(pos("--outgoing") < pos("--initiator-name"));
    runner.clear();
    b.ensure_acl(IQN, &acl(NODE1)).await.unwrap();
    assert!(
        runner.calls().iter().all(|c| c.contains("--op show")),
        "{:?}",
        runner.calls()
    );
}

#[tokio::test]
async fn second_initiator_with_mutual_chap_is_unsupported_on_tgt() {
    let (b, tgtd, _) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &acl(NODE1)).await.unwrap();
    let err = b.ensure_acl(IQN, &acl(NODE2)).await.unwrap_err();
    assert!(matches!(err, TargetError::Unsupported { .. }), "{err}");
    assert_eq!(
        tgtd.lock().unwrap().targets[&1].acls,
        [NODE1],
        "not let in half-configured"
    );
    // Without CHAP on a CHAP target: refused too, rather than a login that cannot work.
    let open = AclSpec {
        initiator: NODE2.into(),
        chap: None,
    };
    assert!(matches!(
        b.ensure_acl(IQN, &open).await,
        Err(TargetError::Unsupported { .. })
    ));
}

#[tokio::test]
async fn acl_only_access_binds_the_name() {
    let (b, tgtd, _) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let open = AclSpec {
        initiator: NODE2.into(),
        chap: None,
    };
    b.ensure_acl(IQN, &open).await.unwrap();
    b.ensure_acl(IQN, &open).await.unwrap();
    let d = tgtd.lock().unwrap();
    assert_eq!(d.targets[&1].acls, [NODE2]);
    assert!(d.targets[&1].accounts.is_empty());
}

#[tokio::test]
async fn remove_acl_ends_sessions_and_frees_accounts_with_the_last_acl() {
    let mut state = captured();
    state.accounts.insert("csi-m2".into(), "p".into());
    let (b, tgtd, _) = backend_on(state);
    let ours = "iqn.2026-11.io.csi.lvm-iscsi:csivg.v1";
    let host = "iqn.1993-08.org.debian:01:5c8d368c2ff3";
    b.remove_acl(ours, host).await.unwrap();
    {
        let d = tgtd.lock().unwrap();
        let t = &d.targets[&1];
        assert_eq!(t.acls, ["iqn.2000-01.com.example:other"]);
        assert!(t.sessions.is_empty(), "the session was ended");
        assert_eq!(t.accounts.len(), 2, "another initiator still has an ACL");
    }
    b.remove_acl(ours, host).await.unwrap();
    b.remove_acl(ours, "iqn.2000-01.com.example:other")
        .await
        .unwrap();
    let d = tgtd.lock().unwrap();
    assert!(d.targets[&1].accounts.is_empty());
    assert!(!d.accounts.contains_key("csi-u1") && !d.accounts.contains_key("csi-m1"));
    assert!(d.accounts.contains_key("csi-m2"), "not ours to delete");
}

#[tokio::test]
async fn remove_export_is_idempotent_and_leaves_others_alone() {
    let (b, tgtd, _) = backend_on(captured());
    let ours = "iqn.2026-11.io.csi.lvm-iscsi:csivg.v1";
    b.remove_export(ours).await.unwrap();
    b.remove_export(ours).await.unwrap();
    b.remove_export(&format!("{PREFIX}:csivg.never"))
        .await
        .unwrap();
    {
        let d = tgtd.lock().unwrap();
        assert_eq!(d.targets.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert!(!d.accounts.contains_key("csi-u1"));
    }
    let foreign = "iqn.2003-01.org.other:foreign";
    assert!(matches!(
        b.remove_export(foreign).await,
        Err(TargetError::Foreign { .. })
    ));
    assert!(matches!(
        b.ensure_acl(foreign, &acl(NODE1)).await,
        Err(TargetError::Foreign { .. })
    ));
}

#[tokio::test]
async fn remove_export_waits_for_commands_in_flight() {
    let mut state = captured();
    state.busy = 2;
    let (b, tgtd, runner) = backend_on(state);
    b.remove_export("iqn.2026-11.io.csi.lvm-iscsi:csivg.v1")
        .await
        .unwrap();
    assert!(!tgtd.lock().unwrap().targets.contains_key(&1));
    let deletes = runner
        .calls()
        .iter()
        .filter(|c| c.contains("--mode target --op delete"))
        .count();
    assert_eq!(deletes, 3);
}

#[tokio::test]
async fn list_reports_only_ours_from_a_real_listing() {
    let runner = Arc::new(FakeRunner::new(|_| Output::ok(SHOW)));
    let b = TgtBackend::new(runner, PREFIX.into());
    let list = b.list().await.unwrap();
    assert_eq!(
        list,
        vec![
            TargetState {
                iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.v1".into(),
                device: Some("/dev/loop1".into()),
                initiators: vec![
                    "iqn.1993-08.org.debian:01:5c8d368c2ff3".into(),
                    "iqn.2000-01.com.example:other".into()
                ],
            },
            TargetState {
                iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.empty".into(),
                device: None,
                initiators: vec![],
            },
        ]
    );
}

#[tokio::test]
async fn acl_on_a_missing_target_and_bad_input() {
    let (b, _, runner) = backend();
    assert!(matches!(
        b.ensure_acl(IQN, &acl(NODE1)).await,
        Err(TargetError::NoTarget { .. })
    ));
    runner.clear();
    let mut bad = spec();
    bad.portals = vec!["storage.example.com:3260".parse().unwrap()];
    assert!(matches!(
        b.ensure_export(&bad).await,
        Err(TargetError::Invalid { .. })
    ));
    bad = spec();
    bad.device = "--help".into();
    assert!(matches!(
        b.ensure_export(&bad).await,
        Err(TargetError::Invalid { .. })
    ));
    assert!(runner.calls().is_empty(), "refused before running anything");
}

#[tokio::test]
async fn unexpected_failures_are_errors_with_the_command() {
    let runner = Arc::new(FakeRunner::new(|argv| {
        if argv.iter().any(|a| a == "show") {
            Output::ok("")
        } else {
            Output::failed(22, "tgtadm: invalid request\n")
        }
    }));
    let b = TgtBackend::new(runner, PREFIX.into());
    let err = b.ensure_export(&spec()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tgtadm --lld iscsi --mode target --op new")
            && msg.contains("invalid request"),
        "{msg}"
    );
}

#[tokio::test]
async fn passwords_never_reach_error_messages() {
    let listing = format!("Target 1: {IQN}\n    Account information:\n    ACL information:\n");
    let runner = Arc::new(FakeRunner::new(move |argv| match argv[4].as_str() {
        "target" => Output::ok(listing.clone()),
        "account" if argv[6] == "show" => Output::ok("Account list:\n"),
        _ => Output::failed(22, "tgtadm: too many accounts\n"),
    }));
    let b = TgtBackend::new(runner.clone(), PREFIX.into());
    let a = acl(NODE1);
    let err = b.ensure_acl(IQN, &a).await.unwrap_err().to_string();
    let password = a.chap.unwrap().initiator.password;
    assert!(err.contains("--password ***"), "{err}");
    assert!(!err.contains(&password), "{err}");
    assert!(
        runner.calls().iter().any(|c| c.contains(&password)),
        "tgtadm got it"
    );
}

#[tokio::test]
async fn probe_explains_a_missing_daemon() {
    let (b, _, _) = backend();
    b.probe().await.unwrap();
    let down = Arc::new(FakeRunner::new(|_| {
        Output::failed(
            107,
            "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected\n",
        )
    }));
    let err = TgtBackend::new(down, PREFIX.into())
        .probe()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TargetError::Unavailable { reason, .. } if reason.contains("start it")),
        "{err}"
    );
}

#[tokio::test]
async fn tgtd_answers_tells_a_stopped_daemon_from_a_missing_tool() {
    let (_, _, runner) = backend();
    tgtd_answers(runner.as_ref()).await.unwrap();
    assert_eq!(runner.calls(), ["tgtadm --lld iscsi --mode sys --op show"]);
    let down = FakeRunner::new(|_| Output::failed(107, "tgtadm: failed to send request\n"));
    assert!(matches!(
        tgtd_answers(&down).await,
        Err(ExecError::Failed { code: 107, .. })
    ));
}

#[tokio::test]
async fn resize_reopens_the_backing_store_once_keeping_sessions_and_serial() {
    let (b, tgtd, runner) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &acl(NODE1)).await.unwrap();
    {
        let mut d = tgtd.lock().unwrap();
        d.targets
            .get_mut(&1)
            .unwrap()
            .sessions
            .push((1, NODE1.into(), 0));
        // lvextend: the device grew, tgtd still has the old size.
        d.devices.insert("/dev/csivg/pvc-1".into(), 128 << 20);
    }
    let before = b.target(IQN).await.unwrap().unwrap();
    assert_eq!(before.lun(1).unwrap().size_mb, Some(34));
    runner.clear();
    b.resize_lun(IQN, 128 << 20).await.unwrap();
    assert!(runner.calls().contains(
        &"tgtadm --lld iscsi --mode logicalunit --op update --tid 1 --lun 1 \
          --params online=0,path=/dev/csivg/pvc-1"
            .to_string()
    ));
    let after = b.target(IQN).await.unwrap().unwrap();
    let lun = after.lun(1).unwrap();
    assert_eq!(lun.size_mb, Some(134));
    assert_eq!(lun.scsi_sn, before.lun(1).unwrap().scsi_sn);
    assert_eq!(after.nexuses, before.nexuses, "the session stays");
    // A repeat finds the size reported and changes nothing.
    runner.clear();
    b.resize_lun(IQN, 128 << 20).await.unwrap();
    assert!(runner.calls().iter().all(|c| !c.contains("update")));
}

#[tokio::test]
async fn resize_without_an_export_is_a_no_op_and_foreign_targets_are_refused() {
    let (b, _, runner) = backend();
    b.resize_lun(IQN, 1 << 30).await.unwrap();
    assert!(runner.calls().iter().all(|c| !c.contains("update")));
    assert!(matches!(
        b.resize_lun("iqn.2003-01.org.other:foreign", 1).await,
        Err(TargetError::Foreign { .. })
    ));
}
