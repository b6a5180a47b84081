//! Failures of the LVM layer, classified where the tool's answer is read (TopoLVM style:
//! exit code plus message), so callers match on variants instead of scraping stderr.

use crate::exec::{Cmd, ExecError, Output};

/// LVM's exit code for a command that failed on its objects (not found, in use, no space...).
pub const ECMD_FAILED: i32 = 5;

/// What went wrong in an LVM call.
#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    /// The LV, its VG or the thin pool named does not exist.
    #[error("not found: `{command}`: {stderr}")]
    NotFound {
        /// The command line.
        command: String,
        /// LVM's message.
        stderr: String,
    },
    /// An LV with that name already exists in the VG.
    #[error("already exists: `{command}`: {stderr}")]
    AlreadyExists {
        /// The command line.
        command: String,
        /// LVM's message.
        stderr: String,
    },
    /// The VG (or thin pool) has not enough free space.
    #[error("insufficient free space: `{command}`: {stderr}")]
    InsufficientSpace {
        /// The command line.
        command: String,
        /// LVM's message.
        stderr: String,
    },
    /// The LV is open (mounted, exported, held by a process) and cannot be removed.
    #[error("in use: `{command}`: {stderr}")]
    InUse {
        /// The command line.
        command: String,
        /// LVM's message.
        stderr: String,
    },
    /// The LV is the origin of a classic (thick) snapshot: LVM resizes such an origin only
    /// while it is inactive.
    #[error("snapshot origin: `{command}`: {stderr}")]
    SnapshotOrigin {
        /// The command line.
        command: String,
        /// LVM's message.
        stderr: String,
    },
    /// Any other failure to run the tool.
    #[error(transparent)]
    Command(#[from] ExecError),
    /// The JSON report could not be understood.
    #[error("cannot parse the output of `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
    },
}

impl LvmError {
    /// Classifies the failed run `out` of `cmd`: LVM's exit code 5 plus its message tell
    /// "not found", "already exists", "no space", "in use" and "snapshot origin" apart; anything else is a plain
    /// command failure.
    pub fn classify(cmd: &Cmd, out: &Output) -> LvmError {
        let failed = ExecError::failed(cmd, out);
        let ExecError::Failed {
            command, stderr, ..
        } = &failed
        else {
            return failed.into();
        };
        let lower = stderr.to_ascii_lowercase();
        let (command, stderr) = (command.clone(), stderr.clone());
        // "Insufficient free space" is also reported with exit code 5 only, but it is worth
        // recognising whatever the code: it decides RESOURCE_EXHAUSTED.
        if lower.contains("insufficient free space") || lower.contains("insufficient suitable") {
            return LvmError::InsufficientSpace { command, stderr };
        }
        if out.code != ECMD_FAILED {
            return failed.into();
        }
        if lower.contains("failed to find logical volume")
            || (lower.contains("volume group") && lower.contains("not found"))
            || (lower.starts_with("pool ") && lower.contains("not found"))
        {
            LvmError::NotFound { command, stderr }
        } else if lower.contains("already exists in volume group") {
            LvmError::AlreadyExists { command, stderr }
        } else if lower.contains(" in use") {
            LvmError::InUse { command, stderr }
        } else if lower.contains("snapshot origin volumes can be resized only while inactive") {
            LvmError::SnapshotOrigin { command, stderr }
        } else {
            failed.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages captured from LVM 2.03.16 in the lab (Debian 12 kernel, loop-backed VG).
    fn classify(code: i32, stderr: &str) -> LvmError {
        LvmError::classify(&Cmd::new("lvm"), &Output::failed(code, stderr))
    }

    #[test]
    fn classifies_real_messages() {
        assert!(matches!(
            classify(5, "  Failed to find logical volume \"csivg/nope\"\n"),
            LvmError::NotFound { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "  Volume group \"novg\" not found\n  Cannot process volume group novg\n"
            ),
            LvmError::NotFound { .. }
        ));
        assert!(matches!(
            classify(5, "  Pool nopool not found in Volume group csivg.\n"),
            LvmError::NotFound { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "  Volume group \"csivg\" has insufficient free space (188 extents): 512 required.\n"
            ),
            LvmError::InsufficientSpace { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "  Logical Volume \"plain\" already exists in volume group \"csivg\"\n"
            ),
            LvmError::AlreadyExists { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "File descriptor 3 (/dev/dm-5) leaked on lvremove invocation. Parent PID 176: /bin/sh\n  Logical volume csivg/plain in use.\n"
            ),
            LvmError::InUse { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "  Snapshot origin volumes can be resized only while inactive: try lvchange -an.\n"
            ),
            LvmError::SnapshotOrigin { .. }
        ));
        assert!(matches!(
            classify(
                5,
                "  Insufficient free space: 16368 extents needed, but only 493 available\n"
            ),
            LvmError::InsufficientSpace { .. }
        ));
    }

    #[test]
    fn other_failures_stay_command_errors() {
        // Exit code 3: a command-line error, never "not found".
        let e = classify(
            3,
            "  Invalid argument for --addtag: a b\n  Error during parsing of command line.\n",
        );
        assert!(matches!(
            e,
            LvmError::Command(ExecError::Failed { code: 3, .. })
        ));
        // "not found" under another exit code is not trusted either.
        let e = classify(1, "Failed to find logical volume \"vg/x\"");
        assert!(matches!(e, LvmError::Command(_)));
    }
}
