//! A simulated LIO configfs in a temporary directory, for unit tests: `mkdir` creates the
//! attribute files and default groups the kernel would (as seen on Linux 6.1), writes go
//! only to existing attributes and are recorded, and the kernel's refusals that shape the
//! backend's order of operations are reproduced (a LUN still mapped by an ACL cannot be
//! removed, `enable` and `control` cannot be written twice, a directory with items created
//! inside cannot be removed, a portal cannot be made on an address whose shared listener is
//! being torn down by another target's portal removal, ...).

use std::collections::HashSet;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::configfs::{Configfs, Kind, RealConfigfs};

/// The simulation. `root()` stands for `/sys/kernel/config`.
pub struct FakeConfigfs {
    /// Holds the files.
    dir: tempfile::TempDir,
    /// Items and links created through the trait (the rest is the kernel's).
    user: Mutex<HashSet<PathBuf>>,
    /// Every write, in order: (path, value).
    writes: Mutex<Vec<(PathBuf, String)>>,
    /// Every successful change, in order: `mkdir|rmdir|write|symlink|unlink <path>`.
    events: Mutex<Vec<String>>,
    /// Portal addresses whose listener is being torn down (the last portal on them is being
    /// removed).
    listeners_down: Mutex<HashSet<String>>,
    /// Portal `mkdir`s that failed with EINVAL, scripted or not.
    portal_einvals: AtomicUsize,
    /// How many of the next portal `mkdir`s fail with EINVAL.
    scripted_einvals: AtomicUsize,
}

/// How long the simulated kernel takes to stop a portal's listener.
const LISTENER_TEARDOWN: Duration = Duration::from_millis(5);

fn err(kind: ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_string())
}

fn touch(dir: &Path, files: &[(&str, &str)]) -> io::Result<()> {
    for (name, value) in files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(p, value)?;
    }
    Ok(())
}

/// What the kernel creates inside a new item, by the item's place in the tree.
enum Item {
    Fabric,
    Hba,
    Backstore,
    Target,
    Tpg,
    Portal,
    Lun,
    Acl,
    MappedLun,
}

impl Default for FakeConfigfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeConfigfs {
    /// A configfs with target_core_mod loaded (`target/core` present, no fabric yet).
    pub fn new() -> Self {
        let sim = Self::unloaded();
        let t = sim.root().join("target");
        touch(
            &t,
            &[("version", "Target Engine Core ConfigFS Infrastructure v5.0")],
        )
        .and_then(|()| fs::create_dir_all(t.join("core/alua/lu_gps/default_lu_gp")))
        .expect("tempdir is writable");
        sim
    }

    /// A configfs mount without the target modules.
    pub fn unloaded() -> Self {
        FakeConfigfs {
            dir: tempfile::tempdir().expect("tempdir"),
            user: Mutex::new(HashSet::new()),
            writes: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            listeners_down: Mutex::new(HashSet::new()),
            portal_einvals: AtomicUsize::new(0),
            scripted_einvals: AtomicUsize::new(0),
        }
    }

    /// The next `n` portal `mkdir`s fail with EINVAL.
    pub fn fail_portal_mkdirs(&self, n: usize) {
        self.scripted_einvals.store(n, Ordering::SeqCst);
    }

    /// How many portal `mkdir`s failed with EINVAL so far.
    pub fn portal_einvals(&self) -> usize {
        self.portal_einvals.load(Ordering::SeqCst)
    }

    /// EINVAL for a portal `mkdir` of `name` now, if scripted or its listener is going away.
    fn portal_refusal(&self, name: &str) -> Option<io::Error> {
        let scripted = self
            .scripted_einvals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if scripted || self.listeners_down.lock().unwrap().contains(name) {
            self.portal_einvals.fetch_add(1, Ordering::SeqCst);
            return Some(io::Error::from_raw_os_error(22));
        }
        None
    }

    /// Whether `path` is the last portal on its address (of every target).
    fn last_portal(&self, path: &Path) -> bool {
        let name = path.file_name();
        !self.user().iter().any(|p| {
            p != path && p.file_name() == name && matches!(self.classify(p), Some(Item::Portal))
        })
    }

    /// The changes so far, as `op <path relative to the root>`.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn event(&self, op: &str, path: &Path) {
        let rel = path.strip_prefix(self.root()).unwrap_or(path);
        self.events
            .lock()
            .unwrap()
            .push(format!("{op} {}", rel.display()));
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<(PathBuf, String)> {
        self.writes.lock().unwrap().clone()
    }

    /// The stored value of an attribute (what was written, or the kernel's default).
    pub fn value(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Whether `rel` exists (file, directory or link).
    pub fn has(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.root().join(rel)).is_ok()
    }

    /// Where the link `rel` points, as the kernel reports it.
    pub fn link(&self, rel: &str) -> PathBuf {
        fs::read_link(self.root().join(rel)).unwrap()
    }

