//! LVM through its command-line tools (`lvs`, `vgs`, `lvcreate`, `lvremove`, `lvchange`),
//! run with the crate's [`Runner`](crate::exec::Runner): reports read as JSON
//! ([`report`]; a thin pool's usage, [`pool`]), the driver's state kept in LV tags ([`tags`]), failures classified at the
//! source ([`error`]).
//!
//! Contract: every method is one LVM command; "not found" is [`LvmError::NotFound`] and the
//! caller decides whether that is success (DeleteVolume) or an error (publish).

pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod pool;
pub mod report;
pub mod tags;

pub use error::LvmError;
pub use pool::PoolUsage;
pub use report::{Lv, LvKind, Vg, VgLvs, VgSpace};

use crate::exec::{Cmd, SharedRunner};

/// What [`Lvm::create`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLv {
    /// Volume group.
    pub vg: String,
    /// LV name.
    pub name: String,
    /// Size in bytes, a multiple of the VG's extent size.
    pub size: u64,
    /// Thin pool in `vg` for a thin volume; `None` for a thick LV.
    pub thin_pool: Option<String>,
    /// Tags set in the same `lvcreate` call, so the LV never exists without them.
    pub tags: Vec<String>,
}

/// What [`Lvm::snapshot`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Volume group of the origin and the snapshot.
    pub vg: String,
    /// The LV to snapshot.
    pub origin: String,
    /// The snapshot's LV name.
    pub name: String,
    /// COW size in bytes of a classic snapshot (of a thick LV); `None` for a thin snapshot
    /// (of a thin LV), which takes no space up front.
    pub cow_size: Option<u64>,
    /// A writable, active snapshot (a new thin volume) rather than a read-only one.
    pub writable: bool,
    /// Tags set in the same `lvcreate` call.
    pub tags: Vec<String>,
}

/// The LVM command-line tools.
#[derive(Clone)]
pub struct Lvm {
    /// Runs the tools.
    runner: SharedRunner,
}

impl Lvm {
    /// LVM driven through `runner`.
    pub fn new(runner: SharedRunner) -> Self {
        Lvm { runner }
    }

    /// Every LV (internal ones excluded) of every VG, in one `lvs` call.
    pub async fn list(&self) -> Result<Vec<Lv>, LvmError> {
        self.lvs(&[]).await
    }

    /// The LVs of `vg`.
    pub async fn list_vg(&self, vg: &str) -> Result<Vec<Lv>, LvmError> {
        self.lvs(&[vg]).await
    }

