//! The iSCSI initiator through `iscsiadm` (open-iscsi): node records with
//! `node.startup=manual` and CHAP, login, logout and record deletion, and the session list.
//! Exit codes are open-iscsi's (`include/iscsi_err.h`), classified here, where they are
//! produced: the layers above see "session exists", "nothing there" or a typed failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::domain::chap::Chap;
use crate::domain::Portal;
use crate::exec::{Cmd, ExecError, Output, SharedRunner};

/// open-iscsi exit codes this driver acts on.
pub mod exit {
    /// ISCSI_ERR_IDBM: the node database could not be read or written; seen when another
    /// iscsiadm creates or deletes a record under /etc/iscsi/nodes while this one walks them.
    pub const DATABASE: i32 = 6;
    /// ISCSI_ERR_TRANS: transport (TCP) error.
    pub const TRANSPORT: i32 = 4;
    /// ISCSI_ERR_TRANS_TIMEOUT: connection timed out (portal unreachable, or a target that
    /// rejects the login as "not found", retried until the attempts run out).
    pub const TIMEOUT: i32 = 8;
    /// ISCSI_ERR_SESS_EXISTS: a session to this target and portal is already logged in.
    pub const SESSION_EXISTS: i32 = 15;
    /// ISCSI_ERR_ISCSID_COMM_ERR: iscsid did not answer properly.
    pub const ISCSID_COMM: i32 = 18;
    /// ISCSI_ERR_FATAL_LOGIN: the target refused the login for good (seen for a wrong
    /// mutual-CHAP secret).
    pub const FATAL_LOGIN: i32 = 19;
    /// ISCSI_ERR_ISCSID_NOTCONN: iscsid is not running.
    pub const ISCSID_NOT_CONNECTED: i32 = 20;
    /// ISCSI_ERR_NO_OBJS_FOUND: no such session or node record ("nothing to do").
    pub const NO_OBJECTS: i32 = 21;
    /// ISCSI_ERR_LOGIN_AUTH_FAILED: CHAP failed or the initiator is not in the ACL.
    pub const AUTH_FAILED: i32 = 24;
}

/// Login attempts before iscsiadm gives up (open-iscsi's default is 8, about 2 minutes
/// against a dead portal: longer than kubelet waits for NodeStageVolume).
const LOGIN_RETRIES: &str = "2";

/// Upper bound on one iscsiadm login (its own attempts end well before).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Attempts of one iscsiadm call that keeps failing with exit 6 (a database race).
const DATABASE_ATTEMPTS: u32 = 4;

/// Pause before the next attempt after exit 6, times the attempts made so far.
const DATABASE_BACKOFF: Duration = Duration::from_millis(50);

/// One line of `iscsiadm -m session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Session id.
    pub sid: u32,
    /// The portal it is connected to.
    pub portal: Portal,
    /// Target IQN.
    pub target: String,
}

/// Why a login failed, from iscsiadm's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Exit 24: CHAP failed or the initiator is not in the target's ACL.
    Auth,
    /// Exit 19: the target refused the login for good.
    Refused,
    /// Exits 4 and 8: no connection, or the target kept rejecting until the attempts ran out.
    Unreachable,
    /// Exits 18 and 20: iscsid is not running or not answering.
    Iscsid,
    /// Any other exit code.
    Other,
}

impl LoginFailure {
    /// Classifies an iscsiadm login exit code.
    pub fn from_code(code: i32) -> Self {
        match code {
            exit::AUTH_FAILED => LoginFailure::Auth,
            exit::FATAL_LOGIN => LoginFailure::Refused,
            exit::TIMEOUT | exit::TRANSPORT => LoginFailure::Unreachable,
            exit::ISCSID_NOT_CONNECTED | exit::ISCSID_COMM => LoginFailure::Iscsid,
            _ => LoginFailure::Other,
        }
    }
}

impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoginFailure::Auth => "authentication failure (CHAP or ACL): check that the controller and this node use the same CHAP key Secret (the StorageClass's publish and stage secret refs) and that the volume was published to this node's initiator",
            LoginFailure::Refused => "the target refused the login (with mutual CHAP: the target's credentials did not match the key this node derived; check the CHAP key Secret)",
            LoginFailure::Unreachable => "no usable connection (portal unreachable, or the target is not exported there): check the network path to the portal and the volume's export on the storage node",
            LoginFailure::Iscsid => "iscsid is not running or not answering on this node: start it (`systemctl enable --now iscsid`)",
            LoginFailure::Other => "unexpected iscsiadm failure",
        })
    }
}

