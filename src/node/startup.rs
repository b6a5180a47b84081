//! Node mode start-up: the host's initiator name, the node id, the Node annotation, the
//! runners (iscsiadm in the host's namespaces or directly), the gRPC server, and kubelet
//! registration when asked ([`registration`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::cli::{IscsiadmMode, NodeArgs};
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::domain::{InitiatorNameFile, Iqn};
use crate::error::full_message;
use crate::exec::{SharedRunner, TokioRunner};
use crate::identity::{Health, IdentityService, Readiness};
use crate::{kube, server};

use super::device::Sysfs;
use super::iscsi::{lists_iscsid, Iscsiadm};
use super::mount::NixMounter;
use super::registration::{self, Registrar};
use super::state::StateDir;
use super::{NodeConfig, NodeDeps, NodeService};

/// Reads `InitiatorName=` from open-iscsi's initiator name file.
pub fn read_initiator_name(path: &Path) -> Result<Iqn, String> {
    let fix = format!(
        "install open-iscsi (its package generates the file) or write `InitiatorName=iqn.YYYY-MM.reverse.domain:hostname` to {} and restart iscsid; --initiator-name-file (CSI_INITIATOR_NAME_FILE) names another file",
        path.display()
    );
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the initiator name file {}: {e}: {fix}",
            path.display()
        )
    })?;
    parse_initiator_name(&text).ok_or_else(|| {
        format!(
            "{} holds no valid `InitiatorName=iqn...` line: {fix}",
            path.display()
        )
    })
}

/// The IQN of the first `InitiatorName=` line, if it is a valid iSCSI name.
fn parse_initiator_name(text: &str) -> Option<Iqn> {
    InitiatorNameFile::parse(text).iqn()
}

/// Probe: iscsiadm works and iscsid listens (and, on the way, the session gauge).
struct IscsidReadiness {
    /// iscsiadm, run the way the node runs it.
    iscsi: Iscsiadm,
    /// The unix socket table of the network namespace iscsiadm runs in.
    unix_table: PathBuf,
    /// Where sessions are counted.
    sysfs: Sysfs,
}

#[async_trait]
impl Readiness for IscsidReadiness {
    async fn check(&self) -> Health {
        if let Err(e) = self.iscsi.sessions().await {
            return Health::Broken(format!(
                "iscsiadm does not work: {}; in --iscsiadm-mode host the pod needs hostPID and the host open-iscsi, in direct mode the image's iscsiadm needs the host's /etc/iscsi, /var/lib/iscsi and /run/lock/iscsi",
                full_message(&e)
            ));
        }
        crate::metrics::global().set_iscsi_sessions(self.sysfs.session_count());
        match tokio::fs::read_to_string(&self.unix_table).await {
            Ok(table) if lists_iscsid(&table) => Health::Ready,
            Ok(_) => Health::Broken(
                "iscsid is not running on this host: start it (`systemctl enable --now iscsid`)"
                    .into(),
            ),
            Err(e) => Health::Broken(format!(
                "cannot check iscsid in {}: {e}",
                self.unix_table.display()
            )),
        }
    }
}

