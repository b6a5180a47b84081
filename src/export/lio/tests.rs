use std::sync::Arc;

use super::fake::FakeConfigfs;
use super::*;
use crate::domain::chap;

const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
const IQN: &str = "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1";
const NODE1: &str = "iqn.1993-08.org.debian:01:node1";
const NODE2: &str = "iqn.1993-08.org.debian:01:node2";

fn backend() -> (LioBackend, Arc<FakeConfigfs>) {
    let sim = Arc::new(FakeConfigfs::new());
    let b = LioBackend::with_configfs(sim.root().to_path_buf(), format!("{PREFIX}:"), sim.clone());
    (b, sim)
}

fn spec() -> ExportSpec {
    ExportSpec {
        iqn: IQN.into(),
        device: "/dev/csivg/pvc-1".into(),
        backstore: "csivg.pvc-1".into(),
        portals: vec![
            "127.0.0.1:3260".parse().unwrap(),
            "[::1]:3260".parse().unwrap(),
        ],
    }
}

fn tpg(rel: &str) -> String {
    format!("target/iscsi/{IQN}/tpgt_1/{rel}")
}

fn bs(rel: &str) -> String {
    format!("target/core/{HBA}/csivg.pvc-1/{rel}")
}

fn with_chap(initiator: &str) -> AclSpec {
    AclSpec {
        initiator: initiator.into(),
        chap: Some(chap::derive(b"0123456789abcdef", "csivg/pvc-1", initiator)),
    }
}

/// No value ever carries the newline LIO would store as part of it.
fn assert_clean_writes(sim: &FakeConfigfs) {
    for (path, value) in sim.writes() {
        assert!(
            !value.ends_with('\n') && !value.ends_with(' '),
            "{} <- {value:?}",
            path.display()
        );
    }
}

#[tokio::test]
async fn export_builds_backstore_target_portals_and_lun() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();

    assert!(sim.has("target/iscsi"), "fabric registered");
    assert_eq!(sim.value(&bs("alias")), IQN);
    assert_eq!(sim.value(&bs("control")), "udev_path=/dev/csivg/pvc-1");
    assert_eq!(sim.value(&bs("udev_path")), "/dev/csivg/pvc-1");
    assert_eq!(sim.value(&bs("wwn/vpd_unit_serial")), unit_serial(IQN));
    assert_eq!(sim.value(&bs("enable")), "1");

    for (attr, want) in [
        ("authentication", "1"),
        ("generate_node_acls", "0"),
        ("cache_dynamic_acls", "0"),
        ("demo_mode_write_protect", "1"),
        ("demo_mode_discovery", "0"),
    ] {
        assert_eq!(sim.value(&tpg(&format!("attrib/{attr}"))), want, "{attr}");
    }
    assert!(sim.has(&tpg("np/127.0.0.1:3260")));
    assert!(sim.has(&tpg("np/[::1]:3260")));
    // The kernel reports the link relative to itself; it must still resolve.
    let link = sim.link(&tpg("lun/lun_0/csivg.pvc-1"));
    assert!(link.is_relative(), "{}", link.display());
    assert!(link.ends_with(format!("target/core/{HBA}/csivg.pvc-1")));
    assert_eq!(sim.value(&tpg("enable")), "1");
    assert_clean_writes(&sim);

    let state = b.list().await.unwrap();
    assert_eq!(
        state,
        vec![TargetState {
            iqn: IQN.into(),
            device: Some("/dev/csivg/pvc-1".into()),
            initiators: vec![],
        }]
    );
}

#[tokio::test]
async fn repeating_export_and_acl_changes_nothing() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &with_chap(NODE1)).await.unwrap();
    let writes = sim.writes().len();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &with_chap(NODE1)).await.unwrap();
    assert_eq!(sim.writes().len(), writes, "{:?}", &sim.writes()[writes..]);
}

