//! NodeError: everything a Node RPC can fail with: a bad request, a busy volume, or one
//! concern's error (each enum next to its code: the layers' [`IscsiError`], [`DeviceError`],
//! [`FsError`], [`MountError`], [`StateError`], and the operations' [`StageError`],
//! [`PublishError`], [`ExpandError`]). The gRPC code of each is chosen in `crate::error` only.

use std::path::PathBuf;

use crate::domain::chap::ChapError;

use super::device::DeviceError;
use super::fs::FsError;
use super::iscsi::IscsiError;
use super::mount::MountError;
use super::state::StateError;

pub use super::expand::{AtPath, ExpandError};
pub use super::publish::{Occupant, PublishError};
pub use super::stage::{Expected, StageError, Staged};

/// A failed Node RPC.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A request field is missing or malformed; nothing was done.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field (`volume_id`, `publish_context.portals`...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Another operation on the same volume is running.
    #[error("an operation on volume {volume_id} is already in progress")]
    Busy {
        /// The volume.
        volume_id: String,
    },
    /// The CHAP key is unusable.
    #[error(transparent)]
    Chap(#[from] ChapError),
    /// iscsiadm failed.
    #[error(transparent)]
    Iscsi(#[from] IscsiError),
    /// Device discovery or removal failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// blkid or mkfs failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A mount syscall failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The node's record of staged volumes could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// Staging or unstaging refused.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// Publishing refused.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Expanding refused.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// A path given in the request does not exist.
    #[error("{path} does not exist")]
    PathNotFound {
        /// The path.
        path: PathBuf,
    },
    /// A file-system operation on a request path failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl NodeError {
    /// An invalid request field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A closure wrapping an io::Error on `path`.
    pub fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| NodeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
