//! CHAP credentials without secrets in Kubernetes objects.
//!
//! The StorageClass points the controller-publish and node-stage secret refs at one Secret
//! holding a key (`chapKey`); the controller can also read it from `--chap-key-file` (the
//! same Secret mounted into its pod), which restore needs because the kernel forgets ACL
//! passwords on reboot and start-up has no request to take a key from. The controller (to
//! configure the target's ACL) and the node (to configure its login) each derive the same
//! per-(volume, initiator) user name and password with HMAC-SHA256 from that key, so the
//! password itself never travels through publish_context, a VolumeAttachment or any other
//! API object. Mutual CHAP (the target proving itself to the initiator) uses the same
//! derivation with another label. The key never goes into LV tags; only a short public id of
//! it does ([`ChapKey::id`]), so restore can tell whether a key is the one a publication used.
//!
//! A key is opaque bytes behind [`ChapKey`]: a key derived from another one (per volume, say)
//! is another `ChapKey`, and [`ChapKey::credentials`] serves it unchanged.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Iqn, VolumeId};

/// The key of the CSI secrets map that holds the CHAP master key.
pub const SECRET_KEY: &str = "chapKey";

/// Shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;

/// One direction of CHAP: a user name and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// CHAP user name (not secret; it appears in target configuration listings).
    pub user: String,
    /// CHAP password (secret).
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// Credentials for one (volume, initiator) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chap {
    /// The initiator authenticates to the target with this.
    pub initiator: Credential,
    /// The target authenticates to the initiator with this (mutual CHAP).
    pub target: Credential,
}

/// The secrets map or key file did not hold a usable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChapError {
    /// The key is shorter than [`MIN_KEY_LEN`].
    #[error("the CHAP key in secret field `{SECRET_KEY}` is too short ({len} bytes; at least {MIN_KEY_LEN} required): generate one with `openssl rand -hex 32`")]
    KeyTooShort {
        /// Its length.
        len: usize,
    },
}

/// A CHAP key, checked once where it enters (a request's secrets, a key file). Its `Debug`
/// shows only [`ChapKey::id`]; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapKey {
    /// The key's bytes (never printed).
    key: Vec<u8>,
}

impl fmt::Debug for ChapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChapKey(id {})", self.id())
    }
}

impl ChapKey {
    /// A key, refused when shorter than [`MIN_KEY_LEN`].
    pub fn new(key: String) -> Result<Self, ChapError> {
        if key.len() < MIN_KEY_LEN {
            return Err(ChapError::KeyTooShort { len: key.len() });
        }
        Ok(ChapKey {
            key: key.into_bytes(),
        })
    }

    /// The key in a request's secrets ([`SECRET_KEY`]), if there is one.
    pub fn from_secrets(secrets: &HashMap<String, String>) -> Result<Option<Self>, ChapError> {
        secrets
            .get(SECRET_KEY)
            .map(|k| ChapKey::new(k.clone()))
            .transpose()
    }

    /// Reads a key file (a mounted Secret key); surrounding whitespace, such as the newline
    /// `echo` leaves, is not part of the key.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the CHAP key file {}: {e}", path.display()))?;
        ChapKey::new(raw.trim().to_string())
            .map_err(|e| format!("CHAP key file {}: {e}", path.display()))
    }

    /// A public 8-hex-digit id of the key (HMAC of a fixed label): says which key derived a
    /// publication's credentials without revealing anything usable.
    pub fn id(&self) -> String {
        hex::encode(&mac(&self.key, &["lvm-iscsi-csi key id"])[..4])
    }

    /// The per-(volume, initiator) credentials (DESIGN.md): what the controller puts in the
    /// target's ACL and the node logs in with.
    pub fn credentials(&self, volume: &VolumeId, initiator: &Iqn) -> Chap {
        derive(&self.key, &volume.to_string(), initiator.as_str())
    }
}

/// The derivation behind [`ChapKey::credentials`], on raw values: both directions'
/// credentials for one (volume, initiator) pair. Existing publications depend on every byte
/// of it (fixed vectors below).
pub fn derive(key: &[u8], volume_id: &str, initiator_iqn: &str) -> Chap {
    Chap {
        initiator: credential(key, "initiator", volume_id, initiator_iqn),
        target: credential(key, "target", volume_id, initiator_iqn),
    }
}

