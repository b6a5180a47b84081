//! Request validation, before any lock or side effect: volume ids, paths, the volume
//! capability, and the publish_context the controller returned from
//! ControllerPublishVolume (all but paths and filesystems in [`crate::domain`]'s terms).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::csi::volume_capability::AccessType as CsiAccess;
use crate::csi::VolumeCapability;
use crate::domain::access::access_mode;
use crate::domain::volume_id::IdError;
use crate::domain::{PublishContext, VolumeId};

use super::error::NodeError;
use super::fs::FsType;
use super::mount::MountOptions;

/// How the volume is accessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A filesystem, mounted.
    Mount {
        /// Which filesystem.
        fs: FsType,
        /// The capability's mount flags.
        options: MountOptions,
    },
    /// The raw block device.
    Block,
}

/// A validated volume capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Mount or block.
    pub access: Access,
    /// Whether the access mode is a reader-only one.
    pub read_only: bool,
}

/// Checks a volume id with the controller's rule ([`VolumeId`]): refused when empty or
/// holding characters outside LVM's alphabet. An id of harmless characters that is not of
/// the form `<vg>/<lv>` cannot be one of ours, but the operations that only name a volume
/// (unstage, unpublish, stats, expand) accept it as before: they find nothing under it.
pub fn volume_id(id: &str) -> Result<(), NodeError> {
    match id.parse::<VolumeId>() {
        Ok(_) | Err(IdError::Unknown { .. }) => Ok(()),
        Err(e) => Err(NodeError::invalid("volume_id", e.to_string())),
    }
}

/// The volume id of a request that derives something from it (NodeStageVolume: the CHAP
/// credentials): one of ours, `<vg>/<lv>`.
pub fn volume(id: &str) -> Result<VolumeId, NodeError> {
    id.parse()
        .map_err(|e: IdError| NodeError::invalid("volume_id", e.to_string()))
}

/// Checks a path from the request: present, absolute, no `..`, no control characters.
/// Returns it normalised (no `.`, no doubled or trailing slashes).
pub fn abs_path(field: &'static str, path: &str) -> Result<PathBuf, NodeError> {
    if path.is_empty() {
        return Err(NodeError::invalid(field, "must not be empty"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(NodeError::invalid(
            field,
            format!("`{}` contains control characters", path.escape_debug()),
        ));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(NodeError::invalid(
            field,
            format!("`{path}` is not absolute"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(NodeError::invalid(field, format!("`{path}` contains `..`")));
    }
    Ok(p.components().collect())
}

/// Validates the volume capability.
pub fn capability(cap: Option<&VolumeCapability>) -> Result<Capability, NodeError> {
    let field = "volume_capability";
    let cap = cap.ok_or_else(|| NodeError::invalid(field, "missing"))?;
    let access = match &cap.access_type {
        None => {
            return Err(NodeError::invalid(
                field,
                "access_type (mount or block) missing",
            ))
        }
        Some(CsiAccess::Block(_)) => Access::Block,
        Some(CsiAccess::Mount(m)) => {
            if !m.volume_mount_group.is_empty() {
                return Err(NodeError::invalid(
                    field,
                    "volume_mount_group is not supported (VOLUME_MOUNT_GROUP is not advertised)",
                ));
            }
            Access::Mount {
                fs: m
                    .fs_type
                    .parse()
                    .map_err(|e| NodeError::invalid(field, e))?,
                options: MountOptions::parse(&m.mount_flags)
                    .map_err(|e| NodeError::invalid(field, e.to_string()))?,
            }
        }
    };
    let mode = access_mode(cap).map_err(|e| NodeError::invalid(field, e))?;
    Ok(Capability {
        access,
        read_only: mode.read_only,
    })
}

/// Parses the publish_context into the target's coordinates.
pub fn publish_context(ctx: &HashMap<String, String>) -> Result<PublishContext, NodeError> {
    PublishContext::parse(ctx).map_err(|e| NodeError::invalid("publish_context", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::access_mode::Mode;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(access: CsiAccess, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn mount(fs: &str, flags: &[&str]) -> CsiAccess {
        CsiAccess::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            volume_mount_group: String::new(),
        })
    }

    #[test]
    fn volume_ids() {
        for ok in ["csivg/pvc-1", "vg/lv_2", "a+b/c.d-e"] {
            volume_id(ok).unwrap();
            assert_eq!(volume(ok).unwrap().to_string(), ok);
        }
        // Harmless but not ours: named, never derived from.
        volume_id("fake-vol-id").unwrap();
        assert!(matches!(
            volume("fake-vol-id"),
            Err(NodeError::Invalid { .. })
        ));
        for bad in [
            "",
            // Outside LVM's alphabet, which the controller's ids are made of (the node
            // accepted `:`, `=` and `@` before the rule was shared).
            "node1:vg/lv_2",
            "a+b.c=d@e",
            "vg/../etc",
            "vg/lv;rm -rf",
            "vg/$(x)",
            "a b",
            "a\nb",
            "vg/lv`x`",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(volume_id(bad), Err(NodeError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            abs_path("target_path", "/var/lib//kubelet/./x/").unwrap(),
            PathBuf::from("/var/lib/kubelet/x")
        );
        for bad in ["", "relative/x", "/a/../etc", "/a/\u{7}b"] {
            assert!(abs_path("target_path", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capabilities() {
        let c = capability(Some(&cap(mount("", &["noatime"]), Mode::SingleNodeWriter))).unwrap();
        assert!(!c.read_only);
        let Access::Mount { fs, options } = c.access else {
            panic!()
        };
        assert_eq!(fs, FsType::Ext4);
        assert_eq!(options.flags, nix::mount::MsFlags::MS_NOATIME);
        let ro = capability(Some(&cap(mount("xfs", &[]), Mode::MultiNodeReaderOnly))).unwrap();
        assert!(ro.read_only);
        let blk = capability(Some(&cap(
            CsiAccess::Block(BlockVolume {}),
            Mode::MultiNodeReaderOnly,
        )))
        .unwrap();
        assert_eq!((blk.access, blk.read_only), (Access::Block, true));
        for bad in [
            None,
            // Refused like the controller does (the node accepted it for block before the
            // rule was shared; the controller never published one).
            Some(cap(
                CsiAccess::Block(BlockVolume {}),
                Mode::MultiNodeMultiWriter,
            )),
            Some(cap(
                CsiAccess::Block(BlockVolume {}),
                Mode::MultiNodeSingleWriter,
            )),
            Some(cap(mount("btrfs", &[]), Mode::SingleNodeWriter)),
            Some(cap(mount("ext4", &["bind"]), Mode::SingleNodeWriter)),
            Some(cap(mount("ext4", &[]), Mode::MultiNodeMultiWriter)),
            Some(cap(mount("ext4", &[]), Mode::Unknown)),
            Some(VolumeCapability {
                access_type: None,
                access_mode: None,
            }),
            Some(cap(
                CsiAccess::Mount(MountVolume {
                    fs_type: "ext4".into(),
                    mount_flags: vec![],
                    volume_mount_group: "1000".into(),
                }),
                Mode::SingleNodeWriter,
            )),
        ] {
            assert!(capability(bad.as_ref()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn publish_context_errors_name_the_field() {
        let err = publish_context(&HashMap::new()).unwrap_err();
        assert!(matches!(
            err,
            NodeError::Invalid {
                field: "publish_context",
                ..
            }
        ));
    }
}
