//! NodeStageVolume / NodeUnstageVolume.

use std::sync::atomic::Ordering;

use super::*;
use crate::node::device::LOGGED_IN;
use crate::node::mount::Mounter;
use nix::errno::Errno;
use nix::mount::MsFlags;

#[tokio::test]
async fn stage_logs_in_formats_a_blank_device_and_mounts() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    // No `iscsiadm -m session`: sysfs says whether a session exists.
    let calls = f.iscsi.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].ends_with(&format!(
        "-T {} -p {PORTAL} --interface default -o new",
        A.iqn
    )));
    assert!(
        calls[1].contains("-n node.startup -v manual"),
        "{}",
        calls[1]
    );
    assert!(calls[1].contains("-n node.session.auth.authmethod -v CHAP"));
    assert!(calls[2].ends_with("--login"));
    assert_eq!(f.sessions(), [A.iqn]);
    let disk = f.disk(&A).display().to_string();
    assert_eq!(
        f.tools.calls(),
        [
            format!("blkid -p -o export {disk}"),
            format!("mkfs.ext4 -q -m 0 -E lazy_itable_init=1,nodiscard {disk}")
        ]
    );
    let m = mounted(&f, "staging/sda").expect("staged");
    assert_eq!(
        (m.dev, m.fs_type.as_str(), m.read_only()),
        (A.dev, "ext4", false)
    );
    assert!(matches!(
        &f.mounter.calls()[0],
        MountCall::Fs { flags, .. } if *flags == MsFlags::MS_NOATIME
    ));
    let rec = StateDir::new(f.dir.path().join("state"))
        .load(A.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rec.target_iqn.as_str(), rec.lun), (A.iqn, 0));
}

