//! CHAP credentials without secrets in Kubernetes objects.
//!
//! The StorageClass points the controller-publish and node-stage secret refs at one Secret
//! holding a key (`chapKey`). The controller (to configure the target's ACL) and the node
//! (to configure its login) each derive the same per-(volume, initiator) user name and
//! password with HMAC-SHA256 from that key, so the password itself never travels through
//! publish_context, a VolumeAttachment or any other API object. Mutual CHAP (the target
//! proving itself to the initiator) uses the same derivation with another label.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key of the CSI secrets map that holds the CHAP master key.
pub const SECRET_KEY: &str = "chapKey";

/// Shortest master key accepted: anything shorter is guessable.
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

/// The secrets map did not hold a usable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChapError {
    /// The key is shorter than [`MIN_KEY_LEN`].
    #[error("the CHAP key in secret field `{SECRET_KEY}` is too short ({len} bytes; at least {MIN_KEY_LEN} required): generate one with `openssl rand -hex 32`")]
    KeyTooShort {
        /// Its length.
        len: usize,
    },
}

/// The CHAP credentials for `volume_id` and `initiator_iqn`, or `None` when the request
/// carries no key (ACL-only access).
pub fn from_secrets(
    secrets: &HashMap<String, String>,
    volume_id: &str,
    initiator_iqn: &str,
) -> Result<Option<Chap>, ChapError> {
    match secrets.get(SECRET_KEY) {
        None => Ok(None),
        Some(key) if key.len() < MIN_KEY_LEN => Err(ChapError::KeyTooShort { len: key.len() }),
        Some(key) => Ok(Some(derive(key.as_bytes(), volume_id, initiator_iqn))),
    }
}

/// Derives both directions' credentials for one (volume, initiator) pair.
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
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
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

    /// A fixed vector (computed independently with Python's hmac module): any change to the derivation breaks every attached volume on upgrade.
    #[test]
    fn derivation_is_stable() {
        let c = derive(
            b"0123456789abcdef0123456789abcdef",
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
    fn secrets_map_handling() {
        let none = HashMap::new();
        assert_eq!(from_secrets(&none, "v", "i"), Ok(None));
        let short = HashMap::from([(SECRET_KEY.to_string(), "abc".to_string())]);
        assert_eq!(
            from_secrets(&short, "v", "i"),
            Err(ChapError::KeyTooShort { len: 3 })
        );
        let good = HashMap::from([(SECRET_KEY.to_string(), "0123456789abcdef".to_string())]);
        assert!(from_secrets(&good, "v", "i").unwrap().is_some());
    }

    #[test]
    fn debug_hides_passwords() {
        let c = derive(b"0123456789abcdef", "vg/a", "iqn.2000-01.x:n1");
        let s = format!("{c:?}");
        assert!(!s.contains(&c.initiator.password) && !s.contains(&c.target.password));
    }
}
