//! Built-in liveness: `GET /healthz` (served by [`crate::metrics::http`]) answers from this
//! process's own Identity Probe, the way the kubernetes-csi livenessprobe sidecar does, so the
//! chart's livenessProbe can ask the driver directly:
//! - Probe ready (or silent about readiness): alive;
//! - Probe failed, said "not ready", or took longer than [`PROBE_TIMEOUT`]: failed (the
//!   sidecar's 500, with the reason);
//! - before the mode serves its Identity service: not serving yet (503).
//!
//! The endpoint sits on the host network, so one Probe runs at a time and an answer younger
//! than [`REUSE_FOR`] is given again: callers cannot make the node run iscsiadm (or the
//! controller read LVM) at will. The controller's Probe answers from a background check
//! anyway; the node's runs iscsiadm, as it did for the sidecar.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::Request;

use crate::csi::identity_server::Identity;
use crate::csi::ProbeRequest;

/// How long Probe may take (the livenessprobe sidecar's `--probe-timeout` in the chart).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an answer is given again without probing (kubelet asks every 10 s).
pub const REUSE_FOR: Duration = Duration::from_secs(2);

/// What `/healthz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Probe says ready.
    Alive,
    /// The mode has not wired its Identity service yet (still starting).
    NotServing,
    /// Probe failed, said "not ready" or hung; why.
    Failed(String),
}

/// The liveness of this process: cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Liveness {
    /// Shared by every clone.
    inner: Arc<Inner>,
}

/// The Identity service to ask and the last answer.
#[derive(Default)]
struct Inner {
    /// Set once by the mode when it serves.
    identity: OnceLock<Arc<dyn Identity>>,
    /// The last answer and when it was made; the lock also keeps probes one at a time.
    last: Mutex<Option<(Instant, Verdict)>>,
}

/// The process's liveness, which `--health-address` and `--metrics-address` serve.
pub fn global() -> &'static Liveness {
    static GLOBAL: LazyLock<Liveness> = LazyLock::new(Liveness::default);
    &GLOBAL
}

impl Liveness {
    /// Answers from `identity`'s Probe from now on; only the first call counts (one
    /// Identity service per process).
    pub fn answer_from(&self, identity: Arc<dyn Identity>) {
        if self.inner.identity.set(identity).is_err() {
            tracing::warn!("liveness already answers from an Identity service; keeping it");
        }
    }

    /// The verdict: the last one when younger than [`REUSE_FOR`], else a fresh Probe.
    pub async fn check(&self) -> Verdict {
        let Some(identity) = self.inner.identity.get() else {
            return Verdict::NotServing;
        };
        let mut last = self.inner.last.lock().await;
        if let Some((at, verdict)) = last.as_ref() {
            if at.elapsed() < REUSE_FOR {
                return verdict.clone();
            }
        }
        let verdict = probe(identity.as_ref()).await;
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }
}

/// One Probe, judged as the livenessprobe sidecar judges it.
async fn probe(identity: &dyn Identity) -> Verdict {
    let answer = tokio::time::timeout(PROBE_TIMEOUT, identity.probe(Request::new(ProbeRequest {})));
    match answer.await {
        Err(_) => {
            let why = format!("Probe did not answer within {PROBE_TIMEOUT:?}");
            tracing::warn!("liveness: {why}");
            Verdict::Failed(why)
        }
        // Probe logs its own failures.
        Ok(Err(status)) => Verdict::Failed(status.message().to_string()),
        Ok(Ok(response)) => match response.into_inner().ready {
            Some(false) => {
                tracing::debug!("liveness: Probe says not ready");
                Verdict::Failed("driver responded but is not ready".into())
            }
            Some(true) | None => Verdict::Alive,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Health, IdentityService, Readiness};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers `health` after `delay`, counting the checks.
    struct Scripted {
        health: std::sync::Mutex<Health>,
        delay: Duration,
        checks: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Readiness for Scripted {
        async fn check(&self) -> Health {
            self.checks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.health.lock().unwrap().clone()
        }
    }

    fn wired(health: Health, delay: Duration) -> (Liveness, Arc<Scripted>) {
        let readiness = Arc::new(Scripted {
            health: std::sync::Mutex::new(health),
            delay,
            checks: AtomicUsize::new(0),
        });
        let liveness = Liveness::default();
        liveness.answer_from(Arc::new(IdentityService::new(
            "d",
            readiness.clone(),
            false,
        )));
        (liveness, readiness)
    }

    #[tokio::test(start_paused = true)]
    async fn judges_probe_like_the_livenessprobe_sidecar() {
        assert_eq!(Liveness::default().check().await, Verdict::NotServing);
        assert_eq!(
            wired(Health::Ready, Duration::ZERO).0.check().await,
            Verdict::Alive
        );
        assert_eq!(
            wired(Health::Starting, Duration::ZERO).0.check().await,
            Verdict::Failed("driver responded but is not ready".into())
        );
        assert_eq!(
            wired(Health::Broken("iscsid is down".into()), Duration::ZERO)
                .0
                .check()
                .await,
            Verdict::Failed("iscsid is down".into())
        );
        let hung = wired(Health::Ready, Duration::from_secs(60))
            .0
            .check()
            .await;
        assert!(
            matches!(&hung, Verdict::Failed(why) if why.contains("within 3s")),
            "{hung:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reuses_a_fresh_answer_and_probes_one_at_a_time() {
        let (liveness, readiness) = wired(Health::Ready, Duration::from_millis(500));
        let (a, b) = tokio::join!(liveness.check(), liveness.check());
        assert_eq!((a, b), (Verdict::Alive, Verdict::Alive));
        assert_eq!(readiness.checks.load(Ordering::SeqCst), 1);

        *readiness.health.lock().unwrap() = Health::Broken("gone".into());
        assert_eq!(liveness.check().await, Verdict::Alive, "still fresh");
        tokio::time::advance(REUSE_FOR).await;
        assert_eq!(liveness.check().await, Verdict::Failed("gone".into()));
        assert_eq!(readiness.checks.load(Ordering::SeqCst), 2);
    }
}
