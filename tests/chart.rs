//! The Helm chart (deploy/helm/lvm-iscsi-csi) and the Dockerfile, checked without a
//! cluster: Helm's own engine lints (`--strict`) and renders the chart with default and
//! non-default values; every document must be a well-formed Kubernetes object; our binary
//! must accept the command line the chart gives it; every sidecar must reach the socket the
//! plugin listens on; RBAC must grant what each container needs; the Dockerfile must install
//! every program the code runs.
//!
//! Needs Python with helm-python-sdk: the project's virtualenv from `e2e/python-env.sh`
//! (e2e/test-all.sh makes it), or `HELM_SDK_PYTHON`; fails, never skips, without it.

#[path = "chart/cases.rs"]
mod cases;
#[path = "chart/docs.rs"]
mod docs;
#[path = "chart/objects.rs"]
mod objects;
#[path = "chart/pods.rs"]
mod pods;
#[path = "chart/programs.rs"]
mod programs;
#[path = "chart/rbac.rs"]
mod rbac;
#[path = "chart/render.rs"]
mod render;
#[path = "chart/workloads.rs"]
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::PodSpec;
use objects::Object;
use pods::Role;
use rbac::{Rbac, Request};
use render::{Case, Rendered};
use serde_json::{json, Value};

/// Where the chart tests render it (tests/chart/helm_sdk.py).
const NAMESPACE: &str = "lvm-iscsi-csi";

/// Values that must be refused, and a word the refusal must contain.
fn invalid_cases() -> Vec<(Case, &'static str)> {
    vec![
        (
            Case::inline("typo-top", json!({"controler": {"replicas": 1}})),
            "controler",
        ),
        (
            Case::inline("typo-nested", json!({"node": {"iscsiadmMod": "direct"}})),
            "iscsiadmMod",
        ),
        (
            Case::inline("bad-enum", json!({"controller": {"targetBackend": "iet"}})),
            "targetBackend",
        ),
        (
            Case::inline("bad-type", json!({"controller": {"replicas": "two"}})),
            "replicas",
        ),
        (
            Case::inline(
                "bad-registration",
                json!({"registrationAndLiveness": "both"}),
            ),
            "registrationAndLiveness",
        ),
        (
            Case::inline(
                "portal-without-port",
                json!({"controller": {"portals": ["10.0.0.1"]}}),
            ),
            "portals",
        ),
        (
            Case::inline(
                "bad-fs",
                json!({"storageClasses": [sc("x", "btrfs", false)]}),
            ),
            "fsType",
        ),
        (
            Case::inline("chap-off-but-used", json!({"chap": {"enabled": false}})),
            "chap.enabled is false",
        ),
        (
            Case::inline(
                "no-volume-group",
                json!({"controller": {"defaultVolumeGroup": ""},
                       "storageClasses": [{"name": "x", "fsType": "ext4", "chap": false,
                "reclaimPolicy": "Delete", "allowVolumeExpansion": true, "volumeBindingMode": "Immediate"}]}),
            ),
            "names no volumeGroup",
        ),
    ]
}

/// A minimal StorageClass entry.
fn sc(name: &str, fs: &str, chap: bool) -> Value {
    json!({"name": name, "volumeGroup": "vg0", "fsType": fs, "chap": chap, "reclaimPolicy": "Retain",
           "allowVolumeExpansion": false, "volumeBindingMode": "WaitForFirstConsumer"})
}

/// Values that must render: name, then the case.
fn valid_cases() -> Vec<Case> {
    vec![
        Case::inline("default", Value::Null),
        Case {
            name: "full",
            values_files: vec!["tests/chart/values-full.yaml".into()],
            values: Value::Null,
        },
        Case::inline(
            "no-chap",
            json!({"chap": {"enabled": false}, "storageClasses": [sc("plain", "xfs", false)],
                   "controller": {"targetBackend": "lio", "configfsRoot": "/config"}}),
        ),
        Case::inline("sidecars", json!({"registrationAndLiveness": "sidecars"})),
        Case::inline(
            "builtin-with-metrics",
            json!({"registrationAndLiveness": "builtin", "metrics": {"enabled": true}}),
        ),
    ]
}

/// Every case rendered once (one Helm process), shared by the tests.
fn rendered() -> &'static BTreeMap<String, Rendered> {
    static ALL: OnceLock<BTreeMap<String, Rendered>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut cases = valid_cases();
        cases.extend(invalid_cases().into_iter().map(|(c, _)| c));
        render::render_all(&cases)
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect()
    })
}

