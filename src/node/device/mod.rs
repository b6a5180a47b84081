//! Finding the block device of an iSCSI LUN through sysfs, not by sleeping or by guessing
//! names: `class/iscsi_session/sessionN/targetname` names the target, the session's SCSI
//! target directory holds one `H:C:T:LUN` directory per LUN, and its `block/` directory
//! names the disk. The walk also runs backwards (a device number to its session) for
//! unstage and for the volume condition. Both roots are injectable so that unit tests run on
//! a tree laid out in a temporary directory like the real one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::exec::{Cmd, ExecError, Runner};

use crate::domain::Portal;

/// How often the wait for a device looks again: devices appear 0.1-2 s after a login.
const POLL: Duration = Duration::from_millis(100);

/// The session state of a healthy session.
pub const LOGGED_IN: &str = "LOGGED_IN";

/// The SCSI device state of a usable disk.
const RUNNING: &str = "running";

/// A device number (`major:minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevNum {
    /// Major number (8 for sd).
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevNum {
    /// The device number `major:minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        DevNum { major, minor }
    }

    /// Splits a kernel `dev_t`.
    pub fn from_dev_t(dev: nix::libc::dev_t) -> Self {
        // Linux major and minor numbers are 12 and 20 bits wide.
        DevNum {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNum {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (major, minor) = s.trim().split_once(':').ok_or(())?;
        Ok(DevNum {
            major: major.parse().map_err(|_| ())?,
            minor: minor.parse().map_err(|_| ())?,
        })
    }
}

/// A SCSI disk of an iSCSI LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`sda`).
    pub name: String,
    /// Its device number.
    pub dev: DevNum,
    /// Its device node (`/dev/sda`).
    pub path: PathBuf,
    /// The iSCSI session it belongs to.
    pub sid: u32,
}

/// An iSCSI session as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysSession {
    /// Session id (the N of `sessionN`).
    pub sid: u32,
    /// Target IQN.
    pub target: String,
    /// `LOGGED_IN`, `FAILED` (connection lost, recovering) or `FREE`.
    pub state: String,
}

/// What sysfs says about a device number: the disk, its SCSI state and its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    /// Kernel name.
    pub name: String,
    /// SCSI device state (`running`, `blocked`, `offline`...).
    pub scsi_state: Option<String>,
    /// The iSCSI session, when the disk is an iSCSI one and its session still exists.
    pub session: Option<SysSession>,
}

impl DeviceHealth {
    /// Why this device is not healthy, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        let Some(session) = &self.session else {
            return Some(format!("{} has no iSCSI session", self.name));
        };
        if session.state != LOGGED_IN {
            return Some(format!(
                "iSCSI session {} to {} is {} (the storage node or the network is down; the session recovers by itself when it comes back)",
                session.sid, session.target, session.state
            ));
        }
        match self.scsi_state.as_deref() {
            Some(RUNNING) => None,
            Some(other) => Some(format!("SCSI device {} is {other}", self.name)),
            None => Some(format!("SCSI device {} has no state", self.name)),
        }
    }
}

