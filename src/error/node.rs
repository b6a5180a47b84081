//! NodeError -> Status. kubelet retries every failed Node call, but the code still matters:
//! DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED (and CANCELLED, RESOURCE_EXHAUSTED) leave the
//! stage "uncertain", so kubelet will call NodeUnstageVolume even if it gives up; the others
//! are final. So a final code is only returned when nothing is left behind.

use nix::errno::Errno;
use tonic::{Code, Status};

use crate::domain::chap::ChapError;
use crate::exec::ExecError;
use crate::node::device::DeviceError;
use crate::node::error::NodeError;
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
    }
}

fn state_code(e: &StateError) -> Code {
    match e {
        StateError::Io { .. } | StateError::Corrupt { .. } => Code::Internal,
    }
}

/// The gRPC code of a node error.
pub fn code(e: &NodeError) -> Code {
    match e {
        NodeError::Invalid { .. } | NodeError::ReadOnlyBlockUnenforceable { .. } => {
            Code::InvalidArgument
        }
        NodeError::Busy { .. } => Code::Aborted,
        NodeError::MissingChapKey { .. } => Code::FailedPrecondition,
        NodeError::Chap(ChapError::KeyTooShort { .. }) => Code::InvalidArgument,
        NodeError::Iscsi(e) => iscsi_code(e),
        NodeError::Device(e) => device_code(e),
        NodeError::Fs(e) => fs_code(e),
        NodeError::Mount(e) => mount_code(e),
        NodeError::State(e) => state_code(e),
        NodeError::StagingConflict { .. }
        | NodeError::StillInUse { .. }
        | NodeError::WrongContent { .. }
        | NodeError::UnformattedReadOnly { .. }
        | NodeError::NotStaged { .. }
        | NodeError::TargetConflict { .. } => Code::FailedPrecondition,
        NodeError::StagedDifferently { .. } | NodeError::PublishedDifferently { .. } => {
            Code::AlreadyExists
        }
        NodeError::PathNotFound { .. }
        | NodeError::NotStagedHere { .. }
        | NodeError::NotAtPath { .. } => Code::NotFound,
        NodeError::NoDisk { .. } | NodeError::CannotGrow { .. } => Code::FailedPrecondition,
        NodeError::NotGrown { .. } => Code::Unavailable,
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
                NodeError::MissingChapKey { key: "chapKey" },
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
                NodeError::StagingConflict {
                    path: PathBuf::from("/s"),
                    found: "/dev/sdb".into(),
                    expected: "/dev/sdc".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                NodeError::PublishedDifferently {
                    path: PathBuf::from("/t"),
                    existing: "read-only",
                    wanted: "read-write",
                },
                Code::AlreadyExists,
            ),
            (
                NodeError::PathNotFound {
                    path: PathBuf::from("/t"),
                },
                Code::NotFound,
            ),
            (
                NodeError::NotStagedHere {
                    volume_id: "v".into(),
                },
                Code::NotFound,
            ),
            (
                NodeError::NotGrown {
                    device: "/dev/sda".into(),
                    size: 1,
                    required: 2,
                    waited: Duration::from_secs(60),
                },
                Code::Unavailable,
            ),
            (
                NodeError::CannotGrow {
                    path: PathBuf::from("/s"),
                    fs_type: "vfat".into(),
                },
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
