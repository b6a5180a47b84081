//! Tests of the sysfs walk on a tree laid out like the real one.

use super::*;
use crate::node::fake::FakeSysfs;

fn portal() -> Portal {
    "127.0.0.1:3260".parse().unwrap()
}

#[test]
fn dev_numbers() {
    assert_eq!("8:16\n".parse::<DevNum>(), Ok(DevNum::new(8, 16)));
    assert!("8".parse::<DevNum>().is_err());
    assert!("a:b".parse::<DevNum>().is_err());
    assert_eq!(DevNum::new(259, 3).to_string(), "259:3");
    assert_eq!(lun_of("2:0:0:1"), Some(1));
    assert_eq!(lun_of("target2:0:0"), None);
}

#[test]
fn finds_the_lun_of_the_right_target() {
    let fs = FakeSysfs::new();
    fs.add_session(2, "iqn.x:a", &portal(), &[(0, "sda", DevNum::new(8, 0))]);
    fs.add_session(4, "iqn.x:b", &portal(), &[(1, "sdb", DevNum::new(8, 16))]);
    let s = fs.sysfs();
    let a = s.find_lun("iqn.x:a", 0).unwrap().unwrap();
    assert_eq!(
        (a.name.as_str(), a.dev, a.sid),
        ("sda", DevNum::new(8, 0), 2)
    );
    assert_eq!(a.path, fs.dev_path("sda"));
    assert_eq!(s.find_lun("iqn.x:b", 1).unwrap().unwrap().name, "sdb");
    assert!(
        s.find_lun("iqn.x:b", 0).unwrap().is_none(),
        "tgt-style LUN 0 has no disk"
    );
    assert!(s.find_lun("iqn.x:c", 0).unwrap().is_none());
    assert_eq!(s.sessions_of("iqn.x:b").unwrap()[0].state, LOGGED_IN);
    assert_eq!(s.size_bytes("sda").unwrap(), Some(196608 * 512));
    assert_eq!(s.session_count(), 2);
}

#[tokio::test]
async fn wait_returns_as_soon_as_the_device_appears() {
    let fs = FakeSysfs::new();
    fs.add_session(1, "iqn.x:a", &portal(), &[]);
    let s = fs.sysfs();
    let adder = {
        let fs = fs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            fs.add_lun(1, 0, "sdc", DevNum::new(8, 32));
        })
    };
    let started = Instant::now();
    let d = s
        .wait_for_lun("iqn.x:a", &portal(), 0, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(d.name, "sdc");
    assert!(started.elapsed() < Duration::from_secs(2));
    adder.await.unwrap();
}

