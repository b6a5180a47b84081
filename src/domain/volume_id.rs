//! Volume ids and the names derived from them.
//!
//! A volume id is `<vg>/<lv>` (DESIGN.md: human-readable and self-locating; a storage-node
//! prefix can be added later as another leading component). Ids are checked before anything
//! runs: characters outside LVM's name alphabet (shell metacharacters, whitespace, control
//! characters) and `.`/`..` components are INVALID_ARGUMENT; an id made of harmless
//! characters that does not have our shape (e.g. csi-sanity's `fake-vol-id`) cannot name one
//! of our volumes, so it is reported as an unknown volume (NOT_FOUND, or OK on delete).
//! The node applies the same rule, and derives CHAP credentials only from a parsed id.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::iqn::MAX_IQN_LEN;

/// The CSI limit on string fields.
pub const MAX_ID_LEN: usize = 128;

/// A valid volume id: VG and LV names in LVM's alphabet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId {
    /// Volume group.
    vg: String,
    /// Logical volume.
    lv: String,
}

/// Why a string is not a volume id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("volume_id is required")]
    Empty,
    /// The id has characters or components no volume id can have.
    #[error("volume id {id:?} is invalid: {reason}")]
    Invalid {
        /// The id (debug-quoted when shown, so control characters stay visible).
        id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The id is harmless but not of the form `<vg>/<lv>`: no volume of ours has it.
    #[error("volume id {id:?} is not of the form <volume group>/<logical volume>")]
    Unknown {
        /// The id.
        id: String,
    },
}

impl VolumeId {
    /// The id of LV `lv` in VG `vg` (both checked).
    pub fn new(vg: &str, lv: &str) -> Result<Self, IdError> {
        format!("{vg}/{lv}").parse()
    }

    /// The volume group.
    pub fn vg(&self) -> &str {
        &self.vg
    }

    /// The logical volume.
    pub fn lv(&self) -> &str {
        &self.lv
    }

    /// The LV's block device.
    pub fn device(&self) -> String {
        format!("/dev/{}/{}", self.vg, self.lv)
    }

    /// The target IQN of this volume: `<prefix>:<vg>.<lv>` lowercased, characters outside
    /// `[a-z0-9.-]` replaced by `-`. When that changes anything (so two ids could meet) or the
    /// IQN would pass 223 bytes (RFC 3720), the name is shortened and a hash of the id
    /// appended, keeping it unique.
    pub fn target_iqn(&self, prefix: &str) -> String {
        let prefix = prefix.trim_end_matches(':');
        let raw = format!("{}.{}", self.vg, self.lv);
        let clean: String = raw
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '.' | '-' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        let budget = MAX_IQN_LEN.saturating_sub(prefix.len() + 1);
        if clean == raw && clean.len() <= budget {
            return format!("{prefix}:{clean}");
        }
        let hash = self.short_hash();
        let keep = budget.saturating_sub(hash.len() + 1).min(clean.len());
        format!("{prefix}:{}-{hash}", &clean[..keep])
    }

    /// A short backstore name unique per volume: `<vg>-<lv>` when that is at most 40
    /// characters and cannot be read two ways (no `-` in the VG name), else a truncation of
    /// it plus a hash of the id.
    pub fn backstore_name(&self) -> String {
        const MAX: usize = 40;
        let plain = format!("{}-{}", self.vg, self.lv);
        if plain.len() <= MAX && !self.vg.contains('-') {
            return plain;
        }
        let hash = self.short_hash();
        let keep = MAX - hash.len() - 1;
        // LVM names are ASCII: any byte index is a character boundary.
        format!("{}-{hash}", &plain[..keep.min(plain.len())])
    }

    fn short_hash(&self) -> String {
        hex::encode(&Sha256::digest(self.to_string().as_bytes())[..6])
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

impl FromStr for VolumeId {
    type Err = IdError;

    fn from_str(id: &str) -> Result<Self, IdError> {
        let invalid = |reason| IdError::Invalid {
            id: id.to_string(),
            reason,
        };
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(invalid("longer than 128 bytes"));
        }
        if !id.bytes().all(|b| is_lvm_name_byte(b) || b == b'/') {
            return Err(invalid(
                "only letters, digits, '+', '_', '.', '-' and one '/' are allowed",
            ));
        }
        if id.split('/').any(|part| part == "." || part == "..") {
            return Err(invalid("'.' and '..' are not names"));
        }
        let unknown = || IdError::Unknown { id: id.to_string() };
        let (vg, lv) = id.split_once('/').ok_or_else(unknown)?;
        if [vg, lv]
            .iter()
            .any(|p| p.is_empty() || p.starts_with('-') || p.contains('/'))
        {
            return Err(unknown());
        }
        Ok(VolumeId {
            vg: vg.to_string(),
            lv: lv.to_string(),
        })
    }
}

/// Whether `b` may appear in an LVM VG or LV name.
pub fn is_lvm_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'_' | b'.' | b'-')
}

