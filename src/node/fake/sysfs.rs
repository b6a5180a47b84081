//! A sysfs + /dev tree in a temporary directory laid out like the real one (captured in the
//! lab after a login:
//! `class/iscsi_session/sessionN -> ../../devices/platform/hostH/sessionN/iscsi_session/sessionN`,
//! `sessionN/device -> ../../../sessionN`, `targetH:0:0/H:0:0:LUN/block/sdX`,
//! `block/sdX -> ../devices/...`, `dev/block/MAJ:MIN -> ../../devices/...`).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::Portal;
use crate::node::device::{DevNum, Sysfs, LOGGED_IN};

/// A fake sysfs and /dev in a temporary directory (host number = session id).
#[derive(Clone)]
pub struct FakeSysfs {
    /// Keeps the directory alive as long as any clone.
    dir: Arc<tempfile::TempDir>,
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn link(target: &str, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(at);
    symlink(target, at).unwrap();
}

impl Default for FakeSysfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSysfs {
    /// An empty tree.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class/iscsi_session")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        FakeSysfs { dir: Arc::new(dir) }
    }

    /// The tree as the code under test sees it.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.sys(), self.dir.path().join("dev"))
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    /// The fake device node of disk `name`.
    pub fn dev_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("dev").join(name)
    }

    fn session_dev(&self, sid: u32) -> PathBuf {
        self.sys()
            .join(format!("devices/platform/host{sid}/session{sid}"))
    }

    /// A logged-in session to `target` through `portal`, with disks for `luns`.
    pub fn add_session(
        &self,
        sid: u32,
        target: &str,
        portal: &Portal,
        luns: &[(u32, &str, DevNum)],
    ) {
        let dev = self.session_dev(sid);
        let class = dev.join(format!("iscsi_session/session{sid}"));
        write(&class.join("targetname"), &format!("{target}\n"));
        write(&class.join("state"), &format!("{LOGGED_IN}\n"));
        link(&format!("../../../session{sid}"), &class.join("device"));
        link(
            &format!("../../devices/platform/host{sid}/session{sid}/iscsi_session/session{sid}"),
            &self.sys().join(format!("class/iscsi_session/session{sid}")),
        );
        let conn = dev.join(format!(
            "connection{sid}:0/iscsi_connection/connection{sid}:0"
        ));
        write(
            &conn.join("persistent_address"),
            &format!("{}\n", portal.host()),
        );
        write(
            &conn.join("persistent_port"),
            &format!("{}\n", portal.port()),
        );
        for (lun, name, num) in luns {
            self.add_lun(sid, *lun, name, *num);
        }
    }

    /// Disk `name` for `lun` in session `sid`, with its device node.
    pub fn add_lun(&self, sid: u32, lun: u32, name: &str, num: DevNum) {
        let rel =
            format!("devices/platform/host{sid}/session{sid}/target{sid}:0:0/{sid}:0:0:{lun}");
        let scsi = self.sys().join(&rel);
        write(&scsi.join("state"), "running\n");
        write(&scsi.join("delete"), "");
        let block = scsi.join("block").join(name);
        write(&block.join("dev"), &format!("{num}\n"));
        write(&block.join("size"), "196608\n");
        write(&block.join("ro"), "0\n");
        link(&format!("../../../{sid}:0:0:{lun}"), &block.join("device"));
        link(
            &format!("../{rel}/block/{name}"),
            &self.sys().join("block").join(name),
        );
        link(
            &format!("../../{rel}/block/{name}"),
            &self.sys().join("dev/block").join(num.to_string()),
        );
        // Kept when a test has put content (a superblock) there before the login.
        if !self.dev_path(name).exists() {
            write(&self.dev_path(name), "");
        }
    }

    /// Puts `content` on disk `name`'s device node, as if written to the disk.
    pub fn set_dev_content(&self, name: &str, content: &[u8]) {
        let path = self.dev_path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Removes disk `name` as `echo 1 > delete` does.
    pub fn remove_disk(&self, name: &str) {
        let block = self.sys().join("block").join(name);
        if let Ok(real) = std::fs::canonicalize(&block) {
            let num = std::fs::read_to_string(real.join("dev")).unwrap();
            let _ = std::fs::remove_file(self.sys().join("dev/block").join(num.trim()));
            let scsi = real.parent().unwrap().parent().unwrap().to_path_buf();
            std::fs::remove_dir_all(scsi).unwrap();
        }
        let _ = std::fs::remove_file(block);
        let _ = std::fs::remove_file(self.dev_path(name));
    }

    /// Removes session `sid` and its disks, as a logout does.
    pub fn remove_session(&self, sid: u32) {
        let dev = self.session_dev(sid);
        for entry in std::fs::read_dir(self.sys().join("block"))
            .into_iter()
            .flatten()
        {
            let entry = entry.unwrap();
            if let Ok(real) = std::fs::canonicalize(entry.path()) {
                if real.starts_with(&dev) {
                    self.remove_disk(entry.file_name().to_str().unwrap());
                }
            }
        }
        let _ = std::fs::remove_file(self.sys().join(format!("class/iscsi_session/session{sid}")));
        let _ = std::fs::remove_dir_all(dev);
    }

    /// Sets a session's state (`FAILED` when its connection is lost).
    pub fn set_session_state(&self, sid: u32, state: &str) {
        write(
            &self
                .session_dev(sid)
                .join(format!("iscsi_session/session{sid}/state")),
            state,
        );
    }

    /// Sets the SCSI state of disk `name`.
    pub fn set_scsi_state(&self, name: &str, state: &str) {
        write(
            &self.sys().join("block").join(name).join("device/state"),
            state,
        );
    }

    /// Sets disk `name` read-only, as `blockdev --setro` does.
    pub fn set_read_only(&self, name: &str) {
        write(&self.sys().join("block").join(name).join("ro"), "1\n");
    }

    /// What was written to disk `name`'s `device/delete`.
    pub fn read_delete(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.sys().join("block").join(name).join("device/delete")).ok()
    }

    /// Sets the size of disk `name` in bytes (what the kernel reads at a rescan).
    pub fn set_size(&self, name: &str, bytes: u64) {
        write(
            &self.sys().join("block").join(name).join("size"),
            &format!("{}\n", bytes / 512),
        );
    }

    /// What was written to disk `name`'s `device/rescan`.
    pub fn read_rescan(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.sys().join("block").join(name).join("device/rescan")).ok()
    }

    /// udev's by-path link `name` to disk `disk`.
    pub fn add_by_path(&self, name: &str, disk: &str) {
        link(
            &format!("../../{disk}"),
            &self.dir.path().join("dev/disk/by-path").join(name),
        );
    }
}
