//! The benchmark's results: medians, the markdown table and the JSON file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::profile::MethodProfile;

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `v` (the lower middle for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[(s.len() - 1) / 2]
}

/// A side-by-side measure: the raw tools and the driver, samples in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Pair {
    /// Raw-tool floor samples.
    pub floor: Vec<f64>,
    /// Driver samples.
    pub driver: Vec<f64>,
}

impl Pair {
    /// driver median / floor median.
    pub fn ratio(&self) -> f64 {
        let f = median(&self.floor);
        if f > 0.0 {
            median(&self.driver) / f
        } else {
            f64::NAN
        }
    }

    fn json(&self, goal: f64) -> Value {
        json!({
            "floor_ms": self.floor, "driver_ms": self.driver,
            "floor_median_ms": median(&self.floor), "driver_median_ms": median(&self.driver),
            "ratio": self.ratio(), "goal_ratio": goal, "met": self.ratio() <= goal,
        })
    }
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// When, how, where (free-form facts for the JSON file).
    pub facts: BTreeMap<String, Value>,
    /// (1) attach: Create + ControllerPublish + NodeStage + NodePublish.
    pub attach: Pair,
    /// (5) detach: NodeUnpublish + NodeUnstage + ControllerUnpublish.
    pub detach: Pair,
    /// (2) N CreateVolume: serial lvcreate vs concurrent calls (one sample each).
    pub creates: Pair,
    /// (2) how many concurrent CreateVolume calls.
    pub creates_n: usize,
    /// (2) failed concurrent calls.
    pub create_failures: usize,
    /// (3) published volumes restored.
    pub restore_n: usize,
    /// (3) ms from the restart to Probe ready with every export back (after a "reboot").
    pub restore_ms: f64,
    /// (3) targets and ACLs in configfs when Probe turned ready.
    pub restore_seen: (usize, usize),
    /// (3) the same restart with the exports still in the kernel (a crash, not a reboot).
    pub restart_intact_ms: f64,
    /// (4) VmRSS in KiB: (controller, node) idle.
    pub rss_idle: (u64, u64),
    /// (4) VmRSS in KiB: (controller, node) after the lives.
    pub rss_after: (u64, u64),
    /// (4) volume lives before `rss_after`.
    pub lives: usize,
    /// (4) failed lives.
    pub life_failures: usize,
    /// (4) sessions still logged in after a successful NodeUnstageVolume of a failed life.
    pub leaked_sessions: usize,
    /// Controller VmRSS with the restored volumes, KiB.
    pub rss_restored: u64,
    /// Per-RPC client latencies in the attach/detach runs (ms).
    pub rpcs: BTreeMap<String, Vec<f64>>,
    /// Per-RPC commands in the attach/detach runs, from the driver's debug log.
    pub profile: BTreeMap<String, MethodProfile>,
    /// Wall time of each phase, seconds.
    pub phases: Vec<(String, f64)>,
}