fn credential(key: &[u8], label: &str, volume_id: &str, initiator_iqn: &str) -> Credential {
    let user_mac = mac(key, &["user", label, volume_id, initiator_iqn]);
    let password_mac = mac(key, &["password", label, volume_id, initiator_iqn]);
    Credential {
        // Short, stable and free of the volume id's characters: targets limit user names.
        user: format!("csi-{}", &hex::encode(user_mac)[..16]),
        // 32 hex characters: within every target's and open-iscsi's CHAP length limits.
        password: hex::encode(&password_mac[..16]),
    }
}

/// HMAC-SHA256 over the parts joined by NUL, which cannot occur in any of them.
fn mac(key: &[u8], parts: &[&str]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(&[0]);
        }
        m.update(p.as_bytes());
    }
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// A fixed vector (computed independently with Python's hmac module): any change to the derivation breaks every attached volume on upgrade.
    #[test]
    fn derivation_is_stable() {
        let c = derive(
            KEY.as_bytes(),
            "csivg/pvc-1",
            "iqn.2004-10.com.debian:node1",
        );
        assert_eq!(c.initiator.user, "csi-19a8d7fea00ec877");
        assert_eq!(c.initiator.password, "44eda30e5986141feff817ea71176ef7");
        assert_eq!(c.target.user, "csi-fb8092fa4e05476c");
        assert_eq!(c.target.password, "3282b7dc70457f1fdaff33e6b4ca7ca2");
    }

    #[test]
    fn differs_per_volume_node_and_direction() {
        let k = b"0123456789abcdef";
        let a = derive(k, "vg/a", "iqn.2000-01.x:n1");
        assert_ne!(a, derive(k, "vg/b", "iqn.2000-01.x:n1"));
        assert_ne!(a, derive(k, "vg/a", "iqn.2000-01.x:n2"));
        assert_ne!(a.initiator, a.target);
        assert_eq!(a, derive(k, "vg/a", "iqn.2000-01.x:n1"));
    }

    #[test]
    fn id_is_stable_public_and_per_key() {
        let k = ChapKey::new(KEY.into()).unwrap();
        // Fixed vector (Python: hmac.new(KEY, b"lvm-iscsi-csi key id", sha256).hexdigest()[:8]).
        assert_eq!(k.id(), "cac3c71b");
        assert_ne!(k.id(), ChapKey::new(format!("{KEY}x")).unwrap().id());
        assert!(!format!("{k:?}").contains(KEY));
    }

    #[test]
    fn credentials_are_the_derivation_on_typed_values() {
        let k = ChapKey::new(KEY.into()).unwrap();
        let c = k.credentials(
            &"csivg/pvc-1".parse().unwrap(),
            &"iqn.2004-10.com.debian:node1".parse().unwrap(),
        );
        // The same vector as above: controller and node must agree.
        assert_eq!(c.initiator.user, "csi-19a8d7fea00ec877");
        assert_eq!(c.initiator.password, "44eda30e5986141feff817ea71176ef7");
        assert_eq!(c.target.user, "csi-fb8092fa4e05476c");
        assert_eq!(c.target.password, "3282b7dc70457f1fdaff33e6b4ca7ca2");
    }

    #[test]
    fn secrets_map_handling() {
        assert_eq!(ChapKey::from_secrets(&HashMap::new()), Ok(None));
        let short = HashMap::from([(SECRET_KEY.to_string(), "abc".to_string())]);
        assert_eq!(
            ChapKey::from_secrets(&short),
            Err(ChapError::KeyTooShort { len: 3 })
        );
        let good = HashMap::from([(SECRET_KEY.to_string(), "0123456789abcdef".to_string())]);
        assert!(ChapKey::from_secrets(&good).unwrap().is_some());
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("chapKey");
        std::fs::write(&f, format!("{KEY}\n")).unwrap();
        assert_eq!(
            ChapKey::from_file(&f).unwrap(),
            ChapKey::new(KEY.into()).unwrap()
        );
        std::fs::write(&f, "short").unwrap();
        assert!(ChapKey::from_file(&f).unwrap_err().contains("too short"));
        assert!(ChapKey::from_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn debug_hides_passwords_and_keys() {
        let c = derive(b"0123456789abcdef", "vg/a", "iqn.2000-01.x:n1");
        let s = format!("{c:?}");
        assert!(!s.contains(&c.initiator.password) && !s.contains(&c.target.password));
        let k = ChapKey::new(KEY.into()).unwrap();
        assert!(!format!("{k:?}").contains(KEY));
    }
}