#[tokio::test]
async fn wait_times_out_naming_portal_and_target() {
    let fs = FakeSysfs::new();
    fs.add_session(1, "iqn.x:a", &portal(), &[]);
    let err = fs
        .sysfs()
        .wait_for_lun("iqn.x:a", &portal(), 0, Duration::from_millis(250))
        .await
        .unwrap_err();
    assert!(matches!(err, DeviceError::Timeout { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:3260") && msg.contains("iqn.x:a"),
        "{msg}"
    );
    let err = fs
        .sysfs()
        .wait_for_lun("iqn.x:gone", &portal(), 0, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, DeviceError::SessionLost { .. }), "{err}");
}

#[test]
fn health_walks_back_from_the_device_number() {
    let fs = FakeSysfs::new();
    fs.add_session(2, "iqn.x:a", &portal(), &[(0, "sda", DevNum::new(8, 0))]);
    let s = fs.sysfs();
    let h = s.health(DevNum::new(8, 0)).unwrap().unwrap();
    assert_eq!(h.name, "sda");
    assert_eq!(h.session.as_ref().unwrap().target, "iqn.x:a");
    assert_eq!(h.problem(), None);
    fs.set_session_state(2, "FAILED");
    let p = s
        .health(DevNum::new(8, 0))
        .unwrap()
        .unwrap()
        .problem()
        .unwrap();
    assert!(p.contains("FAILED"), "{p}");
    fs.set_session_state(2, LOGGED_IN);
    fs.set_scsi_state("sda", "blocked");
    let p = s
        .health(DevNum::new(8, 0))
        .unwrap()
        .unwrap()
        .problem()
        .unwrap();
    assert!(p.contains("blocked"), "{p}");
    assert!(s.health(DevNum::new(8, 99)).unwrap().is_none());
}

#[test]
fn delete_writes_one_and_tolerates_a_gone_device() {
    let fs = FakeSysfs::new();
    fs.add_session(2, "iqn.x:a", &portal(), &[(0, "sda", DevNum::new(8, 0))]);
    let s = fs.sysfs();
    assert!(s.delete("sda").unwrap());
    assert_eq!(fs.read_delete("sda").as_deref(), Some("1"));
    assert!(!s.delete("sdz").unwrap());
}

#[test]
fn by_path_link_must_agree_with_sysfs() {
    let fs = FakeSysfs::new();
    fs.add_session(
        2,
        "iqn.x:a",
        &portal(),
        &[
            (0, "sda", DevNum::new(8, 0)),
            (1, "sdb", DevNum::new(8, 16)),
        ],
    );
    let s = fs.sysfs();
    let sda = s.find_lun("iqn.x:a", 0).unwrap().unwrap();
    s.check_by_path(&portal(), "iqn.x:a", 0, &sda)
        .expect("no link yet is fine");
    fs.add_by_path("ip-127.0.0.1:3260-iscsi-iqn.x:a-lun-0", "sda");
    s.check_by_path(&portal(), "iqn.x:a", 0, &sda).unwrap();
    fs.add_by_path("ip-127.0.0.1:3260-iscsi-iqn.x:a-lun-1", "sda");
    let sdb = s.find_lun("iqn.x:a", 1).unwrap().unwrap();
    let err = s.check_by_path(&portal(), "iqn.x:a", 1, &sdb).unwrap_err();
    assert!(matches!(err, DeviceError::Mismatch { .. }), "{err}");
}

#[test]
fn connection_portals_from_sysfs_attributes() {
    // persistent_address and persistent_port as the lab's open-iscsi session shows them.
    let p = connection_portal("127.0.0.1\n", "3260\n").unwrap();
    assert_eq!(p.to_string(), "127.0.0.1:3260");
    let v6 = connection_portal("fd00::5", "3261").unwrap();
    assert_eq!((v6.host(), v6.port()), ("fd00::5", 3261));
    assert!(v6.same(&"[fd00:0::5]:3261".parse().unwrap()));
    for (address, port) in [
        ("", "3260"),
        ("127.0.0.1", ""),
        ("127.0.0.1", "x"),
        ("a b", "1"),
    ] {
        assert!(
            connection_portal(address, port).is_none(),
            "{address}:{port}"
        );
    }
}

#[test]
fn a_session_names_the_portal_it_is_connected_to() {
    let fs = FakeSysfs::new();
    let v6: Portal = "[fd00::5]:3260".parse().unwrap();
    fs.add_session(3, "iqn.x:a", &portal(), &[]);
    fs.add_session(5, "iqn.x:b", &v6, &[]);
    let s = fs.sysfs();
    assert_eq!(s.session_portal(3).unwrap(), Some(portal()));
    assert_eq!(s.session_portal(5).unwrap(), Some(v6));
    assert_eq!(s.session_portal(4).unwrap(), None);
    fs.remove_session(3);
    assert_eq!(s.session_portal(3).unwrap(), None);
}

#[test]
fn modules_are_directories_under_module() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sysfs::new(dir.path(), dir.path().join("dev"));
    assert!(!s.module_loaded("iscsi_tcp"));
    std::fs::create_dir_all(dir.path().join("module/iscsi_tcp")).unwrap();
    assert!(s.module_loaded("iscsi_tcp"));
    assert!(!s.module_loaded("target_core_mod"));
}
