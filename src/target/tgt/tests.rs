use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::*;
use crate::chap;
use crate::exec::FakeRunner;

const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
const IQN: &str = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1";
const NODE1: &str = "iqn.1993-08.org.debian:01:node1";
const NODE2: &str = "iqn.1993-08.org.debian:01:node2";

/// The real listing of parse.rs's tests (three targets, one foreign).
const SHOW: &str = include_str!("testdata/show-target.txt");

#[derive(Default)]
struct Tgt {
    name: String,
    /// lun -> (path, scsi id, scsi sn)
    luns: BTreeMap<u32, (String, String, String)>,
    /// (user, outgoing)
    accounts: Vec<(String, bool)>,
    acls: Vec<String>,
    /// (sid, initiator, cid)
    sessions: Vec<(u64, String, u64)>,
}

/// A tgtd in memory that answers tgtadm like tgt 1.0.85 does (same listing layout, same
/// refusals with exit code 22).
#[derive(Default)]
struct Tgtd {
    targets: BTreeMap<u32, Tgt>,
    accounts: BTreeMap<String, String>,
    portals: Vec<String>,
    /// How many more target deletes find commands still in flight.
    busy: u32,
}

fn refused(msg: &str) -> Output {
    Output::failed(22, format!("tgtadm: {msg}\n"))
}

