//! One operation per volume at a time. A second concurrent call on the same key gets
//! ABORTED (the spec's "operation pending for volume"); different keys proceed in
//! parallel. The guard releases its key when dropped, whatever way the handler returns.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of keys (volume ids, or CSI names for CreateVolume) with an operation running.
#[derive(Debug, Clone, Default)]
pub struct VolumeLocks {
    /// Keys currently held.
    held: Arc<Mutex<HashSet<String>>>,
}

/// Holds one key until dropped.
#[derive(Debug)]
pub struct VolumeGuard {
    /// Where to release the key.
    held: Arc<Mutex<HashSet<String>>>,
    /// The key held.
    key: String,
}

impl VolumeLocks {
    /// An empty lock set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `key`, or returns `None` when an operation on it is already running.
    pub fn try_lock(&self, key: &str) -> Option<VolumeGuard> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.to_string()) {
            return None;
        }
        Some(VolumeGuard {
            held: Arc::clone(&self.held),
            key: key.to_string(),
        })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_key() {
        let locks = VolumeLocks::new();
        let a = locks.try_lock("vg/a").expect("free");
        assert!(locks.try_lock("vg/a").is_none());
        let _b = locks.try_lock("vg/b").expect("other keys are independent");
        drop(a);
        assert!(locks.try_lock("vg/a").is_some());
    }
}