    fn user(&self) -> MutexGuard<'_, HashSet<PathBuf>> {
        self.user.lock().unwrap()
    }

    /// The components of `path` below `<root>/target`.
    fn rel(&self, path: &Path) -> Option<Vec<String>> {
        let rest = path.strip_prefix(self.root().join("target")).ok()?;
        rest.components()
            .map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    }

    fn classify(&self, path: &Path) -> Option<Item> {
        let r = self.rel(path)?;
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        let hba = |s: &str| {
            s.rsplit_once('_')
                .is_some_and(|(p, n)| !p.is_empty() && n.parse::<u32>().is_ok())
        };
        Some(match r.as_slice() {
            ["iscsi"] => Item::Fabric,
            ["core", h] if hba(h) => Item::Hba,
            ["core", h, _] if hba(h) => Item::Backstore,
            ["iscsi", t] if t.starts_with("iqn.") => Item::Target,
            ["iscsi", _, tpg] if tpg.starts_with("tpgt_") => Item::Tpg,
            ["iscsi", _, _, "np", _] => Item::Portal,
            ["iscsi", _, _, "lun", l] if l.starts_with("lun_") => Item::Lun,
            ["iscsi", _, _, "acls", _] => Item::Acl,
            ["iscsi", _, _, "acls", _, l] if l.starts_with("lun_") => Item::MappedLun,
            _ => return None,
        })
    }

    fn populate(&self, path: &Path, item: &Item) -> io::Result<()> {
        match item {
            Item::Fabric => touch(
                path,
                &[
                    ("lio_version", "Datera Inc. iSCSI Target v4.1.0"),
                    ("cpus_allowed_list", "0-1"),
                    ("discovery_auth/enforce_discovery_auth", "0"),
                    ("discovery_auth/userid", ""),
                    ("discovery_auth/password", ""),
                ],
            ),
            Item::Hba => touch(path, &[("hba_info", "HBA Index: 1"), ("hba_mode", "0")]),
            Item::Backstore => {
                touch(
                    path,
                    &[
                        ("alias", ""),
                        ("control", ""),
                        ("enable", "0"),
                        ("info", "Status: DEACTIVATED"),
                        ("udev_path", ""),
                        ("wwn/vpd_unit_serial", ""),
                        ("wwn/company_id", "0x001405"),
                        ("attrib/block_size", "0"),
                        ("attrib/emulate_write_cache", "0"),
                        ("pr/res_type", "No SPC-3 Reservation holder"),
                    ],
                )?;
                fs::create_dir_all(path.join("alua/default_tg_pt_gp"))?;
                fs::create_dir_all(path.join("statistics/scsi_dev"))
            }
            Item::Target => {
                fs::create_dir_all(path.join("fabric_statistics"))?;
                fs::create_dir_all(path.join("param"))
            }
            Item::Tpg => {
                touch(
                    path,
                    &[
                        ("enable", "0"),
                        ("dynamic_sessions", ""),
                        ("attrib/authentication", "1"),
                        ("attrib/cache_dynamic_acls", "0"),
                        ("attrib/demo_mode_discovery", "1"),
                        ("attrib/demo_mode_write_protect", "1"),
                        ("attrib/generate_node_acls", "0"),
                        ("attrib/login_timeout", "15"),
                        ("auth/userid", ""),
                        ("auth/password", ""),
                        ("param/AuthMethod", "CHAP,None"),
                    ],
                )?;
                for d in ["acls", "lun", "np"] {
                    fs::create_dir_all(path.join(d))?;
                }
                Ok(())
            }
            Item::Portal => touch(path, &[("iser", "0"), ("cxgbit", "0")]),
            Item::Lun => {
                touch(path, &[("alua_tg_pt_gp", ""), ("alua_tg_pt_offline", "0")])?;
                fs::create_dir_all(path.join("statistics/scsi_port"))
            }
            Item::Acl => touch(
                path,
                &[
                    ("cmdsn_depth", "64"),
                    ("info", "No active iSCSI Session"),
                    ("tag", ""),
                    ("attrib/authentication", "-1"),
                    ("attrib/dataout_timeout", "3"),
                    ("auth/authenticate_target", "0"),
                    ("auth/userid", ""),
                    ("auth/password", ""),
                    ("auth/userid_mutual", ""),
                    ("auth/password_mutual", ""),
                    ("param/InitialR2T", "Yes"),
                    ("fabric_statistics/iscsi_sess_stats/x", ""),
                ],
            ),
            Item::MappedLun => {
                touch(path, &[("write_protect", "0")])?;
                fs::create_dir_all(path.join("statistics/scsi_auth_intr"))
            }
        }
    }

    /// Links created through the trait whose target is `path`.
    fn links_to(&self, path: &Path) -> usize {
        self.user()
            .iter()
            .filter(|p| {
                fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
                    && p.parent()
                        .map(|parent| parent.join(fs::read_link(p).unwrap_or_default()))
                        .and_then(|t| fs::canonicalize(t).ok())
                        == fs::canonicalize(path).ok()
            })
            .count()
    }

    /// The relative path the kernel reports for a link at `link` to `target`.
    fn relative(&self, target: &Path, link: &Path) -> io::Result<PathBuf> {
        let root = self.root();
        let up = link
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .ok_or_else(|| err(ErrorKind::InvalidInput, "link outside configfs"))?
            .components()
            .count();
        let down = target
            .strip_prefix(root)
            .map_err(|_| err(ErrorKind::InvalidInput, "target outside configfs"))?;
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        Ok(rel.join(down))
    }
}

