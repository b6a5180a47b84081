//! Pure parsing of LVM's JSON reports (`lvs`/`vgs --reportformat json --units b --nosuffix`):
//! one call, typed rows, no column scraping (TopoLVM's lvm_state_json.go).

use serde::Deserialize;

/// The `lvs -o` columns this driver reads, in the order the tests' samples have them.
pub const LV_FIELDS: &str =
    "vg_name,lv_name,lv_size,lv_attr,lv_tags,pool_lv,data_percent,lv_health_status";

/// The `vgs -o` columns this driver reads.
pub const VG_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size";

/// [`LV_FIELDS`] plus the VG's extent size and free bytes, repeated on every row: one `lvs`
/// of a VG then answers what `vgs` would (as long as the VG has an LV).
pub const LV_VG_FIELDS: &str = "vg_name,lv_name,lv_size,lv_attr,lv_tags,pool_lv,data_percent,\
     lv_health_status,vg_extent_size,vg_free";

/// What kind of LV a row is (first character of `lv_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvKind {
    /// A plain (linear/striped) LV: a thick volume (also while it is the origin of a
    /// classic snapshot).
    Thick,
    /// A thin volume in a thin pool.
    Thin,
    /// A thin pool.
    ThinPool,
    /// Anything else (snapshots, RAID, cache, internal LVs...).
    Other,
}

/// One logical volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    /// Volume group name.
    pub vg: String,
    /// LV name.
    pub name: String,
    /// Size in bytes (the virtual size for thin volumes).
    pub size: u64,
    /// The 10-character `lv_attr` string (see lvs(8)).
    pub attr: String,
    /// Tags, in LVM's order.
    pub tags: Vec<String>,
    /// The thin pool of a thin volume.
    pub pool: Option<String>,
    /// `lv_health_status`: empty when healthy, else e.g. `partial`, `refresh needed`.
    pub health: String,
    /// `data_percent`: how full a thin pool (or thin volume) is; `None` for other LVs, an
    /// inactive pool, or a report without the column.
    pub data_percent: Option<f64>,
}

impl Lv {
    /// The LV's kind, from `lv_attr`.
    pub fn kind(&self) -> LvKind {
        match self.attr.chars().next() {
            // `o`: a thick LV that is the origin of a classic snapshot.
            Some('-' | 'o') => LvKind::Thick,
            Some('V') => LvKind::Thin,
            Some('t') => LvKind::ThinPool,
            _ => LvKind::Other,
        }
    }

    /// Whether the LV is active (its device exists): `a` in the state column of `lv_attr`.
    pub fn is_active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// Unused data bytes of a thin pool: `size * (100 - data_percent) / 100`, when known.
    pub fn data_free(&self) -> Option<u64> {
        let used = self.data_percent?.clamp(0.0, 100.0);
        // Rounded down to whole bytes: a gauge, not an allocation.
        Some((self.size as f64 * (100.0 - used) / 100.0) as u64)
    }
}

/// One volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vg {
    /// VG name.
    pub name: String,
    /// Total size in bytes.
    pub size: u64,
    /// Unallocated bytes.
    pub free: u64,
    /// Physical extent size in bytes: every LV size is a multiple of it.
    pub extent_size: u64,
}

/// The LVs of one VG with the VG's space, from one `lvs -o LV_VG_FIELDS <vg>`.
#[derive(Debug, Clone, PartialEq)]
pub struct VgLvs {
    /// The LVs.
    pub lvs: Vec<Lv>,
    /// The VG's extent size and free bytes; `None` when the VG has no LV (no row carries them).
    pub space: Option<VgSpace>,
}

/// What a VG has room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgSpace {
    /// Physical extent size in bytes.
    pub extent_size: u64,
    /// Unallocated bytes.
    pub free: u64,
}

/// A report that does not have the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ReportError(pub String);

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<RawLv>,
}

#[derive(Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<RawVg>,
}

#[derive(Deserialize)]
struct RawLv {
    vg_name: String,
    lv_name: String,
    lv_size: String,
    #[serde(default)]
    lv_attr: String,
    #[serde(default)]
    lv_tags: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    data_percent: String,
    #[serde(default)]
    lv_health_status: String,
    #[serde(default)]
    vg_extent_size: String,
    #[serde(default)]
    vg_free: String,
}

#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
}

/// Parses `lvs --reportformat json --units b --nosuffix -o LV_FIELDS` output.
pub fn parse_lvs(json: &[u8]) -> Result<Vec<Lv>, ReportError> {
    raw_lvs(json)?.into_iter().map(lv).collect()
}

