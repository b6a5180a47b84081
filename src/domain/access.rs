//! Which access modes the driver serves, for the controller and the node alike: any
//! single-node mode, and multi-node read-only. Multi-node writers are refused on both sides:
//! two nodes writing one ext4/xfs would corrupt it, and the controller advertises no mode
//! for sharing a raw block device between writers (the node used to accept them for block;
//! it never saw one, since the controller refuses them at CreateVolume and publish).

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::VolumeCapability;

/// What a served access mode means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessMode {
    /// Several nodes may use the volume at once (MULTI_NODE_READER_ONLY).
    pub multi_node: bool,
    /// Only reads (SINGLE_NODE_READER_ONLY, MULTI_NODE_READER_ONLY).
    pub read_only: bool,
}

/// Why an access mode is not served (a sentence for the status message).
pub type Unsupported = String;

/// The access mode of a capability, if served.
pub fn access_mode(cap: &VolumeCapability) -> Result<AccessMode, Unsupported> {
    let raw = cap.access_mode.map(|m| m.mode).unwrap_or_default();
    let served = |multi_node, read_only| {
        Ok(AccessMode {
            multi_node,
            read_only,
        })
    };
    match Mode::try_from(raw) {
        Ok(Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter) => {
            served(false, false)
        }
        Ok(Mode::SingleNodeReaderOnly) => served(false, true),
        Ok(Mode::MultiNodeReaderOnly) => served(true, true),
        Ok(m @ (Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter)) => Err(format!(
            "access mode {} is not supported: an iSCSI block device has no cluster filesystem \
             to share writes between nodes",
            m.as_str_name()
        )),
        Ok(Mode::Unknown) => Err("volume capability has no access mode".into()),
        Err(_) => Err(format!("unknown access mode {raw}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode as CsiMode, AccessType, BlockVolume};

    fn cap(mode: i32) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(CsiMode { mode }),
        }
    }

    #[test]
    fn modes() {
        let m = |mode: Mode| access_mode(&cap(mode as i32));
        for w in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert_eq!(
                m(w),
                Ok(AccessMode {
                    multi_node: false,
                    read_only: false
                })
            );
        }
        assert_eq!(
            m(Mode::SingleNodeReaderOnly),
            Ok(AccessMode {
                multi_node: false,
                read_only: true
            })
        );
        assert_eq!(
            m(Mode::MultiNodeReaderOnly),
            Ok(AccessMode {
                multi_node: true,
                read_only: true
            })
        );
        for w in [Mode::MultiNodeSingleWriter, Mode::MultiNodeMultiWriter] {
            assert!(m(w).unwrap_err().contains("MULTI_NODE"));
        }
        assert!(m(Mode::Unknown).is_err());
        assert!(access_mode(&cap(99)).unwrap_err().contains("99"));
        let none = VolumeCapability {
            access_type: None,
            access_mode: None,
        };
        assert!(access_mode(&none).is_err());
    }
}