impl Configfs for FakeConfigfs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let item = self
            .classify(path)
            .ok_or_else(|| err(ErrorKind::PermissionDenied, "not a configfs group"))?;
        if let Item::Portal = item {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.parse::<std::net::SocketAddr>().is_err() {
                return Err(err(ErrorKind::InvalidInput, "bad portal"));
            }
            if let Some(refusal) = self.portal_refusal(&name) {
                return Err(refusal);
            }
        }
        fs::create_dir(path)?;
        self.user().insert(path.to_path_buf());
        self.event("mkdir", path);
        self.populate(path, &item)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        if !path.is_dir() {
            return Err(err(ErrorKind::NotFound, "no such item"));
        }
        if !self.user().contains(path) {
            return Err(err(ErrorKind::PermissionDenied, "a default group"));
        }
        let busy_children = self.user().iter().any(|p| p != path && p.starts_with(path));
        if busy_children {
            return Err(err(ErrorKind::DirectoryNotEmpty, "items inside"));
        }
        if self.links_to(path) > 0 {
            return Err(err(ErrorKind::ResourceBusy, "still linked"));
        }
        if matches!(self.classify(path), Some(Item::Portal)) && self.last_portal(path) {
            // The kernel stops the shared listener before the rmdir returns.
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            self.listeners_down.lock().unwrap().insert(name.to_string());
            std::thread::sleep(LISTENER_TEARDOWN);
            let removed = fs::remove_dir_all(path);
            self.listeners_down.lock().unwrap().remove(name.as_ref());
            removed?;
        } else {
            fs::remove_dir_all(path)?;
        }
        self.user().remove(path);
        self.event("rmdir", path);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let value = fs::read_to_string(path)?;
        if path.ends_with("wwn/vpd_unit_serial") {
            return Ok(format!("T10 VPD Unit Serial Number: {value}\n"));
        }
        Ok(format!("{value}\n"))
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(err(ErrorKind::NotFound, "no such attribute"));
        }
        self.writes
            .lock()
            .unwrap()
            .push((path.to_path_buf(), value.to_string()));
        let dir = path.parent().unwrap_or(path);
        let backstore = matches!(self.classify(dir), Some(Item::Backstore));
        let enabled = || fs::read_to_string(dir.join("enable")).is_ok_and(|v| v == "1");
        match path.file_name().and_then(|n| n.to_str()) {
            Some("enable") if backstore && enabled() => {
                return Err(err(ErrorKind::AlreadyExists, "already enabled"));
            }
            Some("enable") if backstore => {
                let control = fs::read_to_string(dir.join("control"))?;
                if !control.starts_with("udev_path=/") {
                    return Err(err(ErrorKind::InvalidInput, "missing udev_path="));
                }
            }
            Some("control") if backstore && enabled() => {
                return Err(err(ErrorKind::AlreadyExists, "ibd_bd exists"));
            }
            Some("vpd_unit_serial") => {
                let bs = dir.parent().unwrap_or(dir);
                if self.links_to(bs) > 0 {
                    return Err(err(ErrorKind::InvalidInput, "exports exist"));
                }
            }
            _ => {}
        }
        fs::write(path, value)?;
        self.event("write", path);
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let parent = link.parent().unwrap_or(link);
        match (self.classify(parent), self.classify(target)) {
            (Some(Item::Lun), Some(Item::Backstore)) => {
                if fs::read_to_string(target.join("enable"))? != "1" {
                    return Err(err(ErrorKind::Other, "device not configured"));
                }
            }
            (Some(Item::MappedLun), Some(Item::Lun)) => {}
            _ => {
                return Err(err(
                    ErrorKind::PermissionDenied,
                    "not a valid configfs link",
                ))
            }
        }
        if fs::symlink_metadata(link).is_ok() {
            return Err(err(ErrorKind::AlreadyExists, "link exists"));
        }
        std::os::unix::fs::symlink(self.relative(target, link)?, link)?;
        self.user().insert(link.to_path_buf());
        self.event("symlink", link);
        Ok(())
    }

    fn unlink(&self, path: &Path) -> io::Result<()> {
        if !self.user().contains(path) {
            return Err(err(ErrorKind::NotFound, "no such link"));
        }
        fs::remove_file(path)?;
        self.user().remove(path);
        self.event("unlink", path);
        Ok(())
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        fs::read_link(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, Kind)>> {
        RealConfigfs.list(dir)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<Kind>> {
        RealConfigfs.kind(path)
    }
}
