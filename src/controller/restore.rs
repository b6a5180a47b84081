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
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::domain::volume_id::VolumeId;
use crate::error::full_message;
use crate::ops::VolumeLocks;

use super::exports::Exports;
use super::volumes::{Volume, Volumes};
use super::ControllerError;

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

/// Start-up restore, over LVM and the target.
pub(crate) struct Restore {
    /// Our LVs.
    pub(crate) volumes: Arc<Volumes>,
    /// Their exports.
    pub(crate) exports: Arc<Exports>,
    /// The per-volume guards (a retry waits for no RPC).
    pub(crate) locks: VolumeLocks,
}

impl Restore {
    /// One full pass (see the module doc), then target changes are open.
    pub(crate) async fn pass(&self) -> Result<RestoreReport, ControllerError> {
        let volumes = self.volumes.volumes().await?;
        let targets = self.exports.list().await?;
        let published: Vec<Volume> = volumes
            .into_iter()
            .filter(|v| !v.tags.publications.is_empty())
            .collect();
        let mut report = RestoreReport::default();
        let limit = Arc::new(Semaphore::new(PARALLELISM));
        let mut tasks = JoinSet::new();
        for v in published.iter().cloned() {
            let exports = Arc::clone(&self.exports);
            let limit = Arc::clone(&limit);
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let id = v.id.clone();
                (id, restore_volume(&exports, &v).await)
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
                (self.exports.iqn(&v.id), initiators.collect())
            })
            .collect();
        for t in &targets {
            match wanted.get(&t.iqn) {
                None => {
                    self.exports.remove(&t.iqn).await?;
                    tracing::info!(iqn = %t.iqn, "removed an export without publication");
                    report.exports_removed += 1;
                }
                Some(initiators) => {
                    for i in t
                        .initiators
                        .iter()
                        .filter(|i| !initiators.contains(i.as_str()))
                    {
                        self.exports.deny(&t.iqn, i).await?;
                        tracing::info!(iqn = %t.iqn, initiator = %i, "removed an ACL without publication");
                        report.acls_removed += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Restores volume `id` again, under its guard (an RPC in flight on it wins).
    async fn retry_volume(&self, id: &VolumeId) -> Result<(), ControllerError> {
        let Some(_guard) = self.locks.try_lock(&id.to_string()) else {
            return Err(ControllerError::Busy(id.to_string()));
        };
        match self.volumes.volume(id).await? {
            Some(v) if !v.tags.publications.is_empty() => {
                restore_volume(&self.exports, &v).await.map(drop)
            }
            _ => Ok(()),
        }
    }

    /// Runs one pass and opens target changes.
    pub(crate) async fn first_pass(&self) -> Result<RestoreReport, ControllerError> {
        let report = self.pass().await?;
        self.exports.mark_restored();
        Ok(report)
    }

    /// Restores in the background: the first pass is retried until it can list LVs and
    /// targets (then `after_first` runs); then volumes that failed are retried with backoff
    /// until they succeed.
    pub(crate) async fn until_done<F: Future<Output = ()>>(self, after_first: F) {
        let mut delay = Duration::from_secs(1);
        let mut failed = loop {
            let started = Instant::now();
            match self.first_pass().await {
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
                    after_first.await;
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
                if let Err(e) = self.retry_volume(&id).await {
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

/// Ensures the export and ACLs of one published volume.
async fn restore_volume(exports: &Exports, v: &Volume) -> VolumeOutcome {
    exports.ensure_export(&v.id).await?;
    let (mut acls, mut skipped) = (0, 0);
    for p in &v.tags.publications {
        let Some(acl) = exports.restored_acl(&v.id, p) else {
            skipped += 1;
            continue;
        };
        exports.allow(&v.id, &acl).await?;
        acls += 1;
    }
    Ok((acls, skipped))
}