/// Failures of the initiator layer.
#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    /// `iscsiadm --login` failed.
    #[error("login to {portal} {target} failed: {failure} (iscsiadm exit {code}: {stderr})")]
    Login {
        /// Target IQN.
        target: String,
        /// Portal.
        portal: String,
        /// The classified cause.
        failure: LoginFailure,
        /// iscsiadm's exit code.
        code: i32,
        /// Its trimmed stderr.
        stderr: String,
    },
    /// Another iscsiadm operation failed.
    #[error("cannot {action} for {target}")]
    Command {
        /// What was attempted.
        action: &'static str,
        /// Target IQN (or `*` for the session list).
        target: String,
        /// The tool's error.
        #[source]
        source: ExecError,
    },
    /// `iscsiadm -m session` printed something unexpected.
    #[error("cannot parse `iscsiadm -m session` line `{line}`")]
    Parse {
        /// The line.
        line: String,
    },
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A new session was created.
    New,
    /// A session already existed (exit 15) and is reused.
    Existing,
}

/// The abstract unix socket iscsid listens on for iscsiadm.
pub const ISCSID_SOCKET: &str = "@ISCSIADM_ABSTRACT_NAMESPACE";

/// Whether iscsid listens, from a `/proc/PID/net/unix` table of the network namespace
/// iscsiadm runs in (iscsiadm only needs iscsid for logins and logouts, so listing sessions
/// cannot tell): a socket at [`ISCSID_SOCKET`] with the listening flag `__SO_ACCEPTCON`
/// (00010000; the connections iscsid accepted show the same path without it).
pub fn lists_iscsid(unix_table: &str) -> bool {
    const ACCEPTCON: u32 = 0x0001_0000;
    unix_table.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let listening = f
            .get(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .is_some_and(|flags| flags & ACCEPTCON != 0);
        listening && f.get(7) == Some(&ISCSID_SOCKET)
    })
}

/// Parses `iscsiadm -m session` (`tcp: [SID] ADDRESS:PORT,TPGT IQN (non-flash)`).
pub fn parse_sessions(text: &str) -> Result<Vec<Session>, IscsiError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let err = || IscsiError::Parse {
            line: line.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(_transport), Some(sid), Some(portal), Some(target)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err());
        };
        let sid = sid
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse().ok())
            .ok_or_else(err)?;
        let (portal, _tpgt) = portal.rsplit_once(',').ok_or_else(err)?;
        out.push(Session {
            sid,
            portal: portal.parse().map_err(|_| err())?,
            target: target.to_string(),
        });
    }
    Ok(out)
}

/// iscsiadm, run through a runner (directly or in the host's namespaces). Clones share
/// one record lock, so one value per process serialises all of its RPCs.
#[derive(Clone)]
pub struct Iscsiadm {
    /// Runs iscsiadm.
    runner: SharedRunner,
    /// Held around each call that creates, updates or deletes node records: every
    /// `iscsiadm -m node` walks all of /etc/iscsi/nodes and fails with exit 6 when a record
    /// appears or vanishes under it. It only orders this driver process's calls (with
    /// `--iscsiadm-mode host` iscsiadm runs in the host through nsenter, where an admin or
    /// another tool can still race us): exit 6 is retried for that.
    records: Arc<Mutex<()>>,
}

fn record(target: &str, portal: &Portal) -> Cmd {
    Cmd::new("iscsiadm").args([
        "-m".to_string(),
        "node".into(),
        "-T".into(),
        target.to_string(),
        "-p".into(),
        portal.to_string(),
    ])
}

fn command_error(action: &'static str, target: &str, cmd: &Cmd, out: &Output) -> IscsiError {
    IscsiError::Command {
        action,
        target: target.to_string(),
        source: ExecError::failed(cmd, out),
    }
}

impl Iscsiadm {
    /// iscsiadm through `runner`.
    pub fn new(runner: SharedRunner) -> Self {
        Iscsiadm {
            runner,
            records: Arc::new(Mutex::new(())),
        }
    }

    /// Runs `cmd` (under the record lock when `edits_records`), again after a short pause
    /// while it fails with exit 6, up to [`DATABASE_ATTEMPTS`] times.
    async fn retrying(
        &self,
        action: &'static str,
        target: &str,
        cmd: &Cmd,
        edits_records: bool,
    ) -> Result<Output, IscsiError> {
        let mut attempt = 1;
        loop {
            let out = {
                let _records = if edits_records {
                    Some(self.records.lock().await)
                } else {
                    None
                };
                self.output(action, target, cmd).await?
            };
            if out.code != exit::DATABASE || attempt >= DATABASE_ATTEMPTS {
                return Ok(out);
            }
            tracing::warn!(command = %cmd.display(), attempt, stderr = out.stderr.trim(), "iSCSI node database race (exit 6); retrying");
            tokio::time::sleep(DATABASE_BACKOFF * attempt).await;
            attempt += 1;
        }
    }

