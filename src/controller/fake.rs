//! Test doubles of the controller's own seams (tests and the `testing` feature only): the
//! node-id resolver and the block copier. LVM and the target have theirs in
//! [`crate::lvm::fake`] and [`crate::export::fake`].

use std::collections::HashMap;
use std::io;

use async_trait::async_trait;

use super::copy::{BlockCopier, CopyError, CopyJob, CopyStats};
use super::resolver::{InitiatorResolver, ResolveError};
use crate::domain::Iqn;
use crate::kube::KubeError;

/// A resolver from a fixed table, for tests: listed node ids map to their IQN, initiator
/// names pass through, anything else is an unknown node.
#[derive(Debug, Default, Clone)]
pub struct FakeResolver {
    /// Node id -> initiator IQN.
    nodes: HashMap<String, String>,
}

impl FakeResolver {
    /// A resolver knowing `nodes` (node id, IQN).
    pub fn new<I: IntoIterator<Item = (S, S)>, S: Into<String>>(nodes: I) -> Self {
        FakeResolver {
            nodes: nodes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[async_trait]
impl InitiatorResolver for FakeResolver {
    async fn initiator(&self, node_id: &str) -> Result<Iqn, ResolveError> {
        let Some(value) = self.nodes.get(node_id) else {
            return node_id
                .parse()
                .map_err(|_| KubeError::NodeNotFound(node_id.to_string()).into());
        };
        value.parse().map_err(|_| ResolveError::BadAnnotation {
            node_id: node_id.to_string(),
            value: value.clone(),
        })
    }
}

/// A copier for controller tests: records the jobs, can fail once.
#[derive(Debug, Default)]
pub struct FakeCopier {
    /// Jobs run so far.
    pub jobs: std::sync::Mutex<Vec<CopyJob>>,
    /// The next copy fails.
    pub fail_next: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl BlockCopier for FakeCopier {
    async fn copy(&self, job: CopyJob) -> Result<CopyStats, CopyError> {
        use std::sync::atomic::Ordering;
        let dest = job.dest.clone();
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(CopyError {
                what: "cannot write",
                path: dest,
                source: io::Error::from_raw_os_error(5),
            });
        }
        Ok(CopyStats::default())
    }
}