fn case(name: &str) -> &'static Rendered {
    &rendered()[name]
}

/// The typed objects of a valid case.
fn objects_of(name: &str) -> Vec<Object> {
    case(name)
        .ok()
        .iter()
        .map(|d| {
            objects::parse(d).unwrap_or_else(|e| {
                panic!(
                    "case `{name}`: {} {}: {e}",
                    d["kind"], d["metadata"]["name"]
                )
            })
        })
        .collect()
}

/// A workload's pod, as the tests need it.
struct Workload {
    /// The pod template's spec.
    spec: PodSpec,
    /// Replicas (1 for a DaemonSet).
    replicas: i32,
    /// Its service account.
    service_account: String,
}

/// The controller Deployments and node DaemonSets among `objects`.
fn workloads_of(objects: &[Object]) -> (Vec<Workload>, Vec<Workload>) {
    let mut controllers = Vec::new();
    let mut nodes = Vec::new();
    for o in objects {
        let (list, template, replicas) = match o {
            Object::Deployment(d) => {
                let spec = d.spec.clone().expect("deployment spec");
                (&mut controllers, spec.template, spec.replicas.unwrap_or(1))
            }
            Object::DaemonSet(d) => (&mut nodes, d.spec.clone().expect("spec").template, 1),
            _ => continue,
        };
        let spec = template.spec.expect("pod spec");
        list.push(Workload {
            service_account: spec.service_account_name.clone().unwrap_or_default(),
            spec,
            replicas,
        });
    }
    (controllers, nodes)
}

#[test]
fn every_valid_case_lints_and_renders_well_formed_objects() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let mut seen = BTreeSet::new();
        for d in case(c.name).ok() {
            let id = (d["kind"].to_string(), d["metadata"]["name"].to_string());
            assert!(seen.insert(id.clone()), "case `{}`: {id:?} twice", c.name);
        }
        let count = |f: fn(&Object) -> bool| objects.iter().filter(|o| f(o)).count();
        assert_eq!(
            count(|o| matches!(o, Object::CSIDriver(_))),
            1,
            "{}",
            c.name
        );
        assert_eq!(
            count(|o| matches!(o, Object::Deployment(_))),
            1,
            "{}",
            c.name
        );
        assert_eq!(
            count(|o| matches!(o, Object::DaemonSet(_))),
            1,
            "{}",
            c.name
        );
        assert!(
            count(|o| matches!(o, Object::StorageClass(_))) >= 1,
            "{}",
            c.name
        );
    }
}

#[test]
fn csidriver_matches_what_the_driver_does() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let driver = objects
            .iter()
            .find_map(|o| match o {
                Object::CSIDriver(d) => Some(d),
                _ => None,
            })
            .expect("a CSIDriver");
        let spec = &driver.spec;
        assert_eq!(
            spec.attach_required,
            Some(true),
            "ControllerPublish is the export"
        );
        assert_eq!(
            spec.volume_lifecycle_modes.as_deref(),
            Some(&["Persistent".to_string()][..])
        );
        let name = driver.metadata.name.clone().unwrap_or_default();
        for o in &objects {
            match o {
                Object::StorageClass(s) => assert_eq!(s.provisioner, name, "{}", c.name),
                Object::VolumeSnapshotClass(s) => assert_eq!(s.driver, name, "{}", c.name),
                _ => {}
            }
        }
        let (controllers, nodes) = workloads_of(&objects);
        for w in controllers.iter().chain(&nodes) {
            let all = pods::containers(&w.spec).unwrap();
            let plugin = pods::the(&all, Role::Plugin).unwrap();
            let cli = pods::plugin_cli(plugin).unwrap();
            let common = match cli.command {
                lvm_iscsi_csi::cli::Command::Controller(a) => a.common,
                lvm_iscsi_csi::cli::Command::Node(a) => a.common,
                lvm_iscsi_csi::cli::Command::Doctor(_) => panic!("the plugin runs doctor"),
            };
            assert_eq!(
                common.driver_name, name,
                "case `{}`: plugin's driver name",
                c.name
            );
        }
    }
}

#[test]
fn our_binary_accepts_its_command_lines_and_sidecars_reach_its_socket() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let (controllers, nodes) = workloads_of(&objects);
        assert_eq!((controllers.len(), nodes.len()), (1, 1));
        for w in &controllers {
            workloads::check_controller(&w.spec, w.replicas)
                .unwrap_or_else(|e| panic!("case `{}`: controller: {e}", c.name));
        }
        for w in &nodes {
            workloads::check_node(&w.spec)
                .unwrap_or_else(|e| panic!("case `{}`: node: {e}", c.name));
        }
        // Both pods use the host network and may share the storage node: no port twice.
        let mut ports = BTreeSet::new();
        for w in controllers.iter().chain(&nodes) {
            for c2 in &w.spec.containers {
                for p in c2.ports.iter().flatten() {
                    assert!(
                        ports.insert(p.container_port),
                        "case `{}`: port {} twice",
                        c.name,
                        p.container_port
                    );
                }
            }
        }
    }
}

