//! The gRPC server on a unix socket: stale socket replaced, socket private from the start,
//! every call under the per-RPC layer (span + metrics), graceful shutdown on SIGTERM/SIGINT.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};

use crate::metrics::{self, layer::RpcLayer};

/// The layers every CSI server runs under: [`RpcLayer`] (one span per RPC, latency, codes).
pub type Layers = Stack<RpcLayer, Identity>;

/// A tonic server builder with [`Layers`] applied, recording into the process's metrics:
/// `server::builder().add_service(...)`, then [`serve`].
pub fn builder() -> Server<Layers> {
    Server::builder().layer(RpcLayer::new(metrics::global().clone()))
}

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

/// Serves `router` (built from [`builder`]) on `listener` until `shutdown` completes, then
/// finishes in-flight calls.
pub async fn serve(
    listener: UnixListener,
    router: Router<Layers>,
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

/// A gRPC channel to the server on the unix socket `path`, for unit tests.
#[cfg(test)]
pub(crate) async fn unix_channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("a channel to the unix socket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::identity_client::IdentityClient;
    use crate::csi::identity_server::IdentityServer;
    use crate::csi::ProbeRequest;
    use crate::identity::{Health, IdentityService, Readiness};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    /// Ready on the first probe, broken afterwards.
    struct Flaky(std::sync::atomic::AtomicBool);

    #[async_trait::async_trait]
    impl Readiness for Flaky {
        async fn check(&self) -> Health {
            if self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                Health::Broken("vg gone".into())
            } else {
                Health::Ready
            }
        }
    }

    #[tokio::test]
    async fn served_calls_are_counted_by_grpc_code() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let listener = bind(&sock).unwrap();
        let identity = IdentityService::new("d", Arc::new(Flaky(false.into())), false);
        let router = builder().add_service(IdentityServer::new(identity));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));

        let mut client = IdentityClient::new(unix_channel(&sock).await);
        assert!(client.probe(ProbeRequest {}).await.is_ok());
        let err = client.probe(ProbeRequest {}).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);

        // Errors travel as trailers-only responses: the layer sees their code in the headers.
        let text = metrics::global().render();
        for code in ["Ok", "FailedPrecondition"] {
            let series = format!(
                r#"lvm_iscsi_csi_rpc_calls_total{{service="Identity",method="Probe",code="{code}"}} 1"#
            );
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing:\n{text}"
            );
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

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