/// Runs node mode until SIGTERM/SIGINT.
pub async fn run(args: NodeArgs) -> Result<(), String> {
    let iqn = read_initiator_name(&args.initiator_name_file)?;
    let node_id = match (&args.node_id, args.common.standalone) {
        (Some(id), _) => id.clone(),
        (None, true) => iqn.to_string(),
        (None, false) => {
            return Err("--node-id (CSI_NODE_ID) is required unless --standalone: set it to the Kubernetes node name (spec.nodeName through the downward API)".into())
        }
    };
    if !args.common.standalone {
        let client = kube::client().await.map_err(|e| full_message(&e))?;
        kube::write_initiator(&client, &args.common.driver_name, &node_id, iqn.as_str())
            .await
            .map_err(|e| {
                format!(
                    "cannot annotate Node {node_id} with its initiator IQN (RBAC: get and patch on nodes): {}",
                    full_message(&e)
                )
            })?;
    }
    let socket = args.common.socket_path()?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        socket
            .parent()
            .map(|d| d.join("volumes"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/lvm-iscsi-csi/volumes"))
    });
    // iscsiadm reaches iscsid through an abstract unix socket, which lives in a network
    // namespace: PID 1's when iscsiadm is run there (hostPID), else this process's.
    let (iscsi_runner, unix_table): (SharedRunner, &str) = match args.iscsiadm_mode {
        IscsiadmMode::Host => (
            Arc::new(TokioRunner::with_prefix(
                TokioRunner::host_namespace_prefix(),
            )),
            "/proc/1/net/unix",
        ),
        IscsiadmMode::Direct => (Arc::new(TokioRunner::new()), "/proc/self/net/unix"),
    };
    let iscsi = Iscsiadm::new(iscsi_runner);
    let service = NodeService::new(
        NodeConfig {
            node_id: node_id.clone(),
            initiator_iqn: iqn.clone(),
            max_volumes_per_node: args.max_volumes_per_node,
            device_timeout: args.device_timeout,
        },
        NodeDeps {
            iscsiadm: iscsi.clone(),
            tools: Arc::new(TokioRunner::new()),
            mounter: Arc::new(NixMounter::new()),
            sysfs: Sysfs::default(),
            state: StateDir::new(&state_dir),
        },
    );
    let listener =
        server::bind(&socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // Kubelet calls NodeGetInfo while registering: the CSI socket is bound first.
    let registrar = match &args.kubelet_registration_path {
        Some(endpoint) => {
            let driver = &args.common.driver_name;
            let reg_socket = registration::socket_path(&args.plugin_registration_path, driver);
            let info = registration::plugin_info(driver, endpoint);
            Some(Registrar::start(reg_socket.clone(), info).map_err(|e| {
                format!(
                    "cannot listen on the registration socket {}: {e}",
                    reg_socket.display()
                )
            })?)
        }
        None => None,
    };
    let readiness: Arc<dyn Readiness> = Arc::new(IscsidReadiness {
        iscsi,
        unix_table: PathBuf::from(unix_table),
        sysfs: Sysfs::default(),
    });
    let readiness = match &registrar {
        Some(r) => r.readiness(readiness),
        None => readiness,
    };
    // CONTROLLER_SERVICE describes the plugin, not this process: the driver does provide
    // it (the controller's endpoint), and CO tools such as csi-sanity read the plugin's
    // capabilities from whichever endpoint they talk to.
    let identity = Arc::new(IdentityService::new(
        args.common.driver_name.clone(),
        readiness,
        true,
    ));
    crate::health::global().answer_from(identity.clone());
    tracing::info!(
        node_id,
        initiator = %iqn,
        socket = %socket.display(),
        state_dir = %state_dir.display(),
        iscsiadm = ?args.iscsiadm_mode,
        "node plugin serving"
    );
    let router = server::builder()
        .add_service(IdentityServer::from_arc(identity))
        .add_service(NodeServer::new(service));
    let served = server::serve(listener, router, server::shutdown_signal()).await;
    if let Some(r) = registrar {
        r.stop().await;
    }
    served.map_err(|e| format!("gRPC server failed: {}", full_message(&e)))?;
    tracing::info!("node plugin stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiator_name_file() {
        // The file open-iscsi's Debian package writes.
        let debian = "## DO NOT EDIT OR REMOVE THIS FILE!\n## If you remove this file, the iSCSI daemon will not start.\n## If you change the InitiatorName, existing access control lists\n## may reject this initiator.  The InitiatorName must be unique\n## for each iSCSI initiator.  Do NOT duplicate iSCSI InitiatorNames.\nInitiatorName=iqn.1993-08.org.debian:01:5c8d368c2ff3\n";
        assert_eq!(
            parse_initiator_name(debian).as_ref().map(Iqn::as_str),
            Some("iqn.1993-08.org.debian:01:5c8d368c2ff3")
        );
        assert_eq!(parse_initiator_name("#InitiatorName=iqn.a:b\n"), None);
        assert_eq!(parse_initiator_name("InitiatorName=\n"), None);
        assert_eq!(
            parse_initiator_name("InitiatorName=GenerateName=yes\n"),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("initiatorname.iscsi");
        let err = read_initiator_name(&missing).unwrap_err();
        assert!(
            err.contains("initiatorname.iscsi") && err.contains("install open-iscsi"),
            "{err}"
        );
        std::fs::write(&missing, "junk\n").unwrap();
        let err = read_initiator_name(&missing).unwrap_err();
        assert!(err.contains("InitiatorName="), "{err}");
    }
}
