//! iSCSI portals, `ADDRESS[:PORT]`: the one parser for the command line (`--portal`),
//! publish_context, `iscsiadm -m session` and sysfs.
//!
//! It replaced three: the node's (kept as it was), doctor's (which also took an IPv6
//! address without brackets, ambiguous with a port, now refused) and the export backends'
//! (which needed an explicit port, now 3260 by default). The backends listen on addresses,
//! so `--portal` refuses host names at start-up ([`parse_listen_portal`]); before, the first
//! ControllerPublishVolume failed on them.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The iSCSI port (RFC 3720) when a portal names none.
pub const DEFAULT_PORT: u16 = 3260;

/// An iSCSI portal: a host (name, IPv4 or IPv6 address) and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Portal {
    /// Host name, IPv4 or IPv6 address (IPv6 without brackets).
    host: String,
    /// TCP port, never 0.
    port: u16,
}

/// Why a string is not a portal (a sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("portal `{}` {reason}", portal.escape_debug())]
pub struct PortalError {
    /// The string.
    pub portal: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Portal {
    /// The host: a name or an address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address, when the host is an IP address rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The socket address, when the host is an IP address (a target listens on addresses,
    /// not names).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Whether `text` is this portal's text form, without formatting it.
    fn is_written(&self, text: &str) -> bool {
        let port = if self.host.contains(':') {
            text.strip_prefix('[')
                .and_then(|t| t.strip_prefix(self.host.as_str()))
                .and_then(|t| t.strip_prefix("]:"))
        } else {
            text.strip_prefix(self.host.as_str())
                .and_then(|t| t.strip_prefix(':'))
        };
        port.is_some_and(|p| {
            p.bytes().next().is_some_and(|b| (b'1'..=b'9').contains(&b))
                && p.parse() == Ok(self.port)
        })
    }

    /// Whether both name the same endpoint (IP addresses compared as addresses).
    pub fn same(&self, other: &Portal) -> bool {
        if self.port != other.port {
            return false;
        }
        match (self.ip(), other.ip()) {
            (Some(a), Some(b)) => a == b,
            _ => self.host.eq_ignore_ascii_case(&other.host),
        }
    }
}

impl FromStr for Portal {
    type Err = PortalError;

