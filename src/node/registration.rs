//! Kubelet plugin registration, built in (what node-driver-registrar does as a sidecar).
//!
//! The node plugin serves kubelet's `pluginregistration.Registration` service on
//! `<plugins_registry>/<driver-name>-reg.sock`. Kubelet's plugin watcher finds the socket,
//! calls GetInfo (type `CSIPlugin`, the driver name, the CSI socket as kubelet sees it, CSI
//! 1.0.0), calls NodeGetInfo on that CSI socket, then NotifyRegistrationStatus. So the CSI
//! socket is bound before this one appears.
//!
//! A refusal is logged as an error and fails the node's Probe, hence `/healthz`: kubelet
//! restarts the container and the registration is tried again (node-driver-registrar exits
//! instead). Probe also fails when our registration socket is gone (kubelet's directory
//! emptied): the restart makes it again. The socket is private (made by [`server::bind`],
//! which also replaces a stale one) and removed at shutdown, which tells kubelet the plugin
//! is gone.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::identity::{Health, Readiness};
use crate::server;

use self::api::registration_server::{Registration, RegistrationServer};
use self::api::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// The generated types and services of proto/pluginregistration.proto.
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("pluginregistration");
}

/// The plugin type kubelet hands CSI drivers to its CSI plugin handler with.
pub const PLUGIN_TYPE: &str = "CSIPlugin";

/// The CSI versions we speak (kubelet accepts any 1.x).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// The registration socket of `driver_name` in kubelet's plugin registry directory.
pub fn socket_path(registry: &Path, driver_name: &str) -> PathBuf {
    registry.join(format!("{driver_name}-reg.sock"))
}

/// What GetInfo answers: `endpoint` is the CSI socket's path on the host.
pub fn plugin_info(driver_name: &str, endpoint: &Path) -> PluginInfo {
    PluginInfo {
        r#type: PLUGIN_TYPE.to_string(),
        name: driver_name.to_string(),
        endpoint: endpoint.to_string_lossy().into_owned(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    }
}

/// What kubelet last said about the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Nothing yet.
    Waiting,
    /// Registered.
    Registered,
    /// Refused, with kubelet's reason.
    Refused(String),
}

/// The Registration service kubelet calls.
struct RegistrationService {
    /// GetInfo's answer.
    info: PluginInfo,
    /// Where NotifyRegistrationStatus is recorded.
    outcome: Arc<Mutex<Outcome>>,
}

#[async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(
            endpoint = self.info.endpoint,
            "kubelet asked for the plugin's info"
        );
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let outcome = if status.plugin_registered {
            tracing::info!(driver = self.info.name, "registered with kubelet");
            Outcome::Registered
        } else {
            tracing::error!(
                driver = self.info.name,
                error = status.error,
                "kubelet refused to register the plugin; the node plugin reports itself broken so that it is restarted"
            );
            Outcome::Refused(status.error)
        };
        *lock(&self.outcome) = outcome;
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// The outcome, even if a panicking holder poisoned the lock (it only holds a value).
fn lock(outcome: &Mutex<Outcome>) -> std::sync::MutexGuard<'_, Outcome> {
    outcome
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A socket file's identity, to tell ours from one made after it.
fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))
}

/// The registration server, running.
pub struct Registrar {
    /// Our registration socket.
    socket: PathBuf,
    /// Its device and inode when we made it.
    id: (u64, u64),
    /// What kubelet said.
    outcome: Arc<Mutex<Outcome>>,
    /// Stops the server.
    stop: oneshot::Sender<()>,
    /// The server.
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Registrar {
    /// Binds `socket` (a stale one is replaced) and serves `info` on it until
    /// [`stop`](Self::stop).
    pub fn start(socket: PathBuf, info: PluginInfo) -> io::Result<Registrar> {
        let listener = server::bind(&socket)?;
        let id = file_id(&socket)?;
        let outcome = Arc::new(Mutex::new(Outcome::Waiting));
        let service = RegistrationService {
            info,
            outcome: Arc::clone(&outcome),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        tracing::info!(socket = %socket.display(), "serving kubelet plugin registration");
        Ok(Registrar {
            socket,
            id,
            outcome,
            stop,
            task,
        })
    }

    /// `inner`, failing while kubelet refuses the registration or our socket is gone.
    pub fn readiness(&self, inner: Arc<dyn Readiness>) -> Arc<dyn Readiness> {
        Arc::new(Registered {
            socket: self.socket.clone(),
            id: self.id,
            outcome: Arc::clone(&self.outcome),
            inner,
        })
    }

    /// Stops serving and removes the socket, unless another process has replaced it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "plugin registration server failed"),
            Err(e) => tracing::warn!(error = %e, "plugin registration server panicked"),
        }
        if file_id(&self.socket).is_ok_and(|id| id == self.id) {
            if let Err(e) = std::fs::remove_file(&self.socket) {
                tracing::warn!(socket = %self.socket.display(), error = %e, "cannot remove the registration socket");
            }
        }
    }
}

