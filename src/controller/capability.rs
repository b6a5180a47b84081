//! Volume capabilities this driver serves: block or mount access (ext4, xfs), with the access
//! modes [`crate::domain::access`] serves (any single-node mode, multi-node read-only).

use crate::csi::volume_capability::AccessType;
use crate::csi::VolumeCapability;
use crate::domain::access::{access_mode, Unsupported};

use super::params::FS_TYPES;

/// What a supported capability means for publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The mode lets several nodes use the volume at once (MULTI_NODE_READER_ONLY).
    pub multi_node: bool,
}

/// Checks one capability.
pub fn check(cap: &VolumeCapability) -> Result<Access, Unsupported> {
    match &cap.access_type {
        None => return Err("volume capability has no access type (block or mount)".into()),
        Some(AccessType::Block(_)) => {}
        Some(AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() && !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(format!(
                    "filesystem {:?} is not supported (ext4, xfs)",
                    m.fs_type
                ));
            }
        }
    }
    let mode = access_mode(cap)?;
    Ok(Access {
        multi_node: mode.multi_node,
    })
}

/// Checks a non-empty list of capabilities; the first unsupported one is reported.
pub fn check_all(caps: &[VolumeCapability]) -> Result<(), Unsupported> {
    if caps.is_empty() {
        return Err("volume_capabilities is empty".into());
    }
    caps.iter().try_for_each(|c| check(c).map(drop))
}

/// The filesystem types asked for by mount capabilities (non-empty ones).
pub fn mount_fs_types(caps: &[VolumeCapability]) -> impl Iterator<Item = &str> {
    caps.iter().filter_map(|c| match &c.access_type {
        Some(AccessType::Mount(m)) if !m.fs_type.is_empty() => Some(m.fs_type.as_str()),
        _ => None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::csi::volume_capability::access_mode::Mode;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    /// A mount capability with `mode` and `fs_type`.
    pub(crate) fn mount(mode: Mode, fs_type: &str) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs_type.into(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    /// A block capability with `mode`.
    pub(crate) fn block(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn single_node_modes_and_multi_reader_are_served() {
        for m in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
            Mode::SingleNodeReaderOnly,
        ] {
            assert_eq!(check(&block(m)), Ok(Access { multi_node: false }));
            assert_eq!(check(&mount(m, "xfs")), Ok(Access { multi_node: false }));
        }
        assert_eq!(
            check(&mount(Mode::MultiNodeReaderOnly, "")),
            Ok(Access { multi_node: true })
        );
    }

    #[test]
    fn refuses_multi_writers_and_malformed_capabilities() {
        for m in [Mode::MultiNodeMultiWriter, Mode::MultiNodeSingleWriter] {
            let e = check(&block(m)).unwrap_err();
            assert!(e.contains("MULTI_NODE"), "{e}");
        }
        assert!(check(&mount(Mode::Unknown, "")).is_err());
        assert!(check(&mount(Mode::SingleNodeWriter, "ext3")).is_err());
        let mut no_type = block(Mode::SingleNodeWriter);
        no_type.access_type = None;
        assert!(check(&no_type).is_err());
        let mut weird = block(Mode::SingleNodeWriter);
        weird.access_mode = Some(AccessMode { mode: 99 });
        assert!(check(&weird).unwrap_err().contains("99"));
        assert!(check_all(&[]).is_err());
        assert!(check_all(&[
            block(Mode::SingleNodeWriter),
            block(Mode::MultiNodeMultiWriter)
        ])
        .is_err());
    }

    #[test]
    fn lists_requested_filesystems() {
        let caps = [
            mount(Mode::SingleNodeWriter, "xfs"),
            mount(Mode::SingleNodeWriter, ""),
            block(Mode::SingleNodeWriter),
        ];
        assert_eq!(mount_fs_types(&caps).collect::<Vec<_>>(), ["xfs"]);
    }
}
