//! NodeError -> Status. kubelet retries every failed Node call, but the code still matters:
//! DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED (and CANCELLED, RESOURCE_EXHAUSTED) leave the
//! stage "uncertain", so kubelet will call NodeUnstageVolume even if it gives up; the others
//! are final. So a final code is only returned when nothing is left behind.

use nix::errno::Errno;
use tonic::{Code, Status};

use crate::domain::chap::ChapError;
use crate::exec::ExecError;
use crate::node::device::DeviceError;
use crate::node::error::{ExpandError, NodeError, PublishError, StageError};
use crate::node::fs::FsError;
use crate::node::iscsi::{IscsiError, LoginFailure};
use crate::node::mount::MountError;
use crate::node::state::StateError;

use super::full_message;

fn exec_code(e: &ExecError) -> Code {
    match e {
        ExecError::Timeout { .. } => Code::DeadlineExceeded,
        ExecError::Spawn { .. } | ExecError::Failed { .. } => Code::Internal,
    }
}

fn iscsi_code(e: &IscsiError) -> Code {
    match e {
        IscsiError::Login { failure, .. } => match failure {
            LoginFailure::Auth | LoginFailure::Refused => Code::PermissionDenied,
            LoginFailure::Unreachable | LoginFailure::Iscsid => Code::Unavailable,
            LoginFailure::Other => Code::Internal,
        },
        IscsiError::Command { source, .. } => exec_code(source),
        IscsiError::Parse { .. } => Code::Internal,
    }
}

fn device_code(e: &DeviceError) -> Code {
    match e {
        DeviceError::Timeout { .. } => Code::DeadlineExceeded,
        DeviceError::SessionLost { .. } => Code::Unavailable,
        DeviceError::Mismatch { .. } => Code::FailedPrecondition,
        DeviceError::Blockdev { source, .. } => exec_code(source),
        DeviceError::Io { .. } => Code::Internal,
    }
}

fn fs_code(e: &FsError) -> Code {
    match e {
        // The disk vanished between discovery and probe: the session is going away.
        FsError::NoDevice { .. } => Code::Unavailable,
        FsError::Probe { source, .. }
        | FsError::Mkfs { source, .. }
        | FsError::Grow { source, .. } => exec_code(source),
    }
}

fn mount_code(e: &MountError) -> Code {
    match e {
        MountError::Syscall {
            errno: Errno::EBUSY,
            ..
        } => Code::FailedPrecondition,
        MountError::Syscall { .. }
        | MountError::Read { .. }
        | MountError::Parse { .. }
        | MountError::Task(_) => Code::Internal,
        MountError::BadFlag { .. } => Code::InvalidArgument,
        MountError::StillMounted { .. } => Code::FailedPrecondition,
    }
}

fn state_code(e: &StateError) -> Code {
    match e {
        StateError::Io { .. } | StateError::Corrupt { .. } => Code::Internal,
    }
}

fn stage_code(e: &StageError) -> Code {
    match e {
        StageError::MissingChapKey { .. }
        | StageError::Conflict { .. }
        | StageError::StillInUse { .. }
        | StageError::WrongContent { .. }
        | StageError::UnformattedReadOnly { .. } => Code::FailedPrecondition,
        StageError::StagedDifferently { .. } => Code::AlreadyExists,
    }
}

fn publish_code(e: &PublishError) -> Code {
    match e {
        PublishError::NotStaged { .. } | PublishError::Conflict { .. } => Code::FailedPrecondition,
        PublishError::PublishedDifferently { .. } => Code::AlreadyExists,
        PublishError::ReadOnlyBlockUnenforceable { .. } => Code::InvalidArgument,
    }
}

fn expand_code(e: &ExpandError) -> Code {
    match e {
        ExpandError::NotStagedHere { .. } | ExpandError::NotAtPath { .. } => Code::NotFound,
        ExpandError::NoDisk { .. } | ExpandError::CannotGrow { .. } => Code::FailedPrecondition,
        ExpandError::NotGrown { .. } => Code::Unavailable,
    }
}

