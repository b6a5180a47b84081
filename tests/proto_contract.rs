//! The wire contract: `proto/csi.proto` must say exactly what the published CSI v1.12.0
//! `csi.proto` says, for everything it declares.
//!
//! Kubelet and the kubernetes-csi sidecars are compiled against the published file, so a
//! field number, a type or a method signature that differs is a silent wire break. This test
//! compiles both files with protox (pure Rust, the same compiler build.rs uses) and compares the
//! descriptors:
//! - every service we declare exists there with the same methods (name, input and output type,
//!   streaming flags), and Identity, Controller and Node declare *all* the published methods;
//! - every message we declare exists there with exactly the same fields (name, number, type,
//!   type name, label, oneof membership, proto3 `optional`) and the same nested messages and
//!   enums, recursively;
//! - every enum we declare has the same values (names and numbers).
//!
//! Options are not compared: ours leaves out the spec's `csi_secret` and `alpha_*` annotations,
//! which do not travel on the wire.
//!
//! The published file comes from the Go module cache: `go mod download -json
//! github.com/container-storage-interface/spec@v1.12.0` gives its directory. Set `CSI_SPEC_DIR`
//! to a directory holding the published `csi.proto` to use another copy. If neither works the
//! test fails (it never skips): a contract test that silently does nothing is worse than none.
//!
//! Kubelet's plugin-registration API (`proto/pluginregistration.proto`, from k8s.io/kubelet
//! v0.34.4, found the same way or through `KUBELET_REGISTRATION_API_DIR`) is checked too: that
//! file is the published one verbatim, so its descriptor must be equal in full.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto,
};

/// The spec release our proto declares.
const SPEC_MODULE: &str = "github.com/container-storage-interface/spec@v1.12.0";
/// Services we must implement in full: a missing method would be UNIMPLEMENTED on the wire
/// where the sidecars expect an answer.
const FULL_SERVICES: &[&str] = &["Identity", "Controller", "Node"];

// ---------------------------------------------------------------------------------------------
// Loading the two descriptors.

/// Compiles `file` found under `dir` and returns its descriptor (imports resolved, the
/// well-known types come bundled with protox).
fn compile(dir: &Path, file: &str) -> FileDescriptorProto {
    let set = protox::compile([file], [dir]).unwrap_or_else(|e| {
        panic!(
            "protox could not compile {} in {}: {e}\n{e:?}",
            file,
            dir.display()
        )
    });
    set.file
        .into_iter()
        .find(|f| f.name() == file)
        .unwrap_or_else(|| panic!("protox returned no descriptor for {file}"))
}

/// Our `proto/csi.proto`.
fn ours() -> &'static FileDescriptorProto {
    static OURS: OnceLock<FileDescriptorProto> = OnceLock::new();
    OURS.get_or_init(|| {
        compile(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"),
            "csi.proto",
        )
    })
}

/// The published `csi.proto` of the spec release.
fn published() -> &'static FileDescriptorProto {
    static PUBLISHED: OnceLock<FileDescriptorProto> = OnceLock::new();
    PUBLISHED.get_or_init(|| compile(&published_dir(&CSI_SPEC), CSI_SPEC.file))
}

/// Where a published proto file comes from.
struct Published {
    /// The Go module release that publishes it.
    module: &'static str,
    /// Its directory inside the module.
    dir: &'static str,
    /// Its file name.
    file: &'static str,
    /// An environment variable naming another directory that holds the file.
    env: &'static str,
}

/// The CSI spec's csi.proto.
const CSI_SPEC: Published = Published {
    module: SPEC_MODULE,
    dir: "",
    file: "csi.proto",
    env: "CSI_SPEC_DIR",
};

/// Kubelet's plugin-registration API.
const KUBELET_REGISTRATION: Published = Published {
    module: "k8s.io/kubelet@v0.34.4",
    dir: "pkg/apis/pluginregistration/v1",
    file: "api.proto",
    env: "KUBELET_REGISTRATION_API_DIR",
};