fn secs(ms: f64) -> String {
    if ms >= 100_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

impl Results {
    /// The markdown report: the goals table, then per-RPC latencies and commands.
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        t.push_str("| # | measure | raw tools (floor) | driver | driver / floor | goal | |\n");
        t.push_str("|---|---|---|---|---|---|---|\n");
        let runs = self.attach.driver.len();
        for (n, name, p) in [
            (
                "1",
                "attach: Create + ControllerPublish + NodeStage + NodePublish",
                &self.attach,
            ),
            (
                "5",
                "detach: NodeUnpublish + NodeUnstage + ControllerUnpublish",
                &self.detach,
            ),
        ] {
            t.push_str(&format!(
                "| {n} | {name} (median of {runs}) | {} | {} | {:.2} | ≤ 1.10 | {} |\n",
                secs(median(&p.floor)),
                secs(median(&p.driver)),
                p.ratio(),
                verdict(p.ratio() <= 1.10)
            ));
        }
        let c = &self.creates;
        t.push_str(&format!(
            "| 2 | {n} CreateVolume: {n} serial `lvcreate` vs {n} concurrent calls ({f} failed) | {} | {} | {:.2} | ≤ 1.2, 0 failed | {} |\n",
            secs(median(&c.floor)),
            secs(median(&c.driver)),
            c.ratio(),
            verdict(c.ratio() <= 1.2 && self.create_failures == 0),
            n = self.creates_n,
            f = self.create_failures,
        ));
        t.push_str(&format!(
            "| 3 | controller start-up with {n} published volumes after a reboot: Probe ready, {} targets and {} ACLs back in configfs | | {} | | ≤ 5 s | {} |\n",
            self.restore_seen.0,
            self.restore_seen.1,
            secs(self.restore_ms),
            verdict(self.restore_ms <= 5000.0 && self.restore_seen.0 >= self.restore_n),
            n = self.restore_n,
        ));
        t.push_str(&format!(
            "| 3b | the same after a crash (kill -9), exports still in the kernel | | {} | | | |\n",
            secs(self.restart_intact_ms)
        ));
        t.push_str(&format!(
            "| 4 | resident memory (VmRSS) idle: controller / node | | {} / {} | | ≤ 10 MiB each | {} |\n",
            mib(self.rss_idle.0),
            mib(self.rss_idle.1),
            verdict(self.rss_idle.0 <= 10 * 1024 && self.rss_idle.1 <= 10 * 1024)
        ));
        let failed = match (self.life_failures, self.leaked_sessions) {
            (0, _) => "none failed".to_string(),
            (n, 0) => format!("**{n} failed**"),
            (n, l) => format!("**{n} failed, {l} of them leaving a session behind**"),
        };
        t.push_str(&format!(
            "| 4 | resident memory after {} volume lives, {} at a time ({failed}): controller / node | | {} / {} | | ≤ 16 MiB each | {} |\n",
            self.lives,
            self.facts.get("parallel").cloned().unwrap_or_default(),
            mib(self.rss_after.0),
            mib(self.rss_after.1),
            verdict(self.rss_after.0 <= 16 * 1024 && self.rss_after.1 <= 16 * 1024)
        ));
        t.push_str(&format!(
            "| 4 | controller memory holding {} restored exports | | {} | | | |\n",
            self.restore_n,
            mib(self.rss_restored)
        ));

        t.push_str("\nPer RPC, in the attach/detach runs (client-side latency; commands from the driver's debug log):\n\n");
        t.push_str("| RPC | calls | median latency | commands per call | median time in commands | commands run (count, total ms) |\n");
        t.push_str("|---|---|---|---|---|---|\n");
        for (rpc, samples) in &self.rpcs {
            let p = self.profile.get(rpc).cloned().unwrap_or_default();
            let calls = samples.len().max(1) as f64;
            let list: Vec<String> = p
                .commands
                .iter()
                .map(|(k, (n, ms))| format!("{k} ×{n} ({ms} ms)"))
                .collect();
            t.push_str(&format!(
                "| {rpc} | {} | {:.0} ms | {:.1} | {} ms | {} |\n",
                samples.len(),
                median(samples),
                p.count() as f64 / calls,
                p.median_call_millis(),
                list.join(", ")
            ));
        }
        if let Some(p) = self.profile.get("(start-up)") {
            let list: Vec<String> = p
                .commands
                .iter()
                .map(|(k, (n, ms))| format!("{k} ×{n} ({ms} ms)"))
                .collect();
            t.push_str(&format!(
                "| (outside RPCs) | | | | | {} |\n",
                list.join(", ")
            ));
        }
        t.push_str("\nPhases (wall time): ");
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(n, s)| format!("{n} {s:.0} s"))
            .collect();
        t.push_str(&phases.join(", "));
        t.push('\n');
        t
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let rpcs: BTreeMap<&String, Value> = self
            .rpcs
            .iter()
            .map(|(k, v)| {
                let p = self.profile.get(k).cloned().unwrap_or_default();
                let commands: BTreeMap<&String, Value> = p
                    .commands
                    .iter()
                    .map(|(c, (n, ms))| (c, json!({"count": n, "total_ms": ms})))
                    .collect();
                (
                    k,
                    json!({"calls": v.len(), "median_ms": median(v), "samples_ms": v,
                           "commands_per_call": p.count() as f64 / v.len().max(1) as f64,
                           "median_command_ms_per_call": p.median_call_millis(),
                           "commands": commands}),
                )
            })
            .collect();
        json!({
            "facts": self.facts,
            "attach": self.attach.json(1.10),
            "detach": self.detach.json(1.10),
            "concurrent_create": {
                "n": self.creates_n, "failures": self.create_failures,
                "floor_serial_lvcreate_ms": median(&self.creates.floor),
                "driver_concurrent_ms": median(&self.creates.driver),
                "ratio": self.creates.ratio(), "goal_ratio": 1.2,
                "met": self.creates.ratio() <= 1.2 && self.create_failures == 0,
            },
            "restore": {
                "volumes": self.restore_n, "ready_ms": self.restore_ms,
                "targets": self.restore_seen.0, "acls": self.restore_seen.1,
                "goal_ms": 5000, "met": self.restore_ms <= 5000.0 && self.restore_seen.0 >= self.restore_n,
                "restart_with_exports_intact_ms": self.restart_intact_ms,
            },
            "memory_kib": {
                "controller_idle": self.rss_idle.0, "node_idle": self.rss_idle.1,
                "controller_after": self.rss_after.0, "node_after": self.rss_after.1,
                "lives": self.lives, "life_failures": self.life_failures,
                "leaked_sessions": self.leaked_sessions,
                "controller_with_restored_exports": self.rss_restored,
                "goal_idle_kib": 10 * 1024, "goal_after_kib": 16 * 1024,
            },
            "rpcs": rpcs,
            "phases_s": self.phases.iter().map(|(n, s)| json!({"phase": n, "seconds": s})).collect::<Vec<_>>(),
        })
    }
}
