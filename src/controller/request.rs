//! Pure checks of request fields that several RPCs share: names, node ids, volume ids (an id
//! that cannot be ours means "nothing to do" or NOT_FOUND, per RPC), content sources; and
//! [`RequestError`], everything a request can be refused for before LVM or the target is
//! asked.

use crate::csi::{self, volume_content_source::Type as SourceType};
use crate::domain::chap::ChapError;
use crate::domain::volume_id::{IdError, VolumeId, MAX_ID_LEN};
use crate::lvm::tags::{ContentSource, TagError};

use super::capacity::CapacityError;
use super::params::ParamError;

/// The longest node id accepted (a Kubernetes node name is at most 253 bytes).
pub const MAX_NODE_ID: usize = 253;

/// A request that cannot be served as it is.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A required field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The volume id is empty, malformed or not one of ours.
    #[error(transparent)]
    VolumeId(#[from] IdError),
    /// A field has a value that cannot be used.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A StorageClass parameter is unknown or invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The capacity range is invalid or cannot be served.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// A volume capability this driver does not serve.
    #[error("unsupported volume capability: {0}")]
    Capability(String),
    /// The CHAP key in the request's secrets is unusable.
    #[error("invalid CHAP key in the request's secrets")]
    Chap(#[from] ChapError),
    /// A value too long for an LV tag.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// The volume_content_source names no snapshot or volume of ours.
    #[error("source {kind} {id} does not exist")]
    SourceNotFound {
        /// `snapshot` or `volume`.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// ListVolumes or ListSnapshots got a starting_token it did not hand out.
    #[error("invalid starting_token {0:?}: start listing again without a token")]
    BadToken(String),
}

/// The spec's rules for names: at most 128 bytes, no control characters other than common
/// whitespace.
pub fn check_name(name: &str) -> Result<(), RequestError> {
    let reason = if name.len() > MAX_ID_LEN {
        "longer than 128 bytes"
    } else if name
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(RequestError::Invalid {
        field: "name",
        reason: reason.into(),
    })
}

/// A node id: required, at most [`MAX_NODE_ID`] bytes, no whitespace or control characters.
pub fn check_node_id(node_id: &str) -> Result<(), RequestError> {
    if node_id.is_empty() {
        return Err(RequestError::Missing("node_id"));
    }
    if node_id.len() > MAX_NODE_ID || node_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(RequestError::Invalid {
            field: "node_id",
            reason: "longer than 253 bytes, or contains whitespace or control characters".into(),
        });
    }
    Ok(())
}

/// Parses a volume (or snapshot) id where an unknown one means "nothing to do" (`None`); an
/// empty or malformed one is refused.
pub fn parse_known(id: &str) -> Result<Option<VolumeId>, RequestError> {
    match id.parse::<VolumeId>() {
        Ok(id) => Ok(Some(id)),
        Err(IdError::Unknown { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks a request's volume_content_source: `None` without one. A malformed id is
/// INVALID_ARGUMENT, one that cannot be ours NOT_FOUND.
pub fn parse_content_source(
    source: Option<&csi::VolumeContentSource>,
) -> Result<Option<ContentSource>, RequestError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let (kind, id) = match &source.r#type {
        Some(SourceType::Snapshot(s)) => ("snapshot", &s.snapshot_id),
        Some(SourceType::Volume(v)) => ("volume", &v.volume_id),
        None => {
            return Err(RequestError::Invalid {
                field: "volume_content_source",
                reason: "neither a snapshot nor a volume".into(),
            })
        }
    };
    let not_found = || RequestError::SourceNotFound {
        kind,
        id: id.clone(),
    };
    let parsed = parse_known(id)
        .map_err(|_| RequestError::Invalid {
            field: "volume_content_source",
            reason: format!("{kind} id {id:?} is malformed"),
        })?
        .ok_or_else(not_found)?
        .to_string();
    Ok(Some(match kind {
        "snapshot" => ContentSource::Snapshot(parsed),
        _ => ContentSource::Volume(parsed),
    }))
}

/// The CSI form of a content source (echoed in the created Volume).
pub fn content_source_to_csi(source: &ContentSource) -> csi::VolumeContentSource {
    use csi::volume_content_source::{SnapshotSource, VolumeSource};
    csi::VolumeContentSource {
        r#type: Some(match source {
            ContentSource::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.clone(),
            }),
            ContentSource::Volume(id) => SourceType::Volume(VolumeSource {
                volume_id: id.clone(),
            }),
        }),
    }
}
