//! Pure parsers for `tgtadm --op show` output (tgt 1.0.85, Debian bookworm), tested on
//! samples captured from a real tgtd.
//!
//! `--mode target` prints, per target, a `Target <tid>: <name>` line and indented sections
//! (4 spaces for a section title, 8 and more for its content):
//!
//! ```text
//! Target 1: iqn.2026-11.io.csi.lvm-iscsi:csivg.v1
//!     I_T nexus information:
//!         I_T nexus: 1
//!             Initiator: iqn.1993-08.org.debian:01:abc alias: (none)
//!             Connection: 0
//!     LUN information:
//!         LUN: 1
//!             Type: disk
//!             Backing store path: /dev/loop1
//!     Account information:
//!         csi-u1
//!         csi-m1 (outgoing)
//!     ACL information:
//!         iqn.1993-08.org.debian:01:abc
//! ```

use std::net::SocketAddr;

use crate::domain::iqn::is_iqn;
use crate::export::TargetError;

/// One tgt target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Target id (tgt's handle for every other command).
    pub tid: u32,
    /// Target IQN.
    pub name: String,
    /// Logged-in sessions.
    pub nexuses: Vec<Nexus>,
    /// Logical units (LUN 0 is tgt's own controller LUN).
    pub luns: Vec<Lun>,
    /// CHAP accounts bound to the target.
    pub accounts: Vec<Account>,
    /// ACL entries: initiator names and initiator addresses (`ALL`, `10.0.0.0/24`), in
    /// one list as tgt prints them.
    pub acls: Vec<String>,
}

/// One session (I_T nexus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexus {
    /// Session id (`--sid`).
    pub sid: u64,
    /// The initiator's IQN.
    pub initiator: String,
    /// Connection ids (`--cid`).
    pub connections: Vec<u64>,
}

/// One logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    /// LUN number.
    pub lun: u32,
    /// Device type (`disk`, `controller`...).
    pub kind: String,
    /// SCSI ID (VPD page 0x83).
    pub scsi_id: String,
    /// SCSI serial number (VPD page 0x80).
    pub scsi_sn: String,
    /// Backing store path; `None` for tgt's controller LUN.
    pub path: Option<String>,
    /// The size tgtd reports, in its own "MB" ([`disk_size_mb`]); read when the backing
    /// store was opened, never again.
    pub size_mb: Option<u64>,
}

/// The "MB" figure `tgtadm --op show` prints for a LUN of `bytes` bytes (tgt's
/// `print_disksize`, an approximation of bytes / 10^6, reproduced with its unsigned
/// arithmetic).
pub fn disk_size_mb(bytes: u64) -> u64 {
    let sectors = bytes / 512;
    sectors.wrapping_sub((sectors / 625).wrapping_sub(974)) / 1950
}

/// A CHAP account bound to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Whether it is the target's outgoing (mutual CHAP) account.
    pub outgoing: bool,
}

impl Target {
    /// The logical unit `lun`, if configured.
    pub fn lun(&self, lun: u32) -> Option<&Lun> {
        self.luns.iter().find(|l| l.lun == lun)
    }

    /// ACL entries that are initiator names (not addresses). The one iSCSI name rule decides;
    /// it used to be only the `iqn.`/`eui.`/`naa.` prefix, which also let malformed names
    /// through: our ACLs hold only names the controller checked with the same rule.
    pub fn initiators(&self) -> impl Iterator<Item = &str> {
        self.acls.iter().map(String::as_str).filter(|a| is_iqn(a))
    }
}

#[derive(Clone, Copy)]
enum Section {
    Other,
    Nexus,
    Lun,
    Account,
    Acl,
}

fn bad(what: &'static str, n: usize, line: &str) -> TargetError {
    TargetError::Parse {
        what,
        detail: format!("line {}: {line:?}", n + 1),
    }
}

