//! The gRPC server on a unix socket: stale socket replaced, socket private from the start,
//! graceful shutdown on SIGTERM/SIGINT.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;

/// Binds the CSI socket at `path`: an existing socket file (left by a crash) is removed, any
/// other file there is an error; the socket is created mode 0660 so no other user can reach
/// it in between.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    umask(old);
    bound
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight calls.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn replaces_stale_socket_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        drop(bind(&sock).unwrap());
        let l = bind(&sock).expect("stale socket replaced");
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o007,
            0,
            "socket must not be world-accessible: {mode:o}"
        );
        drop(l);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind(&file).is_err());
        assert!(file.exists());
    }
}