/// Where the published file is: the directory in `p.env`, else the Go module cache
/// (downloading the module if needed). Panics with what was tried.
fn published_dir(p: &Published) -> PathBuf {
    let (module, file, env) = (p.module, p.file, p.env);
    if let Some(dir) = std::env::var_os(env) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join(file).is_file(),
            "{env}={} has no {file}; point it at {} of {module}",
            dir.display(),
            if p.dir.is_empty() {
                "a checkout"
            } else {
                p.dir
            }
        );
        return dir;
    }
    let mut tried = Vec::new();
    for go in ["go", "/usr/local/go/bin/go"] {
        let out = Command::new(go)
            .args(["mod", "download", "-json", module])
            // Outside any Go module, so the workspace around us cannot interfere.
            .current_dir(std::env::temp_dir())
            .env("GOFLAGS", "-mod=mod")
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tried.push(format!("`{go}`: {e}"));
                continue;
            }
        };
        // `go mod download -json` prints the JSON (with an "Error" field) even when it fails.
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                tried.push(format!(
                    "`{go} mod download -json {module}` exited with {}: unreadable output ({e}); stderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
        };
        if let Some(err) = json.get("Error").and_then(|e| e.as_str()) {
            tried.push(format!("`{go} mod download`: {err}"));
            continue;
        }
        match json.get("Dir").and_then(|d| d.as_str()) {
            Some(dir) if Path::new(dir).join(p.dir).join(file).is_file() => {
                return Path::new(dir).join(p.dir)
            }
            Some(dir) => tried.push(format!(
                "`{go} mod download`: {dir} has no {}",
                Path::new(p.dir).join(file).display()
            )),
            None => tried.push(format!("`{go} mod download`: no \"Dir\" in {json}")),
        }
    }
    panic!(
        "cannot find the published {file} of {module}.\n\
         Install Go (with access to the Go module proxy) or set {env} to a directory \
         holding that release's {file}.\nTried:\n  {}",
        tried.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The comparator: returns every difference, one line each, never stops at the first.

/// All differences between our file and the published one, for what we declare.
fn compare(ours: &FileDescriptorProto, theirs: &FileDescriptorProto) -> Vec<String> {
    let mut d = Vec::new();
    if ours.package() != theirs.package() {
        d.push(format!(
            "package: ours {:?}, published {:?}",
            ours.package(),
            theirs.package()
        ));
    }
    if ours.syntax() != theirs.syntax() {
        d.push(format!(
            "syntax: ours {:?}, published {:?}",
            ours.syntax(),
            theirs.syntax()
        ));
    }
    let pkg = theirs.package();

    let their_services: BTreeMap<_, _> = theirs.service.iter().map(|s| (s.name(), s)).collect();
    let our_services: BTreeMap<_, _> = ours.service.iter().map(|s| (s.name(), s)).collect();
    for name in FULL_SERVICES {
        if !our_services.contains_key(name) {
            d.push(format!("service {pkg}.{name}: not declared by ours"));
        }
    }
    for (name, s) in &our_services {
        match their_services.get(name) {
            None => d.push(format!(
                "service {pkg}.{name}: not in the published csi.proto"
            )),
            Some(t) => compare_service(&format!("{pkg}.{name}"), s, t, &mut d),
        }
    }

    let their_messages: BTreeMap<_, _> =
        theirs.message_type.iter().map(|m| (m.name(), m)).collect();
    for m in &ours.message_type {
        let path = format!("{pkg}.{}", m.name());
        match their_messages.get(m.name()) {
            None => d.push(format!("message {path}: not in the published csi.proto")),
            Some(t) => compare_message(&path, m, t, &mut d),
        }
    }

    let their_enums: BTreeMap<_, _> = theirs.enum_type.iter().map(|e| (e.name(), e)).collect();
    for e in &ours.enum_type {
        let path = format!("{pkg}.{}", e.name());
        match their_enums.get(e.name()) {
            None => d.push(format!("enum {path}: not in the published csi.proto")),
            Some(t) => compare_enum(&path, e, t, &mut d),
        }
    }
    d
}

fn compare_service(
    path: &str,
    ours: &ServiceDescriptorProto,
    theirs: &ServiceDescriptorProto,
    d: &mut Vec<String>,
) {
    let their_methods: BTreeMap<_, _> = theirs.method.iter().map(|m| (m.name(), m)).collect();
    let our_methods: BTreeMap<_, _> = ours.method.iter().map(|m| (m.name(), m)).collect();
    for (name, m) in &our_methods {
        let Some(t) = their_methods.get(name) else {
            d.push(format!("rpc {path}.{name}: not in the published csi.proto"));
            continue;
        };
        let sig = |m: &prost_types::MethodDescriptorProto| {
            format!(
                "({}{}) returns ({}{})",
                if m.client_streaming() { "stream " } else { "" },
                m.input_type(),
                if m.server_streaming() { "stream " } else { "" },
                m.output_type()
            )
        };
        if sig(m) != sig(t) {
            d.push(format!(
                "rpc {path}.{name}: ours {}, published {}",
                sig(m),
                sig(t)
            ));
        }
    }
    if FULL_SERVICES.contains(&ours.name()) {
        for name in their_methods.keys() {
            if !our_methods.contains_key(name) {
                d.push(format!(
                    "rpc {path}.{name}: published, but not declared by ours"
                ));
            }
        }
    }
}

/// The wire-relevant facts of a field, printable.
fn field_facts(f: &FieldDescriptorProto, m: &DescriptorProto) -> String {
    let oneof = f
        .oneof_index
        .and_then(|i| m.oneof_decl.get(i as usize))
        .map(|o| o.name().to_string());
    format!(
        "number={} type={:?} type_name={:?} label={:?} oneof={:?} proto3_optional={}",
        f.number(),
        f.r#type(),
        f.type_name(),
        f.label(),
        oneof,
        f.proto3_optional()
    )
}

fn compare_message(
    path: &str,
    ours: &DescriptorProto,
    theirs: &DescriptorProto,
    d: &mut Vec<String>,
) {
    let map_entry = |m: &DescriptorProto| m.options.as_ref().is_some_and(|o| o.map_entry());
    if map_entry(ours) != map_entry(theirs) {
        d.push(format!(
            "message {path}: map entry ours {}, published {}",
            map_entry(ours),
            map_entry(theirs)
        ));
    }

    let their_fields: BTreeMap<_, _> = theirs.field.iter().map(|f| (f.name(), f)).collect();
    let our_fields: BTreeMap<_, _> = ours.field.iter().map(|f| (f.name(), f)).collect();
    for (name, f) in &our_fields {
        match their_fields.get(name) {
            None => d.push(format!("field {path}.{name}: not in the published message")),
            Some(t) => {
                let (a, b) = (field_facts(f, ours), field_facts(t, theirs));
                if a != b {
                    d.push(format!("field {path}.{name}: ours {a}; published {b}"));
                }
            }
        }
    }
    for (name, t) in &their_fields {
        if !our_fields.contains_key(name) {
            d.push(format!(
                "field {path}.{name}: published ({}), but not declared by ours",
                field_facts(t, theirs)
            ));
        }
    }

    let oneofs = |m: &DescriptorProto| -> BTreeSet<String> {
        m.oneof_decl.iter().map(|o| o.name().to_string()).collect()
    };
    if oneofs(ours) != oneofs(theirs) {
        d.push(format!(
            "message {path}: oneofs ours {:?}, published {:?}",
            oneofs(ours),
            oneofs(theirs)
        ));
    }

    let their_nested: BTreeMap<_, _> = theirs.nested_type.iter().map(|m| (m.name(), m)).collect();
    let our_nested: BTreeMap<_, _> = ours.nested_type.iter().map(|m| (m.name(), m)).collect();
    for (name, m) in &our_nested {
        match their_nested.get(name) {
            None => d.push(format!(
                "message {path}.{name}: not in the published csi.proto"
            )),
            Some(t) => compare_message(&format!("{path}.{name}"), m, t, d),
        }
    }
    for name in their_nested.keys() {
        if !our_nested.contains_key(name) {
            d.push(format!(
                "message {path}.{name}: published, but not declared by ours"
            ));
        }
    }

    let their_enums: BTreeMap<_, _> = theirs.enum_type.iter().map(|e| (e.name(), e)).collect();
    let our_enums: BTreeMap<_, _> = ours.enum_type.iter().map(|e| (e.name(), e)).collect();
    for (name, e) in &our_enums {
        match their_enums.get(name) {
            None => d.push(format!(
                "enum {path}.{name}: not in the published csi.proto"
            )),
            Some(t) => compare_enum(&format!("{path}.{name}"), e, t, d),
        }
    }
    for name in their_enums.keys() {
        if !our_enums.contains_key(name) {
            d.push(format!(
                "enum {path}.{name}: published, but not declared by ours"
            ));
        }
    }
}

fn compare_enum(
    path: &str,
    ours: &EnumDescriptorProto,
    theirs: &EnumDescriptorProto,
    d: &mut Vec<String>,
) {
    let values = |e: &EnumDescriptorProto| -> BTreeMap<String, i32> {
        e.value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect()
    };
    let (ours, theirs) = (values(ours), values(theirs));
    for (name, n) in &ours {
        match theirs.get(name) {
            None => d.push(format!(
                "enum value {path}.{name} = {n}: not in the published enum"
            )),
            Some(m) if m != n => {
                d.push(format!("enum value {path}.{name}: ours {n}, published {m}"))
            }
            Some(_) => {}
        }
    }
    for (name, m) in &theirs {
        if !ours.contains_key(name) {
            d.push(format!(
                "enum value {path}.{name} = {m}: published, but not declared by ours"
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn our_proto_matches_the_published_csi_v1_12_0() {
    let diffs = compare(ours(), published());
    assert!(
        diffs.is_empty(),
        "proto/csi.proto differs from the published csi.proto of {SPEC_MODULE} in {} place(s):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

#[test]
fn our_proto_declares_the_services_the_sidecars_call() {
    let services: BTreeSet<_> = ours().service.iter().map(|s| s.name()).collect();
    for name in FULL_SERVICES {
        assert!(
            services.contains(name),
            "proto/csi.proto declares no service {name}"
        );
    }
    // Vacuity guard: the comparison above must have had something to compare.
    assert!(
        ours().message_type.len() > 50,
        "proto/csi.proto declares only {} messages",
        ours().message_type.len()
    );
}

/// A comparator that reports nothing is useless: break a copy of our descriptor in several
/// ways and check that each break is reported.
#[test]
fn the_comparator_reports_each_kind_of_difference() {
    let theirs = published();
    let mut broken = ours().clone();
    let mut expected: Vec<&str> = Vec::new();

    let msg = |f: &FileDescriptorProto, name: &str| -> usize {
        f.message_type
            .iter()
            .position(|m| m.name() == name)
            .unwrap_or_else(|| panic!("ours declares no {name}"))
    };

    // A field number.
    let i = msg(&broken, "CreateVolumeRequest");
    let f = broken.message_type[i]
        .field
        .iter_mut()
        .find(|f| f.name() == "name")
        .unwrap();
    f.number = Some(f.number() + 100);
    expected.push("field csi.v1.CreateVolumeRequest.name: ours number=101");

    // A field type.
    let f = broken.message_type[i]
        .field
        .iter_mut()
        .find(|f| f.name() == "capacity_range")
        .unwrap();
    f.set_type(prost_types::field_descriptor_proto::Type::String);
    f.type_name = None;
    expected.push("field csi.v1.CreateVolumeRequest.capacity_range: ours number=2 type=String");

    // A missing field.
    let i = msg(&broken, "NodeStageVolumeRequest");
    broken.message_type[i]
        .field
        .retain(|f| f.name() != "staging_target_path");
    expected.push("field csi.v1.NodeStageVolumeRequest.staging_target_path: published");

    // A field taken out of its oneof.
    let i = msg(&broken, "VolumeCapability");
    let f = broken.message_type[i]
        .field
        .iter_mut()
        .find(|f| f.name() == "block")
        .unwrap();
    f.oneof_index = None;
    expected.push("field csi.v1.VolumeCapability.block: ours number=1 type=Message type_name=\".csi.v1.VolumeCapability.BlockVolume\" label=Optional oneof=None");

    // A nested enum value renumbered, and a nested message dropped.
    let access = broken.message_type[i]
        .nested_type
        .iter_mut()
        .find(|m| m.name() == "AccessMode")
        .unwrap();
    let mode = access
        .enum_type
        .iter_mut()
        .find(|e| e.name() == "Mode")
        .unwrap();
    let v = mode
        .value
        .iter_mut()
        .find(|v| v.name() == "SINGLE_NODE_WRITER")
        .unwrap();
    v.number = Some(42);
    expected.push("enum value csi.v1.VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER: ours 42");
    broken.message_type[i]
        .nested_type
        .retain(|m| m.name() != "MountVolume");
    expected
        .push("message csi.v1.VolumeCapability.MountVolume: published, but not declared by ours");

    // A method dropped from a service we must implement in full, and one whose types changed.
    let s = broken
        .service
        .iter_mut()
        .find(|s| s.name() == "Identity")
        .unwrap();
    s.method.retain(|m| m.name() != "Probe");
    expected.push("rpc csi.v1.Identity.Probe: published, but not declared by ours");
    let s = broken
        .service
        .iter_mut()
        .find(|s| s.name() == "Node")
        .unwrap();
    let m = s
        .method
        .iter_mut()
        .find(|m| m.name() == "NodeGetInfo")
        .unwrap();
    m.server_streaming = Some(true);
    expected
        .push("rpc csi.v1.Node.NodeGetInfo: ours (.csi.v1.NodeGetInfoRequest) returns (stream ");

    // A message the spec does not have.
    broken.message_type.push(DescriptorProto {
        name: Some("MadeUp".into()),
        ..Default::default()
    });
    expected.push("message csi.v1.MadeUp: not in the published csi.proto");

    let diffs = compare(&broken, theirs);
    let report = diffs.join("\n  ");
    for e in &expected {
        assert!(
            diffs.iter().any(|d| d.starts_with(e)),
            "the comparator missed a difference starting with {e:?}; it reported:\n  {report}"
        );
    }
    assert_eq!(
        diffs.len(),
        expected.len(),
        "the comparator reported differences nobody made:\n  {report}"
    );
    // And the unbroken pair still compares equal to itself.
    assert_eq!(compare(theirs, theirs), Vec::<String>::new());
}

/// Kubelet's plugin-registration API: proto/pluginregistration.proto is the published file
/// with a header comment added, so the descriptors must be equal in full (source positions
/// and the file name aside). Kubelet calls `/pluginregistration.Registration/GetInfo`: the
/// package name is part of the wire contract too.
#[test]
fn our_plugin_registration_proto_is_kubelets() {
    let strip = |mut f: FileDescriptorProto| {
        f.source_code_info = None;
        f.name = None;
        f
    };
    let ours = compile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"),
        "pluginregistration.proto",
    );
    let published = compile(
        &published_dir(&KUBELET_REGISTRATION),
        KUBELET_REGISTRATION.file,
    );
    assert_eq!(ours.package(), "pluginregistration");
    let methods: Vec<&str> = ours
        .service
        .iter()
        .filter(|s| s.name() == "Registration")
        .flat_map(|s| s.method.iter().map(|m| m.name()))
        .collect();
    assert_eq!(methods, ["GetInfo", "NotifyRegistrationStatus"]);
    assert_eq!(
        strip(ours),
        strip(published),
        "proto/pluginregistration.proto differs from {}'s {}/{}",
        KUBELET_REGISTRATION.module,
        KUBELET_REGISTRATION.dir,
        KUBELET_REGISTRATION.file
    );
}
