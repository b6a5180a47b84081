//! An in-memory target backend for unit tests: records exports and ACLs, can be told to fail.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AclSpec, ExportSpec, TargetBackend, TargetError, TargetState};

/// One fake target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeExport {
    /// What `ensure_export` was given.
    pub spec: ExportSpec,
    /// ACLs by initiator IQN.
    pub acls: BTreeMap<String, AclSpec>,
    /// How many times `resize_lun` refreshed its size.
    pub resized: u32,
}

/// In-memory [`TargetBackend`].
#[derive(Debug, Default)]
pub struct FakeTarget {
    /// Targets by IQN.
    exports: Mutex<BTreeMap<String, FakeExport>>,
    /// When set, every call fails with this reason.
    fail: Mutex<Option<String>>,
}

impl FakeTarget {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of the targets.
    pub fn exports(&self) -> BTreeMap<String, FakeExport> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes every following call fail (`Some`) or succeed again (`None`).
    pub fn set_failure(&self, reason: Option<&str>) {
        *self.fail.lock().unwrap_or_else(|e| e.into_inner()) = reason.map(String::from);
    }

    fn check(&self) -> Result<(), TargetError> {
        match self.fail.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(reason) => Err(TargetError::Unavailable {
                backend: "fake",
                reason,
            }),
            None => Ok(()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, FakeExport>) -> T) -> T {
        f(&mut self.exports.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl TargetBackend for FakeTarget {
    async fn probe(&self) -> Result<(), TargetError> {
        self.check()
    }

    fn data_lun(&self) -> u32 {
        0
    }

    async fn ensure_export(&self, spec: &ExportSpec) -> Result<(), TargetError> {
        self.check()?;
        self.with(|m| match m.get(&spec.iqn) {
            Some(e) if e.spec.device != spec.device => Err(TargetError::Conflict {
                iqn: spec.iqn.clone(),
                existing: e.spec.device.clone(),
                wanted: spec.device.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                m.insert(
                    spec.iqn.clone(),
                    FakeExport {
                        spec: spec.clone(),
                        acls: BTreeMap::new(),
                        resized: 0,
                    },
                );
                Ok(())
            }
        })
    }

    async fn ensure_acl(&self, iqn: &str, acl: &AclSpec) -> Result<(), TargetError> {
        self.check()?;
        self.with(|m| match m.get_mut(iqn) {
            Some(e) => {
                e.acls.insert(acl.initiator.clone(), acl.clone());
                Ok(())
            }
            None => Err(TargetError::NoTarget {
                iqn: iqn.to_string(),
            }),
        })
    }

    async fn remove_acl(&self, iqn: &str, initiator: &str) -> Result<(), TargetError> {
        self.check()?;
        self.with(|m| {
            if let Some(e) = m.get_mut(iqn) {
                e.acls.remove(initiator);
            }
        });
        Ok(())
    }

    async fn remove_export(&self, iqn: &str) -> Result<(), TargetError> {
        self.check()?;
        self.with(|m| m.remove(iqn));
        Ok(())
    }

    async fn resize_lun(&self, iqn: &str, _size: u64) -> Result<(), TargetError> {
        self.check()?;
        self.with(|m| {
            if let Some(e) = m.get_mut(iqn) {
                e.resized += 1;
            }
        });
        Ok(())
    }

    async fn list(&self) -> Result<Vec<TargetState>, TargetError> {
        self.check()?;
        Ok(self.with(|m| {
            m.values()
                .map(|e| TargetState {
                    iqn: e.spec.iqn.clone(),
                    device: Some(e.spec.device.clone()),
                    initiators: e.acls.keys().cloned().collect(),
                })
                .collect()
        }))
    }
}