/// Parses `tgtadm --lld iscsi --op show --mode target`.
pub fn parse_targets(text: &str) -> Result<Vec<Target>, TargetError> {
    const WHAT: &str = "tgtadm --op show --mode target output";
    let mut targets: Vec<Target> = Vec::new();
    let mut section = Section::Other;
    for (n, line) in text.lines().enumerate() {
        let item = line.trim();
        if item.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            let (tid, name) = line
                .strip_prefix("Target ")
                .and_then(|rest| rest.split_once(": "))
                .ok_or_else(|| bad(WHAT, n, line))?;
            targets.push(Target {
                tid: tid.parse().map_err(|_| bad(WHAT, n, line))?,
                name: name.trim().to_string(),
                nexuses: Vec::new(),
                luns: Vec::new(),
                accounts: Vec::new(),
                acls: Vec::new(),
            });
            section = Section::Other;
            continue;
        }
        let target = targets.last_mut().ok_or_else(|| bad(WHAT, n, line))?;
        if indent <= 4 {
            section = match item {
                "I_T nexus information:" => Section::Nexus,
                "LUN information:" => Section::Lun,
                "Account information:" => Section::Account,
                "ACL information:" => Section::Acl,
                _ => Section::Other,
            };
            continue;
        }
        let field = |key: &str| item.strip_prefix(key).map(str::trim);
        match section {
            Section::Other => {}
            Section::Account => target
                .accounts
                .push(match item.strip_suffix(" (outgoing)") {
                    Some(user) => Account {
                        user: user.to_string(),
                        outgoing: true,
                    },
                    None => Account {
                        user: item.to_string(),
                        outgoing: false,
                    },
                }),
            Section::Acl => target.acls.push(item.to_string()),
            Section::Nexus => {
                if let Some(sid) = field("I_T nexus:") {
                    target.nexuses.push(Nexus {
                        sid: sid.parse().map_err(|_| bad(WHAT, n, line))?,
                        initiator: String::new(),
                        connections: Vec::new(),
                    });
                    continue;
                }
                let nexus = target
                    .nexuses
                    .last_mut()
                    .ok_or_else(|| bad(WHAT, n, line))?;
                if let Some(rest) = field("Initiator:") {
                    let name = rest.split_once(" alias:").map_or(rest, |(name, _)| name);
                    nexus.initiator = name.trim().to_string();
                } else if let Some(cid) = field("Connection:") {
                    nexus
                        .connections
                        .push(cid.parse().map_err(|_| bad(WHAT, n, line))?);
                }
            }
            Section::Lun => {
                if let Some(lun) = field("LUN:") {
                    target.luns.push(Lun {
                        lun: lun.parse().map_err(|_| bad(WHAT, n, line))?,
                        kind: String::new(),
                        scsi_id: String::new(),
                        scsi_sn: String::new(),
                        path: None,
                        size_mb: None,
                    });
                    continue;
                }
                let lun = target.luns.last_mut().ok_or_else(|| bad(WHAT, n, line))?;
                if let Some(v) = field("Type:") {
                    lun.kind = v.to_string();
                } else if let Some(v) = field("SCSI ID:") {
                    lun.scsi_id = v.to_string();
                } else if let Some(v) = field("SCSI SN:") {
                    lun.scsi_sn = v.to_string();
                } else if let Some(v) = field("Size:") {
                    // `Size: 134 MB, Block size: 512`
                    lun.size_mb = v
                        .split_once(" MB")
                        .and_then(|(mb, _)| mb.trim().parse().ok());
                } else if let Some(v) = field("Backing store path:") {
                    lun.path = (v != "None" && !v.is_empty()).then(|| v.to_string());
                }
            }
        }
    }
    Ok(targets)
}

/// Parses `tgtadm --lld iscsi --op show --mode portal`: `Portal: ADDR:PORT,TPGT` lines.
pub fn parse_portals(text: &str) -> Result<Vec<SocketAddr>, TargetError> {
    const WHAT: &str = "tgtadm --op show --mode portal output";
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            line.trim()
                .strip_prefix("Portal:")
                .map(|rest| rest.trim().rsplit_once(',').map_or(rest.trim(), |(a, _)| a))
                .and_then(|addr| addr.parse().ok())
                .ok_or_else(|| bad(WHAT, n, line))
        })
        .collect()
}

