//! Start-up restore: the kernel target is derived state, rebuilt from the LV tags (DESIGN.md),
//! so a storage-node reboot or a controller crash loses no export.
//!
//! One pass lists our LVs (one `lvs`) and our targets (one `list`), then for every published
//! volume ensures its export and one ACL per publication (volumes in parallel, bounded), then
//! removes our targets that have no publication behind them and ACLs without a publication.
//! Target RPCs are refused (UNAVAILABLE) until the first pass is done, so the pass never races
//! a publish. Volumes that failed are retried in the background, each under its volume guard.
//!
//! CHAP after a reboot: the kernel has forgotten the ACL passwords and start-up has no
//! request secrets. The credentials are derived again from `--chap-key-file` (the same Secret
//! as the StorageClass's), whose key id must match the one recorded in the publication tag. If
//! it does not (or no file is configured), that ACL is not recreated: an export never comes
//! back with weaker authentication than it was published with.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::full_message;
use crate::export::AclSpec;
use crate::lvm::tags::{Auth, Publication};

use super::error::Context;
use super::{ControllerError, ControllerService, Core, Volume};
use crate::domain::volume_id::VolumeId;

/// How many volumes are restored at once.
pub const PARALLELISM: usize = 16;

/// What a restore pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Published volumes whose export was ensured.
    pub exports: usize,
    /// ACLs ensured.
    pub acls: usize,
    /// Publications whose ACL could not be recreated (CHAP key unknown).
    pub acls_skipped: usize,
    /// Our targets removed because no publication is behind them.
    pub exports_removed: usize,
    /// ACLs removed because no publication is behind them.
    pub acls_removed: usize,
    /// Volumes that failed (retried later).
    pub failed: Vec<VolumeId>,
}

/// What restoring one volume did: (ACLs ensured, ACLs skipped).
type VolumeOutcome = Result<(usize, usize), ControllerError>;

