//! A simulated LVM for tests: answers the exact commands [`Lvm`](super::Lvm) runs (`lvs`,
//! `vgs`, `lvcreate`, `lvremove`, `lvextend`, `lvchange`) from in-memory VGs and LVs, with
//! LVM's real messages and exit codes (as captured in the lab), through a [`FakeRunner`](crate::exec::fake::FakeRunner).
//! Failures can be scripted per command. Snapshots behave as in LVM 2.03.16: a thin snapshot
//! is created inactive with activation skipped unless asked otherwise; a classic snapshot's
//! COW size is capped to what it can use; removing a thick origin removes its classic
//! snapshots.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use crate::exec::fake::FakeRunner;
use crate::exec::Output;

/// One simulated LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLv {
    /// Volume group.
    pub vg: String,
    /// LV name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `lv_attr`.
    pub attr: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Thin pool of a thin volume.
    pub pool: Option<String>,
    /// The origin of a snapshot.
    pub origin: Option<String>,
    /// `lv_time`: creation, in LVM's format.
    pub time: String,
}

/// A scripted failure: the first command whose line contains `pattern` gets `out`, after its
/// effect when `after` is set (a command killed half-way).
struct Failure {
    /// Substring of the command line.
    pattern: String,
    /// The answer.
    out: Output,
    /// Whether the command takes effect anyway.
    after: bool,
}

/// The simulated system.
#[derive(Default)]
struct State {
    /// (name, size, extent size).
    vgs: Vec<(String, u64, u64)>,
    /// LVs, in creation order.
    lvs: Vec<FakeLv>,
    /// Scripted failures, used once each.
    failures: Vec<Failure>,
    /// `vg/lv` held open: lvremove says "in use".
    open: Vec<String>,
    /// LVs created so far: the seconds of the next `lv_time`.
    created: u32,
}

/// The simulated LVM; clones share the state.
#[derive(Clone, Default)]
pub struct FakeLvm {
    /// The state.
    state: Arc<Mutex<State>>,
}

impl FakeLvm {
    /// No VG at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds VG `name` of `size` bytes with `extent`-byte extents.
    pub fn add_vg(&self, name: &str, size: u64, extent: u64) {
        self.lock().vgs.push((name.into(), size, extent));
    }

    /// Adds an active thin pool.
    pub fn add_thin_pool(&self, vg: &str, name: &str, size: u64) {
        self.push(vg, name, size, "twi-aotz--", &[], None);
    }

    /// Adds an active thick LV with `tags`.
    pub fn add_lv(&self, vg: &str, name: &str, size: u64, tags: &[&str]) {
        self.push(vg, name, size, "-wi-a-----", tags, None);
    }

    /// Adds an active thin volume with `tags`.
    pub fn add_thin(&self, vg: &str, pool: &str, name: &str, size: u64, tags: &[&str]) {
        self.push(vg, name, size, "Vwi-a-tz--", tags, Some(pool));
    }

    fn push(&self, vg: &str, name: &str, size: u64, attr: &str, tags: &[&str], pool: Option<&str>) {
        let mut s = self.lock();
        let time = s.next_time();
        s.lvs.push(FakeLv {
            vg: vg.into(),
            name: name.into(),
            size,
            attr: attr.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pool: pool.map(String::from),
            origin: None,
            time,
        });
    }

    /// A runner answering from this simulation.
    pub fn runner(&self) -> Arc<FakeRunner> {
        let me = self.clone();
        Arc::new(FakeRunner::new(move |argv| me.lock().answer(argv)))
    }

    /// The next command containing `pattern` fails with `out`, doing nothing.
    pub fn fail(&self, pattern: &str, out: Output) {
        self.script(pattern, out, false);
    }

    /// The next command containing `pattern` takes effect, then reports `out`.
    pub fn fail_after(&self, pattern: &str, out: Output) {
        self.script(pattern, out, true);
    }