#[test]
fn registration_and_liveness_are_built_in_by_default_or_the_standard_sidecars() {
    use Role::*;
    let roles = |case_name: &str| {
        let (controllers, nodes) = workloads_of(&objects_of(case_name));
        let of = |w: &Workload| -> Vec<Role> {
            pods::containers(&w.spec)
                .unwrap()
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        };
        let volumes = |w: &Workload| -> Vec<String> {
            w.spec
                .volumes
                .iter()
                .flatten()
                .map(|v| v.name.clone())
                .collect()
        };
        (
            of(&controllers[0]),
            of(&nodes[0]),
            volumes(&nodes[0]).contains(&"registration-dir".to_string()),
        )
    };
    // Built in: the node pod is the driver alone, the controller has no livenessprobe.
    for name in ["default", "no-chap", "builtin-with-metrics"] {
        let (controller, node, registry_volume) = roles(name);
        assert_eq!(node, [Plugin], "case `{name}`");
        assert_eq!(
            controller,
            [Plugin, Provisioner, Attacher, Resizer],
            "case `{name}`"
        );
        assert!(!registry_volume, "case `{name}`: the sidecar's volume");
    }
    for name in ["sidecars", "full"] {
        let (controller, node, registry_volume) = roles(name);
        assert_eq!(node, [Plugin, Registrar, LivenessProbe], "case `{name}`");
        assert!(controller.contains(&LivenessProbe), "case `{name}`");
        assert!(registry_volume, "case `{name}`");
    }
    let (_, nodes) = workloads_of(&objects_of("default"));
    let all = pods::containers(&nodes[0].spec).unwrap();
    let cli = pods::plugin_cli(pods::the(&all, Plugin).unwrap()).unwrap();
    let lvm_iscsi_csi::cli::Command::Node(node) = cli.command else {
        panic!("not the node plugin")
    };
    assert_eq!(
        node.kubelet_registration_path.as_deref(),
        Some(std::path::Path::new(
            "/var/lib/kubelet/plugins/lvm-iscsi.csi.io/csi.sock"
        ))
    );
    assert_eq!(
        node.common.health_address,
        Some(
            format!("{}:9809", pods::PLACEHOLDER_HOST_IP)
                .parse()
                .unwrap()
        )
    );
}

