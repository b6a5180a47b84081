//! LIO, the kernel's own iSCSI target, configured by writing configfs directly: each step is
//! a `mkdir`, a `symlink` or a small write, milliseconds where targetcli costs seconds.
//!
//! What one export looks like, under `<configfs>/target/`:
//! - `core/iblock_3260/<backstore>`: the LV as an iblock backstore. [`HBA`] `iblock_3260`
//!   is ours alone: targetcli (rtslib) gives every storage object its own HBA directory,
//!   numbered from 0 upwards, so ours never share one with it. Attributes: `alias` = the
//!   target IQN (so a half-built export can still be found and removed), `control`
//!   `udev_path=<device>`, `udev_path`, `wwn/vpd_unit_serial` = [`unit_serial`] (stable
//!   across rebuilds), then `enable` = 1 (the kernel opens the device).
//! - `iscsi/<iqn>/tpgt_1`: `attrib/generate_node_acls` = 0 and `cache_dynamic_acls` = 0 (no
//!   access without an ACL), `demo_mode_write_protect` = 1 (should anyone turn demo mode on,
//!   it stays read-only), `demo_mode_discovery` = 0 (discovery shows a target only to
//!   initiators with an ACL on it), `authentication` (1 when the ACLs use CHAP; see
//!   [`TargetBackend::ensure_acl`]); `np/<addr>:<port>` per portal (`[addr]:port` for IPv6;
//!   the kernel listens there; portals no longer configured are removed);
//!   `lun/lun_0/<backstore>` → the backstore; `enable` = 1.
//! - `iscsi/<iqn>/tpgt_1/acls/<initiator>`: `auth/userid`, `password`, `userid_mutual`,
//!   `password_mutual` with CHAP, `attrib/authentication` = 1 with CHAP, 0 without (the
//!   per-initiator override of Linux ≥ 5.19), `lun_0/lun_0` → `../../lun/lun_0`.
//!
//! Configfs writes are stored byte for byte, so nothing is ever written with a trailing
//! newline; attributes are read back before writing, because several (`enable`, `control`)
//! refuse to be written twice.

mod configfs;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod portal;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use self::configfs::{Configfs, Kind, RealConfigfs};
use super::{
    check_device, check_name, check_ours, is_ours, listen_addrs, normalize_prefix, unit_serial,
    AclSpec, ExportSpec, TargetBackend, TargetError, TargetState,
};

/// Our HBA directory under `target/core`: the iblock plugin with an index nobody else uses.
pub const HBA: &str = "iblock_3260";
/// The one TPG of each target.
const TPG: &str = "tpgt_1";
/// The LUN directory (in the TPG and in each ACL): LUN 0.
const LUN: &str = "lun_0";

/// LIO's directory in configfs mounted at `configfs_root`: target_core_mod creates it.
pub fn target_dir(configfs_root: &Path) -> PathBuf {
    configfs_root.join("target")
}

/// The LIO backend.
pub struct LioBackend {
    /// The state shared with blocking tasks.
    inner: Arc<Lio>,
}

/// The configfs operations, synchronous (run on a blocking thread).
struct Lio {
    /// `<configfs>/target`.
    root: PathBuf,
    /// IQN prefix of our targets (without the trailing `:`).
    prefix: String,
    /// Where the operations go.
    fs: Arc<dyn Configfs>,
    /// Network portals, made and removed one at a time (see [`portal`]).
    portals: portal::Portals,
}

impl LioBackend {
    /// A backend writing configfs mounted at `configfs_root` (normally
    /// `/sys/kernel/config`), managing the targets whose IQN starts with `iqn_prefix:`.
    pub fn new(configfs_root: PathBuf, iqn_prefix: String) -> Self {
        Self::with_configfs(configfs_root, iqn_prefix, Arc::new(RealConfigfs))
    }

    fn with_configfs(configfs_root: PathBuf, iqn_prefix: String, fs: Arc<dyn Configfs>) -> Self {
        LioBackend {
            inner: Arc::new(Lio {
                root: target_dir(&configfs_root),
                prefix: normalize_prefix(iqn_prefix),
                fs,
                portals: portal::Portals::default(),
            }),
        }
    }

    /// Runs `f` on a blocking thread: configfs calls are system calls.
    async fn blocking<T, F>(&self, f: F) -> Result<T, TargetError>
    where
        T: Send + 'static,
        F: FnOnce(&Lio) -> Result<T, TargetError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let root = inner.root.display().to_string();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| TargetError::Configfs {
                op: "run a task on",
                path: root,
                source: io::Error::other(e.to_string()),
            })?
    }
}

