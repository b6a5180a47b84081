//! The checks a running cluster would otherwise be the first to make: our binary accepts
//! its command line, every sidecar talks to the socket the plugin listens on, kubelet finds
//! the node plugin where its registration (built in, or node-driver-registrar) says it is,
//! something answers each liveness probe, and every path the binary is told about is on the
//! host volume it needs.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lvm_iscsi_csi::cli::{
    Command, DoctorArgs, DoctorRole, IscsiadmMode, NodeArgs, TargetBackendKind,
};

use crate::pods::{self, Role};

/// Facts about the controller pod the other checks need.
pub struct ControllerFacts {
    /// The Secret the controller reads its CHAP key from, if any.
    pub chap_secret: Option<String>,
    /// The sidecars present.
    pub roles: Vec<Role>,
}

/// Checks the controller Deployment's pod; `replicas` decides leader election.
pub fn check_controller(spec: &PodSpec, replicas: i32) -> Result<ControllerFacts, String> {
    let all = pods::containers(spec)?;
    let plugin = pods::the(&all, Role::Plugin)?;
    let Command::Controller(args) = pods::plugin_cli(plugin)?.command else {
        return Err("the controller pod's plugin does not run `controller`".into());
    };
    if spec.host_network != Some(true) {
        return Err("the controller needs the host network (LIO portals listen there)".into());
    }
    privileged(plugin)?;
    let socket = args.common.socket_path()?;
    let socket = socket.to_string_lossy();
    let (vol, _) = pods::locate(plugin, &socket)?;
    if pods::volume(spec, &vol)?.empty_dir.is_none() {
        return Err(format!(
            "controller socket volume `{vol}` should be an emptyDir"
        ));
    }
    sidecars_reach(&all, plugin, &socket)?;
    liveness(&all, plugin, args.common.health_address)?;
    for path in ["/dev", "/etc/lvm", "/run/lvm", "/run/lock/lvm"] {
        same_host_path(spec, plugin, path)?;
    }
    match args.target_backend {
        TargetBackendKind::Lio => {
            same_host_path(spec, plugin, &args.configfs_root.to_string_lossy())?
        }
        TargetBackendKind::Tgt => same_host_path(spec, plugin, "/run/tgtd")?,
    }
    for (role, c) in &all {
        let elected = !pods::flag_values(&pods::args_of(c)?, "leader-election").is_empty();
        let wanted = replicas > 1
            && matches!(
                role,
                Role::Provisioner | Role::Attacher | Role::Resizer | Role::Snapshotter
            );
        if elected != wanted {
            return Err(format!(
                "container `{}`: leader election {elected}, expected {wanted} with {replicas} replica(s)",
                c.name
            ));
        }
    }
    metrics_port(plugin, args.common.metrics_address)?;
    // `kubectl exec ... -- lvm-iscsi-csi doctor storage` must check what the controller uses.
    let mut words = vec!["doctor", "storage"];
    if args.default_volume_group.is_none() {
        words.extend(["--volume-group", "vg0"]);
    }
    let Command::Doctor(DoctorArgs {
        role: DoctorRole::Storage(doctor),
    }) = pods::exec_cli(plugin, &words)?.command
    else {
        return Err("`doctor storage` parsed as something else".into());
    };
    let same = (
        doctor.target_backend,
        &doctor.portals,
        &doctor.configfs_root,
    ) == (args.target_backend, &args.portals, &args.configfs_root)
        && args
            .default_volume_group
            .as_ref()
            .is_none_or(|vg| *vg == doctor.volume_group);
    if !same {
        return Err(format!(
            "doctor storage would check {doctor:?}, the controller runs {args:?}"
        ));
    }
    let chap_secret = match &args.chap_key_file {
        None => None,
        Some(file) => Some(secret_key_file(spec, plugin, &file.to_string_lossy())?),
    };
    Ok(ControllerFacts {
        chap_secret,
        roles: all.iter().map(|(r, _)| *r).collect(),
    })
}

