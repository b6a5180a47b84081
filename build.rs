//! Compiles proto/csi.proto and proto/pluginregistration.proto (kubelet's plugin-registration
//! API) with protox (pure Rust, no `protoc`) and generates the tonic services into OUT_DIR.
//! Requests that carry `secrets` get no derived `Debug`: src/csi.rs writes a redacting one,
//! so a request can never print a CHAP key.

/// Every message of the CSI contract that has a `secrets` field.
const SECRET_CARRIERS: &[&str] = &[
    "CreateVolumeRequest",
    "DeleteVolumeRequest",
    "ControllerPublishVolumeRequest",
    "ControllerUnpublishVolumeRequest",
    "ValidateVolumeCapabilitiesRequest",
    "ControllerModifyVolumeRequest",
    "CreateSnapshotRequest",
    "DeleteSnapshotRequest",
    "ListSnapshotsRequest",
    "GetSnapshotRequest",
    "ControllerExpandVolumeRequest",
    "NodeStageVolumeRequest",
    "NodePublishVolumeRequest",
    "NodeExpandVolumeRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: [&str; 2] = ["proto/csi.proto", "proto/pluginregistration.proto"];
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    let mut builder = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true);
    for name in SECRET_CARRIERS {
        builder = builder.skip_debug([format!(".csi.v1.{name}")]);
    }
    builder.compile_fds(fds)?;
    Ok(())
}