/// The gRPC code of a node error.
pub fn code(e: &NodeError) -> Code {
    match e {
        NodeError::Invalid { .. } => Code::InvalidArgument,
        NodeError::Busy { .. } => Code::Aborted,
        NodeError::Chap(ChapError::KeyTooShort { .. }) => Code::InvalidArgument,
        NodeError::Iscsi(e) => iscsi_code(e),
        NodeError::Device(e) => device_code(e),
        NodeError::Fs(e) => fs_code(e),
        NodeError::Mount(e) => mount_code(e),
        NodeError::State(e) => state_code(e),
        NodeError::Stage(e) => stage_code(e),
        NodeError::Publish(e) => publish_code(e),
        NodeError::Expand(e) => expand_code(e),
        NodeError::PathNotFound { .. } => Code::NotFound,
        NodeError::Io { .. } => Code::Internal,
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        Status::new(code(&e), full_message(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::device::DevNum;
    use crate::node::error::Expected;
    use crate::node::mount::{DeviceRef, MountMode};
    use std::path::PathBuf;
    use std::time::Duration;

    fn login(failure: LoginFailure) -> NodeError {
        NodeError::Iscsi(IscsiError::Login {
            target: "iqn.x:a".into(),
            portal: "10.0.0.5:3260".into(),
            failure,
            code: 24,
            stderr: "iscsiadm: initiator reported error".into(),
        })
    }

    /// The codes kubelet treats as "maybe still in progress" (it will unstage later) are
    /// used only where something may be left attached or where retrying can help.
    #[test]
    fn pins_the_codes_kubelet_reacts_to() {
        let cases: Vec<(NodeError, Code)> = vec![
            (
                NodeError::invalid("volume_id", "empty"),
                Code::InvalidArgument,
            ),
            (
                NodeError::Busy {
                    volume_id: "v".into(),
                },
                Code::Aborted,
            ),
            (
                StageError::MissingChapKey { key: "chapKey" }.into(),
                Code::FailedPrecondition,
            ),
            (
                NodeError::Chap(ChapError::KeyTooShort { len: 3 }),
                Code::InvalidArgument,
            ),
            (login(LoginFailure::Auth), Code::PermissionDenied),
            (login(LoginFailure::Refused), Code::PermissionDenied),
            (login(LoginFailure::Unreachable), Code::Unavailable),
            (login(LoginFailure::Iscsid), Code::Unavailable),
            (login(LoginFailure::Other), Code::Internal),
            (
                NodeError::Device(DeviceError::Timeout {
                    target: "iqn.x:a".into(),
                    portal: "p".into(),
                    lun: 0,
                    waited: Duration::from_secs(30),
                }),
                Code::DeadlineExceeded,
            ),
            (
                NodeError::Mount(MountError::Syscall {
                    op: "unmount",
                    target: PathBuf::from("/s"),
                    from: None,
                    errno: Errno::EBUSY,
                }),
                Code::FailedPrecondition,
            ),
            (
                StageError::Conflict {
                    path: PathBuf::from("/s"),
                    found: DeviceRef {
                        source: "/dev/sdb".into(),
                        dev: DevNum::new(8, 16),
                    },
                    expected: Expected::Disk(DeviceRef {
                        source: "/dev/sdc".into(),
                        dev: DevNum::new(8, 32),
                    }),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                PublishError::PublishedDifferently {
                    path: PathBuf::from("/t"),
                    existing: MountMode::ReadOnly,
                    wanted: MountMode::ReadWrite,
                }
                .into(),
                Code::AlreadyExists,
            ),
            (
                NodeError::PathNotFound {
                    path: PathBuf::from("/t"),
                },
                Code::NotFound,
            ),
            (
                ExpandError::NotStagedHere {
                    volume_id: "v".into(),
                }
                .into(),
                Code::NotFound,
            ),
            (
                ExpandError::NotGrown {
                    device: "/dev/sda".into(),
                    size: 1,
                    required: 2,
                    waited: Duration::from_secs(60),
                }
                .into(),
                Code::Unavailable,
            ),
            (
                ExpandError::CannotGrow {
                    path: PathBuf::from("/s"),
                    fs_type: "vfat".into(),
                }
                .into(),
                Code::FailedPrecondition,
            ),
        ];
        for (err, want) in cases {
            let msg = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), want, "{msg}");
            assert!(!status.message().is_empty());
        }
    }

    #[test]
    fn message_carries_the_cause_chain() {
        let err = NodeError::Fs(FsError::Mkfs {
            device: "/dev/sdb".into(),
            fs: crate::node::fs::FsType::Ext4,
            source: ExecError::Failed {
                command: "mkfs.ext4 /dev/sdb".into(),
                code: 1,
                stderr: "No space left".into(),
            },
        });
        let status = Status::from(err);
        assert!(
            status.message().contains("/dev/sdb"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("No space left"),
            "{}",
            status.message()
        );
    }
}
