//! The generated CSI v1 types and services, plus redacting `Debug` for the requests that
//! carry `secrets` (build.rs generates those without a derived `Debug`).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("csi.v1");

use std::collections::HashMap;
use std::fmt;

/// Prints a secrets map as its keys only: values never reach a log line.
struct Redacted<'a>(&'a HashMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, "***")))
            .finish()
    }
}

/// `Debug` for a secret-carrying request: every field but `secrets` as prost would print it.
macro_rules! redacting_debug {
    ($ty:ident { $($field:ident),* }) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field("secrets", &Redacted(&self.secrets))
                    .finish()
            }
        }
    };
}

redacting_debug!(CreateVolumeRequest {
    name,
    capacity_range,
    volume_capabilities,
    parameters,
    volume_content_source,
    accessibility_requirements,
    mutable_parameters
});
redacting_debug!(DeleteVolumeRequest { volume_id });
redacting_debug!(ControllerPublishVolumeRequest {
    volume_id,
    node_id,
    volume_capability,
    readonly,
    volume_context
});
redacting_debug!(ControllerUnpublishVolumeRequest { volume_id, node_id });
redacting_debug!(ValidateVolumeCapabilitiesRequest {
    volume_id,
    volume_context,
    volume_capabilities,
    parameters,
    mutable_parameters
});
redacting_debug!(ControllerModifyVolumeRequest {
    volume_id,
    mutable_parameters
});
redacting_debug!(CreateSnapshotRequest {
    source_volume_id,
    name,
    parameters
});
redacting_debug!(DeleteSnapshotRequest { snapshot_id });
redacting_debug!(ListSnapshotsRequest {
    max_entries,
    starting_token,
    source_volume_id,
    snapshot_id
});
redacting_debug!(GetSnapshotRequest { snapshot_id });
redacting_debug!(ControllerExpandVolumeRequest {
    volume_id,
    capacity_range,
    volume_capability
});
redacting_debug!(NodeStageVolumeRequest {
    volume_id,
    publish_context,
    staging_target_path,
    volume_capability,
    volume_context
});
redacting_debug!(NodePublishVolumeRequest {
    volume_id,
    publish_context,
    staging_target_path,
    target_path,
    volume_capability,
    readonly,
    volume_context
});
redacting_debug!(NodeExpandVolumeRequest {
    volume_id,
    volume_path,
    capacity_range,
    staging_target_path,
    volume_capability
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let req = NodeStageVolumeRequest {
            volume_id: "vg/lv".into(),
            secrets: HashMap::from([("chapKey".to_string(), "s3cr3t-value".to_string())]),
            ..Default::default()
        };
        let printed = format!("{req:?} {req:#?}");
        assert!(printed.contains("vg/lv") && printed.contains("chapKey"));
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
    }
}
