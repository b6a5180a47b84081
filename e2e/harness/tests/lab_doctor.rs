//! `doctor` on a real host (the kernel lab): the storage and compute checks pass on the good
//! guest, and with iscsid stopped `doctor compute` fails and names iscsid. The outputs are
//! kept in `$CSI_LAB_OUT/doctor-*.txt`.
//!
//! It stops iscsid (by pid) and always starts it again before returning, since the lab tests
//! that run after it log in through iscsid.
//!
//! `#[ignore]`d: a plain `cargo test` skips it; e2e/lab-test.sh runs it in the lab guest with
//! `--ignored` and sets CSI_BIN, CSI_VG (csivg), CSI_THINPOOL (pool0) and CSI_LAB_OUT.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The abstract socket iscsid listens on.
const ISCSID_SOCKET: &str = "@ISCSIADM_ABSTRACT_NAMESPACE";

/// A variable the lab sets; a clear panic when it is missing.
fn lab_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test through e2e/lab-test.sh (it needs the lab guest)")
    })
}

/// Runs the driver's `doctor` with `args`; returns the exit code and stdout, and keeps the
/// output in `$CSI_LAB_OUT/<save_as>` when the lab gives an output directory.
fn doctor(args: &[&str], save_as: &str) -> (i32, String) {
    let bin = lab_env("CSI_BIN");
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("doctor")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    println!(
        "$ lvm-iscsi-csi doctor {} -> exit {code} in {:.1}s\n{stdout}{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    if let Ok(dir) = std::env::var("CSI_LAB_OUT") {
        let text = format!(
            "$ lvm-iscsi-csi doctor {}\n{stdout}(exit {code})\n",
            args.join(" ")
        );
        if let Err(e) = std::fs::write(std::path::Path::new(&dir).join(save_as), text) {
            println!("cannot save {save_as}: {e}");
        }
    }
    (code, stdout)
}

/// The table row of check `name`: (status, detail).
fn row<'a>(table: &'a str, name: &str) -> (&'a str, &'a str) {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` row in:\n{table}"));
    let mut rest = line[name.len()..]
        .trim_start()
        .splitn(2, char::is_whitespace);
    let status = rest.next().unwrap_or("");
    (status, rest.next().unwrap_or("").trim())
}

/// Whether iscsid listens (its socket is in the unix socket table).
fn iscsid_listening() -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .map(|t| t.lines().any(|l| l.ends_with(ISCSID_SOCKET)))
        .unwrap_or(false)
}

/// Waits up to 15 s for iscsid's socket to be `present` (or gone).
fn wait_iscsid(present: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while iscsid_listening() != present {
        assert!(
            Instant::now() < deadline,
            "iscsid socket still {} after 15 s",
            if present { "absent" } else { "present" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pids of the running iscsid processes.
fn iscsid_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "iscsid").then_some(pid)
        })
        .collect()
}

/// Starts iscsid again when dropped, so the tests after this one find it running even when
/// an assertion here failed.
struct RestartIscsid;

impl Drop for RestartIscsid {
    fn drop(&mut self) {
        if iscsid_listening() {
            return;
        }
        match Command::new("iscsid").status() {
            Ok(s) if s.success() => wait_iscsid(true),
            other => println!("could not restart iscsid: {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
fn doctor_storage_passes_on_the_lab_storage_node() {
    let vg = lab_env("CSI_VG");
    let pool = lab_env("CSI_THINPOOL");
    let (code, out) = doctor(
        &[
            "storage",
            "--volume-group",
            &vg,
            "--thin-pool",
            &pool,
            "--portal",
            "127.0.0.1:3260",
        ],
        "doctor-storage.txt",
    );
    for check in [
        "volume-group",
        "thin-pool",
        "configfs",
        "target_core_mod",
        "iscsi_target_mod",
        "portal-port",
    ] {
        assert_eq!(row(&out, check).0, "ok", "{check}:\n{out}");
    }
    assert!(row(&out, "volume-group").1.starts_with(&format!("{vg}: ")));
    assert_eq!(code, 0, "{out}");

    let (code, out) = doctor(
        &["storage", "--volume-group", "no_such_vg"],
        "doctor-storage-no-vg.txt",
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        row(&out, "volume-group"),
        ("FAIL", "volume group no_such_vg not found")
    );
}

#[test]
#[ignore = "needs the kernel lab: e2e/lab-test.sh"]
fn doctor_compute_passes_then_names_a_stopped_iscsid() {
    // The lab's PID 1 is not the guest's root: iscsiadm runs directly, as the node plugin
    // does in the lab.
    let args = ["compute", "--iscsiadm-mode", "direct"];
    let _restart = RestartIscsid;
    wait_iscsid(true);
    let (code, out) = doctor(&args, "doctor-compute.txt");
    for check in ["iscsiadm", "iscsid", "initiator-name", "iscsi_tcp"] {
        assert_eq!(row(&out, check).0, "ok", "{check}:\n{out}");
    }
    assert!(row(&out, "initiator-name").1.starts_with("iqn."), "{out}");
    assert_eq!(code, 0, "{out}");

    let pids = iscsid_pids();
    assert!(
        !pids.is_empty(),
        "no iscsid process, yet its socket listens"
    );
    for pid in pids {
        // Gone already (the parent takes the child with it) is fine.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    wait_iscsid(false);
    let (code, out) = doctor(&args, "doctor-compute-iscsid-stopped.txt");
    assert_eq!(code, 1, "{out}");
    let (status, detail) = row(&out, "iscsid");
    assert_eq!(status, "FAIL", "{out}");
    assert!(detail.starts_with("iscsid is not running"), "{out}");
    assert!(out.contains("fix: systemctl enable --now iscsid"), "{out}");
    // iscsiadm itself still answers (it reads sysfs): only the socket tells.
    assert_eq!(row(&out, "iscsiadm").0, "ok", "{out}");
}
