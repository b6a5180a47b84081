//! The few filesystem operations LIO's configfs needs, behind a trait so unit tests can run
//! the backend against a simulated configfs in a temporary directory.
//!
//! Configfs is not an ordinary filesystem: a `mkdir` makes the kernel create the object's
//! attribute files and default groups itself, attributes take exactly the bytes written (a
//! trailing newline becomes part of a CHAP secret), and files are never created or truncated
//! by writers.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (a configfs item or group).
    Dir,
    /// A symbolic link (a configfs association, e.g. a LUN to its backstore).
    Link,
    /// An attribute file.
    File,
}

/// Configfs operations. Every method is one system call's worth of work, synchronous: the
/// backend runs them on a blocking thread.
pub trait Configfs: Send + Sync {
    /// Creates the item `path` (the kernel fills in its attributes).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes the item `path`.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Reads an attribute.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing attribute, as is.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Creates the link `link` pointing to `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Removes the link `path`.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// Where the link `path` points.
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// The entries of directory `dir`, by name.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, Kind)>>;
    /// What `path` is, or `None` when it does not exist.
    fn kind(&self, path: &Path) -> io::Result<Option<Kind>>;
}

/// The real configfs, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealConfigfs;

fn kind_of(ft: fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Link
    } else if ft.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

impl Configfs for RealConfigfs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT, no O_TRUNC: attributes exist already, and each write() is one store.
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn unlink(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        fs::read_link(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                kind_of(entry.file_type()?),
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<Kind>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(kind_of(m.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
