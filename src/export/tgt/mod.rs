//! tgt (the user-space target daemon tgtd), configured with `tgtadm` through the
//! [`Runner`](crate::exec::Runner).
//!
//! One export: a target with the lowest free tid; LUN 1 (tgt keeps LUN 0 for its controller
//! LUN) on the LV with `--bstype rdwr` (tgt's default and the one Cinder uses: reads and
//! writes through the storage node's page cache, flushed when the initiator sends SYNCHRONIZE
//! CACHE; no AIO context limit per LUN), with the SCSI id and serial set to
//! [`unit_serial`] so the disk keeps its identity when tgtd is restarted and the export
//! rebuilt; portals are tgtd's global listeners, added when no listener covers them.
//! Access: an ACL per initiator name (`--op bind --mode target --initiator-name`).
//!
//! CHAP in tgt is per target, not per initiator: incoming accounts are bound to the target,
//! and any initiator that passes the name ACL may log in with any bound account. The ACL by
//! initiator name is what keeps nodes apart; CHAP proves the node holds the key. Two
//! consequences:
//! - tgt binds one outgoing (mutual CHAP) account per target, so a second initiator with
//!   CHAP on the same target (multi-node readers) is refused with
//!   [`TargetError::Unsupported`]; LIO has no such limit.
//! - `remove_acl` cannot tell which bound accounts were that initiator's (it has no
//!   credentials): they stay bound, harmless without the name ACL, until the target's last
//!   ACL goes, when all its accounts are unbound and deleted.
//!
//! tgtadm takes CHAP passwords on its command line (there is no other way): they are passed
//! as secret arguments, never logged, but visible in the process table while tgtadm runs.
//! tgtd keeps no state across restarts; the controller rebuilds exports at start-up.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod parse;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

use self::parse::{parse_accounts, parse_portals, parse_targets, Target};
use super::{
    check_device, check_name, check_ours, is_ours, listen_addrs, normalize_prefix, unit_serial,
    AclSpec, ExportSpec, TargetBackend, TargetError, TargetState,
};
use crate::domain::chap::Credential;
use crate::domain::iqn::is_iqn;
use crate::exec::{Cmd, ExecError, Output, Runner, SharedRunner};

/// The LUN of the volume (LUN 0 is tgt's controller LUN).
const DATA_LUN: u32 = 1;
/// Backing store type.
const BSTYPE: &str = "rdwr";
/// tgtadm's exit code for every refusal (it exits with EINVAL and says why on stderr).
const TGTADM_REFUSED: i32 = 22;
/// How long `remove_export` waits for commands in flight to drain after ending sessions.
const DRAIN: Duration = Duration::from_secs(10);

/// What tgtadm refused, from its message (tgtadm's `tgtadm_strerror` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoTarget,
    TargetExists,
    LunExists,
    AclExists,
    NoAcl,
    AccountExists,
    NoAccount,
    OutgoingExists,
    NoSession,
    NoConnection,
    TargetActive,
    LunActive,
}

fn refusal(out: &Output) -> Option<Refusal> {
    if out.code != TGTADM_REFUSED {
        return None;
    }
    let table = [
        ("can't find the target", Refusal::NoTarget),
        ("this target already exists", Refusal::TargetExists),
        (
            "this logical unit number already exists",
            Refusal::LunExists,
        ),
        (
            "this access control rule already exists",
            Refusal::AclExists,
        ),
        ("this access control rule does not exist", Refusal::NoAcl),
        ("this account already exists", Refusal::AccountExists),
        ("can't find the account", Refusal::NoAccount),
        (
            "this target already has an outgoing account",
            Refusal::OutgoingExists,
        ),
        ("can't find the session", Refusal::NoSession),
        ("can't find the connection", Refusal::NoConnection),
        ("this target is still active", Refusal::TargetActive),
        ("this logical unit is still active", Refusal::LunActive),
    ];
    table
        .iter()
        .find(|(msg, _)| out.stderr.contains(msg))
        .map(|(_, r)| *r)
}