/// Parses `lvs --reportformat json --units b --nosuffix -o LV_VG_FIELDS <vg>` output.
pub fn parse_vg_lvs(json: &[u8]) -> Result<VgLvs, ReportError> {
    let raw = raw_lvs(json)?;
    let space = match raw.first() {
        None => None,
        Some(r) => {
            let extent_size = bytes("vg_extent_size", &r.vg_extent_size)?;
            if extent_size == 0 {
                return Err(ReportError(format!(
                    "VG {} reports extent size 0",
                    r.vg_name
                )));
            }
            Some(VgSpace {
                extent_size,
                free: bytes("vg_free", &r.vg_free)?,
            })
        }
    };
    Ok(VgLvs {
        lvs: raw.into_iter().map(lv).collect::<Result<_, _>>()?,
        space,
    })
}

fn raw_lvs(json: &[u8]) -> Result<Vec<RawLv>, ReportError> {
    let report: Report<LvSection> =
        serde_json::from_slice(json).map_err(|e| ReportError(format!("lvs JSON: {e}")))?;
    Ok(report.report.into_iter().flat_map(|s| s.lv).collect())
}

fn lv(r: RawLv) -> Result<Lv, ReportError> {
    Ok(Lv {
        size: bytes("lv_size", &r.lv_size)?,
        data_percent: percent("data_percent", &r.data_percent)?,
        tags: r
            .lv_tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        pool: Some(r.pool_lv).filter(|p| !p.is_empty()),
        vg: r.vg_name,
        name: r.lv_name,
        attr: r.lv_attr,
        health: r.lv_health_status,
    })
}

/// Parses `vgs --reportformat json --units b --nosuffix -o VG_FIELDS` output.
pub fn parse_vgs(json: &[u8]) -> Result<Vec<Vg>, ReportError> {
    let report: Report<VgSection> =
        serde_json::from_slice(json).map_err(|e| ReportError(format!("vgs JSON: {e}")))?;
    report
        .report
        .into_iter()
        .flat_map(|s| s.vg)
        .map(|r| {
            let vg = Vg {
                size: bytes("vg_size", &r.vg_size)?,
                free: bytes("vg_free", &r.vg_free)?,
                extent_size: bytes("vg_extent_size", &r.vg_extent_size)?,
                name: r.vg_name,
            };
            if vg.extent_size == 0 {
                return Err(ReportError(format!("VG {} reports extent size 0", vg.name)));
            }
            Ok(vg)
        })
        .collect()
}

/// A percentage as printed by `lvs` (`9.38`); empty when LVM has none for the LV.
fn percent(field: &str, value: &str) -> Result<Option<f64>, ReportError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<f64>() {
        Ok(p) if p.is_finite() => Ok(Some(p)),
        _ => Err(ReportError(format!(
            "{field} `{value}` is not a percentage"
        ))),
    }
}

/// A byte count as printed with `--units b --nosuffix` (older LVM versions append `B`).
fn bytes(field: &str, value: &str) -> Result<u64, ReportError> {
    value
        .trim()
        .trim_end_matches('B')
        .parse()
        .map_err(|_| ReportError(format!("{field} `{value}` is not a byte count")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured in the lab (LVM 2.03.16): a thick LV with odd tags, a thin pool, a tagged
    /// thin volume, with data_percent/metadata_percent columns we ignore.
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"vg_name":"csivg", "lv_name":"plain", "lv_size":"4194304", "lv_attr":"-wi-a-----", "lv_tags":"-ab,a!b&c#d+e:f=g/h_i.j-k", "pool_lv":"", "data_percent":"", "metadata_percent":"", "lv_health_status":""},
                  {"vg_name":"csivg", "lv_name":"pool0", "lv_size":"268435456", "lv_attr":"twi-aotz--", "lv_tags":"", "pool_lv":"", "data_percent":"1.17", "metadata_percent":"11.33", "lv_health_status":""},
                  {"vg_name":"csivg", "lv_name":"vol-abc", "lv_size":"33554432", "lv_attr":"Vwi-a-tz--", "lv_tags":"lvm-iscsi-csi/name=my#20vol#2f#c3#a9", "pool_lv":"pool0", "data_percent":"9.38", "metadata_percent":"", "lv_health_status":""}
              ]
          }
      ]
  }
