//! StorageClass parameters of CreateVolume (and GetCapacity, ValidateVolumeCapabilities),
//! and the volume_context they turn into.
//!
//! | key | meaning |
//! |---|---|
//! | `volumeGroup` | VG to carve the LV from (default: `--default-volume-group`) |
//! | `thinPool` | thin pool in that VG: the volume is thin (default: thick) |
//! | `fsType` | `ext4` or `xfs`: the filesystem the node creates (in volume_context) |
//! | `csi.storage.k8s.io/*` | added by external-provisioner; accepted and ignored |
//!
//! Any other key is INVALID_ARGUMENT naming it: a typo must not silently give another
//! volume than the one asked for.

use std::collections::HashMap;

use crate::domain::volume_id::is_lvm_name;

/// The VG parameter.
pub const VOLUME_GROUP: &str = "volumeGroup";
/// The thin pool parameter.
pub const THIN_POOL: &str = "thinPool";
/// The filesystem parameter; also its key in volume_context (read by the node).
pub const FS_TYPE: &str = "fsType";
/// The prefix of the keys external-provisioner adds (secret references, fstype...).
pub const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

/// The filesystems the node plugin creates.
pub const FS_TYPES: [&str; 2] = ["ext4", "xfs"];

/// Parsed StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Volume group.
    pub volume_group: String,
    /// Thin pool, for thin volumes.
    pub thin_pool: Option<String>,
    /// Filesystem the node creates, when the StorageClass sets one.
    pub fs_type: Option<String>,
}

/// A StorageClass parameter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A key this driver does not know.
    #[error("unknown StorageClass parameter `{key}` (supported: volumeGroup, thinPool, fsType)")]
    Unknown {
        /// The key.
        key: String,
    },
    /// A known key with a value that cannot be used.
    #[error("StorageClass parameter `{key}` = {value:?} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// Neither the parameters nor the command line name a volume group.
    #[error("no volume group: set the StorageClass parameter `volumeGroup` or the controller's --default-volume-group")]
    NoVolumeGroup,
}

impl Params {
    /// Parses `params`, with `default_vg` when they name no VG.
    pub fn parse(
        params: &HashMap<String, String>,
        default_vg: Option<&str>,
    ) -> Result<Params, ParamError> {
        let mut keys: Vec<&String> = params.keys().collect();
        // Deterministic: the first unknown key in sorted order is the one reported.
        keys.sort();
        for key in keys {
            if ![VOLUME_GROUP, THIN_POOL, FS_TYPE].contains(&key.as_str())
                && !key.starts_with(PROVISIONER_PREFIX)
            {
                return Err(ParamError::Unknown { key: key.clone() });
            }
        }
        let lvm_name = |key: &'static str| -> Result<Option<String>, ParamError> {
            match params.get(key) {
                None => Ok(None),
                Some(v) if is_lvm_name(v) => Ok(Some(v.clone())),
                Some(v) => Err(ParamError::Invalid {
                    key,
                    value: v.clone(),
                    reason: "not an LVM name (letters, digits, '+', '_', '.', '-')",
                }),
            }
        };
        let volume_group = match lvm_name(VOLUME_GROUP)? {
            Some(vg) => vg,
            None => default_vg
                .map(String::from)
                .ok_or(ParamError::NoVolumeGroup)?,
        };
        let thin_pool = lvm_name(THIN_POOL)?;
        let fs_type = match params.get(FS_TYPE) {
            None => None,
            Some(f) if FS_TYPES.contains(&f.as_str()) => Some(f.clone()),
            Some(f) => {
                return Err(ParamError::Invalid {
                    key: FS_TYPE,
                    value: f.clone(),
                    reason: "supported: ext4, xfs",
                })
            }
        };
        Ok(Params {
            volume_group,
            thin_pool,
            fs_type,
        })
    }
}

/// The volume_context of a volume: what the node needs besides publish_context. Always the
/// same for one volume (it is rebuilt from the LV's tags).
pub fn volume_context(fs_type: Option<&str>) -> HashMap<String, String> {
    fs_type
        .map(|f| (FS_TYPE.to_string(), f.to_string()))
        .into_iter()
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A parameter map of `kv`.
    pub(crate) fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_and_default_parameters() {
        let p = Params::parse(
            &map(&[
                ("volumeGroup", "data"),
                ("thinPool", "pool0"),
                ("fsType", "xfs"),
                ("csi.storage.k8s.io/pv/name", "pvc-1"),
                ("csi.storage.k8s.io/fstype", "ext4"),
            ]),
            Some("csivg"),
        )
        .unwrap();
        assert_eq!(
            p,
            Params {
                volume_group: "data".into(),
                thin_pool: Some("pool0".into()),
                fs_type: Some("xfs".into())
            }
        );
        let d = Params::parse(&HashMap::new(), Some("csivg")).unwrap();
        assert_eq!(d.volume_group, "csivg");
        assert_eq!((d.thin_pool, d.fs_type), (None, None));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Params::parse(&map(&[("volumegroup", "x"), ("zz", "y")]), Some("vg")).unwrap_err();
        assert_eq!(
            e,
            ParamError::Unknown {
                key: "volumegroup".into()
            }
        );
        assert!(e.to_string().contains("`volumegroup`"));
        let e = Params::parse(&map(&[("fsType", "ext3")]), Some("vg")).unwrap_err();
        assert!(
            matches!(e, ParamError::Invalid { key: "fsType", .. }),
            "{e}"
        );
        let e = Params::parse(&map(&[("volumeGroup", "../etc")]), None).unwrap_err();
        assert!(
            matches!(
                e,
                ParamError::Invalid {
                    key: "volumeGroup",
                    ..
                }
            ),
            "{e}"
        );
        let e = Params::parse(&map(&[("thinPool", "a b")]), Some("vg")).unwrap_err();
        assert!(
            matches!(
                e,
                ParamError::Invalid {
                    key: "thinPool",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            Params::parse(&HashMap::new(), None).unwrap_err(),
            ParamError::NoVolumeGroup
        );
    }

    #[test]
    fn context_carries_only_the_fs_type() {
        assert_eq!(volume_context(Some("xfs")), map(&[("fsType", "xfs")]));
        assert!(volume_context(None).is_empty());
    }
}