    async fn output(
        &self,
        action: &'static str,
        target: &str,
        cmd: &Cmd,
    ) -> Result<Output, IscsiError> {
        self.runner
            .output(cmd)
            .await
            .map_err(|source| IscsiError::Command {
                action,
                target: target.to_string(),
                source,
            })
    }

    /// Runs `cmd` (see [`Self::retrying`]), accepting exit 0 and the codes in `ok`.
    async fn expect(
        &self,
        action: &'static str,
        target: &str,
        cmd: Cmd,
        edits_records: bool,
        ok: &[i32],
    ) -> Result<Output, IscsiError> {
        let out = self.retrying(action, target, &cmd, edits_records).await?;
        if out.success() || ok.contains(&out.code) {
            Ok(out)
        } else {
            Err(command_error(action, target, &cmd, &out))
        }
    }

    /// The logged-in sessions (exit 21 means none).
    pub async fn sessions(&self) -> Result<Vec<Session>, IscsiError> {
        let cmd = Cmd::new("iscsiadm").args(["-m", "session"]);
        let out = self
            .expect("list iSCSI sessions", "*", cmd, false, &[exit::NO_OBJECTS])
            .await?;
        if out.code == exit::NO_OBJECTS {
            return Ok(Vec::new());
        }
        parse_sessions(&out.stdout_str())
    }

    /// Creates (or resets) the node record for `target` at `portal`: manual start-up (the
    /// host must not log in by itself at boot), bounded login attempts, and CHAP (with the
    /// target's mutual credentials) or no authentication.
    pub async fn prepare(
        &self,
        target: &str,
        portal: &Portal,
        chap: Option<&Chap>,
    ) -> Result<(), IscsiError> {
        const ACTION: &str = "create the iSCSI node record";
        let new = record(target, portal).args(["--interface", "default", "-o", "new"]);
        self.expect(ACTION, target, new, true, &[]).await?;
        let mut update = record(target, portal)
            .args(["-o", "update"])
            .args(["-n", "node.startup", "-v", "manual"])
            .args([
                "-n",
                "node.session.initial_login_retry_max",
                "-v",
                LOGIN_RETRIES,
            ]);
        update = match chap {
            None => update.args(["-n", "node.session.auth.authmethod", "-v", "None"]),
            Some(c) => update
                .args(["-n", "node.session.auth.authmethod", "-v", "CHAP"])
                .args(["-n", "node.session.auth.username", "-v", &c.initiator.user])
                .args(["-n", "node.session.auth.password", "-v"])
                .secret_arg(&c.initiator.password)
                .args(["-n", "node.session.auth.username_in", "-v", &c.target.user])
                .args(["-n", "node.session.auth.password_in", "-v"])
                .secret_arg(&c.target.password),
        };
        self.expect(ACTION, target, update, true, &[]).await?;
        Ok(())
    }

    /// Logs in to `target` at `portal`; an existing session is reused, never duplicated.
    /// Runs outside the record lock (a login takes far longer than a record edit) and is
    /// retried after exit 6: iscsiadm logs in with the records it could read even when the
    /// walk failed, so the repeat finds the session and answers "already present".
    pub async fn login(&self, target: &str, portal: &Portal) -> Result<Login, IscsiError> {
        let cmd = record(target, portal).arg("--login").timeout(LOGIN_TIMEOUT);
        let out = self.retrying("log in", target, &cmd, false).await?;
        match out.code {
            0 => Ok(Login::New),
            exit::SESSION_EXISTS => Ok(Login::Existing),
            code => Err(IscsiError::Login {
                target: target.to_string(),
                portal: portal.to_string(),
                failure: LoginFailure::from_code(code),
                code,
                stderr: out.trimmed_stderr(),
            }),
        }
    }

    /// Logs out every session to `target` (and only to it); none is fine.
    pub async fn logout(&self, target: &str) -> Result<(), IscsiError> {
        let cmd = Cmd::new("iscsiadm").args(["-m", "node", "-T", target, "--logout"]);
        self.expect("log out", target, cmd, false, &[exit::NO_OBJECTS])
            .await
            .map(drop)
    }

