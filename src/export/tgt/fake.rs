//! A tgtd in memory for unit tests: it answers tgtadm the way tgt 1.0.85 does (the listing
//! layout of the captured samples, the same refusal messages with exit code 22, and the same
//! quirks: `--force` does not delete a target whose LUN a session uses), so the backend's
//! idempotency can be tested call by call.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::exec::Output;

/// One target.
#[derive(Default)]
pub struct Tgt {
    /// Target IQN.
    pub name: String,
    /// lun -> (path, scsi id, scsi sn)
    pub luns: BTreeMap<u32, (String, String, String)>,
    /// (user, outgoing)
    pub accounts: Vec<(String, bool)>,
    /// ACL entries.
    pub acls: Vec<String>,
    /// (sid, initiator, cid)
    pub sessions: Vec<(u64, String, u64)>,
    /// lun -> the device size read when the backing store was opened (as tgtd caches it).
    pub sizes: BTreeMap<u32, u64>,
}

/// A tgtd in memory that answers tgtadm like tgt 1.0.85 does (same listing layout, same
/// refusals with exit code 22).
#[derive(Default)]
pub struct FakeTgtd {
    /// Targets by tid.
    pub targets: BTreeMap<u32, Tgt>,
    /// Accounts: user -> password.
    pub accounts: BTreeMap<String, String>,
    /// Listening portals, newest first (as tgtadm lists them).
    pub portals: Vec<String>,
    /// How many more target deletes find commands still in flight.
    pub busy: u32,
    /// Sizes of the block devices on the storage node, by path (32 MiB, shown as 34 MB, when not listed).
    pub devices: BTreeMap<String, u64>,
}

fn device_size(devices: &BTreeMap<String, u64>, path: &str) -> u64 {
    devices.get(path).copied().unwrap_or(32 << 20)
}

fn refused(msg: &str) -> Output {
    Output::failed(22, format!("tgtadm: {msg}\n"))
}