impl Core {
    /// One full pass (see the module doc).
    pub(crate) async fn restore_pass(self: &Arc<Self>) -> Result<RestoreReport, ControllerError> {
        let volumes = self.volumes().await?;
        let targets = self
            .target
            .list()
            .await
            .context(|| "listing the iSCSI targets".to_string())?;
        let published: Vec<Volume> = volumes
            .into_iter()
            .filter(|v| !v.tags.publications.is_empty())
            .collect();
        let mut report = RestoreReport::default();
        let limit = Arc::new(Semaphore::new(PARALLELISM));
        let mut tasks = JoinSet::new();
        for v in published.iter().cloned() {
            let core = Arc::clone(self);
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let id = v.id.clone();
                (id, core.restore_volume(&v).await)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok((acls, skipped)))) => {
                    report.exports += 1;
                    report.acls += acls;
                    report.acls_skipped += skipped;
                }
                Ok((id, Err(e))) => {
                    tracing::error!(volume_id = %id, error = %full_message(&e), "cannot restore the export");
                    report.failed.push(id);
                }
                Err(e) => tracing::error!(error = %e, "a restore task died"),
            }
        }
        // Cleanup: our targets and ACLs that no publication asks for.
        let wanted: HashMap<String, BTreeSet<&str>> = published
            .iter()
            .map(|v| {
                let initiators = v.tags.publications.iter().map(|p| p.initiator.as_str());
                (self.iqn(&v.id), initiators.collect())
            })
            .collect();
        for t in &targets {
            match wanted.get(&t.iqn) {
                None => {
                    self.target
                        .remove_export(&t.iqn)
                        .await
                        .context(|| format!("removing unpublished export {}", t.iqn))?;
                    tracing::info!(iqn = %t.iqn, "removed an export without publication");
                    report.exports_removed += 1;
                }
                Some(initiators) => {
                    for i in t
                        .initiators
                        .iter()
                        .filter(|i| !initiators.contains(i.as_str()))
                    {
                        self.target
                            .remove_acl(&t.iqn, i)
                            .await
                            .context(|| format!("removing initiator {i} from {}", t.iqn))?;
                        tracing::info!(iqn = %t.iqn, initiator = %i, "removed an ACL without publication");
                        report.acls_removed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Ensures the export and ACLs of one published volume.
    async fn restore_volume(&self, v: &Volume) -> VolumeOutcome {
        let spec = self.export_spec(&v.id);
        self.target
            .ensure_export(&spec)
            .await
            .context(|| format!("exporting {} as {}", v.id, spec.iqn))?;
        let (mut acls, mut skipped) = (0, 0);
        for p in &v.tags.publications {
            let Some(acl) = self.restored_acl(&v.id, p) else {
                skipped += 1;
                continue;
            };
            self.target
                .ensure_acl(&spec.iqn, &acl)
                .await
                .context(|| format!("allowing initiator {} on {}", p.initiator, spec.iqn))?;
            acls += 1;
        }
        Ok((acls, skipped))
    }

    /// The ACL of publication `p`, or `None` when its CHAP credentials cannot be derived.
    fn restored_acl(&self, id: &VolumeId, p: &Publication) -> Option<AclSpec> {
        let chap = match &p.auth {
            Auth::None => None,
            Auth::Chap { key_id } => match &self.settings.chap_key {
                Some(k) if k.id() == *key_id => {
                    let Ok(initiator) = p.initiator.parse() else {
                        tracing::error!(volume_id = %id, node_id = %p.node_id, initiator = p.initiator,
                            "cannot restore this CHAP ACL: its initiator is not a valid iSCSI name");
                        return None;
                    };
                    Some(k.credentials(id, &initiator))
                }
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
        Some(AclSpec {
            initiator: p.initiator.clone(),
            chap,
        })
    }

    /// Restores volume `id` again, under its guard (an RPC in flight on it wins).
    async fn retry_volume(&self, id: &VolumeId) -> Result<(), ControllerError> {
        let Some(_guard) = self.locks.try_lock(&id.to_string()) else {
            return Err(ControllerError::Busy(id.to_string()));
        };
        match self.volume(id).await? {
            Some(v) if !v.tags.publications.is_empty() => self.restore_volume(&v).await.map(drop),
            _ => Ok(()),
        }
    }
}

impl ControllerService {
    /// Runs one restore pass and opens the target RPCs (tests and [`Self::restore_until_done`]).
    pub async fn restore(&self) -> Result<RestoreReport, ControllerError> {
        let report = self.core.restore_pass().await?;
        self.core.restored.store(true, Ordering::Release);
        Ok(report)
    }

    /// Restores in the background: the first pass is retried until it can list LVs and
    /// targets; then volumes that failed are retried with backoff until they succeed.
    pub async fn restore_until_done(self) {
        let mut delay = Duration::from_secs(1);
        let mut failed = loop {
            let started = Instant::now();
            match self.restore().await {
                Ok(r) => {
                    tracing::info!(
                        exports = r.exports,
                        acls = r.acls,
                        acls_skipped = r.acls_skipped,
                        exports_removed = r.exports_removed,
                        acls_removed = r.acls_removed,
                        failed = r.failed.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "exports restored from LV tags"
                    );
                    self.core.refresh_gauges(crate::metrics::global()).await;
                    break r.failed;
                }
                Err(e) => {
                    tracing::error!(error = %full_message(&e), retry_in = ?delay, "restore failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        };
        let mut delay = Duration::from_secs(2);
        while !failed.is_empty() {
            tokio::time::sleep(delay).await;
            let mut still = Vec::new();
            for id in failed {
                if let Err(e) = self.core.retry_volume(&id).await {
                    tracing::warn!(volume_id = %id, error = %full_message(&e), "restore retry failed");
                    still.push(id);
                } else {
                    tracing::info!(volume_id = %id, "export restored");
                }
            }
            failed = still;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
}