fn tgtadm(mode: &str, op: &str) -> Cmd {
    Cmd::new("tgtadm").args(["--lld", "iscsi", "--mode", mode, "--op", op])
}

/// The `portal=` form tgtd parses: `[v6]:port` for IPv6.
fn portal_param(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("portal={}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("portal=[{}]:{}", a.ip(), a.port()),
    }
}

/// Whether a listener on `have` accepts connections to `want`.
fn covers(have: &SocketAddr, want: &SocketAddr) -> bool {
    have == want
        || (have.port() == want.port()
            && have.ip().is_unspecified()
            && have.is_ipv4() == want.is_ipv4())
}

/// The lowest target id no target uses.
fn free_tid(targets: &[Target]) -> u32 {
    (1..)
        .find(|tid| targets.iter().all(|t| t.tid != *tid))
        .unwrap_or(u32::MAX)
}

/// Whether tgtd answers tgtadm (`--mode sys --op show`): a run that exits non-zero is
/// [`ExecError::Failed`] (tgtd down), one that cannot start another [`ExecError`] (no tgt).
pub async fn tgtd_answers(runner: &dyn Runner) -> Result<(), ExecError> {
    runner.run(&tgtadm("sys", "show")).await.map(drop)
}

/// The tgt backend.
pub struct TgtBackend {
    /// Runs tgtadm.
    runner: SharedRunner,
    /// IQN prefix of our targets (without the trailing `:`).
    prefix: String,
    /// Serializes our changes: tid allocation and "check, then bind" must not interleave.
    lock: Mutex<()>,
}

impl TgtBackend {
    /// A backend driving tgtd with `tgtadm` through `runner`, managing the targets whose
    /// IQN starts with `iqn_prefix:`.
    pub fn new(runner: SharedRunner, iqn_prefix: String) -> Self {
        TgtBackend {
            runner,
            prefix: normalize_prefix(iqn_prefix),
            lock: Mutex::new(()),
        }
    }

    /// Runs `cmd`; a refusal listed in `fine` (already done / already gone) is success.
    async fn run(&self, cmd: Cmd, fine: &[Refusal]) -> Result<Option<Refusal>, TargetError> {
        let out = self.runner.output(&cmd).await?;
        if out.success() {
            return Ok(None);
        }
        match refusal(&out) {
            Some(r) if fine.contains(&r) => Ok(Some(r)),
            _ => Err(ExecError::failed(&cmd, &out).into()),
        }
    }

    async fn targets(&self) -> Result<Vec<Target>, TargetError> {
        let out = self.runner.run(&tgtadm("target", "show")).await?;
        parse_targets(&out.stdout_str())
    }

    async fn target(&self, iqn: &str) -> Result<Option<Target>, TargetError> {
        Ok(self.targets().await?.into_iter().find(|t| t.name == iqn))
    }

    /// Finds or creates the target, retrying when another program takes the tid first.
    async fn ensure_target(&self, iqn: &str) -> Result<(Target, bool), TargetError> {
        let mut targets = self.targets().await?;
        for _ in 0..3 {
            if let Some(t) = targets.iter().find(|t| t.name == iqn) {
                return Ok((t.clone(), false));
            }
            let tid = free_tid(&targets);
            let cmd =
                tgtadm("target", "new").args(["--tid", &tid.to_string(), "--targetname", iqn]);
            if self.run(cmd, &[Refusal::TargetExists]).await?.is_none() {
                let t = Target {
                    tid,
                    name: iqn.to_string(),
                    nexuses: Vec::new(),
                    luns: Vec::new(),
                    accounts: Vec::new(),
                    acls: Vec::new(),
                };
                return Ok((t, true));
            }
            targets = self.targets().await?;
        }
        Err(TargetError::Unavailable {
            backend: "tgt",
            reason: format!("could not allocate a target id for {iqn}: tids keep being taken"),
        })
    }