/// Checks the node DaemonSet's pod; returns the kubelet directory it serves.
pub fn check_node(spec: &PodSpec) -> Result<String, String> {
    let all = pods::containers(spec)?;
    let plugin = pods::the(&all, Role::Plugin)?;
    let Command::Node(args) = pods::plugin_cli(plugin)?.command else {
        return Err("the node pod's plugin does not run `node`".into());
    };
    privileged(plugin)?;
    if args.node_id.as_deref() != Some(pods::PLACEHOLDER_NODE_NAME) {
        return Err(format!(
            "node id {:?} is not the node name (spec.nodeName)",
            args.node_id
        ));
    }
    let socket = args.common.socket_path()?;
    let socket = socket.to_string_lossy();
    sidecars_reach(&all, plugin, &socket)?;
    liveness(&all, plugin, args.common.health_address)?;
    let host_socket = pods::host_path(spec, plugin, &socket)?;

    // kubelet passes host paths in NodeStage/NodePublish: the plugin must see its
    // directory at the same path, with mounts propagating back to the host.
    let bidirectional: Vec<_> = plugin
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.mount_propagation.as_deref() == Some("Bidirectional"))
        .collect();
    let [kubelet_mount] = bidirectional.as_slice() else {
        return Err(format!(
            "expected one Bidirectional mount (the kubelet dir), found {}",
            bidirectional.len()
        ));
    };
    let kubelet_dir = kubelet_mount.mount_path.clone();
    same_host_path(spec, plugin, &kubelet_dir)?;
    if !host_socket.starts_with(&format!("{kubelet_dir}/plugins/")) {
        return Err(format!(
            "node socket {host_socket} is not under {kubelet_dir}/plugins/"
        ));
    }

    registration(spec, &all, plugin, &args, &host_socket, &kubelet_dir)?;

    metrics_port(plugin, args.common.metrics_address)?;
    let Command::Doctor(DoctorArgs {
        role: DoctorRole::Compute(doctor),
    }) = pods::exec_cli(plugin, &["doctor", "compute"])?.command
    else {
        return Err("`doctor compute` parsed as something else".into());
    };
    if (doctor.iscsiadm_mode, &doctor.initiator_name_file)
        != (args.iscsiadm_mode, &args.initiator_name_file)
    {
        return Err(format!(
            "doctor compute would check {doctor:?}, the node runs {args:?}"
        ));
    }
    same_host_path(spec, plugin, &args.initiator_name_file.to_string_lossy())?;
    for path in ["/dev", "/sys"] {
        same_host_path(spec, plugin, path)?;
    }
    match args.iscsiadm_mode {
        IscsiadmMode::Host => {
            if spec.host_pid != Some(true) {
                return Err("iscsiadm mode host (nsenter to PID 1) needs hostPID".into());
            }
        }
        IscsiadmMode::Direct => {
            if spec.host_pid == Some(true) {
                return Err("iscsiadm mode direct should not get hostPID".into());
            }
            for path in ["/etc/iscsi", "/var/lib/iscsi", "/run/lock/iscsi"] {
                same_host_path(spec, plugin, path)?;
            }
        }
    }
    if spec.host_network != Some(true) {
        return Err("iscsiadm reaches iscsid through the host network namespace".into());
    }
    Ok(kubelet_dir)
}

/// Every sidecar's --csi-address is the plugin's socket, through the same volume.
fn sidecars_reach(
    all: &[(Role, &Container)],
    plugin: &Container,
    socket: &str,
) -> Result<(), String> {
    let at = pods::locate(plugin, socket)?;
    for (role, c) in all {
        if *role == Role::Plugin {
            continue;
        }
        let address = pods::single_flag(c, "csi-address")?;
        let address = address.strip_prefix("unix://").unwrap_or(&address);
        let theirs = pods::locate(c, address)?;
        if theirs != at {
            return Err(format!(
                "container `{}` dials {address} = {theirs:?}, but the plugin listens at {socket} = {at:?}",
                c.name
            ));
        }
    }
    Ok(())
}

/// Kubelet finds the node plugin: exactly one of node-driver-registrar and the built-in
/// registration announces the socket the plugin listens on (`host_socket`), from kubelet's
/// plugin registry.
fn registration(
    spec: &PodSpec,
    all: &[(Role, &Container)],
    plugin: &Container,
    args: &NodeArgs,
    host_socket: &str,
    kubelet_dir: &str,
) -> Result<(), String> {
    let registry = format!("{kubelet_dir}/plugins_registry");
    let sidecar = all.iter().any(|(r, _)| *r == Role::Registrar);
    let (announced, seen_registry) = match (sidecar, &args.kubelet_registration_path) {
        (true, Some(_)) => {
            return Err("node-driver-registrar and the built-in registration both register".into())
        }
        (false, None) => return Err("nothing registers the node plugin with kubelet".into()),
        (false, Some(path)) => {
            let dir = args.plugin_registration_path.to_string_lossy();
            (
                path.to_string_lossy().into_owned(),
                pods::host_path(spec, plugin, &dir)?,
            )
        }
        (true, None) => {
            let registrar = pods::the(all, Role::Registrar)?;
            let endpoint = pods::single_flag(registrar, "http-endpoint")?;
            let port = endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| format!("registrar --http-endpoint {endpoint} has no port"))?;
            probed_port(registrar, port)?;
            (
                pods::single_flag(registrar, "kubelet-registration-path")?,
                pods::host_path(spec, registrar, "/registration")?,
            )
        }
    };
    if announced != host_socket {
        return Err(format!(
            "the registration announces {announced} but the plugin listens at {host_socket} on the host"
        ));
    }
    if seen_registry != registry {
        return Err(format!(
            "the registration socket is made in {seen_registry} on the host, not {registry}"
        ));
    }
    Ok(())
}