#[async_trait]
impl TargetBackend for LioBackend {
    async fn probe(&self) -> Result<(), TargetError> {
        self.blocking(Lio::probe).await
    }

    fn data_lun(&self) -> u32 {
        0
    }

    async fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError> {
        let spec = spec.clone();
        self.blocking(move |l| l.ensure_export(&spec)).await
    }

    async fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError> {
        let (iqn, acl) = (iqn.to_string(), acl.clone());
        self.blocking(move |l| l.ensure_acl(&iqn, &acl)).await
    }

    async fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError> {
        let (iqn, initiator) = (iqn.to_string(), initiator.to_string());
        self.blocking(move |l| l.remove_acl(&iqn, &initiator)).await
    }

    async fn remove_export(&self, iqn: &str) -> Result<(), TargetError> {
        let iqn = iqn.to_string();
        self.blocking(move |l| l.remove_export(&iqn)).await
    }

    /// Nothing to do: LIO's iblock backstore asks the block device for its size at every
    /// READ CAPACITY (seen in the lab on Linux 6.1: after lvextend, a rescan on the
    /// initiator shows the new size with no change on the target).
    async fn resize_lun(&self, iqn: &str, _size: u64) -> Result<(), TargetError> {
        check_ours(iqn, &self.inner.prefix)
    }

    async fn list(&self) -> Result<Vec<TargetState>, TargetError> {
        self.blocking(Lio::list).await
    }
}