    /// Adds listeners for the portals no tgtd listener covers yet.
    async fn ensure_portals(&self, wanted: &[SocketAddr]) -> Result<(), TargetError> {
        let out = self.runner.run(&tgtadm("portal", "show")).await?;
        let have = parse_portals(&out.stdout_str())?;
        for want in wanted {
            if !have.iter().any(|h| covers(h, want)) {
                let cmd = tgtadm("portal", "new").args(["--param", &portal_param(want)]);
                self.run(cmd, &[]).await?;
            }
        }
        Ok(())
    }

    /// Creates the account unless it exists (same user, same password: both derive from
    /// the same key).
    async fn ensure_account(
        &self,
        accounts: &[String],
        cred: &Credential,
    ) -> Result<(), TargetError> {
        check_name("CHAP user", &cred.user)?;
        if accounts.contains(&cred.user) {
            return Ok(());
        }
        let cmd = tgtadm("account", "new")
            .args(["--user", &cred.user, "--password"])
            .secret_arg(cred.password.clone());
        self.run(cmd, &[Refusal::AccountExists]).await.map(|_| ())
    }

    async fn bind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<(), TargetError> {
        let mut cmd = tgtadm("account", "bind").args(["--tid", &tid.to_string(), "--user", user]);
        if outgoing {
            cmd = cmd.arg("--outgoing");
        }
        // tgt answers "this account already exists" to a repeated bind.
        self.run(cmd, &[Refusal::AccountExists]).await.map(|_| ())
    }

    /// Unbinds and deletes every account bound to `target`.
    async fn drop_accounts(&self, target: &Target) -> Result<(), TargetError> {
        for a in &target.accounts {
            let mut cmd = tgtadm("account", "unbind").args([
                "--tid",
                &target.tid.to_string(),
                "--user",
                &a.user,
            ]);
            if a.outgoing {
                cmd = cmd.arg("--outgoing");
            }
            self.run(cmd, &[Refusal::NoAccount]).await?;
            let cmd = tgtadm("account", "delete").args(["--user", &a.user]);
            self.run(cmd, &[Refusal::NoAccount]).await?;
        }
        Ok(())
    }

    /// Ends the sessions on `target` of `initiator` (all when `None`): tgt keeps them when
    /// an ACL goes.
    async fn drop_sessions(
        &self,
        target: &Target,
        initiator: Option<&str>,
    ) -> Result<(), TargetError> {
        let nexuses = target
            .nexuses
            .iter()
            .filter(|n| initiator.is_none_or(|i| n.initiator == i));
        for nexus in nexuses {
            for cid in &nexus.connections {
                let cmd = tgtadm("conn", "delete").args([
                    "--tid",
                    &target.tid.to_string(),
                    "--sid",
                    &nexus.sid.to_string(),
                    "--cid",
                    &cid.to_string(),
                ]);
                self.run(cmd, &[Refusal::NoSession, Refusal::NoConnection])
                    .await?;
            }
        }
        Ok(())
    }

    async fn unbind_acl(&self, tid: u32, entry: &str) -> Result<(), TargetError> {
        let flag = if is_iqn(entry) {
            "--initiator-name"
        } else {
            "--initiator-address"
        };
        let cmd = tgtadm("target", "unbind").args(["--tid", &tid.to_string(), flag, entry]);
        self.run(cmd, &[Refusal::NoAcl]).await.map(|_| ())
    }
}

#[async_trait]
impl TargetBackend for TgtBackend {
    async fn probe(&self) -> Result<(), TargetError> {
        match tgtd_answers(self.runner.as_ref()).await {
            Ok(()) => Ok(()),
            Err(e @ ExecError::Failed { .. }) => Err(TargetError::Unavailable {
                backend: "tgt",
                reason: format!(
                    "tgtd is not answering ({e}): start it (systemctl start tgt, or tgtd)"
                ),
            }),
            Err(e) => Err(TargetError::Unavailable {
                backend: "tgt",
                reason: format!("{e}: install tgt (apt-get install tgt)"),
            }),
        }
    }

