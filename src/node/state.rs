//! What this node staged: one small JSON file per volume, written before the login. CSI
//! gives NodeUnstageVolume only the volume id and the staging path, so without it a crash
//! between login and mount (or a block volume, which has no staging mount to follow back)
//! would leak a session. The kernel stays the authority on what is attached: the record
//! only says which target to look at. The directory must survive pod restarts (a hostPath).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What NodeUnstageVolume needs to find a volume's session and device again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    /// The volume.
    pub volume_id: String,
    /// Its target IQN.
    pub target_iqn: String,
    /// The portals it may be logged in through.
    pub portals: Vec<String>,
    /// Its LUN.
    pub lun: u32,
}

/// Failures reading or writing records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file operation failed.
    #[error("{op} stage record {path} failed: {source}")]
    Io {
        /// `read`, `write`, `rename`, `remove`, `create directory`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A record is not valid JSON of the expected shape.
    #[error("stage record {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The directory of stage records.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// Where the records live.
    dir: PathBuf,
}

/// A file name for a volume id: letters, digits, `.`, `_` and `-` kept, everything else
/// (notably `/`) as `%XX`, so distinct ids never share a file.
fn file_name(volume_id: &str) -> String {
    let mut out = String::new();
    for b in volume_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

impl StateDir {
    /// Records under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, volume_id: &str) -> PathBuf {
        self.dir.join(file_name(volume_id))
    }

    /// Stores `rec` atomically (write a temporary file, then rename).
    pub async fn save(&self, rec: &StageRecord) -> Result<(), StateError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { op, path, source }
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(io("create directory", &self.dir))?;
        let file = self.file(&rec.volume_id);
        let tmp = file.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(rec).map_err(|source| StateError::Corrupt {
            path: file.clone(),
            source,
        })?;
        tokio::fs::write(&tmp, json)
            .await
            .map_err(io("write", &tmp))?;
        tokio::fs::rename(&tmp, &file)
            .await
            .map_err(io("rename", &file))
    }

    /// The record of `volume_id`, if any.
    pub async fn load(&self, volume_id: &str) -> Result<Option<StageRecord>, StateError> {
        let file = self.file(volume_id);
        let bytes = match tokio::fs::read(&file).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    op: "read",
                    path: file,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path: file, source })
    }

    /// Forgets `volume_id`; no record is fine.
    pub async fn remove(&self, volume_id: &str) -> Result<(), StateError> {
        let file = self.file(volume_id);
        match tokio::fs::remove_file(&file).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                op: "remove",
                path: file,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_distinct_and_flat() {
        assert_eq!(file_name("csivg/pvc-1"), "csivg%2Fpvc-1.json");
        assert_ne!(file_name("a/b"), file_name("a%2Fb"));
        assert!(!file_name("../../etc/passwd").contains('/'));
    }

    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path().join("volumes"));
        let rec = StageRecord {
            volume_id: "vg/a".into(),
            target_iqn: "iqn.x:vg.a".into(),
            portals: vec!["10.0.0.5:3260".into()],
            lun: 0,
        };
        assert_eq!(s.load("vg/a").await.unwrap(), None);
        s.save(&rec).await.unwrap();
        s.save(&rec).await.unwrap();
        assert_eq!(s.load("vg/a").await.unwrap(), Some(rec));
        s.remove("vg/a").await.unwrap();
        s.remove("vg/a").await.unwrap();
        assert_eq!(s.load("vg/a").await.unwrap(), None);
        std::fs::write(s.file("vg/b"), "{").unwrap();
        assert!(matches!(
            s.load("vg/b").await,
            Err(StateError::Corrupt { .. })
        ));
    }
}
