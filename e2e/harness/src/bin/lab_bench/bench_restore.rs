//! The benchmark's restore phase: 500 published volumes, the controller killed, the kernel
//! target torn down as a reboot would, and the time until Probe says ready again.

use super::*;

impl Bench {
    /// Starts the controller again; ms until Probe says ready.
    pub(super) async fn restart_controller(&mut self) -> Result<f64, String> {
        self.controller.kill9();
        let started = Instant::now();
        self.controller =
            lab::Driver::start("controller", &self.controller_args, &self.controller_sock);
        let channel = lab::connect(&self.controller_sock).await;
        let mut identity = IdentityClient::new(channel.clone());
        loop {
            match identity.probe(ProbeRequest {}).await {
                Ok(r) if r.get_ref().ready != Some(false) => break,
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                Err(s) => return Err(format!("Probe failed: {s}")),
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err("the controller was not ready after 300 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = ms(started.elapsed());
        self.csi.ctl = lvm_iscsi_csi::csi::controller_client::ControllerClient::new(channel);
        Ok(took)
    }

    /// The restore phase's targets, and ACLs for the fake node on them, in configfs.
    pub(super) fn count_exports() -> (usize, usize) {
        let mut targets = 0;
        let mut acls = 0;
        for e in std::fs::read_dir(LIO_ISCSI).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(IQN_PREFIX) || !name.contains(".bench-r-") {
                continue;
            }
            targets += 1;
            if e.path().join("tpgt_1/acls").join(FAKE_NODE).exists() {
                acls += 1;
            }
        }
        (targets, acls)
    }

    /// (3).
    pub(super) async fn restore(&mut self, n: usize) -> Result<(), String> {
        // Sessions that failed lives left behind would point at targets the "reboot" below
        // removes; their disks would then hang every LVM command's device scan.
        let (_, sessions, _) = quiet(&["iscsiadm", "-m", "session"])?;
        let left = sessions.lines().filter(|l| l.contains(IQN_PREFIX)).count();
        if left > 0 {
            println!("  logging out of {left} sessions that failed lives left behind");
            let _ = quiet(&["iscsiadm", "-m", "node", "--logoutall=all"]);
        }
        let mut template = self.csi.create("bench-r-0", SMALL).await?;
        template.publish = self.csi.publish_to(&template, FAKE_NODE).await?;
        let lv = format!("{}/bench-r-0", self.vg);
        if template.id != lv {
            return Err(format!("expected volume id {lv}, got {}", template.id));
        }
        let tags = must(&["lvs", "--noheadings", "-o", "lv_tags", &lv])?;
        let tags: Vec<&str> = tags.trim().split(',').collect();
        if !tags.iter().any(|t| t.contains("/pub=")) {
            return Err(format!("no publication tag on {lv}: {tags:?}"));
        }
        let started = Instant::now();
        let mut script = String::new();
        for i in 1..n {
            let name = format!("bench-r-{i}");
            script.push_str(&format!(
                "lvcreate -q -an -V {SMALL}b -T {}/{} -n {name}",
                self.vg, self.pool
            ));
            for t in &tags {
                match t.split_once("/name=") {
                    Some((prefix, _)) => {
                        script.push_str(&format!(" --addtag {prefix}/name={name}"))
                    }
                    None => script.push_str(&format!(" --addtag {t}")),
                }
            }
            script.push('\n');
        }
        lvm_shell(&script)?;
        // udev would spend a fifth of a second of guest CPU on every new device (blkid
        // probes, by-id links) for minutes, under the measurement. Its event queue stops for
        // the rest of the run (nothing after this needs it) and LVM makes the device nodes
        // and /dev/VG/LV links itself.
        must(&["udevadm", "control", "--stop-exec-queue"])?;
        must(&[
            "vgchange",
            "-q",
            "-ay",
            "--config",
            "activation/udev_rules=0 activation/udev_sync=0",
            &self.vg,
        ])?;
        let made = must(&[
            "lvs",
            "--noheadings",
            "-o",
            "lv_name",
            "-S",
            "lv_name=~^bench-r-",
            &self.vg,
        ])?
        .lines()
        .count();
        println!(
            "  {made} published volumes in LVM ({} by hand in {:.0} s)",
            made.saturating_sub(1),
            started.elapsed().as_secs_f64()
        );
        if made != n {
            return Err(format!("{made} bench-r-* LVs, wanted {n}"));
        }

        // A reboot: the controller dies and the kernel forgets the target configuration.
        self.controller.kill9();
        let cleared = lio::clear(IQN_PREFIX, DRIVER_HBA)?;
        println!("  controller killed (SIGKILL), {cleared} of our targets removed from configfs");
        let took = self.restart_controller().await?;
        let seen = Self::count_exports();
        println!(
            "  restarted: Probe ready after {took:.0} ms, {} targets and {} ACLs in configfs",
            seen.0, seen.1
        );
        self.results.restore_n = n;
        self.results.restore_ms = took;
        self.results.restore_seen = seen;
        // A crash without a reboot: everything is still in the kernel.
        let intact = self.restart_controller().await?;
        println!("  restarted again with the exports intact: ready after {intact:.0} ms");
        self.results.restart_intact_ms = intact;
        self.results.rss_restored = rss(self.controller.pid()).0;
        Ok(())
    }
}

/// Feeds `script` to one `lvm` shell process (one process for many commands).
fn lvm_shell(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("lvm")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run lvm: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to lvm: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for lvm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "lvm shell failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