"#;

    #[test]
    fn parses_captured_lvs() {
        let lvs = parse_lvs(LVS.as_bytes()).unwrap();
        assert_eq!(lvs.len(), 3);
        assert_eq!(lvs[0].name, "plain");
        assert_eq!(lvs[0].size, 4194304);
        assert_eq!(lvs[0].tags, ["-ab", "a!b&c#d+e:f=g/h_i.j-k"]);
        assert_eq!(lvs[0].kind(), LvKind::Thick);
        assert!(lvs[0].is_active());
        assert_eq!(lvs[1].kind(), LvKind::ThinPool);
        assert_eq!(lvs[2].kind(), LvKind::Thin);
        assert_eq!(lvs[2].pool.as_deref(), Some("pool0"));
        assert_eq!(lvs[2].tags, ["lvm-iscsi-csi/name=my#20vol#2f#c3#a9"]);
        assert_eq!(lvs[1].pool, None);
        assert_eq!(lvs[0].data_percent, None);
        assert_eq!(lvs[1].data_percent, Some(1.17));
        // 268435456 * (100 - 1.17) / 100, rounded down.
        assert_eq!(lvs[1].data_free(), Some(265294761));
        assert_eq!(lvs[0].data_free(), None);
    }

    /// The `lvs` of this driver, captured in the lab after the driver's own lvcreate/lvchange
    /// commands (before `data_percent` joined LV_FIELDS: a missing column reads as unknown): a
    /// thick volume with name, fs and publication tags, a thin volume with a hashed name and
    /// an escaped CSI name, the pool.
    const DRIVER_LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"vg_name":"csivg", "lv_name":"pool0", "lv_size":"3221225472", "lv_attr":"twi-aotz--", "lv_tags":"", "pool_lv":"", "lv_health_status":""},
                  {"vg_name":"csivg", "lv_name":"pvc-1", "lv_size":"12582912", "lv_attr":"-wi-a-----", "lv_tags":"lvm-iscsi-csi/fs=xfs,lvm-iscsi-csi/name=pvc-1,lvm-iscsi-csi/pub=node-1/iqn.1993-08.org.debian:01:5c8d368c2ff3/chap.cac3c71b/single/rw", "pool_lv":"", "lv_health_status":""},
                  {"vg_name":"csivg", "lv_name":"vol-f436f1b4e06fc9f390b2", "lv_size":"67108864", "lv_attr":"Vwi-a-tz--", "lv_tags":"lvm-iscsi-csi/name=My#20Volume", "pool_lv":"pool0", "lv_health_status":""}
              ]
          }
      ]
  }
"#;

    #[test]
    fn parses_the_drivers_own_listing() {
        use crate::lvm::tags::{Auth, VolumeTags};
        let lvs = parse_lvs(DRIVER_LVS.as_bytes()).unwrap();
        assert_eq!(lvs.len(), 3);
        let t = VolumeTags::parse(&lvs[1].tags);
        assert_eq!(t.name.as_deref(), Some("pvc-1"));
        assert_eq!(t.fs_type.as_deref(), Some("xfs"));
        let p = &t.publications[0];
        assert_eq!(p.node_id, "node-1");
        assert_eq!(p.initiator, "iqn.1993-08.org.debian:01:5c8d368c2ff3");
        assert_eq!(
            p.auth,
            Auth::Chap {
                key_id: "cac3c71b".into()
            }
        );
        assert!(!p.multi_node && !p.readonly);
        assert_eq!(lvs[1].size, 12582912);
        let thin = VolumeTags::parse(&lvs[2].tags);
        assert_eq!(thin.name.as_deref(), Some("My Volume"));
        assert_eq!(lvs[2].kind(), LvKind::Thin);
        assert_eq!(VolumeTags::parse(&lvs[0].tags), VolumeTags::default());
        assert_eq!(lvs[0].data_percent, None);
    }

    #[test]
    fn parses_empty_and_inactive() {
        // `lvs csivg/nope` prints an empty report (and exits 5).
        let empty = r#"  {
      "report": [
          {
              "lv": [
              ]
          }
      ]
  }
