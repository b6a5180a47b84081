//! Command line: one binary, one subcommand per mode. Every flag can also come from an
//! environment variable (that is how the Helm chart sets them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::iqn::parse_prefix;
use crate::domain::portal::parse_listen_portal;
use crate::domain::Portal;

/// The default CSI driver name (also the prefix of the Node annotation key).
pub const DEFAULT_DRIVER_NAME: &str = "lvm-iscsi.csi.io";

/// Kubernetes CSI driver: LVM volumes on a storage node, exported over iSCSI.
#[derive(Debug, Parser)]
#[command(name = "lvm-iscsi-csi", version, about)]
pub struct Cli {
    /// The mode to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity + Controller services (storage node: LVM and the kernel iSCSI target).
    Controller(ControllerArgs),
    /// Identity + Node services (every node running pods: open-iscsi and mounts).
    Node(NodeArgs),
    /// Check this host for what a mode needs; prints a fix for each problem and exits
    /// non-zero when something blocking fails.
    Doctor(DoctorArgs),
}

/// Flags shared by every serving mode.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// gRPC endpoint to listen on: unix:///path/to/csi.sock (a stale socket file is replaced).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// CSI driver name reported by GetPluginInfo (must match the CSIDriver object).
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME)]
    pub driver_name: String,
    /// Run without a Kubernetes API server (lab, demos): node ids are initiator IQNs.
    #[arg(long, env = "CSI_STANDALONE")]
    pub standalone: bool,
    /// Log format.
    #[arg(long, env = "CSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `lvm_iscsi_csi=debug`).
    #[arg(long, env = "CSI_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Serve Prometheus metrics (GET /metrics) and /healthz over HTTP on this address, e.g.
    /// `0.0.0.0:9808`; not served when absent.
    #[arg(long, env = "CSI_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,
    /// Serve GET /healthz over HTTP on this address, e.g. `0.0.0.0:9808`, answering from this
    /// process's Identity Probe (what the livenessprobe sidecar does, built in); not served
    /// when absent (/healthz is also on --metrics-address).
    #[arg(long, env = "CSI_HEALTH_ADDRESS")]
    pub health_address: Option<SocketAddr>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which kernel iSCSI target the controller drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetBackendKind {
    /// LIO, configured by writing configfs directly.
    Lio,
    /// tgt (scsi-target-utils), configured with tgtadm.
    Tgt,
}

/// Flags of `controller` mode.
#[derive(Debug, Args, Clone)]
pub struct ControllerArgs {
    /// Flags shared with the node mode.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Kernel target backend.
    #[arg(long, env = "CSI_TARGET_BACKEND", value_enum, default_value_t = TargetBackendKind::Lio)]
    pub target_backend: TargetBackendKind,
    /// iSCSI portal(s) initiators log in to, as IP:PORT or [IPv6]:PORT (port 3260 when
    /// none; repeat or comma-separate). The first one is also where the target listens.
    #[arg(
        long = "portal",
        env = "CSI_PORTALS",
        value_delimiter = ',',
        required = true,
        value_parser = parse_listen_portal
    )]
    pub portals: Vec<Portal>,
    /// IQN prefix of the targets this driver creates; `:<vg>.<lv>` is appended.
    #[arg(
        long,
        env = "CSI_IQN_PREFIX",
        default_value = "iqn.2026-11.io.csi.lvm-iscsi",
        value_parser = parse_prefix
    )]
    pub iqn_prefix: String,
    /// Volume group used when a StorageClass names none.
    #[arg(long, env = "CSI_DEFAULT_VOLUME_GROUP")]
    pub default_volume_group: Option<String>,
    /// Size in bytes of a volume whose CreateVolume gives no capacity (required_bytes 0;
    /// capped by limit_bytes when one is given), rounded up to the VG's extent size.
    #[arg(long, env = "CSI_DEFAULT_VOLUME_SIZE", default_value_t = 1 << 30)]
    pub default_volume_size: u64,
    /// How many times its size the thin volumes of a thin pool may add up to (1.0: no
    /// overprovisioning; 2.0: twice the pool). CreateVolume beyond it is RESOURCE_EXHAUSTED.
    #[arg(long, env = "CSI_THIN_OVERPROVISION_RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub thin_overprovision_ratio: f64,
    /// File holding the CHAP key (the `chapKey` of the StorageClass's Secret, mounted into the
    /// controller pod). Needed to restore CHAP ACLs after a storage-node reboot; also used for
    /// requests that carry no key.
    #[arg(long, env = "CSI_CHAP_KEY_FILE")]
    pub chap_key_file: Option<PathBuf>,
    /// Where configfs is mounted (LIO backend).
    #[arg(long, env = "CSI_CONFIGFS_ROOT", default_value = "/sys/kernel/config")]
    pub configfs_root: PathBuf,
}

/// How iscsiadm reaches the host's iscsid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IscsiadmMode {
    /// `nsenter` into PID 1's namespaces (pod with hostPID): the host's own iscsiadm,
    /// databases and iscsid.
    Host,
    /// Run iscsiadm directly (the host's /etc/iscsi, /var/lib/iscsi and /run/lock/iscsi
    /// mounted into the container, iscsid reachable through the abstract socket).
    Direct,
}

