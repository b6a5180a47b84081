//! Filesystems on a volume's device: what is on it (`blkid -p`, which reads the device
//! itself, not a cache) and making one (`mkfs.ext4` / `mkfs.xfs`) — only ever on a device
//! where blkid finds no signature at all. A device holding anything else is never formatted.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::exec::{Cmd, ExecError, SharedRunner};

/// blkid's exit code when it finds no signature.
pub const BLKID_NOTHING_FOUND: i32 = 2;

/// mkfs of a large volume may take minutes on slow storage.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);

/// The filesystems this driver makes and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4 (the default).
    Ext4,
    /// XFS.
    Xfs,
}

impl FromStr for FsType {
    type Err = String;

    /// `ext4` (also for an empty fs_type) or `xfs`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            other => Err(format!(
                "filesystem `{}` is not supported (use ext4 or xfs)",
                other.escape_debug()
            )),
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FsType {
    /// The kernel's and blkid's name for it.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Options always added to the mount: XFS refuses to mount two filesystems with the
    /// same UUID, which a clone mounted beside its source has.
    pub fn implied_options(self) -> &'static [&'static str] {
        match self {
            FsType::Ext4 => &[],
            FsType::Xfs => &["nouuid"],
        }
    }

    /// The online grow of a mounted filesystem to fill its device: resize2fs takes the
    /// device, xfs_growfs the mount point. Both do nothing when it is already full size.
    fn grow(self, device: &str, mount_point: &str) -> Cmd {
        match self {
            FsType::Ext4 => Cmd::new("resize2fs").arg(device),
            FsType::Xfs => Cmd::new("xfs_growfs").arg(mount_point),
        }
        .timeout(MKFS_TIMEOUT)
    }

    fn mkfs(self, device: &str) -> Cmd {
        match self {
            // No reserved blocks (pods rarely run as root; they would be lost space), no
            // discard (a new thin LV has nothing to discard; over iSCSI it can take long).
            FsType::Ext4 => Cmd::new("mkfs.ext4").args([
                "-q",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=1,nodiscard",
                device,
            ]),
            // No -f: should a signature have appeared since blkid, mkfs.xfs refuses.
            FsType::Xfs => Cmd::new("mkfs.xfs").args(["-q", "-K", device]),
        }
        .timeout(MKFS_TIMEOUT)
    }
}

/// What `blkid -p` found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// Something else (partition table, swap, LVM PV, LUKS...), described.
    Other(String),
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Blank => f.write_str("nothing"),
            Content::Filesystem(fs) => write!(f, "an {fs} filesystem"),
            Content::Other(what) => f.write_str(what),
        }
    }
}

/// Failures of the filesystem layer.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The device node is not there (blkid would report it as blank).
    #[error("device {device} does not exist")]
    NoDevice {
        /// The device node.
        device: String,
    },
    /// blkid failed.
    #[error("cannot probe {device} for a filesystem")]
    Probe {
        /// The device node.
        device: String,
        /// The tool's error.
        #[source]
        source: ExecError,
    },
    /// resize2fs or xfs_growfs failed.
    #[error("growing the {fs} filesystem on {device} failed")]
    Grow {
        /// The device node.
        device: String,
        /// The filesystem.
        fs: FsType,
        /// The tool's error.
        #[source]
        source: ExecError,
    },
    /// mkfs failed.
    #[error("making an {fs} filesystem on {device} failed")]
    Mkfs {
        /// The device node.
        device: String,
        /// The filesystem.
        fs: FsType,
        /// The tool's error.
        #[source]
        source: ExecError,
    },
}

/// Parses `blkid -p -o export` output.
pub fn parse_probe(text: &str) -> Content {
    let get = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    match (get("TYPE"), get("USAGE"), get("PTTYPE")) {
        (Some(t), Some(u), _) if u == "filesystem" => Content::Filesystem(t),
        (Some(t), Some(u), _) => Content::Other(format!("a {t} signature ({u})")),
        (Some(t), None, _) => Content::Other(format!("a {t} signature")),
        (None, _, Some(pt)) => Content::Other(format!("a {pt} partition table")),
        (None, _, None) => Content::Other("an unrecognised signature".into()),
    }
}

/// blkid, mkfs and the online grow through a runner.
#[derive(Clone)]
pub struct Filesystems {
    /// Runs the tools.
    runner: SharedRunner,
}

impl Filesystems {
    /// The tools run through `runner`.
    pub fn new(runner: SharedRunner) -> Self {
        Filesystems { runner }
    }

    /// What is on `device`.
    pub async fn probe(&self, device: &Path) -> Result<Content, FsError> {
        let name = device.display().to_string();
        // blkid also exits 2 for a missing device: never let that pass as "blank".
        if !device.exists() {
            return Err(FsError::NoDevice { device: name });
        }
        let cmd = Cmd::new("blkid").args(["-p", "-o", "export", name.as_str()]);
        let out = self
            .runner
            .output(&cmd)
            .await
            .map_err(|source| FsError::Probe {
                device: name.clone(),
                source,
            })?;
        match out.code {
            0 => Ok(parse_probe(&out.stdout_str())),
            BLKID_NOTHING_FOUND => Ok(Content::Blank),
            _ => Err(FsError::Probe {
                source: ExecError::failed(&cmd, &out),
                device: name,
            }),
        }
    }

