//! Pure parsers for the kernel tables the checks read: `/proc/mounts`, `/proc/modules`,
//! `/proc/net/tcp{,6}`, `/proc/net/unix`, `/proc/<pid>/fd` links, and the open-iscsi
//! initiator name file (the name itself is checked by [`crate::domain::Iqn`]). Each takes
//! the file's text and is tested on real samples.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The abstract unix socket iscsid listens on for iscsiadm (open-iscsi's IPC).
pub const ISCSID_SOCKET: &str = "@ISCSIADM_ABSTRACT_NAMESPACE";

/// Whether `/proc/mounts` has a configfs mount at `mountpoint`.
pub fn configfs_mounted(mounts: &str, mountpoint: &str) -> bool {
    mounts.lines().any(|line| {
        let mut f = line.split_whitespace();
        let (_source, point, fstype) = (f.next(), f.next(), f.next());
        point == Some(mountpoint) && fstype == Some("configfs")
    })
}

/// Whether `/proc/modules` lists module `name`.
pub fn module_listed(modules: &str, name: &str) -> bool {
    modules
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// A listening TCP socket from `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The local address.
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode (links in `/proc/<pid>/fd` name it `socket:[inode]`).
    pub inode: u64,
}

/// The sockets in LISTEN state (`st` 0A) of a `/proc/net/tcp{,6}` table; malformed lines
/// are skipped.
pub fn tcp_listeners(table: &str) -> Vec<Listener> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&LISTEN) {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            Some(Listener {
                addr: kernel_ip(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as the kernel prints it in `/proc/net/tcp{,6}`: the network-order bytes read
/// as native 32-bit words, each printed in hex.
fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The socket inode a `/proc/<pid>/fd/<n>` link points to (`socket:[12345]`), if any.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether a `/proc/net/unix` table has a listening socket at `path` (abstract names start
/// with `@`). Listening sockets carry the `__SO_ACCEPTCON` flag (00010000).
pub fn unix_listening(table: &str, path: &str) -> bool {
    const ACCEPTCON: u32 = 0x0001_0000;
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let listening = f
            .get(3)
            .and_then(|flags| u32::from_str_radix(flags, 16).ok())
            .is_some_and(|flags| flags & ACCEPTCON != 0);
        listening && f.get(7) == Some(&path)
    })
}

/// What the initiator name file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorName {
    /// `InitiatorName=<name>` (the value, not yet validated).
    Named(String),
    /// Only `GenerateName=yes`: the packaging asks for a name to be generated at first start.
    ToGenerate,
    /// Neither line.
    Missing,
}

/// Parses `/etc/iscsi/initiatorname.iscsi` (comments start with `#`).
pub fn initiator_name(text: &str) -> InitiatorName {
    let mut generate = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("InitiatorName=") {
            return InitiatorName::Named(name.trim().to_string());
        }
        if line.eq_ignore_ascii_case("GenerateName=yes") {
            generate = true;
        }
    }
    if generate {
        InitiatorName::ToGenerate
    } else {
        InitiatorName::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured in the kernel lab (Debian 6.1) after creating an LIO portal 0.0.0.0:3260.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0CBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11157 1 0000000007466374 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 12001 1 0000000007466374 100 0 0 10 0
   2: 0500000A:0CBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12002 1 0000000007466374 100 0 0 10 0
";

    /// A tcp6 table with `[::1]:3260` and `[::]:9808` listening.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0CBC 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:2650 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3002 1 0000000000000000 100 0 0 10 0
";

    /// From the lab: udev's control socket and iscsid's abstract socket, and a connected one.
    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000039f5bca1: 00000002 00000000 00010000 0005 01 10977 /run/udev/control
00000000b7dced45: 00000003 00000000 00000000 0002 03 10980
0000000045e726f8: 00000002 00000000 00010000 0001 01 11040 @ISCSIADM_ABSTRACT_NAMESPACE
0000000045e726f9: 00000002 00000000 00000000 0001 03 11041 @not_listening
";

    /// From the lab (Debian open-iscsi package).
    const INITIATOR: &str = "## DO NOT EDIT OR REMOVE THIS FILE!
## If you remove this file, the iSCSI daemon will not start.
InitiatorName=iqn.1993-08.org.debian:01:5c8d368c2ff3
";

    #[test]
    fn parses_listening_sockets_only() {
        let l = tcp_listeners(TCP);
        assert_eq!(
            l,
            vec![
                Listener {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 3260,
                    inode: 11157
                },
                Listener {
                    addr: "10.0.0.5".parse().unwrap(),
                    port: 3260,
                    inode: 12002
                },
            ]
        );
        let l6 = tcp_listeners(TCP6);
        assert_eq!(l6[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((l6[1].port, l6[1].inode), (9808, 3002));
        assert!(tcp_listeners("header\n garbage line\n").is_empty());
    }

    #[test]
    fn finds_configfs_and_modules() {
        let mounts =
            "proc /proc proc rw,relatime 0 0\nnone /sys/kernel/config configfs rw,relatime 0 0\n";
        assert!(configfs_mounted(mounts, "/sys/kernel/config"));
        assert!(!configfs_mounted(mounts, "/proc"));
        assert!(!configfs_mounted("", "/sys/kernel/config"));
        let modules = "iscsi_target_mod 368640 0 - Live 0xffffffffc05fe000\ntarget_core_mod 450560 3 iscsi_target_mod,target_core_file, Live 0x0\n";
        assert!(module_listed(modules, "target_core_mod"));
        assert!(module_listed(modules, "iscsi_target_mod"));
        assert!(!module_listed(modules, "iscsi_tcp"));
        assert!(!module_listed(modules, "target_core"));
    }

    #[test]
    fn finds_the_iscsid_socket() {
        assert!(unix_listening(UNIX, ISCSID_SOCKET));
        assert!(unix_listening(UNIX, "/run/udev/control"));
        assert!(!unix_listening(UNIX, "@not_listening"));
        let without = UNIX.replace(ISCSID_SOCKET, "@other");
        assert!(!unix_listening(&without, ISCSID_SOCKET));
    }

    #[test]
    fn reads_socket_links() {
        assert_eq!(socket_inode("socket:[11040]"), Some(11040));
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn parses_initiator_name_files() {
        assert_eq!(
            initiator_name(INITIATOR),
            InitiatorName::Named("iqn.1993-08.org.debian:01:5c8d368c2ff3".into())
        );
        assert_eq!(
            initiator_name("## comment\nGenerateName=yes\n"),
            InitiatorName::ToGenerate
        );
        assert_eq!(
            initiator_name("#InitiatorName=iqn.2000-01.x:y\n"),
            InitiatorName::Missing
        );
    }
}
