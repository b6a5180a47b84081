//! ControllerError -> Status: every variant, no `_` arm. The code decides what
//! external-provisioner and external-attacher do next, so only the per-volume guard (and
//! ListVolumes' bad token, as the spec demands) gives ABORTED, and only conditions that pass
//! by themselves (restore in progress, API server or target daemon unreachable) give
//! UNAVAILABLE. Every CreateVolume failure after lvcreate has been rolled back before it is
//! returned, so its code may be terminal.

use tonic::{Code, Status};

use super::full_message;
use crate::controller::capacity::CapacityError;
use crate::controller::exports::ExportsError;
use crate::controller::request::RequestError;
use crate::controller::resolver::ResolveError;
use crate::controller::volumes::VolumesError;
use crate::controller::ControllerError;
use crate::domain::volume_id::IdError;
use crate::export::TargetError;
use crate::kube::KubeError;
use crate::lvm::LvmError;

impl From<ControllerError> for Status {
    fn from(err: ControllerError) -> Status {
        Status::new(code(&err), full_message(&err))
    }
}

/// The gRPC code of `err`.
pub fn code(err: &ControllerError) -> Code {
    use ControllerError as E;
    match err {
        E::Request(e) => request_code(e),
        E::Volumes(e) => volumes_code(e),
        E::Exports(e) => exports_code(e),
        E::VolumeNotFound { .. } | E::SnapshotNotFound { .. } => Code::NotFound,
        E::SourceIncompatible { .. } => Code::InvalidArgument,
        E::SourceTooLarge { .. } => Code::OutOfRange,
        E::SnapshotConflict { .. } => Code::AlreadyExists,
        E::SnapshotInvalid { .. } | E::HasSnapshots { .. } | E::NotReady { .. } => {
            Code::FailedPrecondition
        }
        E::Copy { .. } | E::TaskFailed(_) => Code::Internal,
        E::Shrink { .. } => Code::OutOfRange,
        E::Resolve { source, .. } => match source.as_ref() {
            ResolveError::NotAnInitiator { .. } => Code::NotFound,
            ResolveError::BadAnnotation { .. } => Code::FailedPrecondition,
            ResolveError::Kube(k) => match k {
                KubeError::NodeNotFound(_) | KubeError::NoInitiator { .. } => Code::NotFound,
                KubeError::Api(_) => Code::Unavailable,
                KubeError::Config(_) => Code::Internal,
            },
        },
        E::NameConflict { .. } | E::LvNameTaken { .. } | E::PublishConflict { .. } => {
            Code::AlreadyExists
        }
        E::PublishedElsewhere { .. } | E::StillPublished { .. } => Code::FailedPrecondition,
        E::NoSpace(_) => Code::ResourceExhausted,
        E::Busy(_) => Code::Aborted,
        E::Unimplemented(_) => Code::Unimplemented,
    }
}

/// The code of a request refused before LVM or the target is asked.
fn request_code(err: &RequestError) -> Code {
    use RequestError as R;
    match err {
        R::Missing(_)
        | R::Invalid { .. }
        | R::Param(_)
        | R::Capability(_)
        | R::Chap(_)
        | R::Tag(_) => Code::InvalidArgument,
        R::VolumeId(e) => match e {
            IdError::Empty | IdError::Invalid { .. } => Code::InvalidArgument,
            IdError::Unknown { .. } => Code::NotFound,
        },
        R::Capacity(e) => match e {
            CapacityError::Negative { .. } | CapacityError::LimitBelowRequired { .. } => {
                Code::InvalidArgument
            }
            CapacityError::TooLarge(_) | CapacityError::NoFit { .. } => Code::OutOfRange,
        },
        R::SourceNotFound { .. } => Code::NotFound,
        R::BadToken(_) => Code::Aborted,
    }
}