fn fail(op: &'static str, path: &Path, source: io::Error) -> TargetError {
    TargetError::Configfs {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl Lio {
    fn iscsi(&self) -> PathBuf {
        self.root.join("iscsi")
    }

    fn hba(&self) -> PathBuf {
        self.root.join("core").join(HBA)
    }

    fn tpg(&self, iqn: &str) -> PathBuf {
        self.iscsi().join(iqn).join(TPG)
    }

    fn exists(&self, path: &Path) -> Result<bool, TargetError> {
        self.fs
            .kind(path)
            .map(|k| k.is_some())
            .map_err(|e| fail("stat", path, e))
    }

    /// Creates `path`; `false` when it was already there.
    fn mkdir(&self, path: &Path) -> Result<bool, TargetError> {
        match self.fs.mkdir(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(fail("mkdir", path, e)),
        }
    }

    /// Removes `path`; already gone is fine.
    fn rmdir(&self, path: &Path) -> Result<(), TargetError> {
        match self.fs.rmdir(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(fail("rmdir", path, e)),
            _ => Ok(()),
        }
    }

    /// Removes the link `path`; already gone is fine.
    fn unlink(&self, path: &Path) -> Result<(), TargetError> {
        match self.fs.unlink(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(fail("unlink", path, e)),
            _ => Ok(()),
        }
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<(), TargetError> {
        match self.fs.symlink(target, link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(fail("symlink", link, e)),
            _ => Ok(()),
        }
    }

    /// An attribute's value without the newline the kernel appends.
    fn read(&self, path: &Path) -> Result<String, TargetError> {
        let raw = self.fs.read(path).map_err(|e| fail("read", path, e))?;
        Ok(raw.trim_end_matches('\n').to_string())
    }

    /// Writes `value` exactly (never with a newline: LIO would keep it).
    fn write(&self, path: &Path, value: &str) -> Result<(), TargetError> {
        self.fs
            .write(path, value)
            .map_err(|e| fail("write", path, e))
    }

    /// Writes `value` unless the attribute holds it already.
    fn ensure(&self, path: &Path, value: &str) -> Result<(), TargetError> {
        if self.read(path)? != value {
            self.write(path, value)?;
        }
        Ok(())
    }

    /// Names of the entries of `kind` in `dir` (none when `dir` does not exist).
    fn entries(&self, dir: &Path, kind: Kind) -> Result<Vec<String>, TargetError> {
        match self.fs.list(dir) {
            Ok(list) => Ok(list
                .into_iter()
                .filter(|(_, k)| *k == kind)
                .map(|(name, _)| name)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(fail("list", dir, e)),
        }
    }

    /// Registers the iSCSI fabric: `mkdir target/iscsi` makes the kernel load
    /// iscsi_target_mod and create the fabric's group.
    fn register_fabric(&self) -> Result<(), TargetError> {
        self.mkdir(&self.iscsi()).map(|_| ())
    }

    fn probe(&self) -> Result<(), TargetError> {
        if !self.exists(&self.root)? {
            return Err(TargetError::Unavailable {
                backend: "lio",
                reason: format!(
                    "{} does not exist: configfs is not mounted or target_core_mod is not \
                     loaded (modprobe target_core_mod iscsi_target_mod; mount -t configfs \
                     none /sys/kernel/config)",
                    self.root.display()
                ),
            });
        }
        self.register_fabric()
            .map_err(|e| TargetError::Unavailable {
                backend: "lio",
                reason: format!(
                    "the iSCSI fabric is not available ({e}): modprobe iscsi_target_mod"
                ),
            })
    }

    /// The backstore behind a link (LUN → backstore), from the link's last two components
    /// (`<hba>/<name>`): the kernel reports configfs links as relative paths.
    fn resolve_backstore(&self, link: &Path) -> Result<Option<PathBuf>, TargetError> {
        let target = self
            .fs
            .read_link(link)
            .map_err(|e| fail("readlink", link, e))?;
        let name = target.file_name();
        let hba = target.parent().and_then(Path::file_name);
        Ok(match (hba, name) {
            (Some(hba), Some(name)) => Some(self.root.join("core").join(hba).join(name)),
            _ => None,
        })
    }

    /// The backstore linked to the target's LUN 0, if any.
    fn lun_backstore(&self, iqn: &str) -> Result<Option<PathBuf>, TargetError> {
        let lun = self.tpg(iqn).join("lun").join(LUN);
        match self.entries(&lun, Kind::Link)?.first() {
            Some(link) => self.resolve_backstore(&lun.join(link)),
            None => Ok(None),
        }
    }

    fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError> {
        check_ours(&spec.iqn, &self.prefix)?;
        check_name("backstore name", &spec.backstore)?;
        check_device(&spec.device)?;
        let portals = listen_addrs(&spec.portals)?;
        self.register_fabric()?;

        let tpg = self.tpg(&spec.iqn);
        let lun = tpg.join("lun").join(LUN);
        let backstore = match self.lun_backstore(&spec.iqn)? {
            Some(bs) => {
                let existing = self.read(&bs.join("udev_path"))?;
                if existing != spec.device {
                    return Err(TargetError::Conflict {
                        iqn: spec.iqn.clone(),
                        existing,
                        wanted: spec.device.clone(),
                    });
                }
                None
            }
            None => Some(self.ensure_backstore(spec)?),
        };

        self.mkdir(&self.iscsi().join(&spec.iqn))?;
        if self.mkdir(&tpg)? {
            // Closed until ensure_acl says otherwise.
            self.write(&tpg.join("attrib/authentication"), "1")?;
        }
        for (attr, value) in [
            ("generate_node_acls", "0"),
            ("cache_dynamic_acls", "0"),
            ("demo_mode_write_protect", "1"),
            ("demo_mode_discovery", "0"),
        ] {
            self.ensure(&tpg.join("attrib").join(attr), value)?;
        }
        self.portals.ensure(self, &tpg.join("np"), &portals)?;
        self.mkdir(&lun)?;
        if let Some(bs) = backstore {
            if self.entries(&lun, Kind::Link)?.is_empty() {
                self.symlink(&bs, &lun.join(&spec.backstore))?;
            }
        }
        self.ensure(&tpg.join("enable"), "1")
    }

    /// Creates and enables the backstore of `spec` (or checks the one there), returning it.
    fn ensure_backstore(&self, spec: &ExportSpec) -> Result<PathBuf, TargetError> {
        let bs = self.hba().join(&spec.backstore);
        self.mkdir(&self.hba())?;
        if !self.mkdir(&bs)? {
            let alias = self.read(&bs.join("alias"))?;
            let device = self.read(&bs.join("udev_path"))?;
            let foreign = !alias.is_empty() && alias != spec.iqn;
            let enabled = self.read(&bs.join("enable"))? == "1";
            if foreign || (enabled && device != spec.device) {
                return Err(TargetError::Conflict {
                    iqn: spec.iqn.clone(),
                    existing: format!("{device} (backstore {} of {alias})", bs.display()),
                    wanted: spec.device.clone(),
                });
            }
            if enabled {
                return Ok(bs);
            }
            // Half-configured by an interrupted call: finish it.
        }
        self.write(&bs.join("alias"), &spec.iqn)?;
        self.write(&bs.join("control"), &format!("udev_path={}", spec.device))?;
        self.write(&bs.join("udev_path"), &spec.device)?;
        self.write(&bs.join("wwn/vpd_unit_serial"), &unit_serial(&spec.iqn))?;
        self.write(&bs.join("enable"), "1")?;
        Ok(bs)
    }

    fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        check_name("initiator name", &acl.initiator)?;
        let tpg = self.tpg(iqn);
        if !self.exists(&tpg)? {
            return Err(TargetError::NoTarget {
                iqn: iqn.to_string(),
            });
        }
        let dir = tpg.join("acls").join(&acl.initiator);
        self.mkdir(&dir)?;
        if let Some(chap) = &acl.chap {
            let auth = dir.join("auth");
            self.ensure(&auth.join("userid"), &chap.initiator.user)?;
            self.ensure(&auth.join("password"), &chap.initiator.password)?;
            self.ensure(&auth.join("userid_mutual"), &chap.target.user)?;
            self.ensure(&auth.join("password_mutual"), &chap.target.password)?;
        }
        let flag = if acl.chap.is_some() { "1" } else { "0" };
        // Per-initiator enforcement where the kernel has it (Linux >= 5.19); the TPG's
        // setting also decides whether AuthMethod=None may be negotiated at all.
        let per_acl = dir.join("attrib/authentication");
        if self.exists(&per_acl)? {
            self.ensure(&per_acl, flag)?;
        }
        self.ensure(&tpg.join("attrib/authentication"), flag)?;
        // The LUN is mapped last: the initiator sees it only once its credentials are set.
        let mapped = dir.join(LUN);
        self.mkdir(&mapped)?;
        if self.entries(&mapped, Kind::Link)?.is_empty() {
            self.symlink(&tpg.join("lun").join(LUN), &mapped.join(LUN))?;
        }
        Ok(())
    }

    fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        check_name("initiator name", initiator)?;
        self.remove_acl_dir(&self.tpg(iqn).join("acls").join(initiator))
    }

    /// Unmaps an ACL's LUNs and removes it; the kernel ends the initiator's sessions.
    fn remove_acl_dir(&self, dir: &Path) -> Result<(), TargetError> {
        for mapped in self.entries(dir, Kind::Dir)? {
            if !mapped.starts_with("lun_") {
                continue;
            }
            let mapped = dir.join(mapped);
            for link in self.entries(&mapped, Kind::Link)? {
                self.unlink(&mapped.join(link))?;
            }
            self.rmdir(&mapped)?;
        }
        self.rmdir(dir)
    }

    fn remove_export(&self, iqn: &str) -> Result<(), TargetError> {
        check_ours(iqn, &self.prefix)?;
        let target = self.iscsi().join(iqn);
        let mut backstores = BTreeSet::new();
        for tpg in self.entries(&target, Kind::Dir)? {
            if !tpg.starts_with("tpgt_") {
                continue;
            }
            let tpg = target.join(tpg);
            // No new logins while it is taken apart.
            let enable = tpg.join("enable");
            if self.read(&enable)? != "0" {
                self.write(&enable, "0")?;
            }
            for acl in self.entries(&tpg.join("acls"), Kind::Dir)? {
                self.remove_acl_dir(&tpg.join("acls").join(acl))?;
            }
            for lun in self.entries(&tpg.join("lun"), Kind::Dir)? {
                let lun = tpg.join("lun").join(lun);
                for link in self.entries(&lun, Kind::Link)? {
                    backstores.extend(self.resolve_backstore(&lun.join(&link))?);
                    self.unlink(&lun.join(link))?;
                }
                self.rmdir(&lun)?;
            }
            self.portals.remove(self, &tpg.join("np"))?;
            self.rmdir(&tpg)?;
        }
        self.rmdir(&target)?;
        // Our backstores made for this target, linked or not (an interrupted export).
        let hba = self.hba();
        for name in self.entries(&hba, Kind::Dir)? {
            let bs = hba.join(name);
            // Another volume's backstore can go away meanwhile (its own DeleteVolume).
            match self.fs.read(&bs.join("alias")) {
                Ok(alias) if alias.trim_end_matches('\n') == iqn => {
                    backstores.insert(bs);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail("read", &bs.join("alias"), e)),
            }
        }
        for bs in backstores.iter().filter(|bs| bs.starts_with(&hba)) {
            self.rmdir(bs)?;
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<TargetState>, TargetError> {
        let mut out = Vec::new();
        for iqn in self.entries(&self.iscsi(), Kind::Dir)? {
            if !is_ours(&iqn, &self.prefix) {
                continue;
            }
            let device = match self.lun_backstore(&iqn)? {
                Some(bs) => Some(self.read(&bs.join("udev_path"))?).filter(|d| !d.is_empty()),
                None => None,
            };
            let initiators = self.entries(&self.tpg(&iqn).join("acls"), Kind::Dir)?;
            out.push(TargetState {
                iqn,
                device,
                initiators,
            });
        }
        Ok(out)
    }
}
