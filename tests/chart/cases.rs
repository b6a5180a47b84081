//! Case by case: the CHAP key wiring, non-default values reaching the objects, refusals of
//! bad values, documentation of values, NOTES, and the Dockerfile.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use lvm_iscsi_csi::cli::{Command, IscsiadmMode, TargetBackendKind};
use serde_json::Value;

use super::*;

fn plugin_command(spec: &PodSpec) -> Command {
    let all = pods::containers(spec).unwrap();
    pods::plugin_cli(pods::the(&all, Role::Plugin).unwrap())
        .unwrap()
        .command
}

fn storage_class<'a>(
    objects: &'a [Object],
    name: &str,
) -> &'a k8s_openapi::api::storage::v1::StorageClass {
    objects
        .iter()
        .find_map(|o| match o {
            Object::StorageClass(s) if s.metadata.name.as_deref() == Some(name) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no StorageClass {name}"))
}

#[test]
fn chap_key_secret_storage_classes_and_controller_agree() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let (controllers, _) = workloads_of(&objects);
        let facts =
            workloads::check_controller(&controllers[0].spec, controllers[0].replicas).unwrap();
        let rendered_secret = objects.iter().find_map(|o| match o {
            Object::Secret(s) => Some(s),
            _ => None,
        });
        let mut referenced = BTreeSet::new();
        for o in &objects {
            let Object::StorageClass(s) = o else { continue };
            let p = s.parameters.clone().unwrap_or_default();
            let get = |k: &str| p.get(&format!("csi.storage.k8s.io/{k}")).cloned();
            let publish = (
                get("controller-publish-secret-name"),
                get("controller-publish-secret-namespace"),
            );
            let stage = (
                get("node-stage-secret-name"),
                get("node-stage-secret-namespace"),
            );
            assert_eq!(
                publish, stage,
                "case `{}`: publish and stage secrets differ",
                c.name
            );
            if let (Some(name), Some(ns)) = publish {
                assert_eq!(ns, NAMESPACE, "case `{}`", c.name);
                referenced.insert(name);
            }
            assert!(
                !p.contains_key("csi.storage.k8s.io/provisioner-secret-name"),
                "CreateVolume needs no secret"
            );
        }
        match &facts.chap_secret {
            Some(mounted) => assert!(
                referenced.iter().all(|r| r == mounted),
                "case `{}`: classes use {referenced:?}, the controller mounts {mounted}",
                c.name
            ),
            None => assert!(
                referenced.is_empty(),
                "case `{}`: CHAP refs without a key",
                c.name
            ),
        }
        if let Some(secret) = rendered_secret {
            assert_eq!(secret.metadata.name, facts.chap_secret, "case `{}`", c.name);
            let key = secret
                .data
                .as_ref()
                .and_then(|d| d.get(lvm_iscsi_csi::domain::chap::SECRET_KEY))
                .expect("chapKey in the Secret");
            assert!(
                key.0.len() >= lvm_iscsi_csi::domain::chap::MIN_KEY_LEN,
                "key too short"
            );
        }
    }
    // Created by the chart by default; never with an existing Secret or without CHAP.
    let secrets = |name| {
        objects_of(name)
            .iter()
            .filter(|o| matches!(o, Object::Secret(_)))
            .count()
    };
    assert_eq!(
        (secrets("default"), secrets("full"), secrets("no-chap")),
        (1, 0, 0)
    );
}

#[test]
fn default_values_give_a_working_single_storage_node_install() {
    let objects = objects_of("default");
    let (controllers, nodes) = workloads_of(&objects);
    let Command::Controller(ctl) = plugin_command(&controllers[0].spec) else {
        panic!()
    };
    assert_eq!(ctl.portals, [format!("{}:3260", pods::PLACEHOLDER_HOST_IP)]);
    assert_eq!(ctl.target_backend, TargetBackendKind::Lio);
    assert_eq!(controllers[0].replicas, 1);
    let selector = controllers[0].spec.node_selector.clone().unwrap();
    assert_eq!(selector["lvm-iscsi.csi.io/storage-node"], "true");
    let Command::Node(node) = plugin_command(&nodes[0].spec) else {
        panic!()
    };
    assert_eq!(node.iscsiadm_mode, IscsiadmMode::Host);
    assert_eq!(
        workloads::check_node(&nodes[0].spec).unwrap(),
        "/var/lib/kubelet"
    );
    let facts = workloads::check_controller(&controllers[0].spec, 1).unwrap();
    assert!(facts.roles.contains(&Role::Resizer) && !facts.roles.contains(&Role::Snapshotter));
    assert!(!objects
        .iter()
        .any(|o| matches!(o, Object::VolumeSnapshotClass(_))));
    let sc = storage_class(&objects, "lvm-iscsi");
    let p = sc.parameters.clone().unwrap();
    assert!(
        !p.contains_key("volumeGroup"),
        "the class uses the controller's default"
    );
    let Command::Controller(ctl) = plugin_command(&controllers[0].spec) else {
        panic!()
    };
    assert_eq!(ctl.default_volume_group.as_deref(), Some("csi-vg"));
    assert_eq!(ctl.common.metrics_address, None);
    assert_eq!(
        (
            p["fsType"].as_str(),
            p["csi.storage.k8s.io/fstype"].as_str()
        ),
        ("ext4", "ext4")
    );
    // Every image is pinned to a release.
    for d in case("default").ok() {
        for c in d
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let image = c["image"].as_str().unwrap();
            let tag = image.rsplit(':').next().unwrap();
            assert!(
                tag.starts_with('v') || tag.chars().next().unwrap().is_ascii_digit(),
                "{image}"
            );
        }
    }
}

