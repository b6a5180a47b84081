//! The kernel iSCSI target, behind one trait with two backends: LIO written through configfs
//! ([`lio`]) and tgt driven with tgtadm ([`tgt`]).
//!
//! The model (DESIGN.md): one target per volume, named by an IQN derived from the volume;
//! one TPG; LUN 0 backed by the LV's block device; one ACL per node initiator, with CHAP when
//! the StorageClass has a key. Only targets whose IQN starts with our prefix are ever listed
//! or touched: targets of other software on the same host are left alone.

pub mod fake;
pub mod lio;
pub mod tgt;

use async_trait::async_trait;

use crate::chap::Chap;
use crate::exec::ExecError;

/// A volume's export: a target with LUN 0 backed by a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Target IQN (derived from the volume id).
    pub iqn: String,
    /// The LV's block device, e.g. `/dev/csivg/pvc-123`.
    pub device: String,
    /// A short backend-safe name for the backstore (unique per volume).
    pub backstore: String,
    /// Listening portals, `ADDRESS:PORT`.
    pub portals: Vec<String>,
}

/// An ACL entry: an initiator allowed to log in, with its CHAP credentials if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSpec {
    /// The initiator's IQN.
    pub initiator: String,
    /// CHAP (initiator and mutual); `None` for ACL-only access.
    pub chap: Option<Chap>,
}

/// What the backend reports about one of our targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// Target IQN.
    pub iqn: String,
    /// The device behind LUN 0, when one is configured.
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
}

/// A kernel iSCSI target implementation. Every method is idempotent: "already there" and
/// "already gone" are success.
#[async_trait]
pub trait TargetBackend: Send + Sync {
    /// Checks that the backend can be used now (module loaded / daemon answering).
    async fn probe(&self) -> Result<(), TargetError>;

    /// Makes sure the target, its TPG with the portals, and LUN 0 on `spec.device` exist,
    /// with authentication enforced and no ACL generated automatically.
    async fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError>;

    /// Makes sure `acl.initiator` may log in to target `iqn`, with exactly `acl.chap`.
    async fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError>;

    /// Removes the ACL of `initiator` on `iqn` (and ends that initiator's sessions).
    async fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError>;

    /// Removes target `iqn` and its backstore.
    async fn remove_export(&self, iqn: &str) -> Result<(), TargetError>;

    /// Our targets (IQN under our prefix), with their device and ACLs.
    async fn list(&self) -> Result<Vec<TargetState>, TargetError>;
}
