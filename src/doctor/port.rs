//! The portal port check of `doctor storage`: the port is free, or held by the configured
//! target. LIO listens from the kernel, so no process holds its socket; tgt listens as
//! tgtd; anything else is named with its pid.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::procfs::{self, Listener};
use super::{read, Finding, Host};
use crate::cli::TargetBackendKind;
use crate::domain::Portal;

/// Whether a listener bound to `listening` takes connections meant for `portal`.
fn overlaps(listening: IpAddr, portal: Option<IpAddr>) -> bool {
    match portal {
        None => true,
        Some(p) => listening.is_unspecified() || p.is_unspecified() || listening == p,
    }
}

/// The process (pid, command name) holding socket `inode`, found through `/proc/*/fd`;
/// `None` for a socket no process holds (the kernel's own, like LIO's portals).
fn socket_owner(proc_root: &Path, inode: u64) -> Option<(u32, String)> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| procfs::socket_inode(&l.to_string_lossy()))
                == Some(inode)
        });
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            return Some((pid, comm));
        }
    }
    None
}

/// The portal port is free, or held by the configured target.
pub(super) fn portal_port(
    host: &Host,
    portal: Option<&Portal>,
    backend: TargetBackendKind,
) -> Finding {
    const NAME: &str = "portal-port";
    let Some(portal) = portal else {
        return Finding::fail(NAME, "no portal given", "pass --portal ADDRESS:PORT");
    };
    // A host name is not resolved: any listener on the port may take its connections.
    let (addr, port) = (portal.ip(), portal.port());
    let mut listeners: Vec<Listener> = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        // tcp6 is absent on hosts without IPv6; tcp alone is enough there.
        if let Ok(t) = read(&host.proc(table)) {
            listeners.extend(procfs::tcp_listeners(&t));
        }
    }
    listeners.retain(|l| l.port == port && overlaps(l.addr, addr));
    let Some(first) = listeners.first() else {
        return match backend {
            TargetBackendKind::Lio => Finding::ok(NAME, format!("port {port} is free")),
            TargetBackendKind::Tgt => Finding::warn(
                NAME,
                format!("nothing listens on port {port}"),
                "tgtd listens on its portals when running: check tgtd's iscsi portal setting",
            ),
        };
    };
    let at = SocketAddr::new(first.addr, port);
    let owner = socket_owner(&host.proc_root, first.inode);
    match (owner, backend) {
        (None, TargetBackendKind::Lio) => Finding::ok(
            NAME,
            format!("{at} is held by the kernel target (LIO; no process owns the socket)"),
        ),
        (None, TargetBackendKind::Tgt) => Finding::fail(
            NAME,
            format!("{at} is held by the kernel (LIO portals), not by tgtd"),
            "remove the LIO portals (targetcli clearconfig confirm=True) or use --target-backend lio",
        ),
        (Some((pid, comm)), TargetBackendKind::Tgt) if comm == "tgtd" => {
            Finding::ok(NAME, format!("{at} is held by tgtd (pid {pid})"))
        }
        (Some((pid, comm)), TargetBackendKind::Lio) if comm == "tgtd" => Finding::fail(
            NAME,
            format!("tgtd (pid {pid}) listens on {at}; LIO cannot bind its portal"),
            "stop tgt (systemctl disable --now tgt) or use --target-backend tgt",
        ),
        (Some((pid, comm)), _) => Finding::fail(
            NAME,
            format!("{comm} (pid {pid}) listens on {at}"),
            format!("stop {comm} or give the portal another port"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_overlap() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("0.0.0.0"), Some(ip("10.0.0.5"))));
        assert!(overlaps(ip("10.0.0.5"), Some(ip("0.0.0.0"))));
        assert!(!overlaps(ip("127.0.0.1"), Some(ip("10.0.0.5"))));
        assert!(overlaps(ip("127.0.0.1"), None));
    }
}
