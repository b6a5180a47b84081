//! What the kernel and the tools show, looked at directly (LVM, configfs, iscsiadm, /dev,
//! mountinfo), so the lab programs check the driver's work instead of taking its word.
//! Commands run quietly here: their output is data, not part of the programs' report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// LIO's iSCSI fabric in configfs.
pub const LIO_ISCSI: &str = "/sys/kernel/config/target/iscsi";

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `argv` without a shell, with `LC_ALL=C`; (exit code, stdout, stderr).
pub fn quiet(argv: &[&str]) -> Result<(i32, String, String), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// An LV as `lvs` reports it.
#[derive(Debug)]
pub struct Lv {
    /// Size in bytes.
    pub size: u64,
    /// Its thin pool, for a thin LV.
    pub pool: Option<String>,
}

/// A target as configfs shows it, from one initiator's point of view.
#[derive(Debug, Default)]
pub struct Target {
    /// The target directory exists.
    pub exists: bool,
    /// Its TPG is enabled.
    pub enabled: bool,
    /// LUN 0 is mapped.
    pub lun: bool,
    /// The initiator has an ACL.
    pub acl: bool,
    /// The ACL's CHAP user, when CHAP is set.
    pub chap_user: Option<String>,
}

/// One line of /proc/self/mountinfo.
#[derive(Debug)]
pub struct Mount {
    /// The mounted source (device).
    pub source: String,
    /// Filesystem type.
    pub fstype: String,
}

/// Namespace for the observations.
pub struct Observed;

impl Observed {
    /// The LV `vg/lv`, or None when LVM does not know it.
    pub fn lv(vg: &str, lv: &str) -> Result<Option<Lv>, String> {
        let name = format!("{vg}/{lv}");
        let (code, out, err) = quiet(&[
            "lvs",
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "-o",
            "lv_size,pool_lv",
            &name,
        ])?;
        if code == 5 && err.contains("Failed to find logical volume") {
            return Ok(None);
        }
        if code != 0 {
            return Err(format!("lvs {name} exited {code}: {}", err.trim()));
        }
        let mut f = out.split_whitespace();
        let size = f
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("lvs {name} printed {out:?}"))?;
        Ok(Some(Lv {
            size,
            pool: f.next().map(String::from),
        }))
    }

    /// The target `iqn` in configfs, and `initiator`'s ACL on it.
    pub fn target(iqn: &str, initiator: &str) -> Target {
        let tpg = Path::new(LIO_ISCSI).join(iqn).join("tpgt_1");
        let acl = tpg.join("acls").join(initiator);
        let read = |p: PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        Target {
            exists: Path::new(LIO_ISCSI).join(iqn).exists(),
            enabled: read(tpg.join("enable")).is_ok_and(|s| s == "1"),
            lun: tpg.join("lun/lun_0").exists(),
            acl: acl.exists(),
            chap_user: read(acl.join("auth/userid"))
                .ok()
                .filter(|u| !u.is_empty() && u != "NULL"),
        }
    }

    /// The portal of the iSCSI session to `iqn`, if there is one.
    pub fn session(iqn: &str) -> Result<Option<String>, String> {
        let (code, out, err) = quiet(&["iscsiadm", "-m", "session"])?;
        // 21: no sessions at all.
        if code == 21 {
            return Ok(None);
        }
        if code != 0 {
            return Err(format!("iscsiadm -m session exited {code}: {}", err.trim()));
        }
        // "tcp: [1] 127.0.0.1:3260,1 iqn.2026-11...:csivg.pvc-... (non-flash)"
        Ok(out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == iqn)
                .then(|| f[2].split(',').next().unwrap_or(f[2]).to_string())
        }))
    }

    /// The block device of `iqn`'s LUN in the session through `portal`, read from sysfs the
    /// way the node plugin finds it: `class/iscsi_session/*/targetname`, the connection's
    /// `persistent_address` and `persistent_port`, then `device/target*/H:C:T:LUN/block/*`.
    /// The disk is there once NodeStageVolume returns; udev's by-path link to it comes a
    /// moment later, so a check through the link can run before it exists.
    pub fn device(portal: &str, iqn: &str, lun: u32) -> Option<PathBuf> {
        let read = |p: PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        let entries = |p: &Path, prefix: &str| -> Vec<PathBuf> {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        };
        let sessions = entries(Path::new("/sys/class/iscsi_session"), "session");
        let ours = sessions.iter().filter(|s| {
            let dev = s.join("device");
            read(s.join("targetname")).is_ok_and(|t| t == iqn)
                && entries(&dev, "connection").iter().any(|c| {
                    let attrs = c
                        .join("iscsi_connection")
                        .join(c.file_name().unwrap_or_default());
                    let address = read(attrs.join("persistent_address")).unwrap_or_default();
                    let port = read(attrs.join("persistent_port")).unwrap_or_default();
                    format!("{address}:{port}") == portal
                })
        });
        let suffix = format!(":{lun}");
        ours.flat_map(|s| entries(&s.join("device"), "target"))
            .flat_map(|t| entries(&t, ""))
            .filter(|scsi| {
                scsi.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
            })
            .flat_map(|scsi| entries(&scsi.join("block"), ""))
            .find_map(|b| b.file_name().map(|n| Path::new("/dev").join(n)))
    }

    /// How many targets LIO has.
    pub fn target_count() -> usize {
        std::fs::read_dir(LIO_ISCSI)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("iqn."))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// What is mounted at `path` (the last mount on it), from /proc/self/mountinfo.
pub fn mount_at(path: &Path) -> Result<Option<Mount>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let want = path.to_string_lossy();
    Ok(text.lines().rev().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let mountpoint = left.split(' ').nth(4)?;
        if mountpoint != want {
            return None;
        }
        let mut r = right.split(' ');
        let fstype = r.next()?.to_string();
        let source = r.next()?.to_string();
        Some(Mount { source, fstype })
    }))
}
