//! The kernel iSCSI target, behind one trait with two backends: LIO written through configfs
//! ([`lio`]) and tgt driven with tgtadm ([`tgt`]).
//!
//! The model (DESIGN.md): one target per volume, named by an IQN derived from the volume;
//! one TPG; one data LUN backed by the LV's block device ([`TargetBackend::data_lun`]: 0 on
//! LIO, 1 on tgt, which keeps LUN 0 for its controller LUN); one ACL per node initiator, with
//! CHAP when the StorageClass has a key. Only targets whose IQN starts with our prefix
//! followed by `:` are ever listed or touched: targets of other software on the same host are
//! left alone.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod lio;
pub mod tgt;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use std::net::SocketAddr;

use crate::domain::chap::Chap;
use crate::domain::Portal;
use crate::exec::ExecError;

/// A volume's export: a target with its data LUN backed by a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Target IQN (derived from the volume id).
    pub iqn: String,
    /// The LV's block device, e.g. `/dev/csivg/pvc-123`.
    pub device: String,
    /// A short backend-safe name for the backstore (unique per volume).
    pub backstore: String,
    /// Listening portals (IP addresses: the command line refuses host names).
    pub portals: Vec<Portal>,
}

/// An ACL entry: an initiator allowed to log in, with its CHAP credentials if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSpec {
    /// The initiator's IQN.
    pub initiator: String,
    /// CHAP (initiator and mutual); `None` for ACL-only access.
    pub chap: Option<Chap>,
}

/// The addresses a target listens on for `portals`: a target listens on addresses, not host
/// names.
fn listen_addrs(portals: &[Portal]) -> Result<Vec<SocketAddr>, TargetError> {
    portals
        .iter()
        .map(|p| {
            p.socket_addr().ok_or_else(|| TargetError::Invalid {
                what: "portal",
                value: p.to_string(),
                reason: "expected IP:PORT or [IPv6]:PORT (a target listens on addresses, not host names)",
            })
        })
        .collect()
}

/// What the backend reports about one of our targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// Target IQN.
    pub iqn: String,
    /// The device behind the data LUN, when one is configured.
    pub device: Option<String>,
    /// Initiator IQNs with an ACL.
    pub initiators: Vec<String>,
}

/// Failures of the target layer.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A configfs read or write failed.
    #[error("configfs {op} {path} failed: {source}")]
    Configfs {
        /// What was attempted (`write`, `mkdir`, `rmdir`, `read`, `symlink`...).
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tool (tgtadm) failed.
    #[error(transparent)]
    Command(#[from] ExecError),
    /// The backend is not usable on this host (module not loaded, daemon not running).
    #[error("the {backend} target backend is not usable: {reason}")]
    Unavailable {
        /// `lio` or `tgt`.
        backend: &'static str,
        /// What is missing and how to fix it.
        reason: String,
    },
    /// Output of a tool could not be understood.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Where it went wrong.
        detail: String,
    },
    /// The target exists but is backed by another device than asked.
    #[error("target {iqn} already exports {existing}, not {wanted}")]
    Conflict {
        /// Target IQN.
        iqn: String,
        /// The device it exports.
        existing: String,
        /// The device asked for.
        wanted: String,
    },
    /// The IQN is not under this driver's prefix: the target belongs to other software.
    #[error("target {iqn} is not under this driver's IQN prefix {prefix}: refusing to touch it")]
    Foreign {
        /// Target IQN.
        iqn: String,
        /// Our prefix.
        prefix: String,
    },
    /// An ACL was asked for on a target that does not exist (`ensure_export` comes first).
    #[error("target {iqn} does not exist")]
    NoTarget {
        /// Target IQN.
        iqn: String,
    },
    /// A name or address the backend cannot use (path separators, unparsable portal...).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What it is (`portal`, `initiator name`, ...).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The backend cannot express what was asked (e.g. tgt's one mutual-CHAP account per
    /// target, asked for a second initiator).
    #[error("the {backend} target backend cannot do this: {reason}")]
    Unsupported {
        /// `lio` or `tgt`.
        backend: &'static str,
        /// What is not possible and why.
        reason: String,
    },
}

/// The SCSI unit serial number of a target's data LUN: 32 hex digits derived from the target
/// IQN, so the LUN keeps its identity (`/dev/disk/by-id`, multipath WWIDs) when the export is
/// rebuilt after a restart, and a node can match a disk to its volume.
pub fn unit_serial(iqn: &str) -> String {
    hex::encode(&Sha256::digest(iqn.as_bytes())[..16])
}

/// A kernel iSCSI target implementation. Every method is idempotent: "already there" and
/// "already gone" are success.
#[async_trait]
pub trait TargetBackend: Send + Sync {
    /// Checks that the backend can be used now (module loaded / daemon answering).
    async fn probe(&self) -> Result<(), TargetError>;