    fn data_lun(&self) -> u32 {
        DATA_LUN
    }

    async fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError> {
        check_ours(&spec.iqn, &self.prefix)?;
        check_device(&spec.device)?;
        let portals = listen_addrs(&spec.portals)?;
        let _guard = self.lock.lock().await;
        let (target, _) = self.ensure_target(&spec.iqn).await?;
        let tid = target.tid.to_string();
        let serial = unit_serial(&spec.iqn);
        match target.lun(DATA_LUN) {
            Some(lun) if lun.path.as_deref() != Some(spec.device.as_str()) => {
                return Err(TargetError::Conflict {
                    iqn: spec.iqn.clone(),
                    existing: lun.path.clone().unwrap_or_default(),
                    wanted: spec.device.clone(),
                });
            }
            Some(lun) if lun.scsi_id == serial && lun.scsi_sn == serial => {}
            found => {
                if found.is_none() {
                    let cmd = tgtadm("logicalunit", "new").args([
                        "--tid",
                        &tid,
                        "--lun",
                        &DATA_LUN.to_string(),
                        "--backing-store",
                        &spec.device,
                        "--bstype",
                        BSTYPE,
                    ]);
                    self.run(cmd, &[]).await?;
                }
                let params = format!("scsi_id={serial},scsi_sn={serial}");
                let cmd = tgtadm("logicalunit", "update").args([
                    "--tid",
                    &tid,
                    "--lun",
                    &DATA_LUN.to_string(),
                    "--params",
                    &params,
                ]);
                self.run(cmd, &[]).await?;
            }
        }
        self.ensure_portals(&portals).await
    }