/// The node's readiness with the registration's health in front.
struct Registered {
    /// Our registration socket.
    socket: PathBuf,
    /// Its identity when we made it.
    id: (u64, u64),
    /// What kubelet said.
    outcome: Arc<Mutex<Outcome>>,
    /// The rest of the node's readiness.
    inner: Arc<dyn Readiness>,
}

#[async_trait]
impl Readiness for Registered {
    async fn check(&self) -> Health {
        if let Outcome::Refused(why) = &*lock(&self.outcome) {
            return Health::Broken(format!(
                "kubelet refused to register the plugin: {why}; a restart of the node plugin registers it again"
            ));
        }
        if file_id(&self.socket).ok() != Some(self.id) {
            return Health::Broken(format!(
                "the registration socket {} is gone or replaced (kubelet's plugin directory emptied?); a restart of the node plugin makes it again",
                self.socket.display()
            ));
        }
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::api::registration_client::RegistrationClient;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tonic::transport::Channel;

    struct Ready;

    #[async_trait]
    impl Readiness for Ready {
        async fn check(&self) -> Health {
            Health::Ready
        }
    }

    async fn client(socket: &Path) -> RegistrationClient<Channel> {
        RegistrationClient::new(crate::server::unix_channel(socket).await)
    }

    fn start(dir: &Path) -> (PathBuf, Registrar) {
        let socket = socket_path(&dir.join("plugins_registry"), "lvm-iscsi.csi.io");
        let info = plugin_info(
            "lvm-iscsi.csi.io",
            Path::new("/var/lib/kubelet/plugins/lvm-iscsi.csi.io/csi.sock"),
        );
        let registrar = Registrar::start(socket.clone(), info).unwrap();
        (socket, registrar)
    }

    #[tokio::test]
    async fn kubelet_gets_the_plugin_info_over_a_private_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, registrar) = start(dir.path());
        assert!(socket.ends_with("plugins_registry/lvm-iscsi.csi.io-reg.sock"));
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "world-accessible socket: {mode:o}");

        let info = client(&socket)
            .await
            .get_info(InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            info,
            PluginInfo {
                r#type: "CSIPlugin".into(),
                name: "lvm-iscsi.csi.io".into(),
                endpoint: "/var/lib/kubelet/plugins/lvm-iscsi.csi.io/csi.sock".into(),
                supported_versions: vec!["1.0.0".into()],
            }
        );
        registrar.stop().await;
        assert!(!socket.exists(), "the socket is removed at shutdown");
    }

    #[tokio::test]
    async fn a_refused_registration_breaks_readiness_until_kubelet_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, registrar) = start(dir.path());
        let readiness = registrar.readiness(Arc::new(Ready));
        assert_eq!(readiness.check().await, Health::Ready);

        let mut kubelet = client(&socket).await;
        let refuse = RegistrationStatus {
            plugin_registered: false,
            error: "driver name lvm-iscsi.csi.io already registered".into(),
        };
        kubelet.notify_registration_status(refuse).await.unwrap();
        let health = readiness.check().await;
        assert!(
            matches!(&health, Health::Broken(why) if why.contains("kubelet refused") && why.contains("already registered")),
            "{health:?}"
        );
        let accept = RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        };
        kubelet.notify_registration_status(accept).await.unwrap();
        assert_eq!(readiness.check().await, Health::Ready);
        registrar.stop().await;
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_only_ours_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, first) = start(dir.path());
        let readiness = first.readiness(Arc::new(Ready));
        // A second start (a restarted container) replaces the first one's socket...
        let second = Registrar::start(socket.clone(), plugin_info("d", Path::new("/x"))).unwrap();
        let health = readiness.check().await;
        assert!(
            matches!(&health, Health::Broken(why) if why.contains("gone or replaced")),
            "{health:?}"
        );
        // ...which the first one's shutdown leaves alone.
        first.stop().await;
        assert!(socket.exists());
        second.stop().await;
        assert!(!socket.exists());
    }
}
