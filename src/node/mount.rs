//! Mounts: the [`Mounter`] trait over the mount syscalls (nix `mount`/`umount2`, `stat`), the
//! real [`NixMounter`], and a pure parser of `/proc/self/mountinfo`, which is how the node
//! observes mount state. Mounts happen in this process's own mount namespace: kubelet's
//! directory is shared with the host through Bidirectional mount propagation.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::device::{BlockDevice, DevNum};

/// Where this process's mount table is read from.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device the mounted filesystem lives on (`st_dev` of its files).
    pub dev: DevNum,
    /// The path inside that filesystem which is mounted (`/` unless a bind of a subtree).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `noatime`...).
    pub options: Vec<String>,
    /// Filesystem type (`ext4`, `xfs`, `devtmpfs`...).
    pub fs_type: String,
    /// Mount source (`/dev/sda`).
    pub source: String,
}

impl MountEntry {
    /// Whether this mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// Read-only or read-write.
    pub fn mode(&self) -> MountMode {
        MountMode::of(self.read_only())
    }

    /// What is mounted, as errors name it.
    pub fn device(&self) -> DeviceRef {
        DeviceRef {
            source: self.source.clone(),
            dev: self.dev,
        }
    }
}

/// Read-only or read-write, as a mount is and errors say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// `ro`.
    ReadOnly,
    /// `rw`.
    ReadWrite,
}

impl MountMode {
    /// The mode of a mount that is `read_only` or not.
    pub fn of(read_only: bool) -> Self {
        if read_only {
            MountMode::ReadOnly
        } else {
            MountMode::ReadWrite
        }
    }
}

impl fmt::Display for MountMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountMode::ReadOnly => "read-only",
            MountMode::ReadWrite => "read-write",
        })
    }
}

/// A device as errors name it: a mount's source or a disk's node, and its number
/// (`/dev/sdb (8:16)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    /// The mount source or device node.
    pub source: String,
    /// The device number.
    pub dev: DevNum,
}

impl From<&BlockDevice> for DeviceRef {
    fn from(disk: &BlockDevice) -> Self {
        DeviceRef {
            source: disk.path.display().to_string(),
            dev: disk.dev,
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.source, self.dev)
    }
}

/// Failures of the mount layer.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount-related syscall failed.
    #[error("{op} {target}{} failed: {errno}", from.as_ref().map(|s| format!(" (from {s})")).unwrap_or_default())]
    Syscall {
        /// What was attempted: `mount`, `bind mount`, `remount`, `unmount`, `stat`, `statvfs`.
        op: &'static str,
        /// The mount point or path.
        target: PathBuf,
        /// The device or bind source, when there is one.
        from: Option<String>,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The mount table could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The mountinfo file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A mountinfo line is malformed.
    #[error("cannot parse mountinfo line {line}: {detail}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        detail: String,
    },
    /// A mount flag from the volume capability is not accepted.
    #[error("mount flag `{flag}` is not allowed: {reason}")]
    BadFlag {
        /// The flag.
        flag: String,
        /// Why.
        reason: &'static str,
    },
    /// The blocking task running a syscall panicked or was cancelled.
    #[error("mount worker task failed: {0}")]
    Task(String),
    /// A path still has a mount after as many unmounts as anyone stacks.
    #[error("{path} still has {found} mounted after {rounds} unmounts: refusing to go on")]
    StillMounted {
        /// The mount point.
        path: PathBuf,
        /// What is still mounted there.
        found: DeviceRef,
        /// How many unmounts were made.
        rounds: u32,
    },
}

/// What an unmount found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// A mount was removed.
    Done,
    /// Nothing was mounted there (or the path does not exist).
    NotMounted,
}

/// The mount syscalls the node uses, so that unit tests can record them instead.
#[async_trait]
pub trait Mounter: Send + Sync {
    /// Mounts filesystem `fs_type` on `device` at `target` with `flags` and `data` options.
    async fn mount_fs(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), MountError>;

    /// Bind-mounts `source` (a directory or a device node) onto `target`.
    async fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError>;

    /// Changes the per-mount flags of the bind mount at `target` (e.g. to read-only).
    async fn remount_bind(&self, target: &Path, flags: MsFlags) -> Result<(), MountError>;

    /// Unmounts the top-most mount at `target`.
    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError>;

    /// The current mount table.
    async fn mounts(&self) -> Result<Vec<MountEntry>, MountError>;

