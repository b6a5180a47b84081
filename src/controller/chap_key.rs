//! The CHAP master key on the controller side: from the request's secrets (the StorageClass's
//! Secret) or from `--chap-key-file` (the same Secret mounted into the controller pod), which
//! restore needs because the kernel forgets ACL passwords on reboot and start-up has no
//! request to take a key from. The key never goes into LV tags; only a short public id of it
//! does, so restore can tell whether the file's key is the one a publication used.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::chap::{self, Chap, ChapError};

/// A CHAP master key.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapKey {
    /// The key as given (never printed).
    key: String,
}

impl fmt::Debug for ChapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChapKey(id {})", self.id())
    }
}

impl ChapKey {
    /// A key, refused when shorter than [`chap::MIN_KEY_LEN`].
    pub fn new(key: String) -> Result<Self, ChapError> {
        if key.len() < chap::MIN_KEY_LEN {
            return Err(ChapError::KeyTooShort { len: key.len() });
        }
        Ok(ChapKey { key })
    }

    /// The key in a request's secrets ([`chap::SECRET_KEY`]), if there is one.
    pub fn from_secrets(secrets: &HashMap<String, String>) -> Result<Option<Self>, ChapError> {
        secrets
            .get(chap::SECRET_KEY)
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
        let mut m = Hmac::<Sha256>::new_from_slice(self.key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(b"lvm-iscsi-csi key id");
        hex::encode(&m.finalize().into_bytes()[..4])
    }

    /// The per-(volume, initiator) credentials (DESIGN.md), as the node derives them.
    pub fn credentials(&self, volume_id: &str, initiator: &str) -> Chap {
        chap::derive(self.key.as_bytes(), volume_id, initiator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn id_is_stable_public_and_per_key() {
        let k = ChapKey::new(KEY.into()).unwrap();
        // Fixed vector (Python: hmac.new(KEY, b"lvm-iscsi-csi key id", sha256).hexdigest()[:8]).
        assert_eq!(k.id(), "cac3c71b");
        assert_ne!(k.id(), ChapKey::new(format!("{KEY}x")).unwrap().id());
        assert!(!format!("{k:?}").contains(KEY));
    }

    #[test]
    fn credentials_match_the_shared_derivation() {
        let k = ChapKey::new(KEY.into()).unwrap();
        let c = k.credentials("csivg/pvc-1", "iqn.2004-10.com.debian:node1");
        // The same vector as chap.rs: controller and node must agree.
        assert_eq!(c.initiator.user, "csi-19a8d7fea00ec877");
        assert_eq!(c.initiator.password, "44eda30e5986141feff817ea71176ef7");
    }

    #[test]
    fn secrets_and_files() {
        assert_eq!(ChapKey::from_secrets(&HashMap::new()), Ok(None));
        let short = HashMap::from([(chap::SECRET_KEY.to_string(), "abc".to_string())]);
        assert_eq!(
            ChapKey::from_secrets(&short),
            Err(ChapError::KeyTooShort { len: 3 })
        );
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
}
