//! Pure parsers for the kernel tables only doctor reads: `/proc/mounts`, `/proc/modules`,
//! `/proc/net/tcp{,6}` and `/proc/<pid>/fd` links (iscsid's socket in `/proc/net/unix` is
//! the node's [`crate::node::iscsi::lists_iscsid`], the initiator name file
//! [`crate::domain::InitiatorNameFile`]). Each takes the file's text and is tested on real
//! samples.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    fn reads_socket_links() {
        assert_eq!(socket_inode("socket:[11040]"), Some(11040));
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }
}