    /// The LUN number initiators see the volume at (goes into publish_context).
    fn data_lun(&self) -> u32;

    /// Makes sure the target, its TPG with the portals, and the data LUN on `spec.device`
    /// exist, with authentication enforced and no ACL generated automatically. A target that
    /// already exports another device is [`TargetError::Conflict`].
    async fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError>;

    /// Makes sure `acl.initiator` may log in to target `iqn`, with exactly `acl.chap`.
    /// The target must exist ([`TargetError::NoTarget`] otherwise).
    async fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError>;

    /// Removes the ACL of `initiator` on `iqn` (and ends that initiator's sessions).
    async fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError>;

    /// Removes target `iqn` (ending its sessions) and its backstore.
    async fn remove_export(&self, iqn: &str) -> Result<(), TargetError>;

    /// Makes the data LUN of target `iqn` report `size` bytes, the new size of its device
    /// after the LV behind it grew: initiators see it at their next READ CAPACITY (a
    /// rescan). Sessions stay logged in and I/O continues. A target that does not exist is
    /// fine: nothing is exported, so nothing can report a stale size.
    async fn resize_lun(&self, iqn: &str, size: u64) -> Result<(), TargetError>;

    /// Our targets (IQN under our prefix), with their device and ACLs.
    async fn list(&self) -> Result<Vec<TargetState>, TargetError>;
}

/// Refuses IQNs outside `prefix` (other software's targets) and names that could escape a
/// configfs directory.
pub(crate) fn check_ours(iqn: &str, prefix: &str) -> Result<(), TargetError> {
    let ours = iqn
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| !rest.is_empty());
    if !ours {
        return Err(TargetError::Foreign {
            iqn: iqn.to_string(),
            prefix: prefix.to_string(),
        });
    }
    check_name("target IQN", iqn)
}

/// Whether `iqn` is one of ours under `prefix`.
pub(crate) fn is_ours(iqn: &str, prefix: &str) -> bool {
    check_ours(iqn, prefix).is_ok()
}

/// A name used as one path component or one tool argument: not empty, no `/`, no
/// whitespace or control characters, not `.`/`..`, not starting with `-`.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), TargetError> {
    let reason = if value.is_empty() {
        Some("empty")
    } else if value == "." || value == ".." {
        Some("not a name")
    } else if value.starts_with('-') {
        Some("starts with '-'")
    } else if value.contains('/') {
        Some("contains '/'")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TargetError::Invalid {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A block device path usable as one argument and in LIO's `control` option string (split
/// on `,` and newlines): absolute, no `,`, whitespace or control characters.
pub(crate) fn check_device(device: &str) -> Result<(), TargetError> {
    let reason = if !device.starts_with('/') {
        Some("not an absolute path")
    } else if device
        .chars()
        .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        Some("contains ',', whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TargetError::Invalid {
            what: "device",
            value: device.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A prefix as given on the command line, without a trailing `:`.
pub(crate) fn normalize_prefix(prefix: String) -> String {
    match prefix.strip_suffix(':') {
        Some(p) => p.to_string(),
        None => prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_prefix_is_ours() {
        let p = "iqn.2026-11.io.csi.lvm-iscsi";
        assert!(is_ours("iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1", p));
        assert!(!is_ours("iqn.2026-11.io.csi.lvm-iscsi2:csivg.pvc-1", p));
        assert!(!is_ours("iqn.2026-11.io.csi.lvm-iscsi:", p));
        assert!(!is_ours("iqn.2003-01.org.linux-iscsi.host:sn.1", p));
        assert!(!is_ours("iqn.2026-11.io.csi.lvm-iscsi:a/../../x", p));
        assert!(matches!(
            check_ours("iqn.2003-01.org.other:x", p),
            Err(TargetError::Foreign { .. })
        ));
    }

    #[test]
    fn names_that_escape_or_inject_are_refused() {
        for bad in ["", ".", "..", "a/b", "-x", "a b", "a\nb", "a\u{7f}"] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("n", "iqn.1993-08.org.debian:01:5c8d368c2ff3").is_ok());
    }

    #[test]
    fn serial_is_stable_and_per_target() {
        // A fixed vector (Python's hashlib): a change would give every LUN a new identity.
        let a = unit_serial("iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1");
        assert_eq!(a, "6dfdab22865571ceea19e821957a232d");
        assert_eq!(a, unit_serial("iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1"));
        assert_ne!(a, unit_serial("iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-2"));
    }

    #[test]
    fn prefix_loses_a_trailing_colon() {
        assert_eq!(normalize_prefix("iqn.x:".into()), "iqn.x");
        assert_eq!(normalize_prefix("iqn.x".into()), "iqn.x");
    }
}