/// Flags of `node` mode.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Flags shared with the controller mode.
    #[command(flatten)]
    pub common: CommonArgs,
    /// This node's id: the Kubernetes node name (required unless --standalone, where the
    /// initiator IQN is the default).
    #[arg(long, env = "CSI_NODE_ID")]
    pub node_id: Option<String>,
    /// File holding this host's initiator name (`InitiatorName=iqn...`).
    #[arg(
        long,
        env = "CSI_INITIATOR_NAME_FILE",
        default_value = "/etc/iscsi/initiatorname.iscsi"
    )]
    pub initiator_name_file: PathBuf,
    /// How to run iscsiadm.
    #[arg(long, env = "CSI_ISCSIADM_MODE", value_enum, default_value_t = IscsiadmMode::Host)]
    pub iscsiadm_mode: IscsiadmMode,
    /// Maximum volumes attached to this node (0: no limit).
    #[arg(long, env = "CSI_MAX_VOLUMES_PER_NODE", default_value_t = 0)]
    pub max_volumes_per_node: i64,
    /// How long to wait for the block device after a login.
    #[arg(long, env = "CSI_DEVICE_TIMEOUT", value_parser = parse_seconds, default_value = "30")]
    pub device_timeout: Duration,
    /// Directory of the node's stage records (which target each staged volume uses); must
    /// survive pod restarts. Default: `volumes/` beside the endpoint's socket.
    #[arg(long, env = "CSI_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Register with kubelet (what node-driver-registrar does, built in), giving this path
    /// as the CSI socket: the --endpoint socket as kubelet sees it on the host, e.g.
    /// `/var/lib/kubelet/plugins/<driver-name>/csi.sock`. No registration when absent (the
    /// node-driver-registrar sidecar, or no kubelet).
    #[arg(long, env = "CSI_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<PathBuf>,
    /// Kubelet's plugin registry directory, where the registration socket
    /// `<driver-name>-reg.sock` is created (with --kubelet-registration-path).
    #[arg(
        long,
        env = "CSI_PLUGIN_REGISTRATION_PATH",
        default_value = "/var/lib/kubelet/plugins_registry"
    )]
    pub plugin_registration_path: PathBuf,
}

/// Flags of `doctor`.
#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// Which kind of node to check.
    #[command(subcommand)]
    pub role: DoctorRole,
}

/// What `doctor` checks.
#[derive(Debug, Subcommand, Clone)]
pub enum DoctorRole {
    /// A storage node (controller mode): LVM, the volume group, the kernel target, the port.
    Storage(DoctorStorageArgs),
    /// A node running pods (node mode): iscsid, the initiator name, iscsi_tcp, kubelet.
    Compute(DoctorComputeArgs),
}

/// Flags of `doctor storage` (the environment variables are the controller's, so the check
/// run inside the controller container sees its configuration).
#[derive(Debug, Args, Clone)]
pub struct DoctorStorageArgs {
    /// The volume group volumes are created in.
    #[arg(long, env = "CSI_DEFAULT_VOLUME_GROUP")]
    pub volume_group: String,
    /// Thin pool LV in that volume group, if volumes are thin.
    #[arg(long)]
    pub thin_pool: Option<String>,
    /// Kernel target backend.
    #[arg(long, env = "CSI_TARGET_BACKEND", value_enum, default_value_t = TargetBackendKind::Lio)]
    pub target_backend: TargetBackendKind,
    /// Where configfs is mounted (LIO backend).
    #[arg(long, env = "CSI_CONFIGFS_ROOT", default_value = "/sys/kernel/config")]
    pub configfs_root: PathBuf,
    /// Portal(s) as ADDRESS:PORT; the first is where the target listens.
    #[arg(
        long = "portal",
        env = "CSI_PORTALS",
        value_delimiter = ',',
        default_value = "0.0.0.0:3260"
    )]
    pub portals: Vec<Portal>,
}

/// Flags of `doctor compute` (the environment variables are the node plugin's).
#[derive(Debug, Args, Clone)]
pub struct DoctorComputeArgs {
    /// File holding this host's initiator name (`InitiatorName=iqn...`).
    #[arg(
        long,
        env = "CSI_INITIATOR_NAME_FILE",
        default_value = "/etc/iscsi/initiatorname.iscsi"
    )]
    pub initiator_name_file: PathBuf,
    /// kubelet's root directory.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// How iscsiadm reaches iscsid; in `host` mode files and tools are the host's (through
    /// PID 1), as the node plugin sees them.
    #[arg(long, env = "CSI_ISCSIADM_MODE", value_enum, default_value_t = IscsiadmMode::Host)]
    pub iscsiadm_mode: IscsiadmMode,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("`{s}` is not a number of seconds"))
}

impl CommonArgs {
    /// The socket path of a `unix://` endpoint.
    pub fn socket_path(&self) -> Result<PathBuf, String> {
        socket_path(&self.endpoint)
    }
}

