//! The storage side of the lab tests, read directly (configfs for LIO, `tgtadm` for tgt),
//! never through the driver: what a volume's export looks like, losing the whole target
//! configuration as a reboot would, and tgtd's life cycle (the backends share port 3260).

use std::path::Path;
use std::time::Duration;

use lvm_iscsi_csi::export::lio::{LioBackend, HBA};
use lvm_iscsi_csi::export::TargetBackend;

use super::{must, sh, wait_until};

/// The driver's default IQN prefix.
pub const PREFIX: &str = "iqn.2026-11.io.csi.lvm-iscsi";
/// LIO's configfs tree.
const CONFIGFS: &str = "/sys/kernel/config/target";

/// A target backend, as the lab sees it from the storage side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// LIO (configfs).
    Lio,
    /// tgt (tgtd).
    Tgt,
}

/// What the storage side shows about one volume's export, read directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Targets with this IQN (0 or 1).
    pub targets: usize,
    /// Initiators with an ACL on it.
    pub initiators: Vec<String>,
    /// Data LUNs of the target.
    pub luns: usize,
    /// Backstores (LIO) or LUNs of any target (tgt) on the volume's device.
    pub backstores: usize,
    /// CHAP accounts bound to the target (tgt; LIO keeps them in the ACL).
    pub accounts: usize,
}

impl Seen {
    /// Nothing left of the export.
    pub fn gone() -> Seen {
        Seen {
            targets: 0,
            initiators: vec![],
            luns: 0,
            backstores: 0,
            accounts: 0,
        }
    }
}

/// The subdirectories of `dir`, sorted (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A configfs attribute without its newline (empty when absent).
fn read_attr(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

impl Backend {
    /// The `--target-backend` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Lio => "lio",
            Backend::Tgt => "tgt",
        }
    }

    /// The LUN the volume is exported at (tgt keeps LUN 0 for itself).
    pub fn lun(self) -> &'static str {
        match self {
            Backend::Lio => "0",
            Backend::Tgt => "1",
        }
    }

    /// The export of `iqn` on `device` as the kernel (LIO) or tgtd shows it.
    pub fn observe(self, iqn: &str, device: &str) -> Seen {
        match self {
            Backend::Lio => {
                let tpg = Path::new(CONFIGFS).join("iscsi").join(iqn).join("tpgt_1");
                let exists = Path::new(CONFIGFS).join("iscsi").join(iqn).is_dir();
                let hba = Path::new(CONFIGFS).join("core").join(HBA);
                let backstores = std::fs::read_dir(Path::new(CONFIGFS).join("core"))
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .flat_map(|h| {
                                entries(&h.path())
                                    .into_iter()
                                    .map(move |b| h.path().join(b))
                            })
                            .filter(|b| read_attr(&b.join("udev_path")) == device)
                            .count()
                    })
                    .unwrap_or(0);
                let ours = entries(&hba)
                    .iter()
                    .filter(|b| read_attr(&hba.join(b).join("alias")) == iqn)
                    .count();
                assert_eq!(ours, backstores, "backstores on {device} vs ours for {iqn}");
                Seen {
                    targets: usize::from(exists),
                    initiators: entries(&tpg.join("acls")),
                    luns: entries(&tpg.join("lun")).len(),
                    backstores,
                    accounts: 0,
                }
            }
            Backend::Tgt => {
                let show = must(&[
                    "tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "target",
                ]);
                let mut seen = Seen::gone();
                let mut mine = false;
                let mut section = "";
                for line in show.lines() {
                    if let Some(rest) = line.strip_prefix("Target ") {
                        mine = rest.split_once(": ").is_some_and(|(_, n)| n.trim() == iqn);
                        seen.targets += usize::from(mine);
                        continue;
                    }
                    let item = line.trim();
                    if line.starts_with("    ") && !line.starts_with("     ") {
                        section = item;
                        continue;
                    }
                    if item == format!("Backing store path: {device}") {
                        seen.backstores += 1;
                        seen.luns += usize::from(mine);
                    }
                    if !mine {
                        continue;
                    }
                    match section {
                        "ACL information:" => seen.initiators.push(item.to_string()),
                        "Account information:" => seen.accounts += 1,
                        _ => {}
                    }
                }
                seen.initiators.sort();
                seen
            }
        }
    }

    /// Loses the whole target configuration, as a storage-node reboot would.
    pub async fn wipe(self, iqns: &[&str]) {
        match self {
            Backend::Lio => {
                let lio = LioBackend::new("/sys/kernel/config".into(), PREFIX.into());
                for iqn in iqns {
                    lio.remove_export(iqn).await.expect("clearing LIO");
                }
            }
            Backend::Tgt => {
                stop_tgtd();
                start_tgtd();
            }
        }
    }
}

/// Starts tgtd (it daemonizes) and waits until it answers.
pub fn start_tgtd() {
    must(&["tgtd"]);
    let up = wait_until(Duration::from_secs(20), || {
        sh(&["tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "sys"]).ok()
    });
    assert!(up, "tgtd did not come up");
}

/// Stops tgtd: cleanly when it has no target left, otherwise (a failed run, or the
/// simulated reboot) by killing the tgtd this test started, by pid.
pub fn stop_tgtd() {
    if !sh(&["tgtadm", "--op", "delete", "--mode", "system"]).ok() {
        kill_tgtd();
    }
    let down = wait_until(Duration::from_secs(20), || {
        !sh(&["tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "sys"]).ok()
    });
    assert!(down, "tgtd did not stop");
}

/// SIGKILL to every tgtd process (there is one: the test's), as a crash or reboot would.
pub fn kill_tgtd() {
    for pid in sh(&["pidof", "tgtd"]).stdout.split_whitespace() {
        sh(&["kill", "-KILL", pid]);
    }
}

/// Stops tgtd when the tgt test ends, however it ends: LIO needs port 3260 after it.
pub struct Tgtd;

impl Tgtd {
    /// Starts tgtd; it is stopped when the returned guard is dropped.
    pub fn start() -> Tgtd {
        start_tgtd();
        Tgtd
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        stop_tgtd();
    }
}

/// Clears what a failed earlier run may have left on port 3260.
pub async fn clear_port(backend: Backend) {
    match backend {
        Backend::Lio => stop_tgtd(),
        Backend::Tgt => {
            let lio = LioBackend::new("/sys/kernel/config".into(), PREFIX.into());
            for t in lio.list().await.expect("listing LIO targets") {
                lio.remove_export(&t.iqn).await.expect("clearing LIO");
            }
        }
    }
}