impl Tgtd {
    fn with_default_portals() -> Self {
        Tgtd {
            portals: vec!["[::]:3260".into(), "0.0.0.0:3260".into()],
            ..Default::default()
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for (tid, t) in &self.targets {
            let _ = writeln!(s, "Target {tid}: {}", t.name);
            s.push_str("    System information:\n        Driver: iscsi\n        State: ready\n");
            s.push_str("    I_T nexus information:\n");
            for (sid, init, cid) in &t.sessions {
                let _ = writeln!(s, "        I_T nexus: {sid}");
                let _ = writeln!(s, "            Initiator: {init} alias: (none)");
                let _ = writeln!(s, "            Connection: {cid}");
                s.push_str("                IP Address: 127.0.0.1\n");
            }
            s.push_str("    LUN information:\n        LUN: 0\n            Type: controller\n");
            let _ = writeln!(s, "            SCSI ID: IET     {tid:04x}0000");
            s.push_str("            Backing store type: null\n            Backing store path: None\n            Backing store flags: \n");
            for (lun, (path, id, sn)) in &t.luns {
                let _ = writeln!(s, "        LUN: {lun}\n            Type: disk");
                let _ = writeln!(s, "            SCSI ID: {id}\n            SCSI SN: {sn}");
                let _ = writeln!(
                    s,
                    "            Size: 34 MB, Block size: 512\n            Readonly: No"
                );
                let _ = writeln!(s, "            Backing store type: rdwr\n            Backing store path: {path}\n            Backing store flags: ");
            }
            s.push_str("    Account information:\n");
            for (u, out) in &t.accounts {
                let _ = writeln!(s, "        {u}{}", if *out { " (outgoing)" } else { "" });
            }
            s.push_str("    ACL information:\n");
            for a in &t.acls {
                let _ = writeln!(s, "        {a}");
            }
        }
        s
    }

    fn answer(&mut self, argv: &[String]) -> Output {
        let mut flags: BTreeMap<&str, &str> = BTreeMap::new();
        let mut i = 1;
        while i < argv.len() {
            let key = argv[i].as_str();
            if key == "--outgoing" || key == "--force" {
                flags.insert(key, "");
                i += 1;
            } else {
                flags.insert(key, argv.get(i + 1).map_or("", String::as_str));
                i += 2;
            }
        }
        let tid: u32 = flags.get("--tid").and_then(|t| t.parse().ok()).unwrap_or(0);
        let user = flags
            .get("--user")
            .map(|u| u.to_string())
            .unwrap_or_default();
        let out = flags.contains_key("--outgoing");
        let mode = flags["--mode"];
        let op = flags["--op"];
        if (mode, op) == ("target", "delete") && self.busy > 0 {
            self.busy -= 1;
            return refused("this logical unit is still active");
        }
        let target = self.targets.get_mut(&tid);
        match (mode, op, target) {
            ("sys", "show", _) => Output::ok("System:\n    State: ready\n"),
            ("target", "show", _) => Output::ok(self.render()),
            ("portal", "show", _) => Output::ok(
                self.portals
                    .iter()
                    .map(|p| format!("Portal: {p},1\n"))
                    .collect::<String>(),
            ),
            ("portal", "new", _) => {
                let p = flags["--param"].trim_start_matches("portal=").to_string();
                if self.portals.contains(&p) {
                    return refused("invalid request");
                }
                self.portals.insert(0, p);
                Output::ok("")
            }
            ("account", "show", _) => {
                let mut s = "Account list:\n".to_string();
                for u in self.accounts.keys() {
                    let _ = writeln!(s, "    {u}");
                }
                Output::ok(s)
            }
            ("account", "new", _) if self.accounts.contains_key(&user) => {
                refused("this account already exists")
            }
            ("account", "new", _) => {
                self.accounts.insert(user, flags["--password"].to_string());
                Output::ok("")
            }
            ("account", "delete", _) => match self.accounts.remove(&user) {
                Some(_) => Output::ok(""),
                None => refused("can't find the account"),
            },
            ("target", "new", _) => {
                let name = flags["--targetname"];
                if self.targets.contains_key(&tid) || self.targets.values().any(|t| t.name == name)
                {
                    return refused("this target already exists");
                }
                let t = Tgt {
                    name: name.to_string(),
                    ..Default::default()
                };
                self.targets.insert(tid, t);
                Output::ok("")
            }
            (_, _, None) => refused("can't find the target"),
            ("target", "delete", Some(t)) => {
                if !t.sessions.is_empty() && !flags.contains_key("--force") {
                    return refused("this target is still active");
                }
                // As seen on tgt 1.0.85: --force does not get past a LUN a session uses.
                if !t.sessions.is_empty() && !t.luns.is_empty() {
                    return refused("this logical unit is still active");
                }
                self.targets.remove(&tid);
                Output::ok("")
            }
            ("logicalunit", "new", Some(t)) => {
                let lun: u32 = flags["--lun"].parse().unwrap();
                if t.luns.contains_key(&lun) {
                    return refused("this logical unit number already exists");
                }
                let id = format!("IET     {tid:04x}{lun:04x}");
                let sn = format!("beaf{tid}{lun}");
                t.luns
                    .insert(lun, (flags["--backing-store"].to_string(), id, sn));
                Output::ok("")
            }
            ("logicalunit", "update", Some(t)) => {
                let lun: u32 = flags["--lun"].parse().unwrap();
                let Some(l) = t.luns.get_mut(&lun) else {
                    return refused("can't find the logical unit");
                };
                for kv in flags["--params"].split(',') {
                    match kv.split_once('=') {
                        Some(("scsi_id", v)) => l.1 = v.to_string(),
                        Some(("scsi_sn", v)) => l.2 = v.to_string(),
                        _ => return refused("unknown parameter"),
                    }
                }
                Output::ok("")
            }
            ("target", "bind", Some(t)) => {
                let name = flags["--initiator-name"].to_string();
                if t.acls.contains(&name) {
                    return refused("this access control rule already exists");
                }
                t.acls.push(name);
                Output::ok("")
            }
            ("target", "unbind", Some(t)) => {
                let entry = flags
                    .get("--initiator-name")
                    .or(flags.get("--initiator-address"))
                    .unwrap()
                    .to_string();
                match t.acls.iter().position(|a| *a == entry) {
                    Some(i) => {
                        t.acls.remove(i);
                        Output::ok("")
                    }
                    None => refused("this access control rule does not exist"),
                }
            }
            ("account", "bind", Some(t)) => {
                if !self.accounts.contains_key(&user) {
                    return refused("can't find the account");
                }
                if out && t.accounts.iter().any(|a| a.1) {
                    return refused("this target already has an outgoing account");
                }
                if t.accounts.iter().any(|a| a.0 == user) {
                    return refused("this account already exists");
                }
                t.accounts.push((user, out));
                Output::ok("")
            }
            ("account", "unbind", Some(t)) => {
                match t.accounts.iter().position(|a| a.0 == user && a.1 == out) {
                    Some(i) => {
                        t.accounts.remove(i);
                        Output::ok("")
                    }
                    None => refused("can't find the account"),
                }
            }
            ("conn", "delete", Some(t)) => {
                let sid: u64 = flags["--sid"].parse().unwrap();
                match t.sessions.iter().position(|s| s.0 == sid) {
                    Some(i) => {
                        t.sessions.remove(i);
                        Output::ok("")
                    }
                    None => refused("can't find the session"),
                }
            }
            _ => refused("invalid request"),
        }
    }
}

type Shared = Arc<Mutex<Tgtd>>;

fn backend_on(tgtd: Tgtd) -> (TgtBackend, Shared, Arc<FakeRunner>) {
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
    backend_on(Tgtd::with_default_portals())
}

fn spec() -> ExportSpec {
    ExportSpec {
        iqn: IQN.into(),
        device: "/dev/csivg/pvc-1".into(),
        backstore: "csivg.pvc-1".into(),
        portals: vec!["127.0.0.1:3260".into()],
    }
}

fn acl(initiator: &str) -> AclSpec {
    AclSpec {
        initiator: initiator.into(),
        chap: Some(chap::derive(b"0123456789abcdef", "csivg/pvc-1", initiator)),
    }
}

/// A tgtd already holding the captured listing's targets (tid 1 and 3 ours, 2 foreign).
fn captured() -> Tgtd {
    let mut tgtd = Tgtd::with_default_portals();
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
    s.portals = vec!["10.0.0.5:3260".into(), "[fd00::5]:3261".into()];
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
    bad.portals = vec!["storage.example.com:3260".into()];
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
