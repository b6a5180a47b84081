//! Online volume expansion on a real kernel: the real binary in controller and node modes,
//! driven over gRPC the way external-resizer and kubelet drive it, against real LVM, LIO or
//! tgt, open-iscsi, ext4 and xfs. What changed is checked from the kernel's side, never
//! through the driver: `lvs` for the LV, `blockdev --getsize64` for the node's disk, `df` for
//! the mounted filesystem, checksums for the data.
//! - ext4 and xfs, thick and thin, staged and published, with data of known checksum:
//!   ControllerExpandVolume then NodeExpandVolume while mounted; `df` shows the new size, the
//!   data is intact and more fits; every call made twice answers the same;
//!   a request at or below the size is OK, a limit below it OUT_OF_RANGE, more than the VG
//!   holds RESOURCE_EXHAUSTED;
//! - a raw block volume: the node's device (and the pod's device file) grows, the bytes
//!   written before are there, the new region is writable;
//! - tgt, whose tgtd caches a LUN's size: the same online, with a writer busy on the
//!   filesystem during the whole resize and no I/O error;
//! - a thick volume with a classic snapshot: FAILED_PRECONDITION saying why, and the
//!   expansion works once the snapshot is gone;
//! - clean-up leaves no LV, export, session, disk or mount.
//!
//! Timings (online expand end to end = ControllerExpandVolume + NodeExpandVolume) are printed
//! and appended to `$CSI_LAB_OUT/lab_expand-timings.txt`. `#[ignore]`d: run by
//! e2e/lab-test.sh in the guest (`--ignored --test-threads=1`), with CSI_BIN, CSI_VG,
//! CSI_THINPOOL and CSI_LAB_OUT set.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lvm_iscsi_csi::csi::volume_capability::access_mode::Mode;
use lvm_iscsi_csi::csi::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
    NodeExpandVolumeRequest,
};
use tonic::Code;

use lvm_iscsi_csi_e2e::lab::node::*;
use lvm_iscsi_csi_e2e::lab::storage::{clear_port, Backend, Tgtd};
use lvm_iscsi_csi_e2e::lab::*;

/// Where the timings go.
const EXPAND_TIMINGS: &str = "lab_expand-timings.txt";

/// Thick (no parameters) or thin (in `$CSI_THINPOOL`).
fn params(thin: bool) -> HashMap<String, String> {
    if thin {
        HashMap::from([("thinPool".to_string(), lab_env("CSI_THINPOOL"))])
    } else {
        HashMap::new()
    }
}

/// The LV's size as `lvs` reports it.
fn lv_size(volume_id: &str) -> u64 {
    must(&[
        "lvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_size",
        volume_id,
    ])
    .trim()
    .parse()
    .expect("lvs prints a size")
}

/// Whether LV `volume_id` exists.
fn lv_exists(volume_id: &str) -> bool {
    sh(&["lvs", volume_id]).ok()
}

/// The total and available bytes `df` shows for the filesystem at `path`.
fn df(path: &Path) -> (u64, u64) {
    let out = must(&["df", "-B1", "--output=size,avail", &path.to_string_lossy()]);
    let nums: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match nums[..] {
        [size, avail] => (size, avail),
        _ => panic!("df printed {out:?}"),
    }
}

fn expand_req(v: &Vol, required: i64, limit: i64) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: v.id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        secrets: secrets(Some(KEY)),
        volume_capability: Some(capability(v.kind, Mode::SingleNodeWriter)),
    }
}

/// ControllerExpandVolume to `size`, twice (the repeat answers the same), then
/// NodeExpandVolume at `path`, twice; returns the end-to-end time of the first pair.
async fn expand_online(lab: &mut Lab, v: &Vol, size: i64, path: &Path, label: &str) -> Duration {
    let req = expand_req(v, size, 0);
    let mut answers: Vec<ControllerExpandVolumeResponse> = Vec::new();
    let mut e2e = Duration::ZERO;
    for (i, l) in [
        format!("ControllerExpandVolume {label}"),
        "ControllerExpandVolume (repeat)".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let r = lab
            .ctl
            .controller_expand_volume(req.clone())
            .await
            .unwrap_or_else(|s| panic!("{l} {}: {s}", v.id))
            .into_inner();
        lab.t.record(&l, started.elapsed());
        if i == 0 {
            e2e += started.elapsed();
        }
        answers.push(r);
    }
    assert_eq!(answers[0], answers[1], "the repeat answers the same");
    assert_eq!(answers[0].capacity_bytes, size, "whole extents asked for");
    assert!(answers[0].node_expansion_required);
    assert_eq!(lv_size(&v.id), size as u64, "lvs shows the new size");
    let node_req = NodeExpandVolumeRequest {
        volume_id: v.id.clone(),
        volume_path: path.to_string_lossy().into_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        staging_target_path: v.staging.to_string_lossy().into_owned(),
        volume_capability: Some(capability(v.kind, Mode::SingleNodeWriter)),
        secrets: HashMap::new(),
    };
    for (i, l) in [
        format!("NodeExpandVolume {label}"),
        "NodeExpandVolume (repeat)".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let r = lab.kubelet.node_expand_volume(node_req.clone()).await;
        lab.t.record(&l, started.elapsed());
        if i == 0 {
            e2e += started.elapsed();
        }
        match r {
            Ok(r) => assert_eq!(r.into_inner().capacity_bytes, size, "{l}"),
            Err(s) => lab.fail(&format!("{l} {}", v.id), &s),
        }
    }
    lab.t
        .record(&format!("online expand end to end {label}"), e2e);
    e2e
}