/// Whether `name` is usable as a VG (or thin pool) name given in a StorageClass.
pub fn is_lvm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name.bytes().all(is_lvm_name_byte)
}

/// The LV name for CSI volume name `name`: the name itself when it is a short DNS label
/// (`pvc-<uuid>`, what external-provisioner sends), else `vol-` and 20 hex characters of its
/// SHA-256. The CSI name itself is kept in a tag, so either way a repeat finds the volume.
pub fn lv_name_for(name: &str) -> String {
    let label = name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    // "snapshot" and "pvmove" are reserved LV names.
    if label && name != "snapshot" && name != "pvmove" {
        return name.to_string();
    }
    format!(
        "vol-{}",
        &hex::encode(Sha256::digest(name.as_bytes()))[..20]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let id: VolumeId = "csivg/pvc-1".parse().unwrap();
        assert_eq!((id.vg(), id.lv()), ("csivg", "pvc-1"));
        assert_eq!(id.to_string(), "csivg/pvc-1");
        assert_eq!(id.device(), "/dev/csivg/pvc-1");
        assert_eq!(
            VolumeId::new("a+b", "c_d.e").unwrap().to_string(),
            "a+b/c_d.e"
        );
    }

    #[test]
    fn rejects_dangerous_ids_as_invalid() {
        for bad in [
            "vg/../etc",
            "../x",
            "vg/.",
            "vg/a b",
            "vg/a;rm -rf /",
            "vg/$(reboot)",
            "vg/a\nb",
            "vg/a\u{0}",
            "vg/é",
            "vg\\lv",
            &format!("vg/{}", "a".repeat(200)),
        ] {
            assert!(
                matches!(bad.parse::<VolumeId>(), Err(IdError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert_eq!("".parse::<VolumeId>(), Err(IdError::Empty));
    }

    #[test]
    fn harmless_foreign_ids_are_unknown() {
        for other in ["fake-vol-id", "a/b/c", "/lv", "vg/", "-vg/lv", "vg/-lv"] {
            assert!(
                matches!(other.parse::<VolumeId>(), Err(IdError::Unknown { .. })),
                "{other:?}"
            );
        }
    }

    #[test]
    fn iqn_is_lowercase_and_unique() {
        let p = "iqn.2026-11.io.csi.lvm-iscsi";
        let id: VolumeId = "csivg/pvc-1".parse().unwrap();
        assert_eq!(id.target_iqn(p), "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1");
        assert_eq!(id.target_iqn(&format!("{p}:")), id.target_iqn(p));
        let a = VolumeId::new("VG", "a_b").unwrap().target_iqn(p);
        let b = VolumeId::new("vg", "a-b").unwrap().target_iqn(p);
        assert_ne!(a, b);
        assert!(a.starts_with("iqn.2026-11.io.csi.lvm-iscsi:vg.a-b-"), "{a}");
        for iqn in [&a, &b] {
            let suffix = iqn.split_once(':').unwrap().1;
            assert!(suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'));
        }
        let long = VolumeId::new(&"v".repeat(60), &"l".repeat(60)).unwrap();
        assert!(long.target_iqn(&"p".repeat(150)).len() <= 223);
    }

    #[test]
    fn backstore_names_are_short_and_unambiguous() {
        assert_eq!(
            VolumeId::new("csivg", "pvc-1").unwrap().backstore_name(),
            "csivg-pvc-1"
        );
        let a = VolumeId::new("a-b", "c").unwrap().backstore_name();
        let b = VolumeId::new("a", "b-c").unwrap().backstore_name();
        assert_ne!(a, b);
        let long = VolumeId::new("csivg", "pvc-0b6c4a9e-1f0e-4b8a-9d8e-2a4f5e6d7c8b")
            .unwrap()
            .backstore_name();
        assert!(long.len() <= 40, "{long}");
        assert!(long.starts_with("csivg-pvc-0b6c"), "{long}");
    }

    #[test]
    fn lv_names_from_csi_names() {
        let uuid = "pvc-0b6c4a9e-1f0e-4b8a-9d8e-2a4f5e6d7c8b";
        assert_eq!(lv_name_for(uuid), uuid);
        for other in ["My Volume", "-x", "snapshot", &"a".repeat(64), "a_b", ""] {
            let n = lv_name_for(other);
            assert!(n.starts_with("vol-") && n.len() == 24, "{n}");
            assert!(is_lvm_name(&n));
        }
        assert_ne!(lv_name_for("A"), lv_name_for("B"));
        // Fixed vector (Python's hashlib): a change would orphan every hashed volume.
        assert_eq!(lv_name_for("My Volume"), "vol-f436f1b4e06fc9f390b2");
    }

    #[test]
    fn storage_class_names() {
        assert!(is_lvm_name("csivg"));
        for bad in ["", "-a", "..", "a/b", "a b"] {
            assert!(!is_lvm_name(bad), "{bad}");
        }
    }
}