    async fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        check_name("initiator name", &acl.initiator)?;
        let _guard = self.lock.lock().await;
        let target = self
            .target(iqn)
            .await?
            .ok_or_else(|| TargetError::NoTarget {
                iqn: iqn.to_string(),
            })?;
        // Accounts first: a target without incoming accounts lets ACL'd initiators in
        // without CHAP.
        match &acl.chap {
            Some(chap) => {
                let out = self.runner.run(&tgtadm("account", "show")).await?;
                let accounts = parse_accounts(&out.stdout_str());
                let outgoing = target.accounts.iter().find(|a| a.outgoing);
                if let Some(other) = outgoing.filter(|a| a.user != chap.target.user) {
                    return Err(TargetError::Unsupported {
                        backend: "tgt",
                        reason: format!(
                            "tgt binds one mutual-CHAP account per target and {iqn} has \
                             {} (another initiator's): publish it to one node at a time, \
                             or use the LIO backend",
                            other.user
                        ),
                    });
                }
                self.ensure_account(&accounts, &chap.initiator).await?;
                self.ensure_account(&accounts, &chap.target).await?;
                let bound = |user: &str, out: bool| {
                    target
                        .accounts
                        .iter()
                        .any(|a| a.user == user && a.outgoing == out)
                };
                if !bound(&chap.initiator.user, false) {
                    self.bind_account(target.tid, &chap.initiator.user, false)
                        .await?;
                }
                if outgoing.is_none() {
                    self.bind_account(target.tid, &chap.target.user, true)
                        .await?;
                }
            }
            None if target.accounts.iter().any(|a| !a.outgoing) => {
                return Err(TargetError::Unsupported {
                    backend: "tgt",
                    reason: format!(
                        "{iqn} requires CHAP (tgt enforces it per target, and other \
                         initiators use it): publish with the CHAP key secret"
                    ),
                });
            }
            None => {}
        }
        if !target.acls.iter().any(|a| a == &acl.initiator) {
            let cmd = tgtadm("target", "bind").args([
                "--tid",
                &target.tid.to_string(),
                "--initiator-name",
                &acl.initiator,
            ]);
            self.run(cmd, &[Refusal::AclExists]).await?;
        }
        Ok(())
    }

    async fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        check_name("initiator name", initiator)?;
        let _guard = self.lock.lock().await;
        let Some(target) = self.target(iqn).await? else {
            return Ok(());
        };
        if target.acls.iter().any(|a| a == initiator) {
            self.unbind_acl(target.tid, initiator).await?;
        }
        self.drop_sessions(&target, Some(initiator)).await?;
        if target.acls.iter().all(|a| a == initiator) {
            self.drop_accounts(&target).await?;
        }
        Ok(())
    }

    async fn remove_export(&self, iqn: &str) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        let _guard = self.lock.lock().await;
        let Some(target) = self.target(iqn).await? else {
            return Ok(());
        };
        // Closed first (no ACL: nobody logs in), then the sessions and accounts, then the
        // target with its LUNs: an interrupted removal never leaves an open target.
        for entry in &target.acls {
            self.unbind_acl(target.tid, entry).await?;
        }
        self.drop_accounts(&target).await?;
        // Even with --force, tgtd refuses to delete a LUN with commands in flight: end the
        // sessions and retry while they drain.
        let started = Instant::now();
        let mut target = target;
        loop {
            self.drop_sessions(&target, None).await?;
            let cmd =
                tgtadm("target", "delete").args(["--force", "--tid", &target.tid.to_string()]);
            let busy = [Refusal::NoTarget, Refusal::LunActive, Refusal::TargetActive];
            match self.run(cmd, &busy).await? {
                None | Some(Refusal::NoTarget) => return Ok(()),
                Some(_) if started.elapsed() < DRAIN => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match self.target(iqn).await? {
                        Some(t) => target = t,
                        None => return Ok(()),
                    }
                }
                Some(r) => {
                    return Err(TargetError::Unavailable {
                        backend: "tgt",
                        reason: format!(
                            "tgtd still refuses to delete target {iqn} ({r:?}) after {DRAIN:?} \
                             of ending its sessions"
                        ),
                    })
                }
            }
        }
    }

    /// tgtd reads a backing store's size once, when it opens it (seen in the lab: after
    /// lvextend a rescan still shows the old size). `--params online=0,path=<device>` in
    /// one request takes the LUN offline, reopens the same device (reading its size) and
    /// brings it back online; tgtd handles it between two SCSI commands, the SCSI id and
    /// serial stay, and the sessions stay logged in. Skipped when tgtd already reports the
    /// size.
    async fn resize_lun(&self, iqn: &str, size: u64) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        let _guard = self.lock.lock().await;
        let Some(target) = self.target(iqn).await? else {
            return Ok(());
        };
        let Some(lun) = target.lun(DATA_LUN) else {
            return Ok(());
        };
        let Some(path) = &lun.path else {
            return Ok(());
        };
        if lun.size_mb == Some(parse::disk_size_mb(size)) {
            return Ok(());
        }
        check_device(path)?;
        let cmd = tgtadm("logicalunit", "update").args([
            "--tid",
            &target.tid.to_string(),
            "--lun",
            &DATA_LUN.to_string(),
            "--params",
            &format!("online=0,path={path}"),
        ]);
        self.run(cmd, &[]).await?;
        tracing::info!(target = iqn, device = %path, size, "tgt reopened the LUN's backing store");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<TargetState>, TargetError> {
        Ok(self
            .targets()
            .await?
            .into_iter()
            .filter(|t| is_ours(&t.name, &self.prefix))
            .map(|t| TargetState {
                device: t.lun(DATA_LUN).and_then(|l| l.path.clone()),
                initiators: t.initiators().map(String::from).collect(),
                iqn: t.name,
            })
            .collect())
    }
}