/// Checks the RPC error codes the expansion refuses with.
async fn refusals(lab: &mut Lab, v: &Vol, size: i64) {
    let cases = [
        // At or below the current size: nothing to do, the current size.
        (expand_req(v, size / 2, 0), Ok(size)),
        (expand_req(v, size, size), Ok(size)),
        // A limit below the current size: shrinking is not supported.
        (expand_req(v, size / 2, size / 2), Err(Code::OutOfRange)),
        // More than the VG (thick) or the pool's overprovisioning (thin) allows.
        (expand_req(v, 1 << 40, 0), Err(Code::ResourceExhausted)),
    ];
    for (req, want) in cases {
        let got = lab
            .ctl
            .controller_expand_volume(req.clone())
            .await
            .map(|r| r.into_inner().capacity_bytes)
            .map_err(|s| s.code());
        assert_eq!(got, want, "{:?}", req.capacity_range);
    }
    assert_eq!(lv_size(&v.id), size as u64, "nothing changed");
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn filesystems_grow_online_thick_and_thin_with_data_intact() {
    let mut lab = Lab::start("expand-fs").await;
    // xfs needs 300 MB at least. The refusals and the restage once per kind of LV.
    for (fs, thin, size, grown, thorough) in [
        ("ext4", false, 64 * MIB, 128 * MIB, true),
        ("ext4", true, 64 * MIB, 132 * MIB, true),
        ("xfs", false, 304 * MIB, 336 * MIB, false),
        ("xfs", true, 304 * MIB, 340 * MIB, false),
    ] {
        let kind_name = if thin { "thin" } else { "thick" };
        let label = format!("({fs} {kind_name})");
        let name = format!("{fs}-{kind_name}");
        let v = lab
            .create_with(&name, size, Kind::Fs(fs), params(thin))
            .await;
        let disk = lab.stage(&v, &format!("NodeStageVolume {label}")).await;
        let pod = lab.path(&format!("pods/{name}"));
        lab.publish(&v, &pod, false).await;
        let data = write_random(&pod.join("data.bin"), 3 << 20);
        let (before, free_before) = df(&pod);
        if thorough {
            refusals(&mut lab, &v, size).await;
        }

        let took = expand_online(&mut lab, &v, grown, &pod, &label).await;
        println!("online expand {label}: {took:?}");
        assert_eq!(device_size(&Path::new("/dev").join(&disk)), grown as u64);
        let (after, free_after) = df(&pod);
        let growth = (grown - size) as u64;
        assert!(
            after >= before + growth * 9 / 10 && free_after >= free_before + growth * 8 / 10,
            "df shows {after} bytes ({free_after} free) after growing {before} \
             ({free_before} free) by {growth}"
        );
        assert_eq!(
            df(&v.staging).0,
            after,
            "the staging mount is the same filesystem"
        );
        assert_eq!(sum(&pod.join("data.bin")), data, "data intact");
        let more = write_random(&pod.join("more.bin"), 1 << 20);
        assert_eq!(sum(&pod.join("more.bin")), more);

        lab.unpublish(&v, &pod).await;
        if thorough {
            lab.unstage(&v, &disk).await;
            // Staged again: the grown filesystem, the data.
            let disk = lab.stage(&v, &format!("NodeStageVolume {label}")).await;
            assert_eq!(df(&v.staging).0, after);
            assert_eq!(sum(&v.staging.join("data.bin")), data);
            lab.unstage(&v, &disk).await;
        } else {
            lab.unstage(&v, &disk).await;
        }
        lab.destroy(&v).await;
        assert!(!lv_exists(&v.id), "{} is left", v.id);
    }
    lab.t.publish(
        "lab_expand: ext4 and xfs, thick and thin, online (LIO)",
        EXPAND_TIMINGS,
    );
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn block_volume_grows_on_the_node() {
    let mut lab = Lab::start("expand-block").await;
    for thin in [false, true] {
        let kind_name = if thin { "thin" } else { "thick" };
        let (size, grown) = (32 * MIB, 64 * MIB);
        let v = lab
            .create_with(&format!("raw-{kind_name}"), size, Kind::Block, params(thin))
            .await;
        let disk = lab.stage(&v, "NodeStageVolume block").await;
        let dev = lab.path(&format!("pods/raw-{kind_name}/dev"));
        lab.publish(&v, &dev, false).await;
        let old = b"written before the expansion";
        {
            let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
            f.write_at(old, size as u64 - 4096).unwrap();
            f.sync_all().unwrap();
        }
        let label = format!("(block {kind_name})");
        expand_online(&mut lab, &v, grown, &dev, &label).await;
        assert_eq!(device_size(&dev), grown as u64, "the pod's device grew");
        assert_eq!(device_size(&Path::new("/dev").join(&disk)), grown as u64);
        let new = b"written in the new region";
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        f.write_at(new, grown as u64 - 4096).unwrap();
        f.sync_all().unwrap();
        let mut buf = vec![0u8; old.len()];
        f.read_exact_at(&mut buf, size as u64 - 4096).unwrap();
        assert_eq!(buf, old);
        let mut buf = vec![0u8; new.len()];
        f.read_exact_at(&mut buf, grown as u64 - 4096).unwrap();
        assert_eq!(buf, new);
        drop(f);
        lab.unpublish(&v, &dev).await;
        lab.unstage(&v, &disk).await;
        lab.destroy(&v).await;
        assert!(!lv_exists(&v.id));
    }
    lab.t
        .publish("lab_expand: raw block volume (LIO)", EXPAND_TIMINGS);
}

/// dmesg lines reporting an I/O error on `disk`.
fn io_errors(disk: &str) -> usize {
    sh(&["dmesg"])
        .stdout
        .lines()
        .filter(|l| l.contains("I/O error") && l.contains(&format!("dev {disk},")))
        .count()
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn tgt_reports_the_new_size_online_while_a_writer_is_busy() {
    clear_port(Backend::Tgt).await;
    let _tgtd = Tgtd::start();
    let mut lab = Lab::start_with("expand-tgt", "tgt").await;
    let (size, grown) = (64 * MIB, 128 * MIB);
    let v = lab.create("ext4-tgt", size, Kind::Fs("ext4")).await;
    assert_eq!(v.ctx["lun"], "1", "tgt's data LUN");
    let disk = lab.stage(&v, "NodeStageVolume (tgt)").await;
    let pod = lab.path("pods/tgt");
    lab.publish(&v, &pod, false).await;
    let data = write_random(&pod.join("data.bin"), 2 << 20);
    let (before, _) = df(&pod);
    let errors_before = io_errors(&disk);

    // A writer keeps the filesystem busy (write + fsync) through the whole resize.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), pod.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let path = dir.join(format!("busy-{}.bin", rounds % 4));
                let f = std::fs::File::create(&path)
                    .and_then(|f| f.write_all_at(&[rounds as u8; 256 << 10], 0).map(|_| f))
                    .and_then(|f| f.sync_all());
                if let Err(e) = f {
                    return Err(format!("round {rounds}: {e}"));
                }
                rounds += 1;
            }
            Ok(rounds)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let took = expand_online(&mut lab, &v, grown, &pod, "(ext4 thin, tgt)").await;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let rounds = writer
        .join()
        .expect("the writer thread")
        .expect("no write failed");
    println!("online expand on tgt: {took:?}, {rounds} write+fsync rounds meanwhile");
    assert!(rounds > 0);
    assert_eq!(io_errors(&disk), errors_before, "no I/O error on {disk}");
    assert_eq!(device_size(&Path::new("/dev").join(&disk)), grown as u64);
    assert!(df(&pod).0 > before + (grown - size) as u64 * 9 / 10);
    assert_eq!(sum(&pod.join("data.bin")), data);
    // tgtd shows the new size (its own MB), the same SCSI serial, the session still there.
    let show = must(&[
        "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show",
    ]);
    assert!(show.contains("Size: 134 MB"), "{show}");
    assert_eq!(session_count(&v.iqn), 1);

    lab.unpublish(&v, &pod).await;
    lab.unstage(&v, &disk).await;
    lab.destroy(&v).await;
    assert!(!lv_exists(&v.id));
    lab.t.publish(
        "lab_expand: ext4 on tgt, with a busy writer",
        EXPAND_TIMINGS,
    );
}

#[tokio::test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
async fn a_classic_snapshot_origin_is_refused_clearly() {
    let mut lab = Lab::start("expand-origin").await;
    let v = lab
        .create_with("origin", 32 * MIB, Kind::Fs("ext4"), params(false))
        .await;
    let snap = format!("{}-snap", v.id);
    let snap_name = snap.rsplit('/').next().unwrap().to_string();
    let vg = lab_env("CSI_VG");
    must(&[
        "lvcreate", "--yes", "-s", "-L", "8m", "-n", &snap_name, &v.id,
    ]);
    let err = lab
        .ctl
        .controller_expand_volume(expand_req(&v, 64 * MIB, 0))
        .await
        .expect_err("refused while it has a snapshot");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("snapshot"), "{}", err.message());
    assert_eq!(lv_size(&v.id), 32 << 20);
    must(&["lvremove", "--yes", &format!("{vg}/{snap_name}")]);
    let r = lab
        .ctl
        .controller_expand_volume(expand_req(&v, 64 * MIB, 0))
        .await
        .expect("grows once the snapshot is gone")
        .into_inner();
    assert_eq!(r.capacity_bytes, 64 * MIB);
    lab.destroy(&v).await;
    assert!(!lv_exists(&v.id));
}