    /// `ADDRESS:PORT`, `[IPv6]:PORT`, or an address alone ([`DEFAULT_PORT`]). An IPv6
    /// address without brackets is refused: its last group could be read as the port.
    fn from_str(s: &str) -> Result<Self, PortalError> {
        let bad = |reason| PortalError {
            portal: s.to_string(),
            reason,
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("lacks `]`"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad("has an invalid IPv6 address"));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("needs `:` after `]`"))?,
                    ),
                ),
            }
        } else {
            match s.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => return Err(bad("is IPv6: write it as [ADDRESS]:PORT")),
                None => (s, None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(bad("has an invalid address"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has an invalid port"))?,
        };
        Ok(Portal {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Portal {
    /// `ADDRESS:PORT`, `[IPv6]:PORT`: the form iscsiadm, tgtd and publish_context use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Compares with the text form ([`Display`](fmt::Display)): `10.0.0.5` is not
/// `10.0.0.5:3260`.
impl PartialEq<&str> for Portal {
    fn eq(&self, other: &&str) -> bool {
        self.is_written(other)
    }
}

impl PartialEq<String> for Portal {
    fn eq(&self, other: &String) -> bool {
        self.is_written(other)
    }
}

/// The clap value parser of `--portal`: a portal a target can listen on (an IP address,
/// not a host name), so a bad one stops start-up instead of the first publish.
pub fn parse_listen_portal(s: &str) -> Result<Portal, String> {
    let portal: Portal = s.parse().map_err(|e: PortalError| e.to_string())?;
    if portal.ip().is_none() {
        return Err(format!(
            "portal `{s}` names a host: give an IP address (the target listens on addresses, not host names)"
        ));
    }
    Ok(portal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Portal {
        s.parse().unwrap()
    }

    #[test]
    fn portals() {
        let v4 = p("10.0.0.5:3260");
        assert_eq!((v4.host(), v4.port()), ("10.0.0.5", 3260));
        let v6 = p("[fd00::5]:3261");
        assert_eq!((v6.host(), v6.port()), ("fd00::5", 3261));
        assert_eq!(v6.to_string(), "[fd00::5]:3261");
        assert_eq!(p("storage-1").port(), DEFAULT_PORT);
        assert_eq!(p("10.0.0.5").to_string(), "10.0.0.5:3260");
        assert_eq!(p("10.0.0.5"), "10.0.0.5:3260");
        assert_ne!(p("10.0.0.5"), "10.0.0.5");
        assert_ne!(p("10.0.0.5"), "10.0.0.5:03260");
        assert_eq!(p("[fd00::5]:3261"), "[fd00::5]:3261".to_string());
        assert_ne!(p("[fd00::5]:3261"), "fd00::5:3261");
        assert_eq!(p("[::1]").to_string(), "[::1]:3260");
        for bad in [
            "",
            "a:0",
            "a:99999",
            "[zz]:1",
            "a b:1",
            "a;rm:1",
            "x:y",
            "fd00::5:3260",
            "::1",
            "10.0.0.5:x",
            "10.0.0.5:0",
            "10.0.0.5:70000",
            "[::1]3260",
            "[::1",
            "[nope]:3260",
            "a b:3260",
            "a/b:3260",
            "a;b",
            "10.0.0.5:3260\n",
        ] {
            assert!(bad.parse::<Portal>().is_err(), "{bad:?}");
        }
        assert!(p("[::1]:3260").same(&p("[0:0:0:0:0:0:0:1]:3260")));
        assert!(p("Storage:3260").same(&p("storage:3260")));
        assert!(!p("[::1]:3260").same(&p("[::1]:3261")));
    }

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            p("10.0.0.5:3261").socket_addr(),
            Some("10.0.0.5:3261".parse().unwrap())
        );
        assert_eq!(
            p("[::1]:3260").socket_addr(),
            Some("[::1]:3260".parse().unwrap())
        );
        assert_eq!(p("10.0.0.5").ip(), Some("10.0.0.5".parse().unwrap()));
        let named = p("storage.example:3262");
        assert_eq!((named.ip(), named.port()), (None, 3262));
        assert_eq!(named.socket_addr(), None);
    }

    #[test]
    fn listen_portals_are_addresses() {
        assert_eq!(parse_listen_portal("0.0.0.0:3260"), Ok(p("0.0.0.0:3260")));
        assert_eq!(parse_listen_portal("[fd00::5]"), Ok(p("[fd00::5]:3260")));
        let named = parse_listen_portal("storage.example.com:3260").unwrap_err();
        assert!(named.contains("IP address"), "{named}");
        assert!(parse_listen_portal("10.0.0.1:x").is_err());
    }

    #[test]
    fn portals_captured_from_real_tools() {
        // `iscsiadm -m session` (src/node/testdata) and `tgtadm --op show --mode portal`
        // (src/export/tgt/testdata): `ADDRESS:PORT,TPGT`.
        let sessions = [
            include_str!("../node/testdata/iscsiadm-session.txt"),
            include_str!("../node/testdata/iscsiadm-session-ipv6.txt"),
        ];
        let from_sessions = sessions
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.split_whitespace().nth(2));
        let from_tgt = include_str!("../export/tgt/testdata/show-portal.txt")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Portal: "));
        let all: Vec<Portal> = from_sessions
            .chain(from_tgt)
            .map(|field| p(field.split(',').next().unwrap()))
            .collect();
        assert!(all.len() >= 5, "{all:?}");
        assert!(all.iter().all(|p| p.ip().is_some()));
        assert!(all.iter().any(|p| p.host() == "::1"));
        assert!(all.iter().any(|p| *p == "127.0.0.1:3261"));
    }
}