    /// The LVs of `vg` with its extent size and free bytes, in one `lvs` call (no `vgs`
    /// needed while the VG has an LV); `None` when the VG does not exist.
    pub async fn list_vg_space(&self, vg: &str) -> Result<Option<VgLvs>, LvmError> {
        let cmd = Cmd::new("lvs")
            .args(report_args(report::LV_VG_FIELDS))
            .arg(vg);
        let out = match self.output(&cmd).await {
            Ok(out) => out,
            Err(LvmError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        report::parse_vg_lvs(&out)
            .map(Some)
            .map_err(|e| LvmError::Parse {
                command: cmd.display(),
                detail: e.0,
            })
    }

    /// LV `vg/name`, or `None` when it or its VG does not exist.
    pub async fn get(&self, vg: &str, name: &str) -> Result<Option<Lv>, LvmError> {
        match self.lvs(&[&format!("{vg}/{name}")]).await {
            Ok(lvs) => Ok(lvs.into_iter().find(|lv| lv.vg == vg && lv.name == name)),
            Err(LvmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// VG `name`, or `None` when it does not exist.
    pub async fn vg(&self, name: &str) -> Result<Option<Vg>, LvmError> {
        match self.vgs(&[name]).await {
            Ok(vgs) => Ok(vgs.into_iter().find(|vg| vg.name == name)),
            Err(LvmError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The VGs named (all VGs when `names` is empty); a missing one is
    /// [`LvmError::NotFound`].
    pub async fn vgs(&self, names: &[&str]) -> Result<Vec<Vg>, LvmError> {
        let cmd = Cmd::new("vgs")
            .args(report_args(report::VG_FIELDS))
            .args(names.iter().copied());
        let out = self.output(&cmd).await?;
        report::parse_vgs(&out).map_err(|e| LvmError::Parse {
            command: cmd.display(),
            detail: e.0,
        })
    }

    /// The size and usage of thin pool `vg/pool`: a missing pool or VG is
    /// [`LvmError::NotFound`] (with LVM's message), a report without its row
    /// [`LvmError::Parse`].
    pub async fn pool_usage(&self, vg: &str, pool: &str) -> Result<PoolUsage, LvmError> {
        let cmd = Cmd::new("lvs")
            .args(report_args(pool::POOL_FIELDS))
            .arg(format!("{vg}/{pool}"));
        let out = self.output(&cmd).await?;
        let parse_error = |detail: String| LvmError::Parse {
            command: cmd.display(),
            detail,
        };
        pool::parse_pool_usage(&out)
            .map_err(|e| parse_error(e.0))?
            .into_iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| parse_error(format!("no row for {pool}")))
    }

    /// Creates an LV with its tags. A thick LV gets its signatures wiped and its start
    /// zeroed, so an extent that held another volume's filesystem never shows it to the node
    /// (which formats only blank devices); a thin volume reads zeros until written.
    pub async fn create(&self, lv: &NewLv) -> Result<(), LvmError> {
        let size = format!("{}b", lv.size);
        let mut cmd = Cmd::new("lvcreate").arg("--yes");
        cmd = match &lv.thin_pool {
            Some(pool) => cmd
                .args(["--thin", "--virtualsize", &size, "--name", &lv.name])
                .arg(format!("{}/{pool}", lv.vg)),
            None => cmd
                .args(["--wipesignatures", "y", "--zero", "y", "--size", &size])
                .args(["--name", &lv.name])
                .arg(&lv.vg),
        };
        for tag in &lv.tags {
            cmd = cmd.args(["--addtag", tag]);
        }
        self.output(&cmd).await.map(drop)
    }

    /// Removes LV `vg/name`.
    pub async fn remove(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        let cmd = Cmd::new("lvremove")
            .arg("--yes")
            .arg(format!("{vg}/{name}"));
        self.output(&cmd).await.map(drop)
    }

    /// Grows LV `vg/name` (thick or thin) to `size` bytes, a multiple of the VG's extent
    /// size larger than its current size: lvextend refuses a size at or below the current
    /// one, so the caller compares first. A thin volume may pass its pool's size (LVM warns,
    /// the overprovisioning check is the caller's).
    pub async fn extend(&self, vg: &str, name: &str, size: u64) -> Result<(), LvmError> {
        let cmd = Cmd::new("lvextend")
            .args(["--size", &format!("{size}b")])
            .arg(format!("{vg}/{name}"));
        self.output(&cmd).await.map(drop)
    }

    /// Adds and deletes tags of LV `vg/name` in one metadata update. Adding a tag the LV
    /// has, or deleting one it lacks, succeeds (checked on LVM 2.03.16): repeats are safe.
    pub async fn change_tags(
        &self,
        vg: &str,
        name: &str,
        add: &[String],
        delete: &[String],
    ) -> Result<(), LvmError> {
        let mut cmd = Cmd::new("lvchange");
        for tag in add {
            cmd = cmd.args(["--addtag", tag]);
        }
        for tag in delete {
            cmd = cmd.args(["--deltag", tag]);
        }
        self.output(&cmd.arg(format!("{vg}/{name}")))
            .await
            .map(drop)
    }

    /// Creates snapshot `snap.name` of LV `snap.vg/snap.origin`, with its tags in the same
    /// call. LVM copies no tags from the origin (checked on LVM 2.03.16), so a snapshot never
    /// carries a volume's name or publications.
    pub async fn snapshot(&self, snap: &NewSnapshot) -> Result<(), LvmError> {
        let mut cmd = Cmd::new("lvcreate").args(["--yes", "--snapshot", "--name", &snap.name]);
        if let Some(cow) = snap.cow_size {
            // More than the origin can need is reduced by LVM to the maximum usable size.
            cmd = cmd.args(["--size", &format!("{cow}b")]);
        }
        cmd = if snap.writable {
            // A thin snapshot is created with activation skipped: a volume needs its device.
            cmd.args(["--permission", "rw", "--setactivationskip", "n"])
        } else {
            cmd.args(["--permission", "r"])
        };
        cmd = cmd.arg(format!("{}/{}", snap.vg, snap.origin));
        for tag in &snap.tags {
            cmd = cmd.args(["--addtag", tag]);
        }
        self.output(&cmd).await.map(drop)
    }

    /// [`Self::change_tags`] only if the LV's tags are exactly `expected` (any order), checked
    /// by LVM under its VG lock (`--select lv_tags=[...]`): `true` when LVM changed the LV,
    /// `false` when its tags were different and nothing was written.
    pub async fn change_tags_if(
        &self,
        vg: &str,
        name: &str,
        add: &[String],
        delete: &[String],
        expected: &[String],
    ) -> Result<bool, LvmError> {
        if expected.is_empty() {
            // `lv_tags=[]` is not a selection LVM accepts; our volumes always carry tags.
            return Ok(false);
        }
        let mut cmd = Cmd::new("lvchange");
        for tag in add {
            cmd = cmd.args(["--addtag", tag]);
        }
        for tag in delete {
            cmd = cmd.args(["--deltag", tag]);
        }
        // Tags have no quotes or commas (LVM's tag alphabet), so quoting each is exact.
        let list: Vec<String> = expected.iter().map(|t| format!("\"{t}\"")).collect();
        let cmd = cmd
            .arg("--select")
            .arg(format!("lv_tags=[{}]", list.join(",")))
            .arg(format!("{vg}/{name}"));
        let out = self.output(&cmd).await?;
        // LVM says so for every LV it changed; an LV the selection left out gets nothing.
        let changed = format!("Logical volume {vg}/{name} changed.");
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .any(|l| l.trim() == changed))
    }

    async fn lvs(&self, selection: &[&str]) -> Result<Vec<Lv>, LvmError> {
        let cmd = Cmd::new("lvs")
            .args(report_args(report::LV_FIELDS))
            .args(selection.iter().copied());
        let out = self.output(&cmd).await?;
        report::parse_lvs(&out).map_err(|e| LvmError::Parse {
            command: cmd.display(),
            detail: e.0,
        })
    }

    /// Runs `cmd`, returning stdout, or the classified failure.
    async fn output(&self, cmd: &Cmd) -> Result<Vec<u8>, LvmError> {
        let out = self.runner.output(cmd).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(LvmError::classify(cmd, &out))
        }
    }
}

/// The arguments of a JSON report in bytes with the columns `fields`.
fn report_args(fields: &str) -> [&str; 7] {
    [
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        fields,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeRunner;
    use crate::exec::Output;
    use std::sync::Arc;

    const ONE_LV: &str = r#"{"report":[{"lv":[{"vg_name":"csivg", "lv_name":"pvc-1", "lv_size":"8388608", "lv_attr":"-wi-a-----", "lv_tags":"lvm-iscsi-csi/name=pvc-1", "pool_lv":"", "lv_health_status":""}]}]}"#;

    fn fake_lvm(f: impl Fn(&[String]) -> Output + Send + Sync + 'static) -> (Lvm, Arc<FakeRunner>) {
        let fake = Arc::new(FakeRunner::new(f));
        (Lvm::new(fake.clone()), fake)
    }

    #[tokio::test]
    async fn create_thick_wipes_and_tags_in_one_call() {
        let (lvm, fake) = fake_lvm(|_| Output::ok(""));
        lvm.create(&NewLv {
            vg: "csivg".into(),
            name: "pvc-1".into(),
            size: 8388608,
            thin_pool: None,
            tags: vec![
                "lvm-iscsi-csi/name=pvc-1".into(),
                "lvm-iscsi-csi/fs=xfs".into(),
            ],
        })
        .await
        .unwrap();
        assert_eq!(
            fake.calls(),
            [
                "lvcreate --yes --wipesignatures y --zero y --size 8388608b --name pvc-1 csivg \
              --addtag lvm-iscsi-csi/name=pvc-1 --addtag lvm-iscsi-csi/fs=xfs"
            ]
        );
    }

    #[tokio::test]
    async fn create_thin_uses_the_pool() {
        let (lvm, fake) = fake_lvm(|_| Output::ok(""));
        lvm.create(&NewLv {
            vg: "csivg".into(),
            name: "t".into(),
            size: 4194304,
            thin_pool: Some("pool0".into()),
            tags: vec!["lvm-iscsi-csi/name=t".into()],
        })
        .await
        .unwrap();
        assert_eq!(
            fake.calls(),
            [
                "lvcreate --yes --thin --virtualsize 4194304b --name t csivg/pool0 \
              --addtag lvm-iscsi-csi/name=t"
            ]
        );
    }

    #[tokio::test]
    async fn create_reports_insufficient_space() {
        let (lvm, _) = fake_lvm(|_| {
            Output::failed(
                5,
                "  Volume group \"csivg\" has insufficient free space (188 extents): 512 required.\n",
            )
        });
        let err = lvm
            .create(&NewLv {
                vg: "csivg".into(),
                name: "big".into(),
                size: 1 << 31,
                thin_pool: None,
                tags: vec![],
            })
            .await
            .unwrap_err();
        assert!(matches!(err, LvmError::InsufficientSpace { .. }), "{err}");
    }

    #[tokio::test]
    async fn get_reads_one_lv_and_maps_not_found_to_none() {
        let (lvm, fake) = fake_lvm(|argv| {
            if argv.last().map(String::as_str) == Some("csivg/pvc-1") {
                Output::ok(ONE_LV)
            } else {
                Output::failed(5, "  Failed to find logical volume \"csivg/nope\"\n")
            }
        });
        let lv = lvm.get("csivg", "pvc-1").await.unwrap().unwrap();
        assert_eq!(lv.size, 8388608);
        assert_eq!(lvm.get("csivg", "nope").await.unwrap(), None);
        assert_eq!(
            fake.calls()[0],
            "lvs --reportformat json --units b --nosuffix -o \
             vg_name,lv_name,lv_size,lv_attr,lv_tags,pool_lv,data_percent,lv_health_status,\
             origin,origin_size,lv_time csivg/pvc-1"
        );
    }

    #[tokio::test]
    async fn get_propagates_other_failures() {
        let (lvm, _) = fake_lvm(|_| Output::failed(5, "  Device mapper failure\n"));
        assert!(matches!(
            lvm.get("csivg", "x").await,
            Err(LvmError::Command(_))
        ));
        let (lvm, _) = fake_lvm(|_| Output::ok("garbage"));
        assert!(matches!(
            lvm.get("csivg", "x").await,
            Err(LvmError::Parse { .. })
        ));
    }

    #[tokio::test]
    async fn list_vg_space_is_one_lvs_and_a_missing_vg_is_none() {
        let (lvm, fake) = fake_lvm(|argv| match argv.last().map(String::as_str) {
            Some("csivg") => Output::ok(
                r#"{"report":[{"lv":[{"vg_name":"csivg", "lv_name":"pool0", "lv_size":"2147483648", "lv_attr":"twi-aotz--", "lv_tags":"", "pool_lv":"", "data_percent":"0.00", "lv_health_status":"", "vg_extent_size":"4194304", "vg_free":"2130706432"}]}]}"#,
            ),
            _ => Output::failed(
                5,
                "  Volume group \"novg\" not found\n  Cannot process volume group novg\n",
            ),
        });
        let vg = lvm.list_vg_space("csivg").await.unwrap().unwrap();
        assert_eq!(vg.space.map(|s| s.extent_size), Some(4194304));
        assert_eq!(vg.lvs[0].name, "pool0");
        assert_eq!(lvm.list_vg_space("novg").await.unwrap(), None);
        assert_eq!(
            fake.calls()[0],
            "lvs --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_size,lv_attr,\
             lv_tags,pool_lv,origin,origin_size,lv_time,vg_extent_size,vg_free csivg"
        );
    }

    #[tokio::test]
    async fn change_tags_if_tells_whether_lvm_changed_the_lv() {
        // What LVM 2.03.16 printed in the lab: the line when the selection matched, nothing
        // (and exit 0) when it did not.
        let (lvm, fake) = fake_lvm(|argv| {
            if argv.iter().any(|a| a.contains("\"n=1\",\"p=2\"")) {
                Output::ok("  Logical volume csivg/pvc-1 changed.\n")
            } else {
                Output::ok("")
            }
        });
        let expected = ["n=1".to_string(), "p=2".to_string()];
        assert!(lvm
            .change_tags_if(
                "csivg",
                "pvc-1",
                &["a=1".into()],
                &["p=2".into()],
                &expected
            )
            .await
            .unwrap());
        assert!(!lvm
            .change_tags_if("csivg", "pvc-1", &["a=1".into()], &[], &expected[..1])
            .await
            .unwrap());
        assert!(!lvm
            .change_tags_if("csivg", "pvc-1", &["a=1".into()], &[], &[])
            .await
            .unwrap());
        assert_eq!(
            fake.calls(),
            [
                r#"lvchange --addtag a=1 --deltag p=2 --select lv_tags=["n=1","p=2"] csivg/pvc-1"#,
                r#"lvchange --addtag a=1 --select lv_tags=["n=1"] csivg/pvc-1"#
            ]
        );
    }

    #[tokio::test]
    async fn pool_usage_is_one_lvs_of_the_pool() {
        let (lvm, fake) = fake_lvm(|argv| match argv.last().map(String::as_str) {
            Some("csivg/pool0") => Output::ok(
                r#"{"report":[{"lv":[{"lv_name":"pool0", "lv_attr":"twi-a-tz--", "lv_size":"134217728", "data_percent":"0.00", "metadata_percent":"10.84"}]}]}"#,
            ),
            Some("csivg/empty") => Output::ok(r#"{"report":[{"lv":[]}]}"#),
            _ => Output::failed(5, "  Failed to find logical volume \"csivg/nope\"\n"),
        });
        let p = lvm.pool_usage("csivg", "pool0").await.unwrap();
        assert_eq!((p.size, p.metadata_percent), (134217728, Some(10.84)));
        assert!(matches!(
            lvm.pool_usage("csivg", "nope").await,
            Err(LvmError::NotFound { .. })
        ));
        assert!(matches!(
            lvm.pool_usage("csivg", "empty").await,
            Err(LvmError::Parse { .. })
        ));
        assert_eq!(
            fake.calls()[0],
            "lvs --reportformat json --units b --nosuffix -o \
             lv_name,lv_attr,lv_size,data_percent,metadata_percent csivg/pool0"
        );
    }

    #[tokio::test]
    async fn vg_missing_is_none() {
        let (lvm, _) = fake_lvm(|_| {
            Output::failed(
                5,
                "  Volume group \"novg\" not found\n  Cannot process volume group novg\n",
            )
        });
        assert_eq!(lvm.vg("novg").await.unwrap(), None);
    }

    #[tokio::test]
    async fn snapshots_are_one_tagged_lvcreate() {
        let (lvm, fake) = fake_lvm(|_| Output::ok(""));
        let mut snap = NewSnapshot {
            vg: "csivg".into(),
            origin: "pvc-1".into(),
            name: "snap.s1".into(),
            cow_size: Some(12582912),
            writable: false,
            tags: vec!["lvm-iscsi-csi/snap=s1".into()],
        };
        lvm.snapshot(&snap).await.unwrap();
        snap.cow_size = None;
        snap.writable = true;
        snap.name = "pvc-2".into();
        snap.origin = "snap.s1".into();
        lvm.snapshot(&snap).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "lvcreate --yes --snapshot --name snap.s1 --size 12582912b --permission r \
                 csivg/pvc-1 --addtag lvm-iscsi-csi/snap=s1",
                "lvcreate --yes --snapshot --name pvc-2 --permission rw --setactivationskip n \
                 csivg/snap.s1 --addtag lvm-iscsi-csi/snap=s1"
            ]
        );
    }

    #[tokio::test]
    async fn remove_and_tags_are_single_commands() {
        let (lvm, fake) = fake_lvm(|argv| {
            if argv[0] == "lvremove" {
                Output::failed(5, "  Failed to find logical volume \"csivg/x\"\n")
            } else {
                Output::ok("")
            }
        });
        assert!(matches!(
            lvm.remove("csivg", "x").await,
            Err(LvmError::NotFound { .. })
        ));
        lvm.change_tags("csivg", "x", &["a=1".into()], &["b=2".into()])
            .await
            .unwrap();
        assert_eq!(
            fake.calls(),
            [
                "lvremove --yes csivg/x",
                "lvchange --addtag a=1 --deltag b=2 csivg/x"
            ]
        );
    }
}