#[tokio::test]
async fn export_of_another_device_conflicts() {
    let (b, _sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let mut other = spec();
    other.device = "/dev/csivg/pvc-2".into();
    let err = b.ensure_export(&other).await.unwrap_err();
    assert!(
        matches!(&err, TargetError::Conflict { existing, wanted, .. }
            if existing == "/dev/csivg/pvc-1" && wanted == "/dev/csivg/pvc-2"),
        "{err}"
    );
    // Same backstore name claimed by another target.
    let mut thief = spec();
    thief.iqn = format!("{PREFIX}:csivg.pvc-9");
    let err = b.ensure_export(&thief).await.unwrap_err();
    assert!(matches!(err, TargetError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn interrupted_backstore_is_finished() {
    let (b, sim) = backend();
    let hba = sim.root().join("target/core").join(HBA);
    sim.mkdir(&hba).unwrap();
    sim.mkdir(&hba.join("csivg.pvc-1")).unwrap();
    sim.write(&hba.join("csivg.pvc-1/alias"), IQN).unwrap();
    b.ensure_export(&spec()).await.unwrap();
    assert_eq!(sim.value(&bs("enable")), "1");
    assert!(sim.has(&tpg("lun/lun_0/csivg.pvc-1")));
}

#[tokio::test]
async fn acl_with_chap_sets_credentials_then_maps_the_lun() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let acl = with_chap(NODE1);
    b.ensure_acl(IQN, &acl).await.unwrap();
    let chap = acl.chap.unwrap();
    let a = |rel: &str| tpg(&format!("acls/{NODE1}/{rel}"));
    assert_eq!(sim.value(&a("auth/userid")), chap.initiator.user);
    assert_eq!(sim.value(&a("auth/password")), chap.initiator.password);
    assert_eq!(sim.value(&a("auth/userid_mutual")), chap.target.user);
    assert_eq!(sim.value(&a("auth/password_mutual")), chap.target.password);
    assert_eq!(sim.value(&a("attrib/authentication")), "1");
    assert_eq!(sim.value(&tpg("attrib/authentication")), "1");
    assert!(sim
        .link(&a("lun_0/lun_0"))
        .ends_with(format!("{IQN}/tpgt_1/lun/lun_0")));
    // The LUN is mapped only once the credentials and enforcement are in place.
    let events = sim.events();
    let pos = |needle: &str| events.iter().position(|e| e.ends_with(needle));
    let mapped = pos(&format!("acls/{NODE1}/lun_0/lun_0")).unwrap();
    for attr in [
        "auth/password",
        "auth/password_mutual",
        "attrib/authentication",
    ] {
        assert!(
            pos(&format!("acls/{NODE1}/{attr}")).unwrap() < mapped,
            "{attr}"
        );
    }
    assert_clean_writes(&sim);

    let state = b.list().await.unwrap();
    assert_eq!(state[0].initiators, vec![NODE1.to_string()]);
}

#[tokio::test]
async fn acl_without_chap_turns_authentication_off() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(
        IQN,
        &AclSpec {
            initiator: NODE2.into(),
            chap: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sim.value(&tpg(&format!("acls/{NODE2}/attrib/authentication"))),
        "0"
    );
    assert_eq!(sim.value(&tpg("attrib/authentication")), "0");
    assert_eq!(sim.value(&tpg(&format!("acls/{NODE2}/auth/userid"))), "");
}

#[tokio::test]
async fn acl_needs_the_target() {
    let (b, sim) = backend();
    let err = b.ensure_acl(IQN, &with_chap(NODE1)).await.unwrap_err();
    assert!(matches!(err, TargetError::NoTarget { .. }), "{err}");
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn remove_acl_unmaps_and_is_idempotent() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &with_chap(NODE1)).await.unwrap();
    b.ensure_acl(IQN, &with_chap(NODE2)).await.unwrap();
    b.remove_acl(IQN, NODE1).await.unwrap();
    b.remove_acl(IQN, NODE1).await.unwrap();
    b.remove_acl(IQN, "iqn.2000-01.com.example:never")
        .await
        .unwrap();
    assert!(!sim.has(&tpg(&format!("acls/{NODE1}"))));
    assert!(sim.has(&tpg(&format!("acls/{NODE2}/lun_0/lun_0"))));
    assert_eq!(
        b.list().await.unwrap()[0].initiators,
        vec![NODE2.to_string()]
    );
}

#[tokio::test]
async fn remove_export_takes_everything_down_in_order() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    b.ensure_acl(IQN, &with_chap(NODE1)).await.unwrap();
    b.remove_export(IQN).await.unwrap();
    // The sim refuses any other order (mapped LUN before LUN, LUN link before backstore).
    let events = sim.events();
    let pos = |needle: &str| events.iter().position(|e| e.ends_with(needle)).unwrap();
    assert!(pos("tpgt_1/enable") < pos(&format!("rmdir target/iscsi/{IQN}/tpgt_1/acls/{NODE1}")));
    assert!(!sim.has(&format!("target/iscsi/{IQN}")));
    assert!(!sim.has(&bs("")));
    assert!(
        sim.has(&format!("target/core/{HBA}")),
        "the HBA stays for the next one"
    );
    b.remove_export(IQN).await.unwrap();
    assert!(b.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_export_finds_an_unlinked_backstore() {
    let (b, sim) = backend();
    let hba = sim.root().join("target/core").join(HBA);
    sim.mkdir(&hba).unwrap();
    sim.mkdir(&hba.join("leftover")).unwrap();
    sim.write(&hba.join("leftover/alias"), IQN).unwrap();
    sim.mkdir(&hba.join("someone-else")).unwrap();
    b.remove_export(IQN).await.unwrap();
    assert!(!sim.has(&format!("target/core/{HBA}/leftover")));
    assert!(sim.has(&format!("target/core/{HBA}/someone-else")));
}

#[tokio::test]
async fn portals_follow_the_configuration() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let mut moved = spec();
    moved.portals = vec!["10.0.0.5:3260".parse().unwrap()];
    b.ensure_export(&moved).await.unwrap();
    assert!(sim.has(&tpg("np/10.0.0.5:3260")));
    assert!(!sim.has(&tpg("np/127.0.0.1:3260")));
    assert!(!sim.has(&tpg("np/[::1]:3260")));
}

#[tokio::test]
async fn bad_input_is_refused_before_any_write() {
    let (b, sim) = backend();
    let mut host = spec();
    host.portals = vec!["storage.example.com:3260".parse().unwrap()];
    assert!(matches!(
        b.ensure_export(&host).await,
        Err(TargetError::Invalid { what: "portal", .. })
    ));
    let mut dev = spec();
    dev.device = "/dev/x,readonly=1".into();
    assert!(matches!(
        b.ensure_export(&dev).await,
        Err(TargetError::Invalid { what: "device", .. })
    ));
    let mut escape = spec();
    escape.backstore = "../../iscsi".into();
    assert!(b.ensure_export(&escape).await.is_err());
    let bad_acl = AclSpec {
        initiator: "../x".into(),
        chap: None,
    };
    assert!(b.ensure_acl(IQN, &bad_acl).await.is_err());
    assert!(sim.writes().is_empty());
}

#[tokio::test]
async fn other_software_is_left_alone() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let foreign = "iqn.2003-01.org.linux-iscsi.host:sn.1234";
    let t = sim.root().join("target/iscsi").join(foreign);
    sim.mkdir(&t).unwrap();
    sim.mkdir(&t.join("tpgt_1")).unwrap();
    let mut theirs = spec();
    theirs.iqn = foreign.into();
    for err in [
        b.ensure_export(&theirs).await.unwrap_err(),
        b.ensure_acl(foreign, &with_chap(NODE1)).await.unwrap_err(),
        b.remove_acl(foreign, NODE1).await.unwrap_err(),
        b.remove_export(foreign).await.unwrap_err(),
    ] {
        assert!(matches!(err, TargetError::Foreign { .. }), "{err}");
    }
    assert!(sim.has(&format!("target/iscsi/{foreign}/tpgt_1")));
    let listed: Vec<String> = b.list().await.unwrap().into_iter().map(|t| t.iqn).collect();
    assert_eq!(listed, vec![IQN.to_string()]);
}

#[tokio::test]
async fn probe_registers_the_fabric_or_explains() {
    let (b, sim) = backend();
    b.probe().await.unwrap();
    assert!(sim.has("target/iscsi"));
    b.probe().await.unwrap();

    let bare = Arc::new(FakeConfigfs::unloaded());
    let b = LioBackend::with_configfs(bare.root().to_path_buf(), PREFIX.into(), bare.clone());
    let err = b.probe().await.unwrap_err();
    assert!(
        matches!(&err, TargetError::Unavailable { reason, .. } if reason.contains("modprobe")),
        "{err}"
    );
    assert!(b.list().await.unwrap().is_empty());
    assert_eq!(b.data_lun(), 0);
}

#[tokio::test]
async fn resize_changes_nothing_because_iblock_reads_the_size_itself() {
    let (b, sim) = backend();
    b.ensure_export(&spec()).await.unwrap();
    let events = sim.events().len();
    b.resize_lun(IQN, 128 << 20).await.unwrap();
    b.resize_lun("iqn.2026-11.io.csi.lvm-iscsi:csivg.none", 1)
        .await
        .unwrap();
    assert_eq!(sim.events().len(), events, "{:?}", &sim.events()[events..]);
    assert!(matches!(
        b.resize_lun("iqn.2003-01.org.other:x", 1).await,
        Err(TargetError::Foreign { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_sharing_a_portal_never_race_on_its_listener() {
    let (b, sim) = backend();
    let b = Arc::new(b);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4 {
        let b = Arc::clone(&b);
        tasks.spawn(async move {
            let spec = ExportSpec {
                iqn: format!("{PREFIX}:csivg.pvc-{i}"),
                device: format!("/dev/csivg/pvc-{i}"),
                backstore: format!("csivg.pvc-{i}"),
                portals: vec!["127.0.0.1:3260".parse().unwrap()],
            };
            for _ in 0..10 {
                b.ensure_export(&spec).await?;
                b.remove_export(&spec.iqn).await?;
            }
            Ok::<_, TargetError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("no error");
    }
    assert_eq!(
        sim.portal_einvals(),
        0,
        "a portal was made while its listener went away"
    );
}

#[tokio::test]
async fn a_portal_refused_with_einval_is_tried_again() {
    let (b, sim) = backend();
    sim.fail_portal_mkdirs(2);
    b.ensure_export(&spec()).await.unwrap();
    assert!(sim.has(&tpg("np/127.0.0.1:3260")));
    assert_eq!(sim.portal_einvals(), 2);
    b.remove_export(IQN).await.unwrap();
    sim.fail_portal_mkdirs(100);
    let err = b.ensure_export(&spec()).await.unwrap_err();
    assert!(err.to_string().contains("np/127.0.0.1:3260"), "{err}");
}

#[test]
fn lio_lives_in_configfs_target() {
    assert_eq!(
        target_dir(Path::new("/sys/kernel/config")),
        Path::new("/sys/kernel/config/target")
    );
}