#[test]
fn non_default_values_reach_the_objects() {
    let objects = objects_of("full");
    let (controllers, nodes) = workloads_of(&objects);
    let (ctl_pod, replicas) = (&controllers[0].spec, controllers[0].replicas);
    assert_eq!(replicas, 2);
    let Command::Controller(ctl) = plugin_command(ctl_pod) else {
        panic!()
    };
    assert_eq!(ctl.target_backend, TargetBackendKind::Tgt);
    assert_eq!(ctl.portals, ["10.0.0.5:3260", "[fd00::5]:3260"]);
    assert_eq!(ctl.iqn_prefix, "iqn.2030-01.com.example.storage");
    assert_eq!(ctl.default_volume_group.as_deref(), Some("vg-fast"));
    assert_eq!(ctl.default_volume_size, 2 << 30);
    assert_eq!(ctl.thin_overprovision_ratio, 2.5);
    assert_eq!(ctl.common.driver_name, "iscsi.storage.example.com");
    assert_eq!(ctl.common.log_format, lvm_iscsi_csi::cli::LogFormat::Json);
    assert_eq!(ctl.common.log_level, "lvm_iscsi_csi=debug,info");
    let selector = ctl_pod.node_selector.clone().unwrap();
    assert_eq!(
        selector.into_iter().collect::<Vec<_>>(),
        [(
            "kubernetes.io/hostname".to_string(),
            "storage-1".to_string()
        )],
        "a selector in the values replaces the default storage-node label"
    );
    assert!(ctl_pod.affinity.is_some() && ctl_pod.tolerations.is_some());
    assert_eq!(ctl_pod.priority_class_name, None);
    let facts = workloads::check_controller(ctl_pod, replicas).unwrap();
    assert_eq!(facts.chap_secret.as_deref(), Some("my-chap-key"));
    assert!(!facts.roles.contains(&Role::Resizer) && facts.roles.contains(&Role::Snapshotter));
    let plugin = &ctl_pod.containers[0];
    assert_eq!(
        plugin.image.as_deref(),
        Some("registry.example.com/storage/lvm-iscsi-csi:v9.9.9")
    );
    assert_eq!(plugin.image_pull_policy.as_deref(), Some("Always"));
    assert!(plugin.resources.is_some());
    let provisioner = ctl_pod
        .containers
        .iter()
        .find(|c| c.name == "csi-provisioner")
        .unwrap();
    assert_eq!(
        provisioner.image.as_deref(),
        Some("mirror.example.com/sig-storage/csi-provisioner:v5.3.0")
    );
    let args = pods::args_of(provisioner).unwrap();
    assert!(
        args.contains(&"--timeout=2m".into()) && args.contains(&"--v=5".into()),
        "{args:?}"
    );

    let node_pod = &nodes[0].spec;
    let Command::Node(node) = plugin_command(node_pod) else {
        panic!()
    };
    assert_eq!(node.iscsiadm_mode, IscsiadmMode::Direct);
    assert_eq!(
        node.initiator_name_file.to_str(),
        Some("/etc/iscsi-host/initiatorname.iscsi")
    );
    assert_eq!(node.max_volumes_per_node, 64);
    assert_eq!(node.device_timeout.as_secs(), 45);
    assert_eq!(
        workloads::check_node(node_pod).unwrap(),
        "/var/snap/microk8s/common/var/lib/kubelet"
    );
    assert_eq!(
        node_pod.image_pull_secrets.as_ref().unwrap()[0].name,
        "regcred"
    );
    assert_eq!(
        node_pod.node_selector.as_ref().unwrap()["example.com/iscsi"],
        "yes"
    );

    // Metrics: served, annotated for scraping, and behind one headless Service.
    let annotations = |kind: &str| -> BTreeMap<String, String> {
        case("full")
            .ok()
            .iter()
            .find(|d| d["kind"] == kind)
            .and_then(|d| d.pointer("/spec/template/metadata/annotations"))
            .map(|a| serde_json::from_value(a.clone()).unwrap())
            .unwrap_or_default()
    };
    assert_eq!(annotations("Deployment")["prometheus.io/port"], "19820");
    assert_eq!(
        annotations("Deployment")["example.com/owner"],
        "storage-team"
    );
    assert_eq!(annotations("DaemonSet")["prometheus.io/port"], "19821");
    let service = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) => s.spec.clone(),
            _ => None,
        })
        .expect("the metrics Service");
    assert_eq!(service.cluster_ip.as_deref(), Some("None"));
    let monitor = objects
        .iter()
        .find_map(|o| match o {
            Object::ServiceMonitor(m) => Some(m),
            _ => None,
        })
        .expect("the ServiceMonitor");
    assert_eq!(
        monitor.metadata.labels.as_ref().unwrap()["release"],
        "prometheus"
    );
    let watched = monitor
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();
    let service_labels = objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) => s.metadata.labels.clone(),
            _ => None,
        })
        .unwrap_or_default();
    assert!(
        !watched.is_empty()
            && watched
                .iter()
                .all(|(k, v)| service_labels.get(k) == Some(v)),
        "the ServiceMonitor selects the metrics Service: {watched:?} vs {service_labels:?}"
    );
    let endpoint = &monitor.spec.endpoints[0];
    assert_eq!(
        (endpoint.port.as_str(), endpoint.interval.as_str()),
        ("metrics", "15s")
    );
    assert!(
        !objects_of("default")
            .iter()
            .any(|o| matches!(o, Object::ServiceMonitor(_))),
        "no ServiceMonitor unless asked: the CRD may be missing"
    );
    let target = &service.ports.as_ref().unwrap()[0].target_port;
    assert_eq!(target, &Some(IntOrString::String("metrics".into())));
    let selector = service.selector.unwrap();
    for w in controllers.iter().chain(&nodes) {
        let labels = case("full")
            .ok()
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
            .filter(|d| {
                d.pointer("/spec/template/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    == Some(w.service_account.as_str())
            })
            .filter_map(|d| d.pointer("/spec/template/metadata/labels").cloned())
            .map(|l| serde_json::from_value::<BTreeMap<String, String>>(l).unwrap())
            .next()
            .unwrap();
        assert!(
            selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{labels:?}"
        );
    }

    let fast = storage_class(&objects, "fast");
    let p = fast.parameters.clone().unwrap();
    assert_eq!(
        (p["volumeGroup"].as_str(), p["thinPool"].as_str()),
        ("vg-fast", "pool0")
    );
    assert_eq!(
        (
            p["fsType"].as_str(),
            p["csi.storage.k8s.io/fstype"].as_str()
        ),
        ("xfs", "xfs")
    );
    assert_eq!(fast.reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(fast.allow_volume_expansion, Some(false));
    assert_eq!(
        fast.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(
        fast.mount_options.as_deref(),
        Some(&["noatime".to_string()][..])
    );
    let meta = &fast.metadata;
    assert_eq!(
        meta.annotations.as_ref().unwrap()["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(meta.labels.as_ref().unwrap()["tier"], "fast");
    let bulk = storage_class(&objects, "bulk").parameters.clone().unwrap();
    assert!(
        !bulk.contains_key("volumeGroup"),
        "bulk uses the controller's default VG"
    );
    assert!(
        !bulk.keys().any(|k| k.contains("secret")),
        "bulk has CHAP off"
    );
    let snap = objects
        .iter()
        .find_map(|o| match o {
            Object::VolumeSnapshotClass(s) => Some(s),
            _ => None,
        })
        .expect("a VolumeSnapshotClass");
    assert_eq!(snap.deletion_policy, objects::DeletionPolicy::Retain);
    assert_eq!(snap.metadata.name.as_deref(), Some("fast-snap"));
    assert_eq!(
        snap.parameters
            .as_ref()
            .and_then(|p| p.get("cowSizePercent"))
            .map(String::as_str),
        Some("30")
    );
    let driver = objects.iter().find_map(|o| match o {
        Object::CSIDriver(d) => Some(d),
        _ => None,
    });
    assert_eq!(
        driver.unwrap().spec.fs_group_policy.as_deref(),
        Some("ReadWriteOnceWithFSType")
    );
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    for (c, word) in invalid_cases() {
        let r = case(c.name);
        let error = r
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("case `{}` rendered, but must be refused", c.name));
        assert!(
            error.contains(word),
            "case `{}`: `{word}` not in: {error}",
            c.name
        );
    }
}

#[test]
fn values_are_documented_and_the_schema_is_closed() {
    let chart = render::repo_root().join("deploy/helm/lvm-iscsi-csi");
    let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    let mut list_dash: Option<usize> = None;
    let mut previous = "";
    for (i, line) in values.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if trimmed.starts_with("- ") {
            list_dash = Some(list_dash.map_or(indent, |d| d.min(indent)));
        } else if let Some(key) = trimmed.split(':').next().filter(|k| {
            !trimmed.starts_with('#')
                && trimmed.contains(':')
                && k.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
        }) {
            if list_dash.is_some_and(|d| indent < d) {
                list_dash = None;
            }
            if list_dash.is_none() {
                let doc = previous.trim_start();
                assert!(
                    doc.starts_with('#') && previous.len() - doc.len() == indent,
                    "values.yaml line {}: `{key}` has no comment above it",
                    i + 1
                );
            }
        }
        previous = line;
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    fn closed(v: &Value, path: &str) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            assert_eq!(
                v["additionalProperties"], false,
                "schema {path} is open to typos"
            );
            for (k, p) in props {
                assert!(
                    p.get("description").is_some(),
                    "schema {path}.{k} has no description"
                );
                closed(p, &format!("{path}.{k}"));
            }
        }
        if let Some(items) = v.get("items") {
            closed(items, &format!("{path}[]"));
        }
    }
    closed(&schema, "");
}

#[test]
fn notes_tell_the_user_what_to_do_next() {
    let notes = &case("default").notes;
    for needle in [
        "kubectl label node <storage-node> lvm-iscsi.csi.io/storage-node=true",
        "vgs csi-vg",
        "modprobe",
        "iscsid",
        "storageClassName: lvm-iscsi",
        "kubectl get csidriver lvm-iscsi.csi.io",
    ] {
        assert!(
            notes.contains(needle),
            "default NOTES lack `{needle}`:\n{notes}"
        );
    }
    assert!(case("no-chap").notes.contains("WARNING: CHAP is disabled"));
    let full = &case("full").notes;
    for needle in [
        "my-chap-key",
        "tgt",
        "10.0.0.5:3260, [fd00::5]:3260",
        "kubernetes.io/hostname=storage-1",
    ] {
        assert!(full.contains(needle), "full NOTES lack `{needle}`:\n{full}");
    }
}

#[test]
fn dockerfile_installs_every_program_the_code_runs() {
    let root = render::repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stages = programs::stages(&dockerfile);
    let (_, runtime) = stages.last().expect("a runtime stage");
    let installed = programs::apt_packages(runtime);
    let used = programs::programs_in(&root.join("src")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        used.contains("nsenter"),
        "the host-namespace prefix is found"
    );
    for program in &used {
        let package = programs::PROGRAM_PACKAGES
            .iter()
            .find(|(p, _)| p == program)
            .map(|(_, pkg)| *pkg)
            .unwrap_or_else(|| {
                panic!("src/ runs `{program}`: add it (and its Debian package) to PROGRAM_PACKAGES in tests/chart/programs.rs and the Dockerfile")
            });
        assert!(
            installed.contains(package),
            "src/ runs `{program}` from package `{package}`, which the Dockerfile does not install"
        );
    }
    for package in &installed {
        let known = programs::PROGRAM_PACKAGES.iter().any(|(_, p)| p == package)
            || programs::INDIRECT_PACKAGES
                .iter()
                .any(|(p, _)| p == package);
        assert!(
            known,
            "the Dockerfile installs `{package}`, which no program in the table needs"
        );
    }
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_lean() {
    let dockerfile = std::fs::read_to_string(render::repo_root().join("Dockerfile")).unwrap();
    let stages = programs::stages(&dockerfile);
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder_from, builder) = &stages[0];
    assert!(builder_from.contains("AS build"), "{builder_from}");
    assert!(builder
        .iter()
        .any(|i| i.contains("cargo build --release --locked")));
    assert!(
        dockerfile.contains("ARG RUNTIME_IMAGE=debian:bookworm-slim"),
        "the table is bookworm's"
    );
    let (_, runtime) = &stages[1];
    let text = runtime.join("\n");
    for forbidden in [
        "cargo",
        "rustc",
        "gcc",
        "build-essential",
        "protobuf-compiler",
    ] {
        assert!(
            !programs::apt_packages(runtime).contains(forbidden),
            "{forbidden} in the runtime"
        );
    }
    for needed in [
        "DEBIAN_FRONTEND=noninteractive",
        "--no-install-recommends",
        "rm -rf /var/lib/apt/lists/*",
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "COPY --from=build /out/lvm-iscsi-csi /usr/local/bin/lvm-iscsi-csi",
        "ENTRYPOINT [\"/usr/local/bin/lvm-iscsi-csi\"]",
    ] {
        assert!(text.contains(needed), "runtime stage lacks `{needed}`");
    }
}
