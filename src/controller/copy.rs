//! Block copy of a thick volume's data (restore from a classic snapshot, clone of a thick
//! volume): the source read in 1 MiB chunks, written to the new LV, progress logged every
//! ~10%. All-zero chunks (and the part of a larger destination beyond the source) are
//! zeroed with `fallocate(PUNCH_HOLE)` on the block device, which the kernel turns into
//! WRITE ZEROES/discard where the device supports it (nothing written through the page
//! cache, no space taken on thin-provisioned storage underneath), and into plain writes of
//! zeros where it does not. The destination is synced before the copy counts as done.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};

/// The unit of reading, writing and zero detection.
pub const CHUNK: usize = 1 << 20;

/// A chunk of zeros to compare with: slice equality is one memcmp, fast even in a debug
/// build (a byte-by-byte scan of a 1 GiB copy is not).
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// How often the pages just copied are dropped from the page cache: a copy of a large
/// volume must not push the storage node's useful cache (or, in a lab guest, its RAM) out.
const DROP_CACHE_EVERY: u64 = 64 << 20;

/// One copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// The device read (a snapshot).
    pub source: PathBuf,
    /// The device written (the new volume).
    pub dest: PathBuf,
    /// Bytes of data to copy from the start of `source`.
    pub data_len: u64,
    /// Size of `dest`: bytes from `data_len` to here are zeroed.
    pub total_len: u64,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Bytes written with data.
    pub written: u64,
    /// Bytes zeroed without writing them.
    pub zeroed: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// A failed copy.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", .path.display())]
pub struct CopyError {
    /// What was being done.
    pub what: &'static str,
    /// The device.
    pub path: PathBuf,
    /// The system's error.
    pub source: io::Error,
}

/// Copies block devices (a trait so controller tests can do without devices).
#[async_trait]
pub trait BlockCopier: Send + Sync {
    /// Runs `job` to completion, the destination synced.
    async fn copy(&self, job: CopyJob) -> Result<CopyStats, CopyError>;
}

/// The real copier: a blocking loop on a blocking thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceCopier;

#[async_trait]
impl BlockCopier for DeviceCopier {
    async fn copy(&self, job: CopyJob) -> Result<CopyStats, CopyError> {
        let dest = job.dest.clone();
        // Carries the RPC's span into the blocking thread's progress logs.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| copy_blocking(&job)))
            .await
            .map_err(|e| CopyError {
                what: "copy task died while writing",
                path: dest,
                source: io::Error::other(e.to_string()),
            })?
    }
}

/// The copy loop (see the module doc).
pub fn copy_blocking(job: &CopyJob) -> Result<CopyStats, CopyError> {
    let started = Instant::now();
    let err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError { what, path, source }
    };
    let src = File::open(&job.source).map_err(err("cannot open", &job.source))?;
    let dst = OpenOptions::new()
        .write(true)
        .open(&job.dest)
        .map_err(err("cannot open", &job.dest))?;
    let data_len = job.data_len.min(job.total_len);
    let mut buf = vec![0u8; CHUNK];
    let mut stats = CopyStats::default();
    let mut punch = true;
    let mut next_report = 1;
    let mut offset = 0u64;
    while offset < job.total_len {
        let n = (job.total_len - offset).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        let data = data_len.saturating_sub(offset).min(n as u64) as usize;
        if data > 0 {
            src.read_exact_at(&mut chunk[..data], offset)
                .map_err(err("cannot read", &job.source))?;
        }
        chunk[data..].fill(0);
        if *chunk == ZEROS[..n] {
            if punch && zero_range(&dst, offset, n as u64).is_ok() {
                stats.zeroed += n as u64;
            } else {
                // The device cannot zero by itself: write the zeros.
                punch = false;
                dst.write_all_at(chunk, offset)
                    .map_err(err("cannot write", &job.dest))?;
                stats.written += n as u64;
            }
        } else {
            dst.write_all_at(chunk, offset)
                .map_err(err("cannot write", &job.dest))?;
            stats.written += n as u64;
        }
        offset += n as u64;
        if offset.is_multiple_of(DROP_CACHE_EVERY) {
            drop_cache(&src, &dst, offset);
        }
        if offset * 10 >= job.total_len * next_report && offset < job.total_len {
            tracing::info!(
                source = %job.source.display(),
                dest = %job.dest.display(),
                percent = offset * 100 / job.total_len,
                copied = offset,
                total = job.total_len,
                "copying volume data"
            );
            next_report = offset * 10 / job.total_len + 1;
        }
    }
    dst.sync_all().map_err(err("cannot sync", &job.dest))?;
    drop_cache(&src, &dst, offset);
    stats.elapsed = started.elapsed();
    tracing::info!(
        source = %job.source.display(),
        dest = %job.dest.display(),
        written = stats.written,
        zeroed = stats.zeroed,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "volume data copied"
    );
    Ok(stats)
}

/// Advises the kernel to drop the first `len` bytes of both devices from the page cache
/// (dirty pages of the destination are written back first). Only advice: errors are
/// ignored.
fn drop_cache(src: &File, dst: &File, len: u64) {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    for f in [src, dst] {
        let _ = posix_fadvise(f.as_fd(), 0, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

/// Zeroes `len` bytes at `offset` without writing them: on a block device PUNCH_HOLE means
/// "zero out, the device may unmap" and fails (EOPNOTSUPP) rather than fall back to writes.
fn zero_range(file: &File, offset: u64, len: u64) -> nix::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(nix::errno::Errno::EINVAL);
    };
    fallocate(
        file.as_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn copies_data_and_zeroes_the_rest() {
        // Source: a data chunk, a zero chunk, half a data chunk.
        let mut src = vec![7u8; CHUNK];
        src.extend(vec![0u8; CHUNK]);
        src.extend(vec![9u8; CHUNK / 2]);
        let source = file(&src);
        // Destination: larger, full of old data that must not survive.
        let total = 4 * CHUNK as u64;
        let dest = file(&vec![0xaa; total as usize]);
        let stats = copy_blocking(&CopyJob {
            source: source.path().into(),
            dest: dest.path().into(),
            data_len: src.len() as u64,
            total_len: total,
        })
        .unwrap();
        let out = std::fs::read(dest.path()).unwrap();
        assert_eq!(out.len() as u64, total, "the size is kept");
        assert_eq!(&out[..src.len()], &src[..]);
        assert!(out[src.len()..].iter().all(|&b| b == 0));
        assert_eq!(stats.written + stats.zeroed, total);
        assert!(stats.written >= 2 * CHUNK as u64, "{stats:?}");
    }

    #[test]
    fn a_missing_device_is_an_error_naming_it() {
        let dest = file(&[0; 16]);
        let e = copy_blocking(&CopyJob {
            source: "/nonexistent/dev".into(),
            dest: dest.path().into(),
            data_len: 16,
            total_len: 16,
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dev"), "{e}");
        // A source shorter than the data length given is a read error, not zeros.
        let short = file(&[1; 8]);
        let e = copy_blocking(&CopyJob {
            source: short.path().into(),
            dest: dest.path().into(),
            data_len: 16,
            total_len: 16,
        })
        .unwrap_err();
        assert_eq!(e.what, "cannot read");
    }
}
