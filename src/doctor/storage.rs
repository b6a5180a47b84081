//! `doctor storage`: what controller mode needs on a storage node. The volume group answers
//! `vgs` (so LVM can run), the thin pool exists, the kernel target is usable (LIO: configfs
//! mounted, target_core_mod and iscsi_target_mod loaded; tgt: tgtd answers), and the portal
//! port is free or held by that target.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{distro, one_line, port, procfs, read, Finding, Host};
use crate::cli::{DoctorStorageArgs, TargetBackendKind};
use crate::error::full_message;
use crate::exec::{Cmd, ExecError};
use crate::lvm::{Lvm, LvmError};

/// LVM's exit code when an object does not exist.
const LVM_NOT_FOUND: i32 = 5;

/// Runs every storage check.
pub async fn check(host: &Host, args: &DoctorStorageArgs) -> Vec<Finding> {
    let mut findings = vec![volume_group(host, &args.volume_group).await];
    if let Some(pool) = &args.thin_pool {
        findings.push(thin_pool(host, &args.volume_group, pool).await);
    }
    match args.target_backend {
        TargetBackendKind::Lio => {
            findings.push(configfs(host, &args.configfs_root));
            findings.push(target_core(host, &args.configfs_root).await);
            findings.push(iscsi_target(host).await);
        }
        TargetBackendKind::Tgt => findings.push(tgtd(host).await),
    }
    findings.push(port::portal_port(
        host,
        args.portals.first(),
        args.target_backend,
    ));
    findings
}

/// An LVM JSON report (`--units b --nosuffix`: numbers as strings). The LVM layer's reports
/// have no thin pool usage columns, hence this one for `lvs -o ...,data_percent`.
#[derive(Debug, Deserialize)]
struct Report<T> {
    /// One entry per report type; we ask for one.
    report: Vec<HashMap<String, Vec<T>>>,
}

/// The first row of an LVM JSON report.
fn first_row<T: for<'de> Deserialize<'de>>(stdout: &[u8]) -> Option<T> {
    let r: Report<T> = serde_json::from_slice(stdout).ok()?;
    r.report
        .into_iter()
        .next()?
        .into_values()
        .next()?
        .into_iter()
        .next()
}

/// An `lvs` row of the thin pool.
#[derive(Debug, Deserialize)]
struct LvRow {
    /// Attribute string; `t` first for a thin pool.
    lv_attr: String,
    /// Size in bytes.
    lv_size: String,
    /// Data usage in percent (thin pools).
    #[serde(default)]
    data_percent: String,
    /// Metadata usage in percent (thin pools).
    #[serde(default)]
    metadata_percent: String,
}

/// Bytes as a short human size (`1.5 GiB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The finding for an LVM tool that could not run at all.
fn lvm_missing(name: &'static str, e: &ExecError) -> Finding {
    Finding::fail(
        name,
        format!("LVM cannot run: {e}"),
        "install lvm2 (the controller image carries it; on the host: apt install lvm2)",
    )
}

/// `vgs VG` answers (through the same LVM layer the controller uses), and how much space
/// is left.
async fn volume_group(host: &Host, vg: &str) -> Finding {
    const NAME: &str = "volume-group";
    match Lvm::new(host.runner.clone()).vg(vg).await {
        Ok(Some(v)) => Finding::ok(
            NAME,
            format!("{vg}: {} total, {} free", human(v.size), human(v.free)),
        ),
        Ok(None) => Finding::fail(
            NAME,
            format!("volume group {vg} not found"),
            format!("create it (vgcreate {vg} /dev/<disk>) or pass the right --volume-group"),
        ),
        Err(LvmError::Command(e @ ExecError::Spawn { .. })) => lvm_missing(NAME, &e),
        Err(e) => Finding::fail(
            NAME,
            one_line(&full_message(&e)),
            "run `vgs` as root on this host and fix what it reports",
        ),
    }
}