impl FakeTgtd {
    pub fn with_default_portals() -> Self {
        FakeTgtd {
            portals: vec!["[::]:3260".into(), "0.0.0.0:3260".into()],
            ..Default::default()
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for (tid, t) in &self.targets {
            let _ = writeln!(s, "Target {tid}: {}", t.name);
            s.push_str("    System information:\n        Driver: iscsi\n        State: ready\n");
            s.push_str("    I_T nexus information:\n");
            for (sid, init, cid) in &t.sessions {
                let _ = writeln!(s, "        I_T nexus: {sid}");
                let _ = writeln!(s, "            Initiator: {init} alias: (none)");
                let _ = writeln!(s, "            Connection: {cid}");
                s.push_str("                IP Address: 127.0.0.1\n");
            }
            s.push_str("    LUN information:\n        LUN: 0\n            Type: controller\n");
            let _ = writeln!(s, "            SCSI ID: IET     {tid:04x}0000");
            s.push_str("            Backing store type: null\n            Backing store path: None\n            Backing store flags: \n");
            for (lun, (path, id, sn)) in &t.luns {
                let _ = writeln!(s, "        LUN: {lun}\n            Type: disk");
                let _ = writeln!(s, "            SCSI ID: {id}\n            SCSI SN: {sn}");
                let size = t.sizes.get(lun).copied().unwrap_or(32 << 20);
                let _ = writeln!(
                    s,
                    "            Size: {} MB, Block size: 512\n            Readonly: No",
                    super::parse::disk_size_mb(size)
                );
                let _ = writeln!(s, "            Backing store type: rdwr\n            Backing store path: {path}\n            Backing store flags: ");
            }
            s.push_str("    Account information:\n");
            for (u, out) in &t.accounts {
                let _ = writeln!(s, "        {u}{}", if *out { " (outgoing)" } else { "" });
            }
            s.push_str("    ACL information:\n");
            for a in &t.acls {
                let _ = writeln!(s, "        {a}");
            }
        }
        s
    }

    pub fn answer(&mut self, argv: &[String]) -> Output {
        let mut flags: BTreeMap<&str, &str> = BTreeMap::new();
        let mut i = 1;
        while i < argv.len() {
            let key = argv[i].as_str();
            if key == "--outgoing" || key == "--force" {
                flags.insert(key, "");
                i += 1;
            } else {
                flags.insert(key, argv.get(i + 1).map_or("", String::as_str));
                i += 2;
            }
        }
        let tid: u32 = flags.get("--tid").and_then(|t| t.parse().ok()).unwrap_or(0);
        let user = flags
            .get("--user")
            .map(|u| u.to_string())
            .unwrap_or_default();
        let out = flags.contains_key("--outgoing");
        let mode = flags["--mode"];
        let op = flags["--op"];
        if (mode, op) == ("target", "delete") && self.busy > 0 {
            self.busy -= 1;
            return refused("this logical unit is still active");
        }
        let target = self.targets.get_mut(&tid);
        match (mode, op, target) {
            ("sys", "show", _) => Output::ok("System:\n    State: ready\n"),
            ("target", "show", _) => Output::ok(self.render()),
            ("portal", "show", _) => Output::ok(
                self.portals
                    .iter()
                    .map(|p| format!("Portal: {p},1\n"))
                    .collect::<String>(),
            ),
            ("portal", "new", _) => {
                let p = flags["--param"].trim_start_matches("portal=").to_string();
                if self.portals.contains(&p) {
                    return refused("invalid request");
                }
                self.portals.insert(0, p);
                Output::ok("")
            }
            ("account", "show", _) => {
                let mut s = "Account list:\n".to_string();
                for u in self.accounts.keys() {
                    let _ = writeln!(s, "    {u}");
                }
                Output::ok(s)
            }
            ("account", "new", _) if self.accounts.contains_key(&user) => {
                refused("this account already exists")
            }
            ("account", "new", _) => {
                self.accounts.insert(user, flags["--password"].to_string());
                Output::ok("")
            }
            ("account", "delete", _) => match self.accounts.remove(&user) {
                Some(_) => Output::ok(""),
                None => refused("can't find the account"),
            },
            ("target", "new", _) => {
                let name = flags["--targetname"];
                if self.targets.contains_key(&tid) || self.targets.values().any(|t| t.name == name)
                {
                    return refused("this target already exists");
                }
                let t = Tgt {
                    name: name.to_string(),
                    ..Default::default()
                };
                self.targets.insert(tid, t);
                Output::ok("")
            }
            (_, _, None) => refused("can't find the target"),
            ("target", "delete", Some(t)) => {
                if !t.sessions.is_empty() && !flags.contains_key("--force") {
                    return refused("this target is still active");
                }
                // As seen on tgt 1.0.85: --force does not get past a LUN a session uses.
                if !t.sessions.is_empty() && !t.luns.is_empty() {
                    return refused("this logical unit is still active");
                }
                self.targets.remove(&tid);
                Output::ok("")
            }
            ("logicalunit", "new", Some(t)) => {
                let lun: u32 = flags["--lun"].parse().unwrap();
                if t.luns.contains_key(&lun) {
                    return refused("this logical unit number already exists");
                }
                let id = format!("IET     {tid:04x}{lun:04x}");
                let sn = format!("beaf{tid}{lun}");
                let path = flags["--backing-store"].to_string();
                t.sizes.insert(lun, device_size(&self.devices, &path));
                t.luns.insert(lun, (path, id, sn));
                Output::ok("")
            }
            ("logicalunit", "update", Some(t)) => {
                let lun: u32 = flags["--lun"].parse().unwrap();
                let Some(l) = t.luns.get_mut(&lun) else {
                    return refused("can't find the logical unit");
                };
                let mut online = true;
                for kv in flags["--params"].split(',') {
                    match kv.split_once('=') {
                        Some(("scsi_id", v)) => l.1 = v.to_string(),
                        Some(("scsi_sn", v)) => l.2 = v.to_string(),
                        Some(("online", v)) => online = v == "1",
                        // tgt reopens the backing store only on an offline LUN.
                        Some(("path", _)) if online => return refused("invalid request"),
                        Some(("path", v)) => {
                            l.0 = v.to_string();
                            t.sizes.insert(lun, device_size(&self.devices, v));
                            online = true;
                        }
                        _ => return refused("unknown parameter"),
                    }
                }
                Output::ok("")
            }
            ("target", "bind", Some(t)) => {
                let name = flags["--initiator-name"].to_string();
                if t.acls.contains(&name) {
                    return refused("this access control rule already exists");
                }
                t.acls.push(name);
                Output::ok("")
            }
            ("target", "unbind", Some(t)) => {
                let entry = flags
                    .get("--initiator-name")
                    .or(flags.get("--initiator-address"))
                    .unwrap()
                    .to_string();
                match t.acls.iter().position(|a| *a == entry) {
                    Some(i) => {
                        t.acls.remove(i);
                        Output::ok("")
                    }
                    None => refused("this access control rule does not exist"),
                }
            }
            ("account", "bind", Some(t)) => {
                if !self.accounts.contains_key(&user) {
                    return refused("can't find the account");
                }
                if out && t.accounts.iter().any(|a| a.1) {
                    return refused("this target already has an outgoing account");
                }
                if t.accounts.iter().any(|a| a.0 == user) {
                    return refused("this account already exists");
                }
                t.accounts.push((user, out));
                Output::ok("")
            }
            ("account", "unbind", Some(t)) => {
                match t.accounts.iter().position(|a| a.0 == user && a.1 == out) {
                    Some(i) => {
                        t.accounts.remove(i);
                        Output::ok("")
                    }
                    None => refused("can't find the account"),
                }
            }
            ("conn", "delete", Some(t)) => {
                let sid: u64 = flags["--sid"].parse().unwrap();
                match t.sessions.iter().position(|s| s.0 == sid) {
                    Some(i) => {
                        t.sessions.remove(i);
                        Output::ok("")
                    }
                    None => refused("can't find the session"),
                }
            }
            _ => refused("invalid request"),
        }
    }
}
