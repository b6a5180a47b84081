//! The node plugin on a real kernel: the real binary in `node --standalone` mode, driven over
//! gRPC the way kubelet drives it, against volumes that the real controller binary creates
//! and exports with LIO (CHAP on), in the same lab guest. What the node leaves behind is
//! checked from the kernel's side (sysfs, `iscsiadm`, `/proc/self/mountinfo`, blkid), never
//! through the driver:
//! - ext4 and xfs volumes are staged, published to two target paths (one read-only, where a
//!   write fails), written with known checksums, unpublished, unstaged, and staged again: the
//!   data is intact and no mkfs ran (the filesystem UUID is unchanged);
//! - a raw block volume is published onto a file and written and read at offsets; the bytes
//!   are there again after an unstage and a new stage;
//! - after every unstage: no session to the target, no SCSI disk, no node record, no mount,
//!   no stage record; 20 stage/unstage cycles leave nothing behind;
//! - every call is made twice and answers the same;
//! - a wrong CHAP key makes stage fail with a clear error and leaves nothing; no key is
//!   refused before anything runs;
//! - two volumes staged: unstaging one leaves the other's session, disk and data untouched;
//! - a `kill -9` of the node plugin and a stage that died between login and mount are
//!   completed by the next stage, without a second session.
//!
//! Stage and unstage times are printed and appended to `$CSI_LAB_OUT/lab_node-timings.txt`.
//! `#[ignore]`d: run by e2e/lab-test.sh in the guest (`--ignored --test-threads=1`), with
//! CSI_BIN, CSI_VG, CSI_THINPOOL and CSI_LAB_OUT set.

use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use lvm_iscsi_csi::domain::chap;
use tonic::Code;

