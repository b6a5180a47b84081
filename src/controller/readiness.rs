//! Probe's view of the controller: ready when the volume group can be read, the target
//! backend answers and start-up restore has finished its first pass.
//!
//! Reading LVM costs a process and the VG lock (0.45–1.6 s in the lab, seconds on a busy
//! storage node) while livenessprobe gives Probe 1 s by default. So Probe answers at once
//! from the last check and, when that is older than [`RECHECK_AFTER`], starts the next one in
//! the background: a broken VG or target shows in Probe within that time plus one check. A
//! check that has not finished after [`STUCK_AFTER`] (LVM hanging on a dead device) is itself
//! the failure. Until the first check has finished, Probe answers "not ready".

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::full_message;
use crate::identity::{Health, Readiness};

use super::exports::Exports;
use super::volumes::Volumes;

/// How old the last check may be before Probe starts another.
pub const RECHECK_AFTER: Duration = Duration::from_secs(10);

/// How long a check may run before Probe reports it as the failure.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// Ready when the volume group(s) can be read, the target backend answers and restore has
/// finished its first pass; see the module doc for when it looks.
pub struct ControllerReadiness {
    /// Our LVs.
    volumes: Arc<Volumes>,
    /// Their exports.
    exports: Arc<Exports>,
    /// The VG read (every VG when `None`).
    default_vg: Option<String>,
    /// The last check and the one running.
    checks: Arc<Mutex<Checks>>,
}

/// What is known from the background checks.
#[derive(Debug, Default)]
struct Checks {
    /// When the last check finished, and what it found.
    last: Option<(Instant, Result<(), String>)>,
    /// When the running check started.
    running_since: Option<Instant>,
}

impl Checks {
    /// What Probe can say at `now` (`None`: nothing known yet), and whether a check must
    /// start (then it is marked running).
    fn decide(&mut self, now: Instant) -> (Option<Result<(), String>>, bool) {
        let due = self.running_since.is_none()
            && self
                .last
                .as_ref()
                .is_none_or(|(at, _)| now.duration_since(*at) >= RECHECK_AFTER);
        if due {
            self.running_since = Some(now);
        }
        let verdict = match (&self.last, self.running_since) {
            (_, Some(since)) if now.duration_since(since) >= STUCK_AFTER => Some(Err(format!(
                "checking LVM and the target backend has not finished after {} s",
                now.duration_since(since).as_secs()
            ))),
            (Some((_, found)), _) => Some(found.clone()),
            (None, _) => None,
        };
        (verdict, due)
    }
}

impl ControllerReadiness {
    /// Probe's view of the controller over `volumes` and `exports`, reading `default_vg`.
    pub(crate) fn new(
        volumes: Arc<Volumes>,
        exports: Arc<Exports>,
        default_vg: Option<String>,
    ) -> Self {
        ControllerReadiness {
            volumes,
            exports,
            default_vg,
            checks: Arc::default(),
        }
    }

    fn checks(checks: &Mutex<Checks>) -> MutexGuard<'_, Checks> {
        checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the default VG (or every VG) and probes the target backend, with the calls the
/// RPCs make.
async fn check_dependencies(
    volumes: &Volumes,
    exports: &Exports,
    default_vg: Option<&str>,
) -> Result<(), String> {
    let read = match default_vg {
        Some(vg) => volumes.volume_group(vg).await.map(drop),
        None => volumes.volume_groups().await.map(drop),
    };
    if let Err(e) = read {
        return Err(format!("LVM is not usable: {}", full_message(&e)));
    }
    exports.probe().await.map_err(|e| full_message(&e))
}

#[async_trait]
impl Readiness for ControllerReadiness {
    async fn check(&self) -> Health {
        let (verdict, start) = Self::checks(&self.checks).decide(Instant::now());
        if start {
            let (volumes, exports) = (Arc::clone(&self.volumes), Arc::clone(&self.exports));
            let (default_vg, checks) = (self.default_vg.clone(), Arc::clone(&self.checks));
            tokio::spawn(async move {
                let found = check_dependencies(&volumes, &exports, default_vg.as_deref()).await;
                let mut c = Self::checks(&checks);
                c.last = Some((Instant::now(), found));
                c.running_since = None;
            });
        }
        match verdict {
            None => Health::Starting,
            Some(Err(why)) => Health::Broken(why),
            Some(Ok(())) if self.exports.is_restored() => Health::Ready,
            Some(Ok(())) => Health::Starting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn decides_from_the_last_check_and_rechecks_when_it_is_old() {
        let mut c = Checks::default();
        let t0 = Instant::now();
        assert_eq!(c.decide(t0), (None, true), "the first probe starts a check");
        assert_eq!(c.decide(t0), (None, false), "one at a time");
        c.last = Some((t0, Ok(())));
        c.running_since = None;
        assert_eq!(c.decide(t0 + RECHECK_AFTER / 2), (Some(Ok(())), false));
        assert_eq!(c.decide(t0 + RECHECK_AFTER), (Some(Ok(())), true));
        // That check hangs: the old answer holds until it counts as stuck.
        let late = t0 + RECHECK_AFTER + STUCK_AFTER;
        assert_eq!(
            c.decide(late - Duration::from_secs(1)),
            (Some(Ok(())), false)
        );
        let (verdict, start) = c.decide(late);
        assert!(!start);
        assert!(
            matches!(&verdict, Some(Err(m)) if m.contains("not finished after 30 s")),
            "{verdict:?}"
        );
        // It finishes with a failure: that is the answer, until the next check.
        c.last = Some((late, Err("vg gone".into())));
        c.running_since = None;
        assert_eq!(c.decide(late), (Some(Err("vg gone".into())), false));
    }
}