"#;
        assert_eq!(parse_lvs(empty.as_bytes()).unwrap(), vec![]);
        let inactive = r#"{"report":[{"lv":[{"vg_name":"csivg", "lv_name":"plain", "lv_size":"4194304", "lv_attr":"-wi-------", "lv_tags":"", "pool_lv":"", "lv_health_status":""}]}]}"#;
        let lvs = parse_lvs(inactive.as_bytes()).unwrap();
        assert!(!lvs[0].is_active());
    }

    /// Captured in the lab (LVM 2.03.16): `lvs -o LV_VG_FIELDS csivg` with a thin pool, a
    /// thick and a thin volume of the driver's; then the same of a VG without LVs.
    const VG_LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"vg_name":"csivg", "lv_name":"pool0", "lv_size":"2147483648", "lv_attr":"twi-aotz--", "lv_tags":"", "pool_lv":"", "data_percent":"0.00", "lv_health_status":"", "vg_extent_size":"4194304", "vg_free":"2130706432"},
                  {"vg_name":"csivg", "lv_name":"thick-1", "lv_size":"4194304", "lv_attr":"-wi-a-----", "lv_tags":"lvm-iscsi-csi/name=thick-1", "pool_lv":"", "data_percent":"", "lv_health_status":"", "vg_extent_size":"4194304", "vg_free":"2130706432"},
                  {"vg_name":"csivg", "lv_name":"vol-a", "lv_size":"8388608", "lv_attr":"Vwi-a-tz--", "lv_tags":"lvm-iscsi-csi/fs=xfs,lvm-iscsi-csi/name=vol-a", "pool_lv":"pool0", "data_percent":"0.00", "lv_health_status":"", "vg_extent_size":"4194304", "vg_free":"2130706432"}
              ]
          }
      ]
  }
"#;

    #[test]
    fn parses_captured_lvs_with_the_vg_space() {
        let vg = parse_vg_lvs(VG_LVS.as_bytes()).unwrap();
        assert_eq!(
            vg.space,
            Some(VgSpace {
                extent_size: 4194304,
                free: 2130706432
            })
        );
        assert_eq!(vg.lvs.len(), 3);
        assert_eq!(vg.lvs[2].pool.as_deref(), Some("pool0"));
        assert_eq!(vg.lvs, parse_lvs(VG_LVS.as_bytes()).unwrap());
        let empty = "  {\n      \"report\": [\n          {\n              \"lv\": [\n              ]\n          }\n      ]\n  }\n";
        assert_eq!(
            parse_vg_lvs(empty.as_bytes()).unwrap(),
            VgLvs {
                lvs: vec![],
                space: None
            }
        );
        let zero = VG_LVS.replace("\"vg_extent_size\":\"4194304\"", "\"vg_extent_size\":\"0\"");
        assert!(parse_vg_lvs(zero.as_bytes()).is_err());
        // Without the VG columns (a plain LV_FIELDS report) there is no space to read.
        assert!(parse_vg_lvs(DRIVER_LVS.as_bytes()).is_err());
    }

    #[test]
    fn a_snapshot_origin_is_still_thick_and_the_snapshot_is_not() {
        // `lvs -o lv_name,lv_attr` after `lvcreate -s` in the lab (LVM 2.03.16).
        let lv = |attr: &str| Lv {
            vg: "vg".into(),
            name: "x".into(),
            size: 0,
            attr: attr.into(),
            tags: vec![],
            pool: None,
            health: String::new(),
            data_percent: None,
        };
        assert_eq!(lv("owi-a-s---").kind(), LvKind::Thick);
        assert_eq!(lv("swi-a-s---").kind(), LvKind::Other);
    }

    #[test]
    fn parses_captured_vgs() {
        let vgs = r#"  {
      "report": [
          {
              "vg": [
                  {"vg_name":"csivg", "vg_size":"1069547520", "vg_free":"788529152", "vg_extent_size":"4194304"}
              ]
          }
      ]
  }
"#;
        assert_eq!(
            parse_vgs(vgs.as_bytes()).unwrap(),
            vec![Vg {
                name: "csivg".into(),
                size: 1069547520,
                free: 788529152,
                extent_size: 4194304
            }]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_lvs(b"not json").is_err());
        assert!(parse_lvs(
            br#"{"report":[{"lv":[{"vg_name":"a","lv_name":"b","lv_size":"12.5g"}]}]}"#
        )
        .is_err());
        assert!(parse_vgs(br#"{"report":[{"vg":[{"vg_name":"a","vg_size":"1","vg_free":"1","vg_extent_size":"0"}]}]}"#).is_err());
        assert_eq!(bytes("x", "512B"), Ok(512));
        assert!(parse_lvs(br#"{"report":[{"lv":[{"vg_name":"a","lv_name":"b","lv_size":"1","data_percent":"n/a"}]}]}"#).is_err());
    }
}