#[test]
fn rbac_grants_each_container_what_it_needs_and_no_secrets_beyond_the_chap_key() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let rbac = Rbac::new(&objects);
        assert!(
            rbac.dangling_refs().is_empty(),
            "{}: {:?}",
            c.name,
            rbac.dangling_refs()
        );
        let (controllers, nodes) = workloads_of(&objects);
        let sas: BTreeSet<String> = objects
            .iter()
            .filter_map(|o| match o {
                Object::ServiceAccount(s) => s.metadata.name.clone(),
                _ => None,
            })
            .collect();
        let req = |group, resource, verb| Request {
            group,
            resource,
            verb,
            namespace: None,
            name: None,
        };
        for w in &controllers {
            let (replicas, sa) = (&w.replicas, &w.service_account);
            assert!(
                sas.contains(sa),
                "case `{}`: no ServiceAccount {sa}",
                c.name
            );
            let can = |r: Request| rbac.allows(NAMESPACE, sa, r);
            let facts = workloads::check_controller(&w.spec, w.replicas).unwrap();
            let mut needs = vec![req("", "nodes", "get")];
            for role in &facts.roles {
                needs.extend(match role {
                    Role::Provisioner => vec![
                        req("", "persistentvolumes", "create"),
                        req("", "persistentvolumes", "delete"),
                        req("", "persistentvolumeclaims", "update"),
                        req("storage.k8s.io", "storageclasses", "watch"),
                        req("storage.k8s.io", "volumeattachments", "list"),
                        req("", "events", "create"),
                    ],
                    Role::Attacher => vec![
                        req("storage.k8s.io", "volumeattachments", "patch"),
                        req("storage.k8s.io", "volumeattachments/status", "patch"),
                        req("storage.k8s.io", "csinodes", "get"),
                        req("", "persistentvolumes", "patch"),
                    ],
                    Role::Resizer => vec![
                        req("", "persistentvolumeclaims/status", "patch"),
                        req("", "persistentvolumes", "patch"),
                        req("", "pods", "list"),
                    ],
                    Role::Snapshotter => vec![
                        req(
                            "snapshot.storage.k8s.io",
                            "volumesnapshotcontents/status",
                            "update",
                        ),
                        req("snapshot.storage.k8s.io", "volumesnapshotclasses", "list"),
                    ],
                    _ => vec![],
                });
            }
            for r in needs {
                assert!(can(r), "case `{}`: controller cannot {r:?}", c.name);
            }
            let lease = Request {
                namespace: Some(NAMESPACE),
                ..req("coordination.k8s.io", "leases", "update")
            };
            assert_eq!(can(lease), *replicas > 1, "case `{}`: leases", c.name);
            assert!(
                !can(req("", "secrets", "list")),
                "case `{}`: controller lists secrets",
                c.name
            );
            for secret in publish_secrets(&objects) {
                let get = Request {
                    namespace: Some(&secret.1),
                    name: Some(&secret.0),
                    ..req("", "secrets", "get")
                };
                assert!(
                    can(get),
                    "case `{}`: attacher cannot read {secret:?}",
                    c.name
                );
            }
        }
        for w in &nodes {
            let sa = &w.service_account;
            assert!(
                sas.contains(sa),
                "case `{}`: no ServiceAccount {sa}",
                c.name
            );
            let can = |r: Request| rbac.allows(NAMESPACE, sa, r);
            assert!(
                can(req("", "nodes", "patch")) && can(req("", "nodes", "get")),
                "{}",
                c.name
            );
            assert!(
                !can(req("", "secrets", "get")),
                "case `{}`: node reads secrets",
                c.name
            );
            assert!(
                !can(req("", "nodes", "delete")),
                "case `{}`: node deletes nodes",
                c.name
            );
        }
    }
}

#[test]
fn storage_class_parameters_are_what_the_controller_accepts() {
    for c in valid_cases() {
        let objects = objects_of(c.name);
        let (controllers, _) = workloads_of(&objects);
        let all = pods::containers(&controllers[0].spec).unwrap();
        let cli = pods::plugin_cli(pods::the(&all, Role::Plugin).unwrap()).unwrap();
        let lvm_iscsi_csi::cli::Command::Controller(ctl) = cli.command else {
            panic!("not the controller")
        };
        for o in &objects {
            let Object::StorageClass(sc) = o else {
                continue;
            };
            let all = sc.parameters.clone().unwrap_or_default();
            // external-provisioner consumes and strips its own `csi.storage.k8s.io/` keys.
            let params: std::collections::HashMap<String, String> = all
                .iter()
                .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let parsed = lvm_iscsi_csi::controller::params::Params::parse(
                &params,
                ctl.default_volume_group.as_deref(),
            )
            .unwrap_or_else(|e| panic!("case `{}`: {:?}: {e}", c.name, sc.metadata.name));
            assert_eq!(
                parsed.fs_type.as_deref(),
                all.get("csi.storage.k8s.io/fstype").map(String::as_str),
                "case `{}`: the driver's and kubelet's fs types differ",
                c.name
            );
        }
    }
}

#[test]
fn volume_snapshot_class_parameters_are_what_the_controller_accepts() {
    let mut seen = 0;
    for c in valid_cases() {
        for o in objects_of(c.name) {
            let Object::VolumeSnapshotClass(class) = o else {
                continue;
            };
            // external-snapshotter strips its own `csi.storage.k8s.io/` keys; the parser
            // accepts them anyway.
            let params = class
                .parameters
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            lvm_iscsi_csi::controller::snapshot::SnapshotParams::parse(&params)
                .unwrap_or_else(|e| panic!("case `{}`: {:?}: {e}", c.name, class.metadata.name));
            seen += 1;
        }
    }
    assert!(seen > 0, "no case renders a VolumeSnapshotClass");
}

/// The (name, namespace) of every Secret a StorageClass names for ControllerPublish.
fn publish_secrets(objects: &[Object]) -> BTreeSet<(String, String)> {
    objects
        .iter()
        .filter_map(|o| match o {
            Object::StorageClass(s) => s.parameters.clone(),
            _ => None,
        })
        .filter_map(|p| {
            Some((
                p.get("csi.storage.k8s.io/controller-publish-secret-name")?
                    .clone(),
                p.get("csi.storage.k8s.io/controller-publish-secret-namespace")?
                    .clone(),
            ))
        })
        .collect()
}