    fn script(&self, pattern: &str, out: Output, after: bool) {
        self.lock().failures.push(Failure {
            pattern: pattern.into(),
            out,
            after,
        });
    }

    /// LV `vg/name`, if it exists.
    pub fn lv(&self, vg: &str, name: &str) -> Option<FakeLv> {
        self.lock()
            .lvs
            .iter()
            .find(|l| l.vg == vg && l.name == name)
            .cloned()
    }

    /// Changes LV `vg/name` in place (tags, attributes...).
    pub fn edit(&self, vg: &str, name: &str, f: impl FnOnce(&mut FakeLv)) {
        if let Some(lv) = self
            .lock()
            .lvs
            .iter_mut()
            .find(|l| l.vg == vg && l.name == name)
        {
            f(lv);
        }
    }

    /// Marks `vg/name` as held open (or not).
    pub fn set_open(&self, vg: &str, name: &str, open: bool) {
        let id = format!("{vg}/{name}");
        let mut s = self.lock();
        s.open.retain(|o| *o != id);
        if open {
            s.open.push(id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// A new `lv_time`, one second after the previous one.
    fn next_time(&mut self) -> String {
        self.created += 1;
        format!(
            "2026-11-26 06:{:02}:{:02} +0000",
            self.created / 60 % 60,
            self.created % 60
        )
    }

    fn answer(&mut self, argv: &[String]) -> Output {
        let line = argv.join(" ");
        if let Some(i) = self.failures.iter().position(|f| line.contains(&f.pattern)) {
            let f = self.failures.remove(i);
            if f.after {
                self.run(argv);
            }
            return f.out;
        }
        self.run(argv)
    }

    fn has_vg(&self, vg: &str) -> bool {
        self.vgs.iter().any(|v| v.0 == vg)
    }

    fn vg_free(&self, vg: &str) -> u64 {
        let size = self.vgs.iter().find(|v| v.0 == vg).map_or(0, |v| v.1);
        let used: u64 = self
            .lvs
            .iter()
            .filter(|l| l.vg == vg && !l.attr.starts_with('V'))
            .map(|l| l.size)
            .sum();
        size.saturating_sub(used)
    }

    fn run(&mut self, argv: &[String]) -> Output {
        // Reports: `lvs|vgs --reportformat json --units b --nosuffix -o FIELDS [selection]`.
        let selection = argv.get(8..).unwrap_or_default();
        match argv.first().map(String::as_str) {
            Some("lvs") => self.lvs(selection),
            Some("vgs") => {
                if let Some(missing) = selection.iter().find(|n| !self.has_vg(n)) {
                    return vg_not_found(missing);
                }
                let rows: Vec<_> = self
                    .vgs
                    .iter()
                    .filter(|v| selection.is_empty() || selection.contains(&v.0))
                    .map(|(name, size, extent)| {
                        json!({
                            "vg_name": name, "vg_size": size.to_string(),
                            "vg_free": self.vg_free(name).to_string(),
                            "vg_extent_size": extent.to_string(),
                        })
                    })
                    .collect();
                Output::ok(json!({"report": [{"vg": rows}]}).to_string())
            }
            Some("lvcreate") => self.lvcreate(argv),
            Some("lvremove") => self.lvremove(argv.last().map_or("", String::as_str)),
            Some("lvextend") => self.lvextend(argv),
            Some("lvchange") => self.lvchange(argv),
            _ => Output::failed(127, format!("{line}: not simulated", line = argv.join(" "))),
        }
    }

    fn lvs(&self, selection: &[String]) -> Output {
        let mut rows = Vec::new();
        if selection.is_empty() {
            rows.extend(self.lvs.iter().map(|l| self.lv_row(l)));
        }
        for sel in selection {
            let (vg, lv) = sel.split_once('/').unwrap_or((sel, ""));
            if !self.has_vg(vg) {
                return vg_not_found(vg);
            }
            let found: Vec<_> = self
                .lvs
                .iter()
                .filter(|l| l.vg == vg && (lv.is_empty() || l.name == lv))
                .collect();
            if found.is_empty() && !lv.is_empty() {
                return lv_not_found(sel);
            }
            rows.extend(found.into_iter().map(|l| self.lv_row(l)));
        }
        Output::ok(json!({"report": [{"lv": rows}]}).to_string())
    }

    /// A report row of `l` with every column the driver ever asks for (the parser ignores
    /// columns it was not asked for).
    fn lv_row(&self, l: &FakeLv) -> serde_json::Value {
        // LVM reports origin_size on an origin and on its classic snapshots.
        let origin_size = match (&l.origin, l.attr.chars().next()) {
            (Some(o), Some('s')) => self
                .lvs
                .iter()
                .find(|x| x.vg == l.vg && x.name == *o)
                .map_or(String::new(), |x| x.size.to_string()),
            (_, Some('o')) => l.size.to_string(),
            _ => String::new(),
        };
        // Thin pools, thin volumes and classic snapshots report how full they are; nothing
        // is ever written here (an invalidated snapshot is full).
        let data_percent = if l.attr.get(4..5) == Some("I") {
            "100.00"
        } else if l.attr.starts_with(['t', 'V', 's']) {
            "0.00"
        } else {
            ""
        };
        let extent = self.vgs.iter().find(|v| v.0 == l.vg).map_or(0, |v| v.2);
        json!({
            "vg_name": l.vg, "lv_name": l.name, "lv_size": l.size.to_string(), "lv_attr": l.attr,
            "lv_tags": l.tags.join(","), "pool_lv": l.pool.clone().unwrap_or_default(),
            "data_percent": data_percent, "lv_health_status": "",
            "origin": l.origin.clone().unwrap_or_default(), "origin_size": origin_size,
            "lv_time": l.time,
            "vg_extent_size": extent.to_string(), "vg_free": self.vg_free(&l.vg).to_string(),
        })
    }

    fn lvcreate(&mut self, argv: &[String]) -> Output {
        let (mut size, mut name, mut tags, mut target) = (0, String::new(), vec![], String::new());
        let (mut snapshot, mut readonly, mut skip) = (false, false, true);
        let mut args = argv.iter().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--yes" | "--thin" => {}
                "--snapshot" => snapshot = true,
                "--size" | "--virtualsize" => {
                    size = value().trim_end_matches('b').parse().unwrap_or(0);
                }
                "--name" => name = value(),
                "--addtag" => tags.push(value()),
                "--permission" => readonly = value() == "r",
                "--setactivationskip" => skip = value() == "y",
                "--wipesignatures" | "--zero" => drop(value()),
                positional => target = positional.to_string(),
            }
        }
        let (vg, pool) = match target.split_once('/') {
            Some((vg, pool)) => (vg.to_string(), Some(pool.to_string())),
            None => (target.clone(), None),
        };
        if !self.has_vg(&vg) {
            return vg_not_found(&vg);
        }
        if self.lvs.iter().any(|l| l.vg == vg && l.name == name) {
            return Output::failed(
                5,
                format!("  Logical Volume \"{name}\" already exists in volume group \"{vg}\"\n"),
            );
        }
        if snapshot {
            return self.snapshot(
                vg,
                pool.unwrap_or_default(),
                name,
                size,
                tags,
                readonly,
                skip,
            );
        }
        match &pool {
            Some(p) if !self.lvs.iter().any(|l| l.vg == vg && &l.name == p) => {
                return Output::failed(5, format!("  Pool {p} not found in Volume group {vg}.\n"));
            }
            None if self.vg_free(&vg) < size => {
                return insufficient(&vg);
            }
            _ => {}
        }
        let attr = if pool.is_some() {
            "Vwi-a-tz--"
        } else {
            "-wi-a-----"
        };
        let time = self.next_time();
        self.lvs.push(FakeLv {
            vg,
            name,
            size,
            attr: attr.into(),
            tags,
            pool,
            origin: None,
            time,
        });
        Output::ok("")
    }

    /// `lvcreate --snapshot`: thin without a size, classic with one.
    #[allow(clippy::too_many_arguments)]
    fn snapshot(
        &mut self,
        vg: String,
        origin: String,
        name: String,
        cow: u64,
        tags: Vec<String>,
        readonly: bool,
        skip: bool,
    ) -> Output {
        let Some(o) = self.lvs.iter().position(|l| l.vg == vg && l.name == origin) else {
            return lv_not_found(&format!("{vg}/{origin}"));
        };
        let perm = if readonly { 'r' } else { 'w' };
        let (size, attr, pool) = if cow == 0 {
            let origin = &self.lvs[o];
            if !origin.attr.starts_with('V') {
                return Output::failed(3, "  Snapshot size required for a thick origin.\n");
            }
            let attr = if skip {
                format!("V{perm}i---tz-k")
            } else {
                format!("V{perm}i-a-tz--")
            };
            (origin.size, attr, origin.pool.clone())
        } else {
            // LVM's cap: the origin's size plus its exception table (one extent here).
            let extent = self.vgs.iter().find(|v| v.0 == vg).map_or(1, |v| v.2);
            let size = cow.min(self.lvs[o].size + extent);
            if self.vg_free(&vg) < size {
                return insufficient(&vg);
            }
            self.lvs[o].attr.replace_range(0..1, "o");
            (size, format!("s{perm}i-a-s---"), None)
        };
        let time = self.next_time();
        self.lvs.push(FakeLv {
            vg,
            name,
            size,
            attr,
            tags,
            pool,
            origin: Some(origin),
            time,
        });
        Output::ok("")
    }

    fn lvremove(&mut self, target: &str) -> Output {
        if self.open.iter().any(|o| o == target) {
            return Output::failed(5, format!("  Logical volume {target} in use.\n"));
        }
        let Some(gone) = self
            .lvs
            .iter()
            .position(|l| format!("{}/{}", l.vg, l.name) == target)
            .map(|i| self.lvs.remove(i))
        else {
            return lv_not_found(target);
        };
        // A thick origin takes its classic snapshots with it; thin snapshots stay (and forget
        // their origin).
        self.lvs.retain(|l| {
            !(l.vg == gone.vg && l.origin.as_deref() == Some(&gone.name) && l.attr.starts_with('s'))
        });
        for l in self.lvs.iter_mut().filter(|l| l.vg == gone.vg) {
            if l.origin.as_deref() == Some(&gone.name) {
                l.origin = None;
            }
        }
        // An origin whose last classic snapshot is gone is a plain LV again.
        if let Some(origin) = gone.origin.filter(|_| gone.attr.starts_with('s')) {
            let still = self
                .lvs
                .iter()
                .any(|l| l.vg == gone.vg && l.origin.as_deref() == Some(&origin));
            if let Some(o) = self
                .lvs
                .iter_mut()
                .find(|l| l.vg == gone.vg && l.name == origin && !still)
            {
                o.attr.replace_range(0..1, "-");
            }
        }
        Output::ok("")
    }

    /// `lvextend --size <N>b vg/lv`, with LVM's refusals: not larger, no room in the VG.
    fn lvextend(&mut self, argv: &[String]) -> Output {
        let (Some(size), Some(target)) = (argv.get(2), argv.get(3)) else {
            return Output::failed(3, "  No command with matching syntax recognised.\n");
        };
        let size: u64 = size.trim_end_matches('b').parse().unwrap_or(0);
        let Some(i) = self
            .lvs
            .iter()
            .position(|l| format!("{}/{}", l.vg, l.name) == *target)
        else {
            return lv_not_found(target);
        };
        let (vg, old, thin) = {
            let lv = &self.lvs[i];
            (lv.vg.clone(), lv.size, lv.attr.starts_with('V'))
        };
        if size <= old {
            return Output::failed(
                5,
                format!("  New size given ({size}) not larger than existing size ({old}).\n"),
            );
        }
        if !thin && self.vg_free(&vg) < size - old {
            return Output::failed(
                5,
                "  Insufficient free space: 2 extents needed, but only 1 available\n",
            );
        }
        self.lvs[i].size = size;
        Output::ok("")
    }

    fn lvchange(&mut self, argv: &[String]) -> Output {
        let Some((target, options)) = argv[1..].split_last() else {
            return Output::failed(3, "  No command with matching syntax recognised.\n");
        };
        let Some(lv) = self
            .lvs
            .iter_mut()
            .find(|l| format!("{}/{}", l.vg, l.name) == *target)
        else {
            return lv_not_found(target);
        };
        let selected = options
            .chunks(2)
            .all(|pair| match (pair[0].as_str(), pair.get(1)) {
                ("--select", Some(expr)) => has_exactly(&lv.tags, expr),
                _ => true,
            });
        if !selected {
            return Output::ok("");
        }
        for pair in options.chunks(2) {
            match (pair[0].as_str(), pair.get(1)) {
                ("--addtag", Some(t)) if !lv.tags.contains(t) => lv.tags.push(t.clone()),
                ("--deltag", Some(t)) => lv.tags.retain(|x| x != t),
                _ => {}
            }
        }
        Output::ok(format!("  Logical volume {target} changed.\n"))
    }
}

/// Whether `tags` are exactly the set of the selection `lv_tags=["a","b"]` (the only form the
/// driver uses); any other selection matches nothing.
fn has_exactly(tags: &[String], expr: &str) -> bool {
    let Some(list) = expr
        .strip_prefix("lv_tags=[")
        .and_then(|r| r.strip_suffix(']'))
    else {
        return false;
    };
    let mut want: Vec<&str> = list.split(',').map(|t| t.trim_matches('"')).collect();
    let mut have: Vec<&str> = tags.iter().map(String::as_str).collect();
    want.sort_unstable();
    have.sort_unstable();
    want == have
}

fn vg_not_found(vg: &str) -> Output {
    Output::failed(
        5,
        format!("  Volume group \"{vg}\" not found\n  Cannot process volume group {vg}\n"),
    )
}

fn insufficient(vg: &str) -> Output {
    Output::failed(
        5,
        format!("  Volume group \"{vg}\" has insufficient free space (1 extents): 2 required.\n"),
    )
}

fn lv_not_found(target: &str) -> Output {
    Output::failed(5, format!("  Failed to find logical volume \"{target}\"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::{Lvm, LvmError, NewLv};

    /// The simulation agrees with the real parser and error classification.
    #[tokio::test]
    async fn the_real_lvm_layer_works_against_it() {
        let fake = FakeLvm::new();
        fake.add_vg("vg", 64 << 20, 4 << 20);
        let lvm = Lvm::new(fake.runner());
        let new = NewLv {
            vg: "vg".into(),
            name: "a".into(),
            size: 8 << 20,
            thin_pool: None,
            tags: vec!["t=1".into()],
        };
        lvm.create(&new).await.unwrap();
        assert!(matches!(
            lvm.create(&new).await,
            Err(LvmError::AlreadyExists { .. })
        ));
        let lv = lvm.get("vg", "a").await.unwrap().unwrap();
        assert_eq!(
            (lv.size, lv.tags.clone()),
            (8 << 20, vec!["t=1".to_string()])
        );
        assert_eq!(lvm.vg("vg").await.unwrap().unwrap().free, 56 << 20);
        assert_eq!(lvm.vg("nope").await.unwrap(), None);
        fake.set_open("vg", "a", true);
        assert!(matches!(
            lvm.remove("vg", "a").await,
            Err(LvmError::InUse { .. })
        ));
        fake.set_open("vg", "a", false);
        lvm.remove("vg", "a").await.unwrap();
        assert!(matches!(
            lvm.remove("vg", "a").await,
            Err(LvmError::NotFound { .. })
        ));
    }
}
