//! Request validation, before any lock or side effect: volume ids, paths, the volume
//! capability, and the publish_context the controller returned from
//! ControllerPublishVolume (`targetIqn`, `portals`, `lun`, `authMethod`).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::AccessType as CsiAccess;
use crate::csi::VolumeCapability;

use super::error::NodeError;
use super::fs::FsType;
use super::iscsi::Portal;
use super::mount::MountOptions;

/// publish_context key: the target IQN.
pub const CTX_TARGET_IQN: &str = "targetIqn";
/// publish_context key: comma-separated portals, `ADDRESS:PORT` or `[IPv6]:PORT`.
pub const CTX_PORTALS: &str = "portals";
/// publish_context key: the LUN number (decimal).
pub const CTX_LUN: &str = "lun";
/// publish_context key: `CHAP` or `None`.
pub const CTX_AUTH_METHOD: &str = "authMethod";

/// CSI's limit on volume ids.
const MAX_VOLUME_ID: usize = 128;
/// RFC 3720's limit on iSCSI names.
const MAX_IQN: usize = 223;
/// SAM's largest flat-space LUN.
const MAX_LUN: u32 = 16383;

/// Where and how to reach a volume's LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Target IQN.
    pub iqn: String,
    /// Portals, first preferred.
    pub portals: Vec<Portal>,
    /// LUN number (0 with LIO, 1 with tgt).
    pub lun: u32,
    /// Whether the target requires CHAP.
    pub chap: bool,
}

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

/// Checks a volume id: non-empty, at most 128 bytes, and only characters that are safe in
/// logs, file names and command lines.
pub fn volume_id(id: &str) -> Result<(), NodeError> {
    let field = "volume_id";
    if id.is_empty() {
        return Err(NodeError::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_VOLUME_ID {
        return Err(NodeError::invalid(
            field,
            format!("longer than {MAX_VOLUME_ID} bytes"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+/:@=".contains(*c)))
    {
        return Err(NodeError::invalid(
            field,
            format!("`{}` contains `{}`", id.escape_debug(), c.escape_debug()),
        ));
    }
    Ok(())
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
    let mode = cap
        .access_mode
        .as_ref()
        .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
        .unwrap_or(Mode::Unknown);
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
    let read_only = match mode {
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => true,
        Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter => {
            false
        }
        // Several nodes writing one ext4/xfs would corrupt it; a raw device is the
        // application's business.
        Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter if access == Access::Block => {
            false
        }
        Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter => {
            return Err(NodeError::invalid(
                field,
                format!(
                    "access mode {} is not supported for filesystem volumes (ext4 and xfs are not cluster filesystems)",
                    mode.as_str_name()
                ),
            ))
        }
        Mode::Unknown => return Err(NodeError::invalid(field, "access mode missing or unknown")),
    };
    Ok(Capability { access, read_only })
}

fn get<'a>(ctx: &'a HashMap<String, String>, key: &'static str) -> Result<&'a str, NodeError> {
    ctx.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            NodeError::invalid(
                "publish_context",
                format!("key `{key}` missing (it comes from ControllerPublishVolume)"),
            )
        })
}

/// Parses the publish_context into the target's coordinates.
pub fn target_info(ctx: &HashMap<String, String>) -> Result<TargetInfo, NodeError> {
    let field = "publish_context";
    let iqn = get(ctx, CTX_TARGET_IQN)?;
    let known_prefix = ["iqn.", "eui.", "naa."].iter().any(|p| iqn.starts_with(p));
    if !known_prefix
        || iqn.len() > MAX_IQN
        || !iqn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err(NodeError::invalid(
            field,
            format!(
                "`{CTX_TARGET_IQN}` `{}` is not an iSCSI name",
                iqn.escape_debug()
            ),
        ));
    }
    let portals = get(ctx, CTX_PORTALS)?
        .split(',')
        .map(|p| p.trim().parse::<Portal>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::invalid(field, format!("`{CTX_PORTALS}`: {e}")))?;
    let lun = get(ctx, CTX_LUN)?;
    let lun = lun
        .parse::<u32>()
        .ok()
        .filter(|l| *l <= MAX_LUN)
        .ok_or_else(|| {
            NodeError::invalid(
                field,
                format!("`{CTX_LUN}` `{}` is not a LUN number", lun.escape_debug()),
            )
        })?;
    let chap = match get(ctx, CTX_AUTH_METHOD)? {
        "CHAP" => true,
        "None" => false,
        other => {
            return Err(NodeError::invalid(
                field,
                format!(
                    "`{CTX_AUTH_METHOD}` `{}` is neither CHAP nor None",
                    other.escape_debug()
                ),
            ))
        }
    };
    Ok(TargetInfo {
        iqn: iqn.to_string(),
        portals,
        lun,
        chap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    pub(crate) fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
        for ok in ["csivg/pvc-1", "node1:vg/lv_2", "a+b.c=d@e"] {
            volume_id(ok).unwrap();
        }
        for bad in [
            "",
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
            Mode::MultiNodeMultiWriter,
        )))
        .unwrap();
        assert_eq!(blk.access, Access::Block);
        for bad in [
            None,
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
    fn publish_context() {
        let good = ctx(&[
            (CTX_TARGET_IQN, "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1"),
            (CTX_PORTALS, "10.0.0.5:3260, [fd00::5]:3260"),
            (CTX_LUN, "1"),
            (CTX_AUTH_METHOD, "CHAP"),
        ]);
        let t = target_info(&good).unwrap();
        assert_eq!(t.portals.len(), 2);
        assert_eq!((t.lun, t.chap), (1, true));
        for key in [CTX_TARGET_IQN, CTX_PORTALS, CTX_LUN, CTX_AUTH_METHOD] {
            let mut m = good.clone();
            m.remove(key);
            let err = target_info(&m).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for (key, bad) in [
            (CTX_TARGET_IQN, "not-an-iqn"),
            (CTX_TARGET_IQN, "iqn.x:a b"),
            (CTX_PORTALS, "10.0.0.5:x"),
            (CTX_PORTALS, "10.0.0.5:3260,"),
            (CTX_LUN, "-1"),
            (CTX_LUN, "99999"),
            (CTX_AUTH_METHOD, "chap"),
        ] {
            let mut m = good.clone();
            m.insert(key.into(), bad.into());
            assert!(target_info(&m).is_err(), "{key}={bad}");
        }
    }
}
