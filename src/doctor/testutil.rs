//! The fake host the checks' tests run on: procfs, sysfs and the host's files under a
//! temporary directory, tools answered by a [`FakeRunner`].

use std::path::PathBuf;
use std::sync::Arc;

use super::{Finding, Host};
use crate::exec::fake::FakeRunner;
use crate::exec::Output;
use crate::node::device::Sysfs;

/// A temporary directory with `proc/` and `sys/` in it, and a scripted runner.
pub struct Fixture {
    /// Keeps the tree alive.
    dir: tempfile::TempDir,
    /// Answers the tools and records their command lines.
    pub runner: Arc<FakeRunner>,
}

impl Fixture {
    /// `proc/net`, `sys/module` and `dirs` created, tools answered by `respond`.
    pub fn new(
        dirs: &[&str],
        respond: impl Fn(&[String]) -> Output + Send + Sync + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["proc/net", "sys/module"].iter().chain(dirs) {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Fixture {
            dir,
            runner: Arc::new(FakeRunner::new(respond)),
        }
    }

    /// A path in the tree.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file in the tree, with its directories.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A process `pid` named `comm` holding socket `inode`.
    pub fn process(&self, pid: u32, comm: &str, inode: u64) {
        self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
        std::fs::create_dir_all(self.path(&format!("proc/{pid}/fd"))).unwrap();
        std::os::unix::fs::symlink(
            format!("socket:[{inode}]"),
            self.path(&format!("proc/{pid}/fd/3")),
        )
        .unwrap();
    }

    /// The host the checks see: this runner, `proc/` and `sys/`.
    pub fn host(&self) -> Host {
        Host {
            runner: self.runner.clone(),
            proc_root: self.path("proc"),
            sysfs: Sysfs::new(self.path("sys"), self.path("dev")),
        }
    }
}

/// The finding of check `name`.
pub fn find<'a>(f: &'a [Finding], name: &str) -> &'a Finding {
    f.iter().find(|x| x.name == name).expect(name)
}
