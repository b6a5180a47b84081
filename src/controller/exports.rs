//! [`Exports`]: the kernel target side of our volumes. A volume is exported as a target
//! named after its id, listening on the configured portals, with one ACL per initiator
//! (CHAP credentials derived from the request's key or `--chap-key-file`). Every target
//! change of the controller goes through here, named by its [`ExportStep`] when it fails
//! ([`ExportsError`]).
//!
//! Target changes wait for start-up restore ([`Exports::check_restored`]): made meanwhile,
//! restore could undo them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::domain::iqn::IqnError;
use crate::domain::{ChapKey, Iqn, Portal, PublishContext, VolumeId};
use crate::export::{AclSpec, ExportSpec, TargetBackend, TargetError, TargetState};
use crate::lvm::tags::{Auth, Publication};

type Result<T> = std::result::Result<T, ExportsError>;

/// A failed target change.
#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    /// The target backend failed.
    #[error("{step}")]
    Target {
        /// What was being done (boxed: errors travel in every `Result`).
        step: Box<ExportStep>,
        /// The backend failure.
        source: TargetError,
    },
    /// The exports are being rebuilt after start-up; target changes wait for it.
    #[error("the controller is restoring iSCSI exports after start-up; retry shortly")]
    Restoring,
}

/// The target step that failed, with what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportStep {
    /// Creating (or checking) the export of a volume.
    Export {
        /// The volume.
        id: VolumeId,
        /// Its target.
        iqn: String,
    },
    /// Naming the target of a volume.
    Name(VolumeId),
    /// Adding an initiator's ACL.
    Allow {
        /// The initiator.
        initiator: String,
        /// The target.
        iqn: String,
    },
    /// Removing an initiator's ACL.
    Deny {
        /// The initiator.
        initiator: String,
        /// The target.
        iqn: String,
    },
    /// Removing an export.
    Remove(String),
    /// Making the LUN report the volume's new size.
    Resize(String),
    /// Listing the targets.
    List,
}

impl fmt::Display for ExportStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportStep::Export { id, iqn } => write!(f, "exporting {id} as {iqn}"),
            ExportStep::Name(id) => write!(f, "exporting {id}"),
            ExportStep::Allow { initiator, iqn } => {
                write!(f, "allowing initiator {initiator} on {iqn}")
            }
            ExportStep::Deny { initiator, iqn } => {
                write!(f, "removing initiator {initiator} from {iqn}")
            }
            ExportStep::Remove(iqn) => write!(f, "removing export {iqn}"),
            ExportStep::Resize(iqn) => write!(f, "making export {iqn} report the new size"),
            ExportStep::List => write!(f, "listing the iSCSI targets"),
        }
    }
}

/// `source` as the failure of `step`.
fn at(step: ExportStep) -> impl FnOnce(TargetError) -> ExportsError {
    move |source| ExportsError::Target {
        step: Box::new(step),
        source,
    }
}

/// Our volumes' exports on the kernel target.
pub(crate) struct Exports {
    /// The kernel iSCSI target.
    backend: Arc<dyn TargetBackend>,
    /// IQN prefix of our targets.
    iqn_prefix: String,
    /// Portals initiators log in to.
    portals: Vec<Portal>,
    /// The CHAP key from `--chap-key-file`: for restore, and for requests without a key.
    chap_key: Option<ChapKey>,
    /// Set once start-up restore has made the kernel target match the tags.
    restored: AtomicBool,
}

impl Exports {
    /// Exports on `backend` named `<iqn_prefix>:<vg>.<lv>`, listening on `portals`.
    pub(crate) fn new(
        backend: Arc<dyn TargetBackend>,
        iqn_prefix: String,
        portals: Vec<Portal>,
        chap_key: Option<ChapKey>,
    ) -> Self {
        Exports {
            backend,
            iqn_prefix,
            portals,
            chap_key,
            restored: AtomicBool::new(false),
        }
    }

    /// The target IQN of `id`.
    pub(crate) fn iqn(&self, id: &VolumeId) -> String {
        id.target_iqn(&self.iqn_prefix)
    }

    /// The export of `id`.
    fn spec(&self, id: &VolumeId) -> ExportSpec {
        ExportSpec {
            iqn: self.iqn(id),
            device: id.device(),
            backstore: id.backstore_name(),
            portals: self.portals.clone(),
        }
    }

    /// Fails until restore is done: target changes made meanwhile could be undone by it.
    pub(crate) fn check_restored(&self) -> Result<()> {
        if self.is_restored() {
            Ok(())
        } else {
            Err(ExportsError::Restoring)
        }
    }