/// The thin pool exists, is a thin pool, and is not nearly full.
async fn thin_pool(host: &Host, vg: &str, pool: &str) -> Finding {
    const NAME: &str = "thin-pool";
    let lv = format!("{vg}/{pool}");
    let cmd = Cmd::new("lvs").args([
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_name,lv_attr,lv_size,data_percent,metadata_percent",
        &lv,
    ]);
    let out = match host.output(cmd).await {
        Ok(out) => out,
        Err(e) => return lvm_missing(NAME, &e),
    };
    if out.code == LVM_NOT_FOUND {
        return Finding::fail(
            NAME,
            format!("thin pool {lv} not found: {}", one_line(&out.stderr)),
            format!("create it (lvcreate -L <size> -T {lv}) or pass the right --thin-pool"),
        );
    }
    if !out.success() {
        return Finding::fail(
            NAME,
            format!(
                "lvs {lv} failed (exit {}): {}",
                out.code,
                one_line(&out.stderr)
            ),
            "run `lvs` as root on this host and fix what it reports",
        );
    }
    let Some(row) = first_row::<LvRow>(&out.stdout) else {
        return Finding::warn(
            NAME,
            format!("lvs {lv} answered but its report could not be read"),
            "check the lvm2 version (JSON reports need lvm2 2.02.158 or later)",
        );
    };
    if !row.lv_attr.starts_with('t') {
        return Finding::fail(
            NAME,
            format!("{lv} is not a thin pool (lv_attr {})", row.lv_attr),
            "name a thin pool LV (lv_attr starting with t) in --thin-pool",
        );
    }
    let pct = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    let (data, meta) = (pct(&row.data_percent), pct(&row.metadata_percent));
    let size = row.lv_size.parse::<u64>().map(human).unwrap_or(row.lv_size);
    let detail = format!("{lv}: {size}, data {data:.1}% used, metadata {meta:.1}% used");
    const NEARLY_FULL: f64 = 90.0;
    if data >= NEARLY_FULL || meta >= NEARLY_FULL {
        Finding::warn(
            NAME,
            detail,
            format!("extend it: lvextend -L +<size> {lv} (metadata: lvextend --poolmetadatasize +<size> {lv})"),
        )
    } else {
        Finding::ok(NAME, detail)
    }
}

/// configfs is mounted where the LIO backend writes.
fn configfs(host: &Host, root: &Path) -> Finding {
    const NAME: &str = "configfs";
    let mounts = match read(&host.proc("mounts")) {
        Ok(m) => m,
        Err(e) => return Finding::warn(NAME, e, "check that /proc is mounted"),
    };
    let point = root.to_string_lossy();
    if procfs::configfs_mounted(&mounts, &point) {
        Finding::ok(NAME, format!("mounted at {point}"))
    } else {
        Finding::fail(
            NAME,
            format!("configfs is not mounted at {point}"),
            format!(
                "mount -t configfs none {point} (in a pod: mount the host's /sys/kernel/config)"
            ),
        )
    }
}

/// target_core_mod is loaded: LIO's `target/` directory exists in configfs.
async fn target_core(host: &Host, root: &Path) -> Finding {
    const NAME: &str = "target_core_mod";
    if host.module_loaded(NAME) && root.join("target").is_dir() {
        return Finding::ok(
            NAME,
            format!("loaded ({} present)", root.join("target").display()),
        );
    }
    missing_module(host, NAME, true).await
}

/// iscsi_target_mod is loaded, or at least loadable (LIO requests it on first use).
async fn iscsi_target(host: &Host) -> Finding {
    const NAME: &str = "iscsi_target_mod";
    if host.module_loaded(NAME) {
        return Finding::ok(NAME, "loaded");
    }
    missing_module(host, NAME, false).await
}

/// The finding for a module that is not loaded; `needed_now` when the driver cannot work
/// until it is loaded (otherwise the kernel loads it on demand).
async fn missing_module(host: &Host, name: &'static str, needed_now: bool) -> Finding {
    let persist = format!("modprobe {name}; echo {name} > /etc/modules-load.d/{name}.conf");
    match host.module_loadable(name).await {
        Some(true) if !needed_now => Finding::warn(
            name,
            "not loaded yet; the kernel loads it when the first target is created",
            persist,
        ),
        Some(true) => Finding::fail(name, "not loaded (but available)", persist),
        Some(false) => Finding::fail(
            name,
            "not loaded and not available for the running kernel",
            distro::host_module_fix(host, name),
        ),
        None => Finding::fail(
            name,
            "not loaded (modprobe could not run to tell whether it is available)",
            persist,
        ),
    }
}

/// tgtd answers tgtadm.
async fn tgtd(host: &Host) -> Finding {
    const NAME: &str = "tgtd";
    let cmd = Cmd::new("tgtadm").args(["--lld", "iscsi", "--op", "show", "--mode", "sys"]);
    match host.output(cmd).await {
        Ok(out) if out.success() => Finding::ok(NAME, "tgtd answers tgtadm"),
        Ok(out) => Finding::fail(
            NAME,
            format!(
                "tgtd does not answer (exit {}): {}",
                out.code,
                one_line(&out.stderr)
            ),
            "systemctl enable --now tgt",
        ),
        Err(e) => Finding::fail(
            NAME,
            format!("tgtadm cannot run: {e}"),
            "install tgt (Debian/Ubuntu) or scsi-target-utils (RHEL)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{blocking, Status};
    use crate::exec::fake::FakeRunner;
    use crate::exec::Output;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// Captured in the kernel lab.
    const VGS: &str = r#"  {
      "report": [
          {
              "vg": [
                  {"vg_name":"csivg", "vg_size":"264241152", "vg_free":"121634816", "vg_extent_size":"4194304"}
              ]
          }
      ]
  }
"#;
    const LVS_POOL: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool0", "lv_attr":"twi-a-tz--", "lv_size":"134217728", "data_percent":"0.00", "metadata_percent":"10.84"}
              ]
          }
      ]
  }