    /// Deletes every node record of `target`; none is fine.
    pub async fn delete_records(&self, target: &str) -> Result<(), IscsiError> {
        let cmd = Cmd::new("iscsiadm").args(["-m", "node", "-T", target, "-o", "delete"]);
        self.expect(
            "delete the iSCSI node records",
            target,
            cmd,
            true,
            &[exit::NO_OBJECTS],
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeRunner;
    use std::sync::Arc;

    /// `iscsiadm -m session` output captured in the lab (open-iscsi 2.1.8).
    #[test]
    fn parses_real_session_lists() {
        let s = parse_sessions(include_str!("testdata/iscsiadm-session.txt")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].sid, 2);
        assert_eq!(s[0].portal.to_string(), "127.0.0.1:3260");
        assert_eq!(s[1].target, "iqn.2026-11.io.csi.lvm-iscsi:vg.lv2");
        let v6 = parse_sessions(include_str!("testdata/iscsiadm-session-ipv6.txt")).unwrap();
        assert_eq!(v6[1].portal.host(), "::1");
        assert!(parse_sessions("").unwrap().is_empty());
        assert!(parse_sessions("tcp: 2 x").is_err());
        assert!(parse_sessions("tcp: [x] 1.2.3.4:3260,1 iqn.a:b").is_err());
    }

    fn fake(
        f: impl Fn(&[String]) -> Output + Send + Sync + 'static,
    ) -> (Arc<FakeRunner>, Iscsiadm) {
        let r = Arc::new(FakeRunner::new(f));
        (r.clone(), Iscsiadm::new(r))
    }

    #[tokio::test]
    async fn no_sessions_is_an_empty_list() {
        let (_, i) = fake(|_| Output::failed(21, "iscsiadm: No active sessions.\n"));
        assert!(i.sessions().await.unwrap().is_empty());
        let (_, i) = fake(|_| Output::failed(6, "iscsiadm: database error\n"));
        assert!(i.sessions().await.is_err());
    }

    #[tokio::test]
    async fn prepare_sets_manual_startup_and_chap_with_secrets_redacted() {
        let (r, i) = fake(|_| Output::ok(""));
        let chap = crate::domain::chap::derive(b"0123456789abcdef", "vg/a", "iqn.2000-01.x:n1");
        let p: Portal = "[fd00::1]:3260".parse().unwrap();
        i.prepare("iqn.t:a", &p, Some(&chap)).await.unwrap();
        let calls = r.calls();
        assert_eq!(
            calls[0],
            "iscsiadm -m node -T iqn.t:a -p [fd00::1]:3260 --interface default -o new"
        );
        let update = &calls[1];
        for want in [
            "-n node.startup -v manual",
            "-n node.session.auth.authmethod -v CHAP",
            &format!("-n node.session.auth.username -v {}", chap.initiator.user),
            &format!(
                "-n node.session.auth.password -v {}",
                chap.initiator.password
            ),
            &format!("-n node.session.auth.username_in -v {}", chap.target.user),
            &format!(
                "-n node.session.auth.password_in -v {}",
                chap.target.password
            ),
        ] {
            assert!(update.contains(want), "{want} missing in {update}");
        }
        // What may be logged never holds a password.
        let (_, failing) = fake(|_| Output::failed(6, "db locked"));
        let err = failing
            .prepare("iqn.t:a", &p, Some(&chap))
            .await
            .unwrap_err();
        let msg = crate::error::full_message(&err);
        assert!(!msg.contains(&chap.initiator.password), "{msg}");
        r.clear();
        i.prepare("iqn.t:a", &p, None).await.unwrap();
        assert!(r.calls()[1].contains("-n node.session.auth.authmethod -v None"));
    }

    #[tokio::test]
    async fn login_reuses_sessions_and_classifies_failures() {
        let p: Portal = "10.0.0.5:3260".parse().unwrap();
        let (r, i) = fake(|_| Output::ok("Login to [...] successful.\n"));
        assert_eq!(i.login("iqn.t:a", &p).await.unwrap(), Login::New);
        assert_eq!(
            r.calls()[0],
            "iscsiadm -m node -T iqn.t:a -p 10.0.0.5:3260 --login"
        );
        let (_, i) = fake(|_| {
            Output::failed(
                15,
                "iscsiadm: default: 1 session requested, but 1 already present.\n",
            )
        });
        assert_eq!(i.login("iqn.t:a", &p).await.unwrap(), Login::Existing);
        for (code, want) in [
            (24, LoginFailure::Auth),
            (19, LoginFailure::Refused),
            (8, LoginFailure::Unreachable),
            (20, LoginFailure::Iscsid),
            (1, LoginFailure::Other),
        ] {
            let (_, i) = fake(move |_| {
                Output::failed(code, "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n")
            });
            let err = i.login("iqn.t:a", &p).await.unwrap_err();
            let IscsiError::Login { failure, .. } = &err else {
                panic!("{err}")
            };
            assert_eq!(*failure, want);
            let msg = err.to_string();
            assert!(
                msg.contains("10.0.0.5:3260") && msg.contains("iqn.t:a"),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn logout_and_delete_accept_nothing_there() {
        let (r, i) = fake(|_| Output::failed(21, "iscsiadm: No matching sessions found\n"));
        i.logout("iqn.t:a").await.unwrap();
        i.delete_records("iqn.t:a").await.unwrap();
        assert_eq!(
            r.calls(),
            [
                "iscsiadm -m node -T iqn.t:a --logout",
                "iscsiadm -m node -T iqn.t:a -o delete"
            ]
        );
        let (_, i) = fake(|_| Output::failed(6, "iscsiadm: Could not lock the database\n"));
        assert!(i.logout("iqn.t:a").await.is_err());
        assert!(i.delete_records("iqn.t:a").await.is_err());
    }

    /// A fake whose first `races` calls fail with exit 6, as when another iscsiadm adds or
    /// removes a record meanwhile.
    fn racing(races: usize, then: Output) -> (Arc<FakeRunner>, Iscsiadm) {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        fake(move |_| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < races {
                Output::failed(6, "iscsiadm: encountered iSCSI database failure\n")
            } else {
                then.clone()
            }
        })
    }

    #[tokio::test]
    async fn database_races_are_retried_a_few_times() {
        let p: Portal = "10.0.0.5:3260".parse().unwrap();
        let (r, i) = racing(2, Output::ok(""));
        i.prepare("iqn.t:a", &p, None).await.unwrap();
        assert_eq!(r.calls().len(), 4, "new three times, then update");
        let (r, i) = racing(1, Output::failed(15, "1 already present\n"));
        assert_eq!(i.login("iqn.t:a", &p).await.unwrap(), Login::Existing);
        assert_eq!(r.calls().len(), 2);
        let (r, i) = racing(usize::MAX, Output::ok(""));
        let err = i.delete_records("iqn.t:a").await.unwrap_err();
        assert!(err.to_string().contains("iqn.t:a"), "{err}");
        assert_eq!(r.calls().len(), DATABASE_ATTEMPTS as usize, "bounded");
        let (r, i) = racing(usize::MAX, Output::ok(""));
        let err = i.login("iqn.t:a", &p).await.unwrap_err();
        assert!(matches!(err, IscsiError::Login { code: 6, .. }), "{err}");
        assert_eq!(r.calls().len(), DATABASE_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn record_edits_of_all_clones_take_turns_and_logins_do_not_wait() {
        let i = Iscsiadm::new(Arc::new(FakeRunner::new(|_| Output::ok(""))));
        let held = i.clone().records.lock_owned().await;
        let p: Portal = "10.0.0.5:3260".parse().unwrap();
        i.login("iqn.t:a", &p).await.unwrap();
        let edit = tokio::time::timeout(Duration::from_millis(50), i.delete_records("iqn.t:b"));
        assert!(edit.await.is_err(), "an edit waits for the lock");
        drop(held);
        i.delete_records("iqn.t:b").await.unwrap();
    }

    #[test]
    fn iscsid_socket_is_looked_up_in_proc_net_unix() {
        // /proc/net/unix in the lab guest with iscsid running.
        let up = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01   496 @ISCSIADM_ABSTRACT_NAMESPACE\n";
        assert!(lists_iscsid(up));
        assert!(!lists_iscsid(
            "Num RefCount Protocol Flags Type St Inode Path\n"
        ));
        assert!(!lists_iscsid(
            "0: 2 0 0 1 1 9 @ISCSIADM_ABSTRACT_NAMESPACE_OTHER\n"
        ));
        // From the lab: udev's control socket, iscsid's, and a connected one; then iscsid's
        // path on a socket that does not listen.
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000039f5bca1: 00000002 00000000 00010000 0005 01 10977 /run/udev/control
00000000b7dced45: 00000003 00000000 00000000 0002 03 10980
0000000045e726f8: 00000002 00000000 00010000 0001 01 11040 @ISCSIADM_ABSTRACT_NAMESPACE
";
        assert!(lists_iscsid(table));
        assert!(!lists_iscsid(&table.replace(ISCSID_SOCKET, "@other")));
        assert!(!lists_iscsid(
            &table.replace("00010000 0001 01 11040", "00000000 0001 03 11040")
        ));
    }
}