    /// The block device `path` refers to, when it is a block device node.
    async fn block_device(&self, path: &Path) -> Result<Option<DevNum>, MountError>;
}

/// The real mounter: nix syscalls on a blocking thread, mountinfo from procfs.
#[derive(Debug, Clone)]
pub struct NixMounter {
    /// The mountinfo file (normally [`MOUNTINFO`]).
    mountinfo: PathBuf,
}

impl Default for NixMounter {
    fn default() -> Self {
        NixMounter {
            mountinfo: PathBuf::from(MOUNTINFO),
        }
    }
}

impl NixMounter {
    /// The mounter of this process's mount namespace.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Runs a blocking syscall off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MountError> + Send + 'static,
) -> Result<T, MountError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MountError::Task(e.to_string()))?
}

#[async_trait]
impl Mounter for NixMounter {
    async fn mount_fs(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), MountError> {
        let (device, target, fs_type, data) = (
            device.to_path_buf(),
            target.to_path_buf(),
            fs_type.to_string(),
            data.to_string(),
        );
        blocking(move || {
            let data = (!data.is_empty()).then_some(data.as_str());
            nix::mount::mount(Some(&device), &target, Some(fs_type.as_str()), flags, data).map_err(
                |errno| MountError::Syscall {
                    op: "mount",
                    target,
                    from: Some(device.display().to_string()),
                    errno,
                },
            )
        })
        .await
    }

    async fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        let (source, target) = (source.to_path_buf(), target.to_path_buf());
        blocking(move || {
            nix::mount::mount(
                Some(&source),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|errno| MountError::Syscall {
                op: "bind mount",
                target,
                from: Some(source.display().to_string()),
                errno,
            })
        })
        .await
    }

    async fn remount_bind(&self, target: &Path, flags: MsFlags) -> Result<(), MountError> {
        let target = target.to_path_buf();
        blocking(move || {
            nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None::<&str>,
            )
            .map_err(|errno| MountError::Syscall {
                op: "remount",
                target,
                from: None,
                errno,
            })
        })
        .await
    }

    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError> {
        let target = target.to_path_buf();
        blocking(
            move || match nix::mount::umount2(&target, MntFlags::empty()) {
                Ok(()) => Ok(Unmounted::Done),
                // EINVAL: not a mount point; ENOENT: no such path. Both mean "nothing to do".
                Err(Errno::EINVAL | Errno::ENOENT) => Ok(Unmounted::NotMounted),
                Err(errno) => Err(MountError::Syscall {
                    op: "unmount",
                    target,
                    from: None,
                    errno,
                }),
            },
        )
        .await
    }

    async fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        let text = tokio::fs::read_to_string(&self.mountinfo)
            .await
            .map_err(|source| MountError::Read {
                path: self.mountinfo.display().to_string(),
                source,
            })?;
        parse_mountinfo(&text)
    }

    async fn block_device(&self, path: &Path) -> Result<Option<DevNum>, MountError> {
        let path = path.to_path_buf();
        blocking(move || match nix::sys::stat::stat(&path) {
            Ok(st) => {
                let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode);
                Ok(kind
                    .contains(nix::sys::stat::SFlag::S_IFBLK)
                    .then(|| DevNum::from_dev_t(st.st_rdev)))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(MountError::Syscall {
                op: "stat",
                target: path,
                from: None,
                errno,
            }),
        })
        .await
    }
}

/// The top-most mount at `path` (the last one listed: later mounts hide earlier ones).
pub fn mount_at<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// Parses `/proc/self/mountinfo` (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`, with `\ooo` octal escapes in paths.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>, MountError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: &str| MountError::Parse {
            line: i + 1,
            detail: format!("{detail}: `{line}`"),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| err("no ` - ` separator"))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(err("too few fields"));
        }
        let dev = fields[2]
            .parse::<DevNum>()
            .map_err(|_| err("bad MAJ:MIN"))?;
        out.push(MountEntry {
            dev,
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            options: fields[5].split(',').map(String::from).collect(),
            fs_type: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
        });
    }
    Ok(out)
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Flags the volume capability may carry that become syscall flags; every other flag is
/// passed to the filesystem as data (`discard`, `data=ordered`...).
const FLAG_TABLE: &[(&str, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY),
    ("noatime", MsFlags::MS_NOATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME),
    ("relatime", MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME),
    ("lazytime", MsFlags::MS_LAZYTIME),
    ("nosuid", MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC),
    ("sync", MsFlags::MS_SYNCHRONOUS),
    ("dirsync", MsFlags::MS_DIRSYNC),
];