/// The socket path of a `unix://` endpoint (`unix:///a/b` or `unix:/a/b`).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .ok_or_else(|| format!("endpoint `{endpoint}` must start with unix://"))?;
    if !path.starts_with('/') {
        return Err(format!(
            "endpoint `{endpoint}` must be an absolute unix socket path"
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_controller_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "controller",
            "--endpoint",
            "unix:///tmp/c.sock",
            "--portal",
            "10.0.0.1:3260,10.0.0.2:3260",
            "--target-backend",
            "tgt",
            "--standalone",
        ])
        .unwrap();
        let Command::Controller(a) = cli.command else {
            panic!("not controller")
        };
        let portals: Vec<String> = a.portals.iter().map(ToString::to_string).collect();
        assert_eq!(portals, ["10.0.0.1:3260", "10.0.0.2:3260"]);
        assert_eq!(a.iqn_prefix, "iqn.2026-11.io.csi.lvm-iscsi");
        assert_eq!(a.target_backend, TargetBackendKind::Tgt);
        assert!(a.common.standalone);
        assert_eq!(
            a.common.socket_path().unwrap(),
            PathBuf::from("/tmp/c.sock")
        );
    }

    #[test]
    fn bad_portals_and_iqn_prefixes_stop_start_up() {
        let controller = |flag: &str, value: &str| {
            Cli::try_parse_from(["x", "controller", "--portal", "10.0.0.1:3260", flag, value])
        };
        for bad in [
            "storage.example.com:3260",
            "10.0.0.1:x",
            "10.0.0.1:3260,fd00::1:3260",
            "",
        ] {
            let err = controller("--portal", bad).unwrap_err().to_string();
            assert!(err.contains("--portal"), "{bad}: {err}");
        }
        let cli = controller("--portal", "[fd00::1]").unwrap();
        let Command::Controller(a) = cli.command else {
            panic!("not controller")
        };
        assert_eq!(a.portals[1].to_string(), "[fd00::1]:3260");
        assert!(controller("--iqn-prefix", "iqn.2026-11.io.csi:").is_ok());
        for bad in ["lvm-iscsi", "iqn.2026-11.Io.csi", "iqn.2026-11.io/csi"] {
            assert!(controller("--iqn-prefix", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_endpoints_and_unknown_flags() {
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://relative").is_err());
        assert_eq!(
            socket_path("unix:/a.sock").unwrap(),
            PathBuf::from("/a.sock")
        );
        assert!(Cli::try_parse_from(["x", "node", "--no-such-flag"]).is_err());
    }

    #[test]
    fn parses_doctor_and_metrics_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "doctor",
            "storage",
            "--volume-group",
            "vg0",
            "--thin-pool",
            "pool0",
        ])
        .unwrap();
        let Command::Doctor(DoctorArgs {
            role: DoctorRole::Storage(s),
        }) = cli.command
        else {
            panic!("not doctor storage")
        };
        assert_eq!(s.volume_group, "vg0");
        assert_eq!(s.thin_pool.as_deref(), Some("pool0"));
        assert_eq!(s.portals, ["0.0.0.0:3260".parse::<Portal>().unwrap()]);
        assert!(
            Cli::try_parse_from(["x", "doctor", "compute", "--iscsiadm-mode", "direct"]).is_ok()
        );
        assert!(Cli::try_parse_from(["x", "doctor"]).is_err());

        let cli =
            Cli::try_parse_from(["x", "node", "--metrics-address", "127.0.0.1:9808"]).unwrap();
        let Command::Node(n) = cli.command else {
            panic!("not node")
        };
        assert_eq!(
            n.common.metrics_address,
            Some("127.0.0.1:9808".parse().unwrap())
        );
        assert!(Cli::try_parse_from(["x", "node", "--metrics-address", "nohost"]).is_err());
    }

    #[test]
    fn parses_registration_and_health_flags() {
        let Command::Node(n) = Cli::try_parse_from(["x", "node"]).unwrap().command else {
            panic!("not node")
        };
        assert_eq!(n.kubelet_registration_path, None);
        assert_eq!(
            n.plugin_registration_path,
            PathBuf::from("/var/lib/kubelet/plugins_registry")
        );
        assert_eq!(n.common.health_address, None);
        let cli = Cli::try_parse_from([
            "x",
            "node",
            "--kubelet-registration-path",
            "/k/plugins/d/csi.sock",
            "--plugin-registration-path",
            "/k/plugins_registry",
            "--health-address",
            "127.0.0.1:9809",
        ])
        .unwrap();
        let Command::Node(n) = cli.command else {
            panic!("not node")
        };
        assert_eq!(
            n.kubelet_registration_path,
            Some(PathBuf::from("/k/plugins/d/csi.sock"))
        );
        assert_eq!(
            n.plugin_registration_path,
            PathBuf::from("/k/plugins_registry")
        );
        assert_eq!(
            n.common.health_address,
            Some("127.0.0.1:9809".parse().unwrap())
        );
        assert!(Cli::try_parse_from([
            "x",
            "controller",
            "--portal",
            "10.0.0.1:3260",
            "--health-address",
            "0.0.0.0:9808"
        ])
        .is_ok());
    }
}
