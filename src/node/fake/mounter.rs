//! A recording [`Mounter`] for unit tests: it keeps an in-memory mount table (so the code
//! under test observes its own mounts through `mounts()`), records every call with typed
//! arguments, checks that mount points exist like the kernel does, and fails on demand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::node::device::DevNum;
use crate::node::mount::{mount_at, MountEntry, MountError, Mounter, Unmounted};

/// The device number devtmpfs has in the lab (a bind-mounted device node shows it).
const DEVTMPFS: DevNum = DevNum::new(0, 5);

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    /// `mount_fs`.
    Fs {
        /// Device.
        device: PathBuf,
        /// Mount point.
        target: PathBuf,
        /// Filesystem.
        fs_type: String,
        /// Syscall flags.
        flags: MsFlags,
        /// Filesystem options.
        data: String,
    },
    /// `bind`.
    Bind {
        /// What is bound.
        source: PathBuf,
        /// Where.
        target: PathBuf,
    },
    /// `remount_bind`.
    Remount {
        /// Mount point.
        target: PathBuf,
        /// New flags.
        flags: MsFlags,
    },
    /// `unmount`.
    Unmount {
        /// Mount point.
        target: PathBuf,
    },
}

/// The fake's state.
#[derive(Default)]
struct Inner {
    /// Mounts, oldest first.
    table: Vec<MountEntry>,
    /// Paths that are block device nodes (device nodes and files they are bound onto).
    devices: HashMap<PathBuf, DevNum>,
    /// Calls so far.
    calls: Vec<MountCall>,
    /// Operations that fail, with the errno they fail with.
    failing: HashMap<&'static str, Errno>,
}

/// A mounter that only pretends.
#[derive(Default)]
pub struct FakeMounter {
    /// Everything, behind one lock.
    inner: Mutex<Inner>,
}

fn sys_err(op: &'static str, target: &Path, errno: Errno) -> MountError {
    MountError::Syscall {
        op,
        target: target.to_path_buf(),
        from: None,
        errno,
    }
}

impl FakeMounter {
    /// An empty mount table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares `path` a block device node with number `dev`.
    pub fn add_device(&self, path: impl Into<PathBuf>, dev: DevNum) {
        self.lock().devices.insert(path.into(), dev);
    }

    /// Adds a mount made by someone else (e.g. a stale one).
    pub fn add_mount(&self, entry: MountEntry) {
        self.lock().table.push(entry);
    }

    /// Makes every later `op` (`mount`, `bind`, `remount`, `unmount`) fail with `errno`.
    pub fn fail(&self, op: &'static str, errno: Errno) {
        self.lock().failing.insert(op, errno);
    }

    /// Lets every operation succeed again.
    pub fn heal(&self) {
        self.lock().failing.clear();
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<MountCall> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    /// The current mount table.
    pub fn table(&self) -> Vec<MountEntry> {
        self.lock().table.clone()
    }

    fn check(inner: &Inner, op: &'static str, target: &Path) -> Result<(), MountError> {
        if let Some(errno) = inner.failing.get(op) {
            return Err(sys_err(op, target, *errno));
        }
        if !target.exists() {
            return Err(sys_err(op, target, Errno::ENOENT));
        }
        Ok(())
    }
}

fn options(flags: MsFlags) -> Vec<String> {
    vec![if flags.contains(MsFlags::MS_RDONLY) {
        "ro"
    } else {
        "rw"
    }
    .to_string()]
}

#[async_trait]
impl Mounter for FakeMounter {
    async fn mount_fs(
        &self,
        device: &Path,
        target: &Path,
        fs_type: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), MountError> {
        let mut inner = self.lock();
        inner.calls.push(MountCall::Fs {
            device: device.to_path_buf(),
            target: target.to_path_buf(),
            fs_type: fs_type.to_string(),
            flags,
            data: data.to_string(),
        });
        Self::check(&inner, "mount", target)?;
        let dev = *inner
            .devices
            .get(device)
            .ok_or_else(|| sys_err("mount", target, Errno::ENOTBLK))?;
        inner.table.push(MountEntry {
            dev,
            root: "/".into(),
            mount_point: target.to_path_buf(),
            options: options(flags),
            fs_type: fs_type.to_string(),
            source: device.display().to_string(),
        });
        Ok(())
    }

    async fn bind(&self, source: &Path, target: &Path) -> Result<(), MountError> {
        let mut inner = self.lock();
        inner.calls.push(MountCall::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
        });
        Self::check(&inner, "bind", target)?;
        if !source.exists() {
            return Err(sys_err("bind", target, Errno::ENOENT));
        }
        let entry = if let Some(dev) = inner.devices.get(source).copied() {
            inner.devices.insert(target.to_path_buf(), dev);
            MountEntry {
                dev: DEVTMPFS,
                root: format!(
                    "/{}",
                    source
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                ),
                mount_point: target.to_path_buf(),
                options: options(MsFlags::empty()),
                fs_type: "devtmpfs".into(),
                source: "dev".into(),
            }
        } else if let Some(m) = mount_at(&inner.table, source).cloned() {
            MountEntry {
                mount_point: target.to_path_buf(),
                options: options(MsFlags::empty()),
                ..m
            }
        } else {
            MountEntry {
                dev: DevNum::new(0, 99),
                root: source.display().to_string(),
                mount_point: target.to_path_buf(),
                options: options(MsFlags::empty()),
                fs_type: "tmpfs".into(),
                source: "tmpfs".into(),
            }
        };
        inner.table.push(entry);
        Ok(())
    }

    async fn remount_bind(&self, target: &Path, flags: MsFlags) -> Result<(), MountError> {
        let mut inner = self.lock();
        inner.calls.push(MountCall::Remount {
            target: target.to_path_buf(),
            flags,
        });
        Self::check(&inner, "remount", target)?;
        let entry = inner
            .table
            .iter_mut()
            .rev()
            .find(|m| m.mount_point == target)
            .ok_or_else(|| sys_err("remount", target, Errno::EINVAL))?;
        entry.options = options(flags);
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError> {
        let mut inner = self.lock();
        inner.calls.push(MountCall::Unmount {
            target: target.to_path_buf(),
        });
        if let Some(errno) = inner.failing.get("unmount") {
            return Err(sys_err("unmount", target, *errno));
        }
        match inner.table.iter().rposition(|m| m.mount_point == target) {
            Some(i) => {
                let gone = inner.table.remove(i);
                if gone.fs_type == "devtmpfs" {
                    inner.devices.remove(target);
                }
                Ok(Unmounted::Done)
            }
            None => Ok(Unmounted::NotMounted),
        }
    }

    async fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        Ok(self.table())
    }

    async fn block_device(&self, path: &Path) -> Result<Option<DevNum>, MountError> {
        Ok(self.lock().devices.get(path).copied())
    }
}