/// Flags that would change what is mounted rather than how: never taken from a request.
const REFUSED: &[&str] = &[
    "bind",
    "rbind",
    "remount",
    "move",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
];

/// Mount flags split into syscall flags and filesystem data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount syscall.
    pub flags: MsFlags,
    /// Comma-separated filesystem options.
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    /// Splits a capability's mount flags (each may itself be comma-separated).
    pub fn parse(flags: &[String]) -> Result<Self, MountError> {
        let mut out = MountOptions::default();
        for flag in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
            if flag.is_empty() || flag == "rw" || flag == "defaults" {
                continue;
            }
            if REFUSED.contains(&flag) {
                return Err(MountError::BadFlag {
                    flag: flag.to_string(),
                    reason: "it changes what is mounted, not how",
                });
            }
            if flag.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(MountError::BadFlag {
                    flag: flag.escape_debug().to_string(),
                    reason: "control characters and spaces are not allowed",
                });
            }
            match FLAG_TABLE.iter().find(|(name, _)| *name == flag) {
                Some((_, f)) => out.flags |= *f,
                None => out.data.push(flag.to_string()),
            }
        }
        Ok(out)
    }

    /// The data string for the syscall.
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured in the lab: an ext4 staging mount at a path with a space, its read-only bind,
    /// an xfs mount with nouuid, and a device node bind-mounted onto a file.
    const SAMPLE: &str = include_str!("testdata/mountinfo.txt");

    #[test]
    fn parses_the_lab_sample() {
        let m = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(m.len(), 14);
        let stage = mount_at(&m, Path::new("/tmp/stage dir/a")).expect("escaped space");
        assert_eq!(stage.dev, DevNum::new(8, 0));
        assert_eq!(stage.fs_type, "ext4");
        assert_eq!(stage.source, "/dev/sda");
        assert!(!stage.read_only());
        let publ = mount_at(&m, Path::new("/tmp/pub")).unwrap();
        assert!(publ.read_only());
        assert_eq!(publ.dev, stage.dev);
        let xfs = mount_at(&m, Path::new("/tmp/sx")).unwrap();
        assert_eq!((xfs.fs_type.as_str(), xfs.dev), ("xfs", DevNum::new(8, 16)));
        // A bind-mounted device node shows devtmpfs and the node's name as root.
        let blk = mount_at(&m, Path::new("/tmp/blk/file")).unwrap();
        assert_eq!(
            (blk.fs_type.as_str(), blk.root.as_str()),
            ("devtmpfs", "/sdb")
        );
        assert!(mount_at(&m, Path::new("/tmp/stage")).is_none());
    }

    #[test]
    fn optional_fields_and_escapes() {
        let line = "40 32 8:32 / /var/lib/kubelet/a\\040b\\011c\\134d rw,relatime shared:5 master:1 - ext4 /dev/sdc rw\n";
        let m = parse_mountinfo(line).unwrap();
        assert_eq!(
            m[0].mount_point,
            PathBuf::from("/var/lib/kubelet/a b\tc\\d")
        );
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/sdc");
    }

    #[test]
    fn later_mounts_hide_earlier_ones() {
        let text = "1 0 8:0 / /a rw - ext4 /dev/sda rw\n2 0 8:16 / /a ro - ext4 /dev/sdb rw\n";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(
            mount_at(&m, Path::new("/a")).unwrap().dev,
            DevNum::new(8, 16)
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "garbage",
            "1 2 8:0 / /a rw ext4 /dev/sda rw",
            "1 2 x / /a rw - ext4 /dev/sda rw",
            "1 2 8:0 / - ext4",
        ] {
            assert!(parse_mountinfo(bad).is_err(), "{bad}");
        }
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\777x"), "\\777x");
    }

    #[test]
    fn splits_flags_and_data() {
        let o = MountOptions::parse(&[
            "noatime".into(),
            "nosuid,discard".into(),
            "data=ordered".into(),
            "rw".into(),
        ])
        .unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOATIME | MsFlags::MS_NOSUID);
        assert_eq!(o.data_string(), "discard,data=ordered");
        assert!(MountOptions::parse(&["bind".into()]).is_err());
        assert!(MountOptions::parse(&["a\nb".into()]).is_err());
        assert_eq!(MountOptions::parse(&[]).unwrap(), MountOptions::default());
    }
}
