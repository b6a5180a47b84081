//! How full a thin pool is: `lvs -o POOL_FIELDS vg/pool`, with the metadata usage that the
//! volume reports ([`super::report`]) leave out.

use serde::Deserialize;

use super::report::{bytes, lv_rows, percent, LvKind, ReportError};

/// The `lvs -o` columns of a thin pool's usage.
pub const POOL_FIELDS: &str = "lv_name,lv_attr,lv_size,data_percent,metadata_percent";

/// A thin pool's size and usage.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolUsage {
    /// LV name.
    pub name: String,
    /// The 10-character `lv_attr` string.
    pub attr: String,
    /// Size in bytes.
    pub size: u64,
    /// Data usage in percent; `None` when LVM has none (an inactive pool, not a pool).
    pub data_percent: Option<f64>,
    /// Metadata usage in percent; `None` when LVM has none.
    pub metadata_percent: Option<f64>,
}

impl PoolUsage {
    /// The LV's kind, from `lv_attr`: [`LvKind::ThinPool`] for a thin pool.
    pub fn kind(&self) -> LvKind {
        LvKind::of_attr(&self.attr)
    }
}

#[derive(Deserialize)]
struct RawPool {
    lv_name: String,
    lv_size: String,
    #[serde(default)]
    lv_attr: String,
    #[serde(default)]
    data_percent: String,
    #[serde(default)]
    metadata_percent: String,
}

/// Parses `lvs --reportformat json --units b --nosuffix -o POOL_FIELDS` output.
pub fn parse_pool_usage(json: &[u8]) -> Result<Vec<PoolUsage>, ReportError> {
    lv_rows(json)?
        .into_iter()
        .map(|r: RawPool| {
            Ok(PoolUsage {
                size: bytes("lv_size", &r.lv_size)?,
                data_percent: percent("data_percent", &r.data_percent)?,
                metadata_percent: percent("metadata_percent", &r.metadata_percent)?,
                name: r.lv_name,
                attr: r.lv_attr,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thin pool's row as captured in the kernel lab (LVM 2.03.16), and a plain LV's row
    /// in the same columns.
    const POOL: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool0", "lv_attr":"twi-a-tz--", "lv_size":"134217728", "data_percent":"0.00", "metadata_percent":"10.84"},
                  {"lv_name":"plain", "lv_attr":"-wi-a-----", "lv_size":"4194304", "data_percent":"", "metadata_percent":""}
              ]
          }
      ]
  }
"#;

    #[test]
    fn parses_pool_usage() {
        let p = parse_pool_usage(POOL.as_bytes()).unwrap();
        assert_eq!(
            p[0],
            PoolUsage {
                name: "pool0".into(),
                attr: "twi-a-tz--".into(),
                size: 134217728,
                data_percent: Some(0.0),
                metadata_percent: Some(10.84),
            }
        );
        assert_eq!(p[0].kind(), LvKind::ThinPool);
        assert_eq!(p[1].kind(), LvKind::Thick);
        assert_eq!((p[1].data_percent, p[1].metadata_percent), (None, None));
        assert!(parse_pool_usage(b"not json").is_err());
        assert!(parse_pool_usage(POOL.replace("10.84", "n/a").as_bytes()).is_err());
    }
}
