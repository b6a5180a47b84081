//! Self-check of the real-kernel lab, run first by `e2e/lab-test.sh` inside the lab guest:
//! what the other `tests/lab_*.rs` rely on is there (the environment e2e/lab/guest-run.sh
//! passes, the volume group and thin pool from e2e/lab/setup-vg.sh, configfs with LIO, an
//! initiator name). When this fails, the harness is broken, not the driver.
//!
//! `#[ignore]`d: a plain `cargo test` on a development machine skips it; the lab runs it with
//! `--ignored`.

use std::path::PathBuf;
use std::process::Command;

/// A variable the lab sets; a clear panic when it is missing.
fn lab_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through e2e/lab-test.sh (it needs the lab guest)")
    })
}

/// Runs a command and returns its stdout; panics with its stderr if it fails.
fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the lab guest: run e2e/lab-test.sh"]
fn the_driver_binary_runs() {
    let bin = lab_env("CSI_BIN");
    let help = run(&[&bin, "--help"]);
    for mode in ["controller", "node"] {
        assert!(
            help.contains(mode),
            "`{bin} --help` lists no {mode} mode:\n{help}"
        );
    }
}

#[test]
#[ignore = "needs the lab guest: run e2e/lab-test.sh"]
fn the_volume_group_has_its_thin_pool() {
    let vg = lab_env("CSI_VG");
    let pool = lab_env("CSI_THINPOOL");
    let attr = run(&[
        "lvs",
        "--noheadings",
        "-o",
        "lv_attr",
        &format!("{vg}/{pool}"),
    ]);
    assert!(
        attr.trim().starts_with('t'),
        "{vg}/{pool} is not a thin pool (lv_attr {:?})",
        attr.trim()
    );
}

#[test]
#[ignore = "needs the lab guest: run e2e/lab-test.sh"]
fn the_kernel_has_lio_and_an_initiator() {
    assert!(
        PathBuf::from("/sys/kernel/config/target/core").is_dir(),
        "no LIO in configfs (/sys/kernel/config/target/core)"
    );
    let names = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi")
        .expect("reading /etc/iscsi/initiatorname.iscsi");
    assert!(
        names.lines().any(|l| l.starts_with("InitiatorName=iqn.")),
        "no InitiatorName=iqn.… in /etc/iscsi/initiatorname.iscsi"
    );
    run(&["pidof", "iscsid"]);
}

#[test]
#[ignore = "needs the lab guest: run e2e/lab-test.sh"]
fn the_output_directory_is_writable() {
    let out = PathBuf::from(lab_env("CSI_LAB_OUT"));
    let probe = out.join("lab_harness.probe");
    std::fs::write(&probe, b"ok").expect("writing into CSI_LAB_OUT");
    std::fs::remove_file(&probe).expect("removing the probe file");
}