/// The code of an LVM failure: classified by LVM's own answer.
fn volumes_code(err: &VolumesError) -> Code {
    match err {
        VolumesError::NoVolumeGroup { .. } | VolumesError::NoThinPool { .. } => {
            Code::InvalidArgument
        }
        VolumesError::Lvm { source, .. } => match source {
            LvmError::NotFound { .. } => Code::NotFound,
            LvmError::AlreadyExists { .. } => Code::AlreadyExists,
            LvmError::InsufficientSpace { .. } => Code::ResourceExhausted,
            LvmError::InUse { .. } | LvmError::SnapshotOrigin { .. } => Code::FailedPrecondition,
            LvmError::Command(_) | LvmError::Parse { .. } => Code::Internal,
        },
    }
}

/// The code of a target failure: UNAVAILABLE only for what passes by itself.
fn exports_code(err: &ExportsError) -> Code {
    match err {
        ExportsError::Restoring => Code::Unavailable,
        ExportsError::Target { source, .. } => match source {
            TargetError::Unavailable { .. } => Code::Unavailable,
            TargetError::Unsupported { .. } => Code::FailedPrecondition,
            TargetError::Configfs { .. }
            | TargetError::Command(_)
            | TargetError::Parse { .. }
            | TargetError::Conflict { .. }
            | TargetError::Foreign { .. }
            | TargetError::NoTarget { .. }
            | TargetError::Invalid { .. } => Code::Internal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::exports::ExportStep;
    use crate::controller::params::ParamError;
    use crate::controller::volumes::Step;
    use crate::domain::VolumeId;
    use crate::exec::ExecError;

    fn lvm(source: LvmError) -> ControllerError {
        VolumesError::Lvm {
            step: Box::new(Step::Create(VolumeId::new("vg", "x").unwrap())),
            source,
        }
        .into()
    }

    fn request(e: RequestError) -> ControllerError {
        e.into()
    }

    fn cmd_failed() -> ExecError {
        ExecError::Failed {
            command: "lvcreate".into(),
            code: 5,
            stderr: "boom".into(),
        }
    }

    /// The codes the sidecars react to, pinned: ABORTED only for the per-volume guard and
    /// ListVolumes' token, UNAVAILABLE only for conditions that pass by themselves.
    #[test]
    fn retry_codes_are_reserved() {
        let retrying = [
            (ControllerError::Busy("vg/x".into()), Code::Aborted),
            (request(RequestError::BadToken("t".into())), Code::Aborted),
            (ExportsError::Restoring.into(), Code::Unavailable),
            (
                ExportsError::Target {
                    step: Box::new(ExportStep::List),
                    source: TargetError::Unavailable {
                        backend: "lio",
                        reason: "no configfs".into(),
                    },
                }
                .into(),
                Code::Unavailable,
            ),
        ];
        for (err, want) in retrying {
            assert_eq!(code(&err), want, "{err}");
        }
    }

    /// Every way CreateVolume can fail is terminal for external-provisioner (no ABORTED,
    /// UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED, which it would treat as "in progress").
    #[test]
    fn create_volume_failures_are_final() {
        let create_failures = [
            request(RequestError::Missing("name")),
            ParamError::Unknown { key: "x".into() }.into(),
            CapacityError::Negative {
                field: "required_bytes",
                value: -1,
            }
            .into(),
            CapacityError::TooLarge(1 << 63).into(),
            request(RequestError::Capability("MULTI_NODE_MULTI_WRITER".into())),
            VolumesError::NoVolumeGroup { vg: "x".into() }.into(),
            VolumesError::NoThinPool {
                vg: "x".into(),
                pool: "p".into(),
            }
            .into(),
            ControllerError::NameConflict {
                name: "n".into(),
                id: "vg/n".into(),
                detail: "size".into(),
            },
            ControllerError::LvNameTaken {
                id: "vg/n".into(),
                name: "n".into(),
            },
            ControllerError::NoSpace("vg".into()),
            lvm(LvmError::InsufficientSpace {
                command: "lvcreate".into(),
                stderr: "insufficient free space".into(),
            }),
            lvm(LvmError::AlreadyExists {
                command: "lvcreate".into(),
                stderr: "already exists".into(),
            }),
            lvm(LvmError::Command(cmd_failed())),
            lvm(LvmError::Parse {
                command: "lvs".into(),
                detail: "x".into(),
            }),
        ];
        let expected = [
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::ResourceExhausted,
            Code::AlreadyExists,
            Code::Internal,
            Code::Internal,
        ];
        for (err, want) in create_failures.iter().zip(expected) {
            assert_eq!(code(err), want, "{err}");
        }
    }

    #[test]
    fn not_found_and_precondition_codes() {
        use ControllerError as E;
        assert_eq!(
            code(&E::VolumeNotFound { id: "a/b".into() }),
            Code::NotFound
        );
        assert_eq!(
            code(&IdError::Unknown { id: "x".into() }.into()),
            Code::NotFound
        );
        assert_eq!(code(&IdError::Empty.into()), Code::InvalidArgument);
        let node = |source| E::Resolve {
            node_id: "n".into(),
            source: Box::new(source),
        };
        assert_eq!(
            code(&node(ResolveError::Kube(KubeError::NodeNotFound(
                "n".into()
            )))),
            Code::NotFound
        );
        assert_eq!(
            code(&node(ResolveError::NotAnInitiator {
                node_id: "n".into()
            })),
            Code::NotFound
        );
        assert_eq!(
            code(&E::PublishedElsewhere {
                id: "a/b".into(),
                nodes: vec!["n1".into()]
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(&E::PublishConflict {
                id: "a/b".into(),
                node_id: "n".into(),
                detail: "readonly".into()
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(&E::Unimplemented("CreateSnapshot")),
            Code::Unimplemented
        );
        assert_eq!(
            code(&E::Shrink {
                id: "a/b".into(),
                size: 2,
                limit: 1
            }),
            Code::OutOfRange
        );
        assert_eq!(
            code(&lvm(LvmError::SnapshotOrigin {
                command: "lvextend".into(),
                stderr: "Snapshot origin volumes can be resized only while inactive".into(),
            })),
            Code::FailedPrecondition
        );
    }

    /// Snapshots and content sources: the codes the spec names for them.
    #[test]
    fn snapshot_and_source_codes() {
        use ControllerError as E;
        let cases = [
            (
                request(RequestError::SourceNotFound {
                    kind: "snapshot",
                    id: "vg/snap.s".into(),
                }),
                Code::NotFound,
            ),
            (
                E::SnapshotNotFound {
                    id: "vg/snap.s".into(),
                },
                Code::NotFound,
            ),
            (
                E::SourceIncompatible {
                    id: "vg/a".into(),
                    reason: "thin".into(),
                },
                Code::InvalidArgument,
            ),
            (
                E::SourceTooLarge {
                    id: "vg/a".into(),
                    source_size: 2,
                    size: 1,
                },
                Code::OutOfRange,
            ),
            (
                E::SnapshotConflict {
                    name: "s".into(),
                    id: "vg/snap.s".into(),
                    source_volume: "vg/a".into(),
                },
                Code::AlreadyExists,
            ),
            (
                E::SnapshotInvalid {
                    id: "vg/snap.s".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                E::HasSnapshots {
                    id: "vg/a".into(),
                    snapshots: vec!["vg/snap.s".into()],
                },
                Code::FailedPrecondition,
            ),
            (
                E::NotReady {
                    id: "vg/b".into(),
                    from: "vg/a".into(),
                },
                Code::FailedPrecondition,
            ),
            (E::TaskFailed("panicked".into()), Code::Internal),
        ];
        for (err, want) in cases {
            assert_eq!(code(&err), want, "{err}");
        }
    }

    #[test]
    fn message_is_the_whole_chain() {
        let status = Status::from(lvm(LvmError::Command(cmd_failed())));
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status
                .message()
                .starts_with("creating logical volume vg/x: "),
            "{}",
            status.message()
        );
        assert!(status.message().contains("boom"), "{}", status.message());
        let s = Status::from(ControllerError::PublishedElsewhere {
            id: "vg/a".into(),
            nodes: vec!["n1".into(), "n2".into()],
        });
        assert!(s.message().contains("n1, n2"), "{}", s.message());
    }
}