"#;
    const MODULES: &str = "iscsi_target_mod 368640 0 - Live 0xffffffffc05fe000
target_core_mod 450560 3 iscsi_target_mod,target_core_file,target_core_iblock, Live 0xffffffffc0587000
configfs 57344 3 iscsi_target_mod,target_core_mod, Live 0xffffffffc0578000
";
    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const LIO_LISTENING: &str = "   0: 00000000:0CBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11157 1 0000000007466374 100 0 0 10 0\n";

    struct Fixture {
        dir: tempfile::TempDir,
        runner: Arc<FakeRunner>,
    }

    impl Fixture {
        fn new(respond: impl Fn(&[String]) -> Output + Send + Sync + 'static) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for d in ["proc/net", "sys/module", "configfs/target"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            let fx = Fixture {
                dir,
                runner: Arc::new(FakeRunner::new(respond)),
            };
            let configfs = fx.path("configfs");
            fx.write(
                "proc/mounts",
                &format!(
                    "proc /proc proc rw 0 0\nnone {} configfs rw,relatime 0 0\n",
                    configfs.display()
                ),
            );
            fx.write("proc/modules", MODULES);
            fx.write("proc/net/tcp", TCP_HEADER);
            fx
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.path(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        /// A process `pid` named `comm` holding socket `inode`.
        fn process(&self, pid: u32, comm: &str, inode: u64) {
            self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
            std::fs::create_dir_all(self.path(&format!("proc/{pid}/fd"))).unwrap();
            std::os::unix::fs::symlink(
                format!("socket:[{inode}]"),
                self.path(&format!("proc/{pid}/fd/3")),
            )
            .unwrap();
        }

        async fn run(&self, backend: TargetBackendKind, pool: Option<&str>) -> Vec<Finding> {
            let host = Host {
                runner: self.runner.clone(),
                proc_root: self.path("proc"),
                sys_root: self.path("sys"),
            };
            let args = DoctorStorageArgs {
                volume_group: "csivg".into(),
                thin_pool: pool.map(String::from),
                target_backend: backend,
                configfs_root: self.path("configfs"),
                portals: vec!["10.0.0.5:3260".parse().unwrap()],
            };
            check(&host, &args).await
        }
    }

    fn find<'a>(f: &'a [Finding], name: &str) -> &'a Finding {
        f.iter().find(|x| x.name == name).expect(name)
    }

    fn lvm_ok(argv: &[String]) -> Output {
        match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            "lvs" => Output::ok(LVS_POOL),
            _ => Output::failed(1, "unexpected"),
        }
    }

    #[tokio::test]
    async fn a_good_lio_host_passes() {
        let fx = Fixture::new(lvm_ok);
        fx.write("proc/net/tcp", &format!("{TCP_HEADER}{LIO_LISTENING}"));
        fx.process(42, "sshd", 999);
        let f = fx.run(TargetBackendKind::Lio, Some("pool0")).await;
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:#?}");
        assert_eq!(
            find(&f, "volume-group").detail,
            "csivg: 252.0 MiB total, 116.0 MiB free"
        );
        assert_eq!(
            find(&f, "thin-pool").detail,
            "csivg/pool0: 128.0 MiB, data 0.0% used, metadata 10.8% used"
        );
        assert!(find(&f, "portal-port")
            .detail
            .contains("kernel target (LIO"));
        assert_eq!(
            fx.runner.calls(),
            [
                "vgs --reportformat json --units b --nosuffix -o vg_name,vg_size,vg_free,vg_extent_size csivg",
                "lvs --reportformat json --units b --nosuffix -o lv_name,lv_attr,lv_size,data_percent,metadata_percent csivg/pool0",
            ]
        );
    }

    #[tokio::test]
    async fn missing_lvm_objects_fail_with_a_fix() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::failed(
                5,
                "  Volume group \"csivg\" not found\n  Cannot process volume group csivg\n",
            ),
            "lvs" => Output::failed(5, "  Volume group \"csivg\" not found\n"),
            _ => Output::ok(""),
        });
        let f = fx.run(TargetBackendKind::Lio, Some("pool0")).await;
        assert!(blocking(&f));
        let vg = find(&f, "volume-group");
        assert_eq!(vg.detail, "volume group csivg not found");
        assert!(vg
            .fix
            .as_deref()
            .unwrap()
            .starts_with("create it (vgcreate csivg"));
        assert_eq!(find(&f, "thin-pool").status, Status::Fail);
        assert_eq!(find(&f, "portal-port").detail, "port 3260 is free");
    }

    #[tokio::test]
    async fn a_plain_lv_or_a_full_pool_is_reported() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            _ => Output::ok(LVS_POOL.replace("twi-a-tz--", "-wi-a-----")),
        });
        let f = fx.run(TargetBackendKind::Lio, Some("pool0")).await;
        assert_eq!(find(&f, "thin-pool").status, Status::Fail);
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            _ => Output::ok(LVS_POOL.replace("\"0.00\"", "\"93.50\"")),
        });
        let f = fx.run(TargetBackendKind::Lio, Some("pool0")).await;
        let p = find(&f, "thin-pool");
        assert_eq!(p.status, Status::Warn);
        assert!(p.fix.as_deref().unwrap().contains("lvextend"));
        assert!(!blocking(&f));
    }

    #[tokio::test]
    async fn lio_without_configfs_or_modules_fails() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            "modprobe" => Output::failed(1, "modprobe: FATAL: Module not found"),
            _ => Output::failed(1, "unexpected"),
        });
        fx.write("proc/mounts", "proc /proc proc rw 0 0\n");
        fx.write("proc/modules", "");
        std::fs::remove_dir(fx.path("configfs/target")).unwrap();
        let f = fx.run(TargetBackendKind::Lio, None).await;
        assert_eq!(find(&f, "configfs").status, Status::Fail);
        assert_eq!(find(&f, "target_core_mod").status, Status::Fail);
        let iscsi = find(&f, "iscsi_target_mod");
        assert_eq!(iscsi.status, Status::Fail);
        assert!(iscsi.detail.contains("not available"), "{iscsi:?}");
        assert!(fx
            .runner
            .calls()
            .contains(&"modprobe -n iscsi_target_mod".to_string()));
    }

    #[tokio::test]
    async fn an_unloaded_but_available_iscsi_target_mod_is_a_warning() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            _ => Output::ok(""),
        });
        fx.write("proc/modules", "target_core_mod 450560 0 - Live 0x0\n");
        let f = fx.run(TargetBackendKind::Lio, None).await;
        assert_eq!(find(&f, "target_core_mod").status, Status::Ok);
        assert_eq!(find(&f, "iscsi_target_mod").status, Status::Warn);
        assert!(!blocking(&f));
    }

    #[tokio::test]
    async fn a_port_held_by_another_process_is_named() {
        let fx = Fixture::new(lvm_ok);
        fx.write("proc/net/tcp", &format!("{TCP_HEADER}{LIO_LISTENING}"));
        fx.process(77, "tgtd", 11157);
        let f = fx.run(TargetBackendKind::Lio, None).await;
        let p = find(&f, "portal-port");
        assert_eq!(p.status, Status::Fail);
        assert_eq!(
            p.detail,
            "tgtd (pid 77) listens on 0.0.0.0:3260; LIO cannot bind its portal"
        );

        let fx = Fixture::new(lvm_ok);
        fx.write("proc/net/tcp", &format!("{TCP_HEADER}{LIO_LISTENING}"));
        fx.process(78, "nc", 11157);
        let f = fx.run(TargetBackendKind::Lio, None).await;
        assert_eq!(
            find(&f, "portal-port").detail,
            "nc (pid 78) listens on 0.0.0.0:3260"
        );
    }

    #[tokio::test]
    async fn tgt_backend_checks_tgtd_and_its_port() {
        let fx = Fixture::new(|argv| match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            "tgtadm" => Output::ok("System:\n    State: ready\n"),
            _ => Output::failed(1, "unexpected"),
        });
        fx.write("proc/net/tcp", &format!("{TCP_HEADER}{LIO_LISTENING}"));
        fx.process(77, "tgtd", 11157);
        let f = fx.run(TargetBackendKind::Tgt, None).await;
        assert!(f.iter().all(|x| x.status == Status::Ok), "{f:#?}");
        assert!(f.iter().all(|x| x.name != "configfs"));

        let fx = Fixture::new(|argv| {
            match argv[0].as_str() {
            "vgs" => Output::ok(VGS),
            _ => Output::failed(107, "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected"),
        }
        });
        fx.write("proc/net/tcp", &format!("{TCP_HEADER}{LIO_LISTENING}"));
        let f = fx.run(TargetBackendKind::Tgt, None).await;
        let t = find(&f, "tgtd");
        assert_eq!(
            (t.status, t.fix.as_deref()),
            (Status::Fail, Some("systemctl enable --now tgt"))
        );
        assert!(find(&f, "portal-port")
            .detail
            .contains("held by the kernel"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
    }
}