#[tokio::test]
async fn stage_twice_is_one_stage() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "ext4", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.clear();
    f.stage(f.stage_req(&A, "ext4", Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert!(
        f.tools.calls().is_empty(),
        "no mkfs nor blkid: {:?}",
        f.tools.calls()
    );
    assert!(
        f.iscsi.calls().is_empty(),
        "no login: {:?}",
        f.iscsi.calls()
    );
    assert_eq!(f.mounter.table().len(), 1);
    // The same volume asked for differently is ALREADY_EXISTS.
    assert_eq!(
        f.stage(f.stage_req(&A, "xfs", Mode::SingleNodeWriter))
            .await,
        Err(Code::AlreadyExists)
    );
}

#[tokio::test]
async fn an_existing_filesystem_is_kept_and_xfs_mounts_with_nouuid() {
    let f = Fixture::new();
    f.set_content(&B, "xfs");
    f.stage(f.stage_req(&B, "xfs", Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert_eq!(
        f.tools.calls().len(),
        1,
        "blkid only: {:?}",
        f.tools.calls()
    );
    assert!(matches!(
        &f.mounter.calls()[0],
        MountCall::Fs { fs_type, data, .. } if fs_type == "xfs" && data == "nouuid"
    ));
}

#[tokio::test]
async fn an_existing_filesystem_smaller_than_its_disk_is_grown_once_mounted() {
    // The fixture's disks are 96 MiB; the superblocks say 64 MiB (a volume restored from a
    // snapshot into a larger size), then 96 MiB (already grown).
    for (superblock, grows) in [
        (&include_bytes!("../testdata/sb_ext4.bin")[..], true),
        (&include_bytes!("../testdata/sb_ext4_grown.bin")[..], false),
    ] {
        let f = Fixture::new();
        f.set_content(&A, "ext4");
        f.sysfs.set_dev_content(A.disk, superblock);
        f.stage(f.stage_req(&A, "ext4", Mode::SingleNodeWriter))
            .await
            .unwrap();
        let resize = format!("resize2fs {}", f.sysfs.dev_path(A.disk).display());
        assert_eq!(
            f.tools.calls().contains(&resize),
            grows,
            "{:?}",
            f.tools.calls()
        );
        assert_eq!(f.mounter.table().len(), 1);
    }
}

#[tokio::test]
async fn a_failed_grow_unmounts_so_that_the_retry_grows() {
    let f = Fixture::new();
    f.set_content(&A, "ext4");
    f.sysfs
        .set_dev_content(A.disk, include_bytes!("../testdata/sb_ext4.bin"));
    f.world.lock().unwrap().grow_fails = true;
    assert_eq!(
        f.stage(f.stage_req(&A, "ext4", Mode::SingleNodeWriter))
            .await,
        Err(Code::Internal)
    );
    assert!(f.mounter.table().is_empty());
}

#[tokio::test]
async fn a_device_holding_something_else_is_never_formatted() {
    for (content, wanted) in [("xfs", "ext4"), ("dos", "ext4"), ("ext4", "xfs")] {
        let f = Fixture::new();
        f.set_content(&A, content);
        assert_eq!(
            f.stage(f.stage_req(&A, wanted, Mode::SingleNodeWriter))
                .await,
            Err(Code::FailedPrecondition),
            "{content} asked as {wanted}"
        );
        assert!(!f.tools.calls().iter().any(|c| c.starts_with("mkfs")));
        assert!(f.mounter.table().is_empty());
    }
}

#[tokio::test]
async fn read_only_volumes_mount_read_only_and_are_never_formatted() {
    let f = Fixture::new();
    assert_eq!(
        f.stage(f.stage_req(&A, "ext4", Mode::SingleNodeReaderOnly))
            .await,
        Err(Code::FailedPrecondition)
    );
    assert!(!f.tools.calls().iter().any(|c| c.starts_with("mkfs")));
    f.set_content(&A, "ext4");
    f.stage(f.stage_req(&A, "ext4", Mode::MultiNodeReaderOnly))
        .await
        .unwrap();
    assert!(mounted(&f, "staging/sda").unwrap().read_only());
}

#[tokio::test]
async fn block_volumes_are_attached_but_not_mounted() {
    let f = Fixture::new();
    let mut req = f.stage_req(&A, "", Mode::SingleNodeWriter);
    req.volume_capability = Some(block_cap());
    f.stage(req.clone()).await.unwrap();
    assert_eq!(f.sessions(), [A.iqn]);
    assert!(f.tools.calls().is_empty() && f.mounter.table().is_empty());
    f.stage(req).await.unwrap();
    assert_eq!(f.sessions().len(), 1);
}

#[tokio::test]
async fn after_a_crash_between_login_and_mount_stage_completes() {
    let f = Fixture::new();
    // Logged in by an earlier attempt that died before mounting (and before its record).
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.mounter
        .unmount(Path::new(&f.path("staging/sda")))
        .await
        .unwrap();
    std::fs::remove_dir_all(f.dir.path().join("state")).unwrap();
    f.clear();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert!(
        f.iscsi.calls().is_empty(),
        "session found in sysfs and reused: {:?}",
        f.iscsi.calls()
    );
    assert_eq!(f.tools.calls().len(), 1, "formatted before: blkid only");
    assert!(mounted(&f, "staging/sda").is_some());
}

#[tokio::test]
async fn a_stale_mount_at_the_staging_path_is_never_mounted_over() {
    let f = Fixture::new();
    let staging = f.path("staging/sda");
    std::fs::create_dir_all(&staging).unwrap();
    f.mounter.add_mount(super::super::mount::MountEntry {
        dev: DevNum::new(8, 48),
        root: "/".into(),
        mount_point: staging.into(),
        options: vec!["rw".into()],
        fs_type: "ext4".into(),
        source: "/dev/sdd".into(),
    });
    assert_eq!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)).await,
        Err(Code::FailedPrecondition)
    );
    assert!(
        f.sessions().is_empty(),
        "no login while the stale mount is there"
    );
    // Also when the volume is attached, but as another disk than the one mounted.
    f.mounter
        .unmount(Path::new(&f.path("staging/sda")))
        .await
        .unwrap();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.mounter
        .unmount(Path::new(&f.path("staging/sda")))
        .await
        .unwrap();
    f.mounter.add_mount(super::super::mount::MountEntry {
        dev: DevNum::new(8, 48),
        root: "/".into(),
        mount_point: f.path("staging/sda").into(),
        options: vec!["rw".into()],
        fs_type: "ext4".into(),
        source: "/dev/sdd".into(),
    });
    f.clear();
    assert_eq!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)).await,
        Err(Code::FailedPrecondition)
    );
    assert!(f.mounter.calls().is_empty());
}

