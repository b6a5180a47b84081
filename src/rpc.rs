//! What every RPC of both services shares: one span, and one way to answer.
//!
//! The server layer ([`crate::metrics::layer`]) opens [`span`] around each call and records
//! the call's metrics in it; the service method records the ids its request names on that
//! same span ([`annotate`]), validates, takes the per-volume guard, acts, and answers with
//! [`reply`]. So every log line of a call, down to each command it runs, carries the method
//! and the volume (or name, node, snapshot) it is about.

use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::Span;

use crate::csi::*;

/// The span of one RPC: the method, and the ids [`annotate`] fills in.
pub fn span(method: &str) -> Span {
    tracing::info_span!(
        "rpc",
        method = %method,
        volume_id = Empty,
        node_id = Empty,
        name = Empty,
        source_volume_id = Empty,
        snapshot_id = Empty,
    )
}

/// A request naming a volume, node or snapshot (never a secret: only these fields).
pub trait Ids {
    /// `(span field, value)` of each id the request names.
    fn ids(&self) -> Vec<(&'static str, &str)>;
}

/// `Ids` for requests, listing the fields each names.
macro_rules! ids {
    ($($request:ty => [$($field:ident),+];)*) => {
        $(impl Ids for $request {
            fn ids(&self) -> Vec<(&'static str, &str)> {
                vec![$((stringify!($field), self.$field.as_str())),+]
            }
        })*
    };
}

ids! {
    CreateVolumeRequest => [name];
    DeleteVolumeRequest => [volume_id];
    ControllerPublishVolumeRequest => [volume_id, node_id];
    ControllerUnpublishVolumeRequest => [volume_id, node_id];
    ValidateVolumeCapabilitiesRequest => [volume_id];
    ControllerGetVolumeRequest => [volume_id];
    ControllerExpandVolumeRequest => [volume_id];
    CreateSnapshotRequest => [name, source_volume_id];
    DeleteSnapshotRequest => [snapshot_id];
    GetSnapshotRequest => [snapshot_id];
    NodeStageVolumeRequest => [volume_id];
    NodeUnstageVolumeRequest => [volume_id];
    NodePublishVolumeRequest => [volume_id];
    NodeUnpublishVolumeRequest => [volume_id];
    NodeGetVolumeStatsRequest => [volume_id];
    NodeExpandVolumeRequest => [volume_id];
}

/// Records the ids `request` names on the current RPC's [`span`] (empty ones are left out).
pub fn annotate<M: Ids>(request: &Request<M>) {
    let span = Span::current();
    for (field, value) in request.get_ref().ids() {
        if !value.is_empty() {
            span.record(field, tracing::field::display(value));
        }
    }
}

/// Turns an outcome into the gRPC answer: an error becomes its status (chosen in
/// [`crate::error`]) and is logged with its code and whole message, at error level when
/// INTERNAL (a bug or a broken host rather than a refusal).
pub fn reply<T, E>(rpc: &'static str, result: Result<T, E>) -> Result<Response<T>, Status>
where
    Status: From<E>,
{
    match result {
        Ok(answer) => Ok(Response::new(answer)),
        Err(e) => {
            let status = Status::from(e);
            if status.code() == tonic::Code::Internal {
                tracing::error!(rpc, code = ?status.code(), error = status.message(), "failed");
            } else {
                tracing::warn!(rpc, code = ?status.code(), error = status.message(), "failed");
            }
            Err(status)
        }
    }
}