    /// Makes an `fs` filesystem on `device` (the caller has checked that it is blank).
    pub async fn mkfs(&self, device: &Path, fs: FsType) -> Result<(), FsError> {
        let name = device.display().to_string();
        let started = std::time::Instant::now();
        self.runner
            .run(&fs.mkfs(&name))
            .await
            .map_err(|source| FsError::Mkfs {
                device: name.clone(),
                fs,
                source,
            })?;
        tracing::info!(device = %name, %fs, elapsed_ms = started.elapsed().as_millis() as u64, "filesystem created");
        Ok(())
    }
}

impl Filesystems {
    /// Grows the `fs` filesystem on `device`, mounted at `mount_point`, to fill the device,
    /// while it is mounted and in use.
    pub async fn grow(&self, device: &Path, mount_point: &Path, fs: FsType) -> Result<(), FsError> {
        let name = device.display().to_string();
        let started = std::time::Instant::now();
        let cmd = fs.grow(&name, &mount_point.display().to_string());
        self.runner
            .run(&cmd)
            .await
            .map_err(|source| FsError::Grow {
                device: name.clone(),
                fs,
                source,
            })?;
        tracing::info!(device = %name, %fs, elapsed_ms = started.elapsed().as_millis() as u64, "filesystem grown");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeRunner;
    use crate::exec::Output;
    use std::sync::Arc;

    #[test]
    fn fs_types() {
        assert_eq!("".parse::<FsType>(), Ok(FsType::Ext4));
        assert_eq!("xfs".parse::<FsType>(), Ok(FsType::Xfs));
        assert!("btrfs".parse::<FsType>().is_err());
        assert_eq!(FsType::Xfs.implied_options(), ["nouuid"]);
    }

    /// blkid outputs captured in the lab (ext4, xfs) and on a test image (MBR, swap).
    #[test]
    fn parses_real_probes() {
        assert_eq!(
            parse_probe(include_str!("testdata/blkid_ext4.txt")),
            Content::Filesystem("ext4".into())
        );
        assert_eq!(
            parse_probe(include_str!("testdata/blkid_xfs.txt")),
            Content::Filesystem("xfs".into())
        );
        assert_eq!(
            parse_probe(include_str!("testdata/blkid_dos.txt")),
            Content::Other("a dos partition table".into())
        );
        assert_eq!(
            parse_probe(include_str!("testdata/blkid_swap.txt")),
            Content::Other("a swap signature (other)".into())
        );
        assert_eq!(
            parse_probe("DEVNAME=/dev/sda\n"),
            Content::Other("an unrecognised signature".into())
        );
    }

    #[tokio::test]
    async fn probe_maps_exit_codes_and_refuses_missing_devices() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("sda");
        std::fs::write(&dev, "").unwrap();
        let blank = Filesystems::new(Arc::new(FakeRunner::new(|_| Output::failed(2, ""))));
        assert_eq!(blank.probe(&dev).await.unwrap(), Content::Blank);
        let err = blank.probe(&dir.path().join("sdz")).await.unwrap_err();
        assert!(matches!(err, FsError::NoDevice { .. }), "{err}");
        let broken = Filesystems::new(Arc::new(FakeRunner::new(|_| {
            Output::failed(4, "blkid: error: /dev/sda: Input/output error")
        })));
        assert!(matches!(
            broken.probe(&dev).await.unwrap_err(),
            FsError::Probe { .. }
        ));
        let ext4 = Filesystems::new(Arc::new(FakeRunner::new(|_| {
            Output::ok(include_str!("testdata/blkid_ext4.txt"))
        })));
        assert_eq!(
            ext4.probe(&dev).await.unwrap(),
            Content::Filesystem("ext4".into())
        );
    }

    #[tokio::test]
    async fn mkfs_commands() {
        let r = Arc::new(FakeRunner::new(|_| Output::ok("")));
        let fs = Filesystems::new(r.clone());
        fs.mkfs(Path::new("/dev/sda"), FsType::Ext4).await.unwrap();
        fs.mkfs(Path::new("/dev/sdb"), FsType::Xfs).await.unwrap();
        assert_eq!(
            r.calls(),
            [
                "mkfs.ext4 -q -m 0 -E lazy_itable_init=1,nodiscard /dev/sda",
                "mkfs.xfs -q -K /dev/sdb"
            ]
        );
        let failing =
            Filesystems::new(Arc::new(FakeRunner::new(|_| Output::failed(1, "no space"))));
        let err = failing
            .mkfs(Path::new("/dev/sda"), FsType::Xfs)
            .await
            .unwrap_err();
        assert!(crate::error::full_message(&err).contains("no space"));
    }

    #[tokio::test]
    async fn grow_commands() {
        let r = Arc::new(FakeRunner::new(|_| Output::ok("")));
        let fs = Filesystems::new(r.clone());
        let mnt = Path::new("/staging/v");
        fs.grow(Path::new("/dev/sda"), mnt, FsType::Ext4)
            .await
            .unwrap();
        fs.grow(Path::new("/dev/sdb"), mnt, FsType::Xfs)
            .await
            .unwrap();
        assert_eq!(r.calls(), ["resize2fs /dev/sda", "xfs_growfs /staging/v"]);
        let failing = Filesystems::new(Arc::new(FakeRunner::new(|_| {
            Output::failed(1, "resize2fs: Permission denied")
        })));
        let err = failing
            .grow(Path::new("/dev/sda"), mnt, FsType::Ext4)
            .await
            .unwrap_err();
        assert!(matches!(err, FsError::Grow { .. }));
        assert!(crate::error::full_message(&err).contains("Permission denied"));
    }
}