#[tokio::test]
async fn a_wrong_chap_key_fails_clearly_and_leaves_nothing() {
    let f = Fixture::new();
    let mut req = f.stage_req(&A, "", Mode::SingleNodeWriter);
    req.secrets.insert(
        crate::domain::chap::SECRET_KEY.into(),
        "another-key-0123456789".into(),
    );
    let err = f
        .svc
        .node_stage_volume(Request::new(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("authentication failure"),
        "{}",
        err.message()
    );
    assert!(err.message().contains(PORTAL) && err.message().contains(A.iqn));
    assert!(!err.message().contains("another-key"));
    assert!(f.sessions().is_empty());
    assert_eq!(f.records(), 0, "node record deleted");
    assert!(StateDir::new(f.dir.path().join("state"))
        .load(A.id)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn chap_required_without_a_key_is_refused_before_anything_runs() {
    let f = Fixture::new();
    let mut req = f.stage_req(&A, "", Mode::SingleNodeWriter);
    req.secrets.clear();
    let err = f
        .svc
        .node_stage_volume(Request::new(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("chapKey"), "{}", err.message());
    assert_eq!(f.activity(), 0);
}

#[tokio::test]
async fn invalid_requests_run_nothing() {
    let f = Fixture::new();
    let good = f.stage_req(&A, "", Mode::SingleNodeWriter);
    let mut cases = Vec::new();
    for key in [TARGET_IQN, PORTALS, LUN, AUTH_METHOD] {
        let mut r = good.clone();
        r.publish_context.remove(key);
        cases.push(r);
    }
    for (field, value) in [
        ("staging", "relative/path"),
        ("staging", "/a/../b"),
        ("id", "vg/x;reboot"),
        ("id", ""),
    ] {
        let mut r = good.clone();
        match field {
            "staging" => r.staging_target_path = value.into(),
            _ => r.volume_id = value.into(),
        }
        cases.push(r);
    }
    let mut r = good.clone();
    r.volume_capability = Some(mount_cap("btrfs", Mode::SingleNodeWriter));
    cases.push(r);
    let mut r = good.clone();
    r.volume_capability = Some(mount_cap("ext4", Mode::MultiNodeMultiWriter));
    cases.push(r);
    let mut r = good;
    r.volume_capability = None;
    cases.push(r);
    for req in cases {
        let dbg = format!("{req:?}");
        assert_eq!(f.stage(req).await, Err(Code::InvalidArgument), "{dbg}");
    }
    assert_eq!(f.activity(), 0);
}

#[tokio::test]
async fn a_missing_disk_is_deadline_exceeded_naming_portal_and_target() {
    let f = Fixture::with_timeout(Duration::from_millis(300));
    f.world.lock().unwrap().exports.insert(A.iqn.into(), vec![]);
    let err = f
        .svc
        .node_stage_volume(Request::new(f.stage_req(&A, "", Mode::SingleNodeWriter)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(
        err.message().contains(PORTAL) && err.message().contains(A.iqn),
        "{}",
        err.message()
    );
    // The session stays for a retry; an unstage (kubelet calls it after an uncertain
    // stage) removes it.
    assert_eq!(f.sessions(), [A.iqn]);
    f.unstage(&A).await.unwrap();
    assert!(f.sessions().is_empty());
    assert_eq!(f.records(), 0);
}

#[tokio::test]
async fn the_next_portal_is_tried_when_one_is_down() {
    let f = Fixture::new();
    f.world.lock().unwrap().dead_portals.push(PORTAL.into());
    let mut req = f.stage_req(&A, "", Mode::SingleNodeWriter);
    req.publish_context
        .insert(PORTALS.into(), format!("{PORTAL},[fd00::5]:3260"));
    f.stage(req).await.unwrap();
    let w = f.world.lock().unwrap();
    assert_eq!(w.sessions[0].2, "[fd00::5]:3260");
}

#[tokio::test]
async fn unstage_removes_everything_of_that_volume_only() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.stage(f.stage_req(&B, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.clear();
    f.unstage(&A).await.unwrap();
    assert!(mounted(&f, "staging/sda").is_none());
    assert!(mounted(&f, "staging/sdb").is_some(), "B untouched");
    assert_eq!(f.sessions(), [B.iqn]);
    assert_eq!(
        f.tools.calls(),
        [format!("blockdev --flushbufs {}", f.disk(&A).display())]
    );
    assert_eq!(
        f.iscsi.calls(),
        [
            format!("iscsiadm -m node -T {} --logout", A.iqn),
            format!("iscsiadm -m node -T {} -o delete", A.iqn)
        ]
    );
    assert_eq!(f.records(), 1, "only B's record left");
    assert!(StateDir::new(f.dir.path().join("state"))
        .load(A.id)
        .await
        .unwrap()
        .is_none());
    // Repeats are no-ops.
    f.clear();
    f.unstage(&A).await.unwrap();
    assert!(f.tools.calls().is_empty() && f.mounter.calls().len() <= 1);
    assert_eq!(f.sessions(), [B.iqn]);
}

#[tokio::test]
async fn the_disk_is_deleted_through_sysfs_before_logout() {
    let f = Fixture::new();
    let mut req = f.stage_req(&B, "", Mode::SingleNodeWriter);
    req.volume_capability = Some(block_cap());
    f.stage(req).await.unwrap();
    // Watch the delete file: the fake logout removes the whole tree, so look before it.
    f.world.lock().unwrap().sessions.clear();
    f.unstage(&B).await.unwrap();
    assert_eq!(f.sysfs.read_delete("sdb").as_deref(), Some("1"));
}

#[tokio::test]
async fn unstage_when_the_disk_or_the_record_is_already_gone() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.sysfs.remove_disk("sda");
    f.unstage(&A).await.unwrap();
    assert!(f.sessions().is_empty(), "logged out even without a disk");
    assert_eq!(f.records(), 0);
    // Record lost (e.g. state directory wiped): the staged disk leads to its session.
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    std::fs::remove_dir_all(f.dir.path().join("state")).unwrap();
    f.unstage(&A).await.unwrap();
    assert!(f.sessions().is_empty() && f.records() == 0);
    assert!(mounted(&f, "staging/sda").is_none());
}

#[tokio::test]
async fn unstage_refuses_while_a_pod_still_has_the_volume() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.publish(&A, "pod/vol", mount_cap("", Mode::SingleNodeWriter), false)
        .await
        .unwrap();
    assert_eq!(f.unstage(&A).await, Err(Code::FailedPrecondition));
    assert_eq!(f.sessions(), [A.iqn]);
    assert!(mounted(&f, "staging/sda").is_some());
    f.unpublish(&A, "pod/vol").await.unwrap();
    f.unstage(&A).await.unwrap();
}

#[tokio::test]
async fn a_busy_unmount_is_failed_precondition() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    f.mounter.fail("unmount", Errno::EBUSY);
    assert_eq!(f.unstage(&A).await, Err(Code::FailedPrecondition));
    assert_eq!(
        f.sessions(),
        [A.iqn],
        "never log out under a mounted filesystem"
    );
    f.mounter.heal();
    f.unstage(&A).await.unwrap();
}

#[tokio::test]
async fn one_operation_per_volume() {
    let f = Fixture::new();
    let _held = f.svc.locks.try_lock(A.id).unwrap();
    assert_eq!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)).await,
        Err(Code::Aborted)
    );
    assert_eq!(f.unstage(&A).await, Err(Code::Aborted));
    f.stage(f.stage_req(&B, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_stages_and_unstages_never_edit_node_records_at_once() {
    let f = Fixture::new();
    let (a, b) = tokio::join!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)),
        f.stage(f.stage_req(&B, "", Mode::SingleNodeWriter))
    );
    assert_eq!((a, b), (Ok(()), Ok(())));
    let (a, b) = tokio::join!(f.unstage(&A), f.unstage(&B));
    assert_eq!((a, b), (Ok(()), Ok(())));
    assert!(f.sessions().is_empty() && f.records() == 0);
    let edits = f
        .iscsi
        .calls()
        .iter()
        .filter(|c| c.contains(" -o "))
        .count();
    assert_eq!(edits, 6, "new, update and delete for each");
    assert_eq!(f.timed.most_editing.load(Ordering::SeqCst), 1);
}

fn logins(f: &Fixture) -> usize {
    f.iscsi
        .calls()
        .iter()
        .filter(|c| c.ends_with("--login"))
        .count()
}

#[tokio::test]
async fn a_login_that_raced_but_came_up_is_retried_and_reused() {
    let f = Fixture::new();
    f.world.lock().unwrap().racing_logins = vec![Some(LOGGED_IN)];
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert_eq!(logins(&f), 2, "exit 6, then exit 15 (already present)");
    assert_eq!(f.sessions(), [A.iqn]);
    assert!(mounted(&f, "staging/sda").is_some());
}

#[tokio::test]
async fn a_login_failing_every_attempt_uses_the_session_it_brought_up() {
    let f = Fixture::new();
    f.world.lock().unwrap().racing_logins = vec![Some(LOGGED_IN), None, None, None];
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert_eq!(logins(&f), 4, "retried until the attempts ran out");
    assert_eq!(f.sessions(), [A.iqn]);
    assert!(mounted(&f, "staging/sda").is_some());
    assert!(!f.iscsi.calls().iter().any(|c| c.contains("--logout")));
}

#[tokio::test]
async fn a_failed_login_that_left_a_broken_session_logs_it_out() {
    let f = Fixture::new();
    f.world.lock().unwrap().racing_logins = vec![Some("FAILED"), None, None, None];
    assert_eq!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)).await,
        Err(Code::Internal)
    );
    assert!(f.sessions().is_empty(), "logged out");
    assert_eq!(f.records(), 0, "node record deleted");
    assert!(StateDir::new(f.dir.path().join("state"))
        .load(A.id)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn the_stage_record_stays_while_a_failed_login_left_a_session() {
    let f = Fixture::new();
    {
        let mut w = f.world.lock().unwrap();
        w.racing_logins = vec![Some("FAILED"), None, None, None];
        w.logout_fails = true;
    }
    assert_eq!(
        f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter)).await,
        Err(Code::Internal)
    );
    assert_eq!(f.sessions(), [A.iqn]);
    let state = StateDir::new(f.dir.path().join("state"));
    assert!(state.load(A.id).await.unwrap().is_some(), "record kept");
    f.world.lock().unwrap().logout_fails = false;
    f.unstage(&A).await.unwrap();
    assert!(f.sessions().is_empty() && f.records() == 0);
    assert!(state.load(A.id).await.unwrap().is_none());
}

#[tokio::test]
async fn unstage_with_an_unreadable_record_still_logs_out() {
    let f = Fixture::new();
    f.stage(f.stage_req(&A, "", Mode::SingleNodeWriter))
        .await
        .unwrap();
    let file = std::fs::read_dir(f.dir.path().join("state"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, "{\"volumeId\":").unwrap();
    f.unstage(&A).await.unwrap();
    assert!(f.sessions().is_empty() && f.records() == 0);
    assert!(!file.exists());
}