/// Exactly one of the livenessprobe sidecar and the plugin's own `--health-address` serves
/// the port the plugin's liveness probe asks, where kubelet asks it (the pod IP).
fn liveness(
    all: &[(Role, &Container)],
    plugin: &Container,
    builtin: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let sidecar = all.iter().any(|(r, _)| *r == Role::LivenessProbe);
    let port = match (sidecar, builtin) {
        (true, Some(addr)) => {
            return Err(format!(
                "both the livenessprobe sidecar and the plugin (--health-address {addr}) serve /healthz"
            ))
        }
        (false, None) => return Err("nothing serves the plugin's /healthz".into()),
        (true, None) => pods::single_flag(pods::the(all, Role::LivenessProbe)?, "health-port")?
            .parse()
            .map_err(|e| format!("--health-port: {e}"))?,
        (false, Some(addr)) => {
            let pod_ip: std::net::IpAddr = pods::PLACEHOLDER_HOST_IP.parse().expect("an IP");
            if addr.ip() != pod_ip && !addr.ip().is_unspecified() {
                return Err(format!(
                    "--health-address {addr}: kubelet probes the pod IP, which it does not listen on"
                ));
            }
            i32::from(addr.port())
        }
    };
    probed_port(plugin, port)
}

/// `c` declares `port` under a name and its liveness probe GETs /healthz on that name.
fn probed_port(c: &Container, port: i32) -> Result<(), String> {
    let declared = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == port)
        .and_then(|p| p.name.clone())
        .ok_or_else(|| format!("container `{}` declares no named port {port}", c.name))?;
    let get = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .ok_or_else(|| format!("container `{}` has no HTTP liveness probe", c.name))?;
    if get.port != IntOrString::String(declared.clone()) || get.path.as_deref() != Some("/healthz")
    {
        return Err(format!(
            "container `{}` probes {:?} {:?}, not /healthz on `{declared}`",
            c.name, get.port, get.path
        ));
    }
    Ok(())
}

/// A metrics address is also a declared container port named `metrics`.
fn metrics_port(c: &Container, address: Option<std::net::SocketAddr>) -> Result<(), String> {
    let declared = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .map(|p| p.container_port);
    let wanted = address.map(|a| i32::from(a.port()));
    if declared != wanted {
        return Err(format!(
            "container `{}` serves metrics on {address:?} but declares port `metrics` {declared:?}",
            c.name
        ));
    }
    Ok(())
}

/// `path` inside `c` is the same path on the host (a hostPath volume).
fn same_host_path(spec: &PodSpec, c: &Container, path: &str) -> Result<(), String> {
    let host = pods::host_path(spec, c, path)?;
    if host != path.trim_end_matches('/') {
        return Err(format!("`{path}` in `{}` is {host} on the host", c.name));
    }
    Ok(())
}

/// `file` is the `chapKey` field of a Secret volume; returns the Secret's name.
fn secret_key_file(spec: &PodSpec, c: &Container, file: &str) -> Result<String, String> {
    let (vol, inner) = pods::locate(c, file)?;
    let secret = pods::volume(spec, &vol)?
        .secret
        .as_ref()
        .ok_or_else(|| format!("--chap-key-file {file} is not on a Secret volume"))?;
    let key = match &secret.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == inner)
            .map(|i| i.key.clone())
            .ok_or_else(|| format!("--chap-key-file {file}: no item at {inner}"))?,
        None => inner,
    };
    if key != lvm_iscsi_csi::domain::chap::SECRET_KEY {
        return Err(format!("--chap-key-file {file} is Secret field {key}"));
    }
    secret
        .secret_name
        .clone()
        .ok_or_else(|| "the CHAP Secret volume names no Secret".into())
}

fn privileged(c: &Container) -> Result<(), String> {
    let p = c.security_context.as_ref().and_then(|s| s.privileged);
    if p != Some(true) {
        return Err(format!("container `{}` must be privileged", c.name));
    }
    Ok(())
}