use lvm_iscsi_csi_e2e::lab::node::*;
use lvm_iscsi_csi_e2e::lab::*;

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn filesystems_with_chap_two_paths_and_data_kept_across_restage() {
    let mut lab = Lab::start("fs").await;
    for (fs, size) in [("ext4", 64 * MIB), ("xfs", 320 * MIB)] {
        let v = lab.create(fs, size, Kind::Fs(fs)).await;
        let disk = lab.stage(&v, &format!("NodeStageVolume {fs} (mkfs)")).await;
        // The record the node made: manual start-up (no login at boot) and mutual CHAP.
        let record = must(&["iscsiadm", "-m", "node", "-T", &v.iqn, "-p", PORTAL]);
        for want in [
            "node.startup = manual",
            "node.session.auth.authmethod = CHAP",
            "node.session.auth.username = csi-",
            "node.session.auth.username_in = csi-",
        ] {
            assert!(
                record.contains(want),
                "node record lacks `{want}`:\n{record}"
            );
        }
        let found = must(&[
            "blkid",
            "-p",
            "-o",
            "value",
            "-s",
            "TYPE",
            &format!("/dev/{disk}"),
        ]);
        assert_eq!(found.trim(), fs);
        let uuid = fs_uuid(&disk);

        let (rw, ro) = (
            lab.path(&format!("pods/{fs}-rw")),
            lab.path(&format!("pods/{fs}-ro")),
        );
        lab.publish(&v, &rw, false).await;
        lab.publish(&v, &ro, true).await;
        let big = write_random(&rw.join("data.bin"), 3 << 20);
        let small = write_random(&rw.join("small.txt"), 1000);
        assert_eq!(
            sum(&ro.join("data.bin")),
            big,
            "the read-only path shows the same data"
        );
        let err = std::fs::write(ro.join("nope"), b"x").expect_err("a write on the read-only path");
        assert_eq!(err.raw_os_error(), Some(READ_ONLY_FS), "{err}");
        let stats = lab.stats(&v, &rw).await;
        assert!(stats.usage.iter().all(|u| u.total > 0), "{stats:?}");
        let condition = stats.volume_condition.expect("a volume condition");
        assert!(!condition.abnormal, "{}", condition.message);

        lab.unpublish(&v, &rw).await;
        lab.unpublish(&v, &ro).await;
        lab.unstage(&v, &disk).await;

        let disk = lab
            .stage(&v, &format!("NodeStageVolume {fs} (existing fs)"))
            .await;
        assert_eq!(fs_uuid(&disk), uuid, "restaging kept the filesystem");
        assert_eq!(lab.mkfs_count(&v), 1, "mkfs ran once for {}", v.id);
        lab.publish(&v, &rw, false).await;
        assert_eq!(sum(&rw.join("data.bin")), big);
        assert_eq!(sum(&rw.join("small.txt")), small);
        lab.unpublish(&v, &rw).await;
        lab.unstage(&v, &disk).await;
        lab.destroy(&v).await;
    }
    lab.report("lab_node: ext4 and xfs, CHAP, two target paths, restage");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn block_volume_raw_bytes_at_offsets() {
    let mut lab = Lab::start("block").await;
    let size = 48 * MIB;
    let v = lab.create("raw", size, Kind::Block).await;
    let disk = lab.stage(&v, "NodeStageVolume block").await;
    let dev = lab.path("pods/raw/dev");
    lab.publish(&v, &dev, false).await;
    assert!(std::fs::metadata(&dev)
        .unwrap()
        .file_type()
        .is_block_device());
    assert_eq!(device_size(&dev), size as u64);
    let offsets = [0u64, 4096 * 3 + 17, (1 << 20) - 5, size as u64 - 512];
    let patterns: Vec<Vec<u8>> = offsets
        .iter()
        .map(|o| format!("lab-node block pattern at offset {o};").into_bytes())
        .collect();
    {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for (o, p) in offsets.iter().zip(&patterns) {
            f.write_at(p, *o).unwrap();
        }
        f.sync_all().unwrap();
    }
    let read_all = |path: &Path| {
        let f = std::fs::File::open(path).unwrap();
        offsets
            .iter()
            .zip(&patterns)
            .map(|(o, p)| {
                let mut buf = vec![0u8; p.len()];
                f.read_exact_at(&mut buf, *o).unwrap();
                buf
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(read_all(&dev), patterns);
    // Linux ignores a read-only bind of a device node, so the driver refuses to pretend.
    let ro = lab.publish_request(&v, &lab.path("pods/raw/ro"), true);
    let refused = lab
        .kubelet
        .node_publish_volume(ro)
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    let stats = lab.stats(&v, &dev).await;
    assert_eq!(stats.usage[0].total, size, "{stats:?}");

    lab.unpublish(&v, &dev).await;
    lab.unstage(&v, &disk).await;
    // A new disk (the old one was deleted): what is read now comes from the LV.
    let disk = lab.stage(&v, "NodeStageVolume block").await;
    lab.publish(&v, &dev, false).await;
    assert_eq!(
        read_all(&dev),
        patterns,
        "the bytes survived unstage and stage"
    );
    lab.unpublish(&v, &dev).await;
    lab.unstage(&v, &disk).await;
    lab.destroy(&v).await;
    lab.report("lab_node: raw block volume");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn twenty_stage_unstage_cycles_leave_nothing_behind() {
    let mut lab = Lab::start("cycles").await;
    let v = lab.create("cycled", 32 * MIB, Kind::Fs("ext4")).await;
    let mut first = None;
    for i in 0..20 {
        let label = if i == 0 {
            "NodeStageVolume ext4 (mkfs)"
        } else {
            "NodeStageVolume ext4 (existing fs)"
        };
        let disk = lab.stage(&v, label).await;
        let uuid = fs_uuid(&disk);
        assert_eq!(
            first.get_or_insert_with(|| uuid.clone()),
            &uuid,
            "cycle {i}"
        );
        lab.unstage(&v, &disk).await;
    }
    assert_eq!(lab.mkfs_count(&v), 1);
    assert!(sessions_under_prefix().is_empty());
    lab.destroy(&v).await;
    lab.report("lab_node: 20 stage/unstage cycles");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn a_wrong_chap_key_fails_clearly_and_leaves_nothing() {
    let mut lab = Lab::start("chap").await;
    let v = lab.create("guarded", 32 * MIB, Kind::Fs("ext4")).await;
    for _ in 0..2 {
        let err = lab
            .try_stage(&v, Some(WRONG_KEY))
            .await
            .expect_err("a wrong key is refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        for want in ["authentication failure", PORTAL, v.iqn.as_str(), "CHAP key"] {
            assert!(
                err.message().contains(want),
                "`{want}` missing in: {}",
                err.message()
            );
        }
        assert!(!err.message().contains(WRONG_KEY));
        lab.assert_nothing_left(&v, "none");
    }
    let err = lab
        .try_stage(&v, None)
        .await
        .expect_err("no key is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains(chap::SECRET_KEY),
        "{}",
        err.message()
    );
    lab.assert_nothing_left(&v, "none");
    // The right key works: the refusals were about the key, not the export.
    let disk = lab.stage(&v, "NodeStageVolume ext4 (mkfs)").await;
    lab.unstage(&v, &disk).await;
    lab.destroy(&v).await;
    lab.report("lab_node: CHAP refusals");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn two_volumes_unstaging_one_leaves_the_other() {
    let mut lab = Lab::start("two").await;
    let a = lab.create("a", 32 * MIB, Kind::Fs("ext4")).await;
    let b = lab.create("b", 32 * MIB, Kind::Fs("ext4")).await;
    let disk_a = lab.stage(&a, "NodeStageVolume ext4 (mkfs)").await;
    let disk_b = lab.stage(&b, "NodeStageVolume ext4 (mkfs)").await;
    assert_ne!(disk_a, disk_b);
    let (pa, pb) = (lab.path("pods/a"), lab.path("pods/b"));
    lab.publish(&a, &pa, false).await;
    lab.publish(&b, &pb, false).await;
    write_random(&pa.join("a.bin"), 1 << 20);
    let sum_b = write_random(&pb.join("b.bin"), 1 << 20);

    lab.unpublish(&a, &pa).await;
    lab.unstage(&a, &disk_a).await;

    assert_eq!(session_count(&b.iqn), 1, "B's session is untouched");
    assert_eq!(
        disks_of(&b.iqn).as_slice(),
        std::slice::from_ref(&disk_b),
        "B's disk is untouched"
    );
    assert!(is_mounted(&b.staging) && is_mounted(&pb));
    assert!(has_record(&b.iqn));
    must(&["sync"]);
    must(&["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]);
    assert_eq!(sum(&pb.join("b.bin")), sum_b, "B's data is intact");
    write_random(&pb.join("more.bin"), 1 << 20);
    let condition = lab.stats(&b, &pb).await.volume_condition.unwrap();
    assert!(!condition.abnormal, "{}", condition.message);

    lab.unpublish(&b, &pb).await;
    lab.unstage(&b, &disk_b).await;
    lab.destroy(&a).await;
    lab.destroy(&b).await;
    lab.report("lab_node: two volumes");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn a_restart_and_a_stage_that_died_half_way_are_completed() {
    let mut lab = Lab::start("crash").await;
    let v = lab.create("crashy", 32 * MIB, Kind::Fs("ext4")).await;
    let disk = lab.stage(&v, "NodeStageVolume ext4 (mkfs)").await;
    let uuid = fs_uuid(&disk);
    let data = write_random(&v.staging.join("before.bin"), 1 << 20);

    // kill -9 and restart: the repeat finds the volume staged.
    lab.restart_node().await;
    assert_eq!(lab.stage(&v, "NodeStageVolume (after restart)").await, disk);

    // A stage that died after the login, before the mount, with its record lost.
    must(&["umount", &v.staging.to_string_lossy()]);
    std::fs::remove_dir_all(lab.dir.join("state")).unwrap();
    lab.restart_node().await;
    assert_eq!(
        lab.stage(&v, "NodeStageVolume (logged in, not mounted)")
            .await,
        disk
    );
    assert_eq!(fs_uuid(&disk), uuid);
    assert_eq!(sum(&v.staging.join("before.bin")), data);

    // A mount left without its record: unstage still finds the session through the disk.
    std::fs::remove_dir_all(lab.dir.join("state")).unwrap();
    lab.unstage(&v, &disk).await;
    lab.destroy(&v).await;
    lab.report("lab_node: restart and half-done stage");
}
