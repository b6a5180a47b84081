//! Network portals, `tpgt_1/np/<address>:<port>`: the kernel listens there. It keeps one
//! listener per address, shared by every target that has a portal on it, so making a portal
//! while another target removes the last one on the same address can fail with EINVAL (the
//! listener is still being torn down; seen once in 95 volume lives run 8 at a time). The
//! backend therefore makes and removes portals one at a time, and retries an EINVAL a few
//! times for changes made by anyone else.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::configfs::Kind;
use super::{fail, Lio};
use crate::export::TargetError;

/// How many times a portal `mkdir` is tried while it fails with EINVAL.
const ATTEMPTS: u32 = 5;

/// The wait before the next try, times the number of tries so far.
const BACKOFF: Duration = Duration::from_millis(50);

/// The `np/` directory name of a portal: what the kernel expects, `[v6]:port` for IPv6.
fn np_name(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Makes and removes the network portals of TPGs, one at a time.
#[derive(Default)]
pub(super) struct Portals {
    /// Held while a portal is made or removed.
    lock: Mutex<()>,
}

impl Portals {
    /// Makes the network portals of a TPG (its `np` directory) exactly `wanted`.
    pub(super) fn ensure(
        &self,
        lio: &Lio,
        np: &Path,
        wanted: &[SocketAddr],
    ) -> Result<(), TargetError> {
        let _one_at_a_time = self.one_at_a_time();
        let existing = lio.entries(np, Kind::Dir)?;
        let have: Vec<Option<SocketAddr>> = existing.iter().map(|n| n.parse().ok()).collect();
        for addr in wanted {
            if !have.contains(&Some(*addr)) {
                mkdir_portal(lio, &np.join(np_name(addr)))?;
            }
        }
        for (name, addr) in existing.iter().zip(&have) {
            if !addr.is_some_and(|a| wanted.contains(&a)) {
                lio.rmdir(&np.join(name))?;
            }
        }
        Ok(())
    }

    /// Removes every portal of a TPG (its `np` directory).
    pub(super) fn remove(&self, lio: &Lio, np: &Path) -> Result<(), TargetError> {
        let _one_at_a_time = self.one_at_a_time();
        for name in lio.entries(np, Kind::Dir)? {
            lio.rmdir(&np.join(name))?;
        }
        Ok(())
    }

    fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates the portal `path` (already there is fine), retrying EINVAL.
fn mkdir_portal(lio: &Lio, path: &Path) -> Result<(), TargetError> {
    let mut tries = 1;
    loop {
        match lio.fs.mkdir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput && tries < ATTEMPTS => {
                tracing::debug!(portal = %path.display(), tries, "portal busy (EINVAL), trying again");
                std::thread::sleep(BACKOFF * tries);
                tries += 1;
            }
            Err(e) => return Err(fail("mkdir", path, e)),
        }
    }
}