/// Parses `tgtadm --lld iscsi --op show --mode account`: the account names.
pub fn parse_accounts(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Account list:")
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three targets, captured from tgtd: ours with a session, LUN 1, a bound account, a
    /// mutual account and two initiator ACLs; another program's with an address ACL; ours
    /// without LUN or ACL.
    const SHOW: &str = include_str!("testdata/show-target.txt");

    #[test]
    fn parses_a_real_listing() {
        let t = parse_targets(SHOW).unwrap();
        assert_eq!(t.len(), 3);
        let ours = &t[0];
        assert_eq!(ours.tid, 1);
        assert_eq!(ours.name, "iqn.2026-11.io.csi.lvm-iscsi:csivg.v1");
        assert_eq!(
            ours.nexuses,
            vec![Nexus {
                sid: 1,
                initiator: "iqn.1993-08.org.debian:01:5c8d368c2ff3".into(),
                connections: vec![0],
            }]
        );
        assert_eq!(ours.luns.len(), 2);
        assert_eq!(ours.luns[0].kind, "controller");
        assert_eq!(ours.luns[0].path, None);
        let lun = ours.lun(1).unwrap();
        assert_eq!(lun.kind, "disk");
        assert_eq!(lun.path.as_deref(), Some("/dev/loop1"));
        assert_eq!(lun.scsi_sn, "0123456789abcdef0123456789abcdef");
        assert_eq!(lun.scsi_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(lun.size_mb, Some(34));
        assert_eq!(ours.luns[0].size_mb, Some(0));
        assert_eq!(
            ours.accounts,
            vec![
                Account {
                    user: "csi-u1".into(),
                    outgoing: false
                },
                Account {
                    user: "csi-m1".into(),
                    outgoing: true
                },
            ]
        );
        assert_eq!(
            ours.initiators().collect::<Vec<_>>(),
            [
                "iqn.1993-08.org.debian:01:5c8d368c2ff3",
                "iqn.2000-01.com.example:other"
            ]
        );

        let foreign = &t[1];
        assert_eq!(
            (foreign.tid, foreign.name.as_str()),
            (2, "iqn.2003-01.org.other:foreign")
        );
        assert_eq!(foreign.acls, ["ALL"]);
        assert_eq!(foreign.initiators().count(), 0);
        assert_eq!(foreign.lun(1).unwrap().scsi_id, "IET     00020001");

        let empty = &t[2];
        assert_eq!(empty.tid, 3);
        assert!(empty.lun(1).is_none() && empty.acls.is_empty() && empty.accounts.is_empty());
    }

    #[test]
    fn disk_size_is_tgts_own_megabytes() {
        // Seen in the lab (tgt 1.0.85): 64 MiB shows as 67 MB, 128 MiB as 134 MB.
        assert_eq!(disk_size_mb(64 << 20), 67);
        assert_eq!(disk_size_mb(128 << 20), 134);
        assert_eq!(disk_size_mb(0), 0);
        // Every extent (4 MiB) of growth changes the figure.
        assert_ne!(disk_size_mb((1 << 30) + (4 << 20)), disk_size_mb(1 << 30));
    }

    #[test]
    fn parses_a_listing_after_a_delete() {
        let t = parse_targets(include_str!("testdata/show-target-foreign.txt")).unwrap();
        let tids: Vec<u32> = t.iter().map(|t| t.tid).collect();
        assert_eq!(tids, [2, 3]);
        assert!(parse_targets("").unwrap().is_empty());
    }

    #[test]
    fn rejects_garbage_instead_of_guessing() {
        for bad in [
            "    LUN information:\n",
            "Target x: iqn.a:b\n",
            "Target 1 iqn.a:b\n",
            "Target 1: iqn.a:b\n    LUN information:\n        LUN: one\n",
            "Target 1: iqn.a:b\n    I_T nexus information:\n            Connection: 0\n",
        ] {
            let err = parse_targets(bad).unwrap_err();
            assert!(matches!(err, TargetError::Parse { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn parses_portals_and_accounts() {
        let p = parse_portals(include_str!("testdata/show-portal.txt")).unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:3261", "[::]:3260", "0.0.0.0:3260"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(p, want);
        assert!(parse_portals("Portal: nonsense\n").is_err());
        assert_eq!(
            parse_accounts(include_str!("testdata/show-account.txt")),
            ["csi-m2", "csi-m1", "csi-u1"]
        );
        assert!(parse_accounts("Account list:\n").is_empty());
    }
}