/// Failures of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A sysfs or /dev entry could not be read or written.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// `read`, `list`, `write`, `resolve`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The LUN's disk did not appear in time.
    #[error("no block device appeared for LUN {lun} of target {target} (portal {portal}) within {waited:?}: check that the LUN is mapped to this node's ACL on the storage node, and `dmesg` on this node for SCSI errors")]
    Timeout {
        /// Target IQN.
        target: String,
        /// Portal logged in to.
        portal: String,
        /// LUN number.
        lun: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// The session went away while waiting for the disk.
    #[error("the iSCSI session to {target} (portal {portal}) disappeared while waiting for LUN {lun}: check the storage node and `dmesg`")]
    SessionLost {
        /// Target IQN.
        target: String,
        /// Portal.
        portal: String,
        /// LUN number.
        lun: u32,
    },
    /// udev's by-path link names another disk than sysfs.
    #[error("udev link {link} points to {found}, but sysfs says the LUN is {expected}: refusing to use an ambiguous device")]
    Mismatch {
        /// The by-path link.
        link: PathBuf,
        /// The device sysfs found.
        expected: String,
        /// Where the link points.
        found: String,
    },
    /// `blockdev` (`--flushbufs`, `--setro`) failed.
    #[error("{action} {device} failed")]
    Blockdev {
        /// `flushing`, `making read-only`.
        action: &'static str,
        /// The device node.
        device: String,
        /// The tool's error.
        #[source]
        source: ExecError,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeviceError + 'a {
    move |source| DeviceError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a sysfs attribute, trimmed; `None` when it does not exist.
fn read_attr(path: &Path) -> Result<Option<String>, DeviceError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// The names in a directory; empty when it does not exist (sysfs entries vanish at any time).
fn list(dir: &Path) -> Result<Vec<String>, DeviceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The portal of an iSCSI connection from its sysfs `persistent_address` and
/// `persistent_port` (the portal the session was logged in through, which udev's by-path
/// links name too; IPv6 without brackets).
pub fn connection_portal(address: &str, port: &str) -> Option<Portal> {
    let (address, port) = (address.trim(), port.trim());
    let portal = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    portal.parse().ok()
}

/// The LUN of a SCSI device directory name `H:C:T:L`.
fn lun_of(name: &str) -> Option<u32> {
    let parts: Vec<&str> = name.split(':').collect();
    if parts.len() != 4 || !parts.iter().all(|p| p.parse::<u64>().is_ok()) {
        return None;
    }
    parts[3].parse().ok()
}

/// The sysfs and /dev trees, with injectable roots.
#[derive(Debug, Clone)]
pub struct Sysfs {
    /// Normally `/sys`.
    sys: PathBuf,
    /// Normally `/dev`.
    dev: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/sys", "/dev")
    }
}

impl Sysfs {
    /// The trees at `sys` and `dev`.
    pub fn new(sys: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Sysfs {
            sys: sys.into(),
            dev: dev.into(),
        }
    }

    fn session_dir(&self, sid: u32) -> PathBuf {
        self.sys
            .join("class/iscsi_session")
            .join(format!("session{sid}"))
    }

    /// The device node of disk `name`.
    pub fn node_path(&self, name: &str) -> PathBuf {
        self.dev.join(name)
    }

    /// Session `sid`, if it exists.
    pub fn session(&self, sid: u32) -> Result<Option<SysSession>, DeviceError> {
        let dir = self.session_dir(sid);
        let Some(target) = read_attr(&dir.join("targetname"))? else {
            return Ok(None);
        };
        let state = read_attr(&dir.join("state"))?.unwrap_or_default();
        Ok(Some(SysSession { sid, target, state }))
    }

    /// The portal session `sid` is connected to, from its first connection
    /// (`sessionN/device/connectionN:C/iscsi_connection/connectionN:C/persistent_address`
    /// and `persistent_port`); `None` when the session or its connection is gone.
    pub fn session_portal(&self, sid: u32) -> Result<Option<Portal>, DeviceError> {
        let dev_dir = self.session_dir(sid).join("device");
        for conn in list(&dev_dir)?
            .iter()
            .filter(|n| n.starts_with("connection"))
        {
            let attrs = dev_dir.join(conn).join("iscsi_connection").join(conn);
            let address = read_attr(&attrs.join("persistent_address"))?;
            let port = read_attr(&attrs.join("persistent_port"))?;
            if let (Some(address), Some(port)) = (address, port) {
                return Ok(connection_portal(&address, &port));
            }
        }
        Ok(None)
    }

    /// Whether kernel module `name` is loaded or built in: `module/<name>` exists.
    pub fn module_loaded(&self, name: &str) -> bool {
        self.sys.join("module").join(name).exists()
    }

    /// How many iSCSI sessions this host has (for the metrics gauge; 0 when unreadable).
    pub fn session_count(&self) -> u64 {
        list(&self.sys.join("class/iscsi_session"))
            .map(|names| names.iter().filter(|n| n.starts_with("session")).count() as u64)
            .unwrap_or(0)
    }

    /// Every session to `target`, by session id.
    pub fn sessions_of(&self, target: &str) -> Result<Vec<SysSession>, DeviceError> {
        let mut out = Vec::new();
        for name in list(&self.sys.join("class/iscsi_session"))? {
            let Some(sid) = name.strip_prefix("session").and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(s) = self.session(sid)? {
                if s.target == target {
                    out.push(s);
                }
            }
        }
        out.sort_by_key(|s| s.sid);
        Ok(out)
    }

    /// The disk of `lun` in session `sid`, once the kernel has created it.
    fn lun_in_session(&self, sid: u32, lun: u32) -> Result<Option<BlockDevice>, DeviceError> {
        let dev_dir = self.session_dir(sid).join("device");
        for target in list(&dev_dir)?.iter().filter(|n| n.starts_with("target")) {
            let target_dir = dev_dir.join(target);
            for scsi in list(&target_dir)?.iter().filter(|n| lun_of(n) == Some(lun)) {
                let block = target_dir.join(scsi).join("block");
                let Some(name) = list(&block)?.into_iter().next() else {
                    continue;
                };
                let Some(dev) = read_attr(&block.join(&name).join("dev"))? else {
                    continue;
                };
                let Ok(dev) = dev.parse() else { continue };
                return Ok(Some(BlockDevice {
                    path: self.node_path(&name),
                    name,
                    dev,
                    sid,
                }));
            }
        }
        Ok(None)
    }

    /// The disk of `lun` of `target`, in whichever session to it has one.
    pub fn find_lun(&self, target: &str, lun: u32) -> Result<Option<BlockDevice>, DeviceError> {
        for s in self.sessions_of(target)? {
            if let Some(d) = self.lun_in_session(s.sid, lun)? {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Waits until the disk of `lun` of `target` exists, with its device node, polling
    /// sysfs; gives up after `timeout` or as soon as no session to the target is left.
    pub async fn wait_for_lun(
        &self,
        target: &str,
        portal: &Portal,
        lun: u32,
        timeout: Duration,
    ) -> Result<BlockDevice, DeviceError> {
        let started = Instant::now();
        loop {
            if let Some(d) = self.find_lun(target, lun)? {
                if d.path.exists() {
                    tracing::debug!(device = %d.path.display(), waited_ms = started.elapsed().as_millis() as u64, "LUN device found");
                    return Ok(d);
                }
            } else if self.sessions_of(target)?.is_empty() {
                return Err(DeviceError::SessionLost {
                    target: target.to_string(),
                    portal: portal.to_string(),
                    lun,
                });
            }
            if started.elapsed() >= timeout {
                return Err(DeviceError::Timeout {
                    target: target.to_string(),
                    portal: portal.to_string(),
                    lun,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Checks udev's `/dev/disk/by-path` link of the LUN, when udev has made one: it must
    /// name the same disk as sysfs.
    pub fn check_by_path(
        &self,
        portal: &Portal,
        target: &str,
        lun: u32,
        device: &BlockDevice,
    ) -> Result<(), DeviceError> {
        let link = self.dev.join("disk/by-path").join(format!(
            "ip-{}:{}-iscsi-{target}-lun-{lun}",
            portal.host(),
            portal.port()
        ));
        let resolved = match std::fs::canonicalize(&link) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("resolve", &link)(e)),
        };
        let expected =
            std::fs::canonicalize(&device.path).map_err(io_err("resolve", &device.path))?;
        if resolved != expected {
            return Err(DeviceError::Mismatch {
                link,
                expected: device.path.display().to_string(),
                found: resolved.display().to_string(),
            });
        }
        Ok(())
    }

    /// The disk behind device number `dev`, its SCSI state and its session; `None` when no
    /// such block device exists any more.
    pub fn health(&self, dev: DevNum) -> Result<Option<DeviceHealth>, DeviceError> {
        let link = self.sys.join("dev/block").join(dev.to_string());
        let real = match std::fs::canonicalize(&link) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("resolve", &link)(e)),
        };
        let name = real
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let scsi_state = match real.parent().and_then(Path::parent) {
            Some(scsi) => read_attr(&scsi.join("state"))?,
            None => None,
        };
        let sid = real.components().find_map(|c| {
            c.as_os_str()
                .to_str()?
                .strip_prefix("session")?
                .parse::<u32>()
                .ok()
        });
        let session = match sid {
            Some(sid) => self.session(sid)?,
            None => None,
        };
        Ok(Some(DeviceHealth {
            name,
            scsi_state,
            session,
        }))
    }

    /// The device number of disk `name`, while it exists.
    pub fn block_dev(&self, name: &str) -> Result<Option<DevNum>, DeviceError> {
        let path = self.sys.join("block").join(name).join("dev");
        Ok(read_attr(&path)?.and_then(|s| s.parse().ok()))
    }

    /// Whether disk `name` refuses writes (its `ro` attribute).
    pub fn read_only(&self, name: &str) -> Result<bool, DeviceError> {
        let path = self.sys.join("block").join(name).join("ro");
        Ok(read_attr(&path)?.as_deref() == Some("1"))
    }

    /// Size of disk `name` in bytes, from its sector count.
    pub fn size_bytes(&self, name: &str) -> Result<Option<u64>, DeviceError> {
        let path = self.sys.join("block").join(name).join("size");
        Ok(read_attr(&path)?
            .and_then(|s| s.parse::<u64>().ok())
            .map(|sectors| sectors * 512))
    }

    /// Makes the kernel read disk `name`'s capacity again (`echo 1 >
    /// /sys/block/NAME/device/rescan`, the SCSI device's own attribute): the write returns
    /// once READ CAPACITY has been answered. Returns false when the disk is gone.
    pub fn rescan(&self, name: &str) -> Result<bool, DeviceError> {
        let path = self.sys.join("block").join(name).join("device/rescan");
        match std::fs::write(&path, b"1") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("write", &path)(e)),
        }
    }

    /// Removes SCSI disk `name` from the kernel (`echo 1 > /sys/block/NAME/device/delete`).
    /// Returns false when it was already gone.
    pub fn delete(&self, name: &str) -> Result<bool, DeviceError> {
        let path = self.sys.join("block").join(name).join("device/delete");
        match std::fs::write(&path, b"1") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("write", &path)(e)),
        }
    }
}

/// Runs `blockdev FLAG DEVICE`.
async fn blockdev(
    runner: &dyn Runner,
    flag: &str,
    action: &'static str,
    device: &Path,
) -> Result<(), DeviceError> {
    let device = device.display().to_string();
    runner
        .run(&Cmd::new("blockdev").args([flag, device.as_str()]))
        .await
        .map(drop)
        .map_err(|source| DeviceError::Blockdev {
            action,
            device,
            source,
        })
}

/// Writes the device's dirty buffers out before it is removed (`blockdev --flushbufs`).
pub async fn flush(runner: &dyn Runner, device: &Path) -> Result<(), DeviceError> {
    blockdev(runner, "--flushbufs", "flushing", device).await
}

/// Makes the whole disk refuse writes (`blockdev --setro`): a read-only bind mount does not
/// stop writes to a device node, so reader-only raw block volumes are enforced here.
pub async fn set_read_only(runner: &dyn Runner, device: &Path) -> Result<(), DeviceError> {
    blockdev(runner, "--setro", "making read-only", device).await
}

#[cfg(test)]
mod tests;
