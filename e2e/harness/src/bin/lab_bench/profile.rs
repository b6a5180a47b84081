//! Where an RPC's time goes, from the driver's own debug log (`--log-format json
//! --log-level lvm_iscsi_csi=debug`): every external command it ran is a "ran command" event
//! carrying the command line, its duration and the RPC span it ran in.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The commands one RPC method ran, over all its calls in a log slice.
#[derive(Debug, Default, Clone)]
pub struct MethodProfile {
    /// By command label: (how many, total milliseconds).
    pub commands: BTreeMap<String, (u64, u64)>,
    /// Per call (calls told apart as runs of consecutive events of one method, which holds
    /// when the calls are made one after the other): (commands, milliseconds in them).
    pub calls: Vec<(u64, u64)>,
}

impl MethodProfile {
    /// Commands in total (the wait entries, in parentheses, are not commands).
    pub fn count(&self) -> u64 {
        self.commands
            .iter()
            .filter(|(k, _)| !k.starts_with('('))
            .map(|(_, c)| c.0)
            .sum()
    }

    /// The median call's milliseconds in commands (lower middle); 0 without calls.
    pub fn median_call_millis(&self) -> u64 {
        let mut v: Vec<u64> = self.calls.iter().map(|c| c.1).collect();
        v.sort_unstable();
        v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
    }
}

/// The length of a log file now: the start (or end) of a slice to profile.
pub fn mark(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// A short label for a command line: the program, plus the operation for iscsiadm.
fn label(command: &str) -> String {
    if command.starts_with('(') {
        return command.to_string();
    }
    let argv: Vec<&str> = command.split_whitespace().collect();
    let program = argv.first().copied().unwrap_or("?");
    if program != "iscsiadm" {
        return program.to_string();
    }
    let op = argv
        .iter()
        .position(|a| *a == "-o")
        .and_then(|i| argv.get(i + 1).copied())
        .or_else(|| argv.iter().find(|a| a.starts_with("--log")).copied())
        .or_else(|| {
            argv.iter()
                .position(|a| *a == "-m")
                .and_then(|i| argv.get(i + 1).copied())
        })
        .unwrap_or("?");
    format!("iscsiadm {}", op.trim_start_matches('-'))
}

/// Profiles the events of `log` between byte offsets `from` and `to`, by RPC method (the
/// `method` of the `rpc` span; commands outside any RPC, such as start-up, under "(start-up)").
/// Per-call figures assume calls of one method did not overlap in that slice.
pub fn profile(log: &Path, from: u64, to: u64) -> BTreeMap<String, MethodProfile> {
    let mut out: BTreeMap<String, MethodProfile> = BTreeMap::new();
    let mut previous = String::new();
    let Ok(mut f) = std::fs::File::open(log) else {
        return out;
    };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(from)).is_err()
        || f.take(to.saturating_sub(from))
            .read_to_string(&mut text)
            .is_err()
    {
        return out;
    }
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // Besides commands, the node's wait for a LUN's disk to appear (sysfs polling).
        let (command, ms) = match ev.get("message").and_then(|m| m.as_str()) {
            Some("ran command") => (
                ev.get("command").and_then(|c| c.as_str()).unwrap_or("?"),
                ev.get("elapsed_ms").and_then(|c| c.as_u64()).unwrap_or(0),
            ),
            Some("LUN device found") => (
                "(waiting for the disk)",
                ev.get("waited_ms").and_then(|c| c.as_u64()).unwrap_or(0),
            ),
            _ => continue,
        };
        let method = ev
            .get("spans")
            .and_then(|s| s.as_array())
            .and_then(|spans| {
                spans
                    .iter()
                    .find(|s| s.get("name").and_then(|n| n.as_str()) == Some("rpc"))
            })
            .and_then(|s| s.get("method"))
            .and_then(|m| m.as_str())
            .unwrap_or("(start-up)")
            .to_string();
        let p = out.entry(method.clone()).or_default();
        let e = p.commands.entry(label(command)).or_default();
        e.0 += 1;
        e.1 += ms;
        if command.starts_with('(') {
            continue;
        }
        if method != previous || p.calls.is_empty() {
            p.calls.push((0, 0));
        }
        if let Some(call) = p.calls.last_mut() {
            call.0 += 1;
            call.1 += ms;
        }
        previous = method;
    }
    out
}