    /// Whether start-up restore has finished its first pass.
    pub(crate) fn is_restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }

    /// Opens target changes: start-up restore has made the target match the tags.
    pub(crate) fn mark_restored(&self) {
        self.restored.store(true, Ordering::Release);
    }

    /// Whether the target backend answers.
    pub(crate) async fn probe(&self) -> std::result::Result<(), TargetError> {
        self.backend.probe().await
    }

    /// The CHAP key of a publication: the request's, else `--chap-key-file`'s.
    pub(crate) fn key<'a>(&'a self, request: Option<&'a ChapKey>) -> Option<&'a ChapKey> {
        request.or(self.chap_key.as_ref())
    }

    /// The ACL of `initiator` on volume `id`, with CHAP credentials derived from `key`.
    pub(crate) fn acl(id: &VolumeId, initiator: &Iqn, key: Option<&ChapKey>) -> AclSpec {
        AclSpec {
            initiator: initiator.to_string(),
            chap: key.map(|k| k.credentials(id, initiator)),
        }
    }

    /// The ACL of publication `p` rebuilt from its tag, or `None` when its CHAP credentials
    /// cannot be derived (no `--chap-key-file`, or another key than it was published with).
    pub(crate) fn restored_acl(&self, id: &VolumeId, p: &Publication) -> Option<AclSpec> {
        let key = match &p.auth {
            Auth::None => None,
            Auth::Chap { key_id } => match &self.chap_key {
                Some(k) if k.id() == *key_id => Some(k),
                other => {
                    tracing::error!(
                        volume_id = %id, node_id = %p.node_id, key_id,
                        file_key_id = ?other.as_ref().map(|k| k.id()),
                        "cannot restore this CHAP ACL: --chap-key-file is not the key it was published with; the node cannot log in until the volume is published again"
                    );
                    return None;
                }
            },
        };
        let Some(key) = key else {
            return Some(AclSpec {
                initiator: p.initiator.clone(),
                chap: None,
            });
        };
        let Ok(initiator) = p.initiator.parse() else {
            tracing::error!(volume_id = %id, node_id = %p.node_id, initiator = p.initiator,
                "cannot restore this CHAP ACL: its initiator is not a valid iSCSI name");
            return None;
        };
        Some(Self::acl(id, &initiator, Some(key)))
    }

    /// Ensures the export of `id` and the ACL `acl` on it.
    pub(crate) async fn ensure(&self, id: &VolumeId, acl: &AclSpec) -> Result<()> {
        self.ensure_export(id).await?;
        self.allow(id, acl).await
    }

    /// Ensures the export of `id` (without touching its ACLs).
    pub(crate) async fn ensure_export(&self, id: &VolumeId) -> Result<()> {
        let spec = self.spec(id);
        self.backend
            .ensure_export(&spec)
            .await
            .map_err(at(ExportStep::Export {
                id: id.clone(),
                iqn: spec.iqn,
            }))
    }

    /// Ensures ACL `acl` on the export of `id`.
    pub(crate) async fn allow(&self, id: &VolumeId, acl: &AclSpec) -> Result<()> {
        let iqn = self.iqn(id);
        self.backend
            .ensure_acl(&iqn, acl)
            .await
            .map_err(at(ExportStep::Allow {
                initiator: acl.initiator.clone(),
                iqn,
            }))
    }

    /// Removes the ACL of `initiator` from target `iqn`.
    pub(crate) async fn deny(&self, iqn: &str, initiator: &str) -> Result<()> {
        self.backend
            .remove_acl(iqn, initiator)
            .await
            .map_err(at(ExportStep::Deny {
                initiator: initiator.to_string(),
                iqn: iqn.to_string(),
            }))
    }

    /// Removes target `iqn`; one that does not exist is success.
    pub(crate) async fn remove(&self, iqn: &str) -> Result<()> {
        self.backend
            .remove_export(iqn)
            .await
            .map_err(at(ExportStep::Remove(iqn.to_string())))
    }

    /// Makes the export of `id` report `size` bytes.
    pub(crate) async fn resize(&self, id: &VolumeId, size: u64) -> Result<()> {
        let iqn = self.iqn(id);
        self.backend
            .resize_lun(&iqn, size)
            .await
            .map_err(at(ExportStep::Resize(iqn)))
    }

    /// Our targets.
    pub(crate) async fn list(&self) -> Result<Vec<TargetState>> {
        self.backend.list().await.map_err(at(ExportStep::List))
    }

    /// What ControllerPublishVolume tells the node about the export of `id`.
    pub(crate) fn publish_context(&self, id: &VolumeId, chap: bool) -> Result<PublishContext> {
        // Valid by construction from a checked --iqn-prefix.
        let iqn = self
            .iqn(id)
            .parse()
            .map_err(|e: IqnError| TargetError::Invalid {
                what: "target name",
                value: e.name,
                reason: "not a valid iSCSI name: check --iqn-prefix",
            })
            .map_err(at(ExportStep::Name(id.clone())))?;
        Ok(PublishContext {
            iqn,
            portals: self.portals.clone(),
            lun: self.backend.data_lun(),
            chap,
        })
    }
}
