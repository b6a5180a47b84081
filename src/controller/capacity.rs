//! Volume sizes: the request's capacity range, rounded to the VG's extent size, and the room
//! left in a thin pool.

use crate::csi::CapacityRange;
use crate::lvm::{Lv, LvKind};

/// The largest size accepted: far beyond any VG, and safe from overflow when rounding.
pub const MAX_BYTES: u64 = 1 << 62;

/// A validated capacity range (0 = unset, as in CSI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRequest {
    /// The volume must be at least this big (0: no minimum).
    pub required: u64,
    /// The volume must be at most this big (0: no maximum).
    pub limit: u64,
}

/// A capacity range that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// A negative byte count.
    #[error("capacity_range.{field} is negative ({value})")]
    Negative {
        /// `required_bytes` or `limit_bytes`.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// The limit is below the requirement.
    #[error("capacity_range.limit_bytes ({limit}) is smaller than required_bytes ({required})")]
    LimitBelowRequired {
        /// required_bytes.
        required: u64,
        /// limit_bytes.
        limit: u64,
    },
    /// More than [`MAX_BYTES`].
    #[error(
        "capacity_range.required_bytes ({0}) is larger than this driver supports (2^62 bytes)"
    )]
    TooLarge(u64),
    /// No multiple of the extent size lies in the range.
    #[error("no size between {required} and {limit} bytes is a multiple of the volume group's extent size ({extent} bytes)")]
    NoFit {
        /// Minimum.
        required: u64,
        /// Maximum.
        limit: u64,
        /// Extent size.
        extent: u64,
    },
}

impl SizeRequest {
    /// Checks the request's range (absent: no constraint).
    pub fn parse(range: Option<&CapacityRange>) -> Result<SizeRequest, CapacityError> {
        let Some(r) = range else {
            return Ok(SizeRequest {
                required: 0,
                limit: 0,
            });
        };
        let non_negative = |field, value: i64| {
            u64::try_from(value).map_err(|_| CapacityError::Negative { field, value })
        };
        let required = non_negative("required_bytes", r.required_bytes)?;
        let limit = non_negative("limit_bytes", r.limit_bytes)?;
        if limit > 0 && limit < required {
            return Err(CapacityError::LimitBelowRequired { required, limit });
        }
        if required > MAX_BYTES {
            return Err(CapacityError::TooLarge(required));
        }
        Ok(SizeRequest { required, limit })
    }

    /// The size to create: `required` (or `default` when unset, capped by the limit) rounded
    /// up to a multiple of `extent`, or down when rounding up would pass the limit.
    pub fn size(&self, default: u64, extent: u64) -> Result<u64, CapacityError> {
        let extent = extent.max(1);
        let limit = if self.limit > 0 {
            self.limit
        } else {
            MAX_BYTES
        };
        let want = if self.required > 0 {
            self.required
        } else {
            default.min(limit)
        };
        let mut size = want.div_ceil(extent) * extent;
        if size > limit {
            size = limit / extent * extent;
        }
        if size == 0 || size < self.required {
            return Err(CapacityError::NoFit {
                required: self.required,
                limit,
                extent,
            });
        }
        Ok(size)
    }

    /// Whether an existing volume of `size` bytes satisfies this request.
    pub fn accepts(&self, size: u64) -> bool {
        size >= self.required && (self.limit == 0 || size <= self.limit)
    }
}

/// How many more bytes of thin volumes `pool` may take: its size times `ratio` (the
/// overprovisioning allowed) minus the virtual sizes of the thin volumes already in it.
pub fn thin_headroom(pool: &Lv, vg_lvs: &[Lv], ratio: f64) -> u64 {
    let allowed = (pool.size as f64 * ratio.max(0.0)).min(MAX_BYTES as f64) as u64;
    let used: u64 = vg_lvs
        .iter()
        .filter(|lv| {
            lv.vg == pool.vg
                && lv.kind() == LvKind::Thin
                && lv.pool.as_deref() == Some(pool.name.as_str())
        })
        .map(|lv| lv.size)
        .sum();
    allowed.saturating_sub(used)
}

/// The bytes a new or growing volume may take, and what they are, for the
/// RESOURCE_EXHAUSTED message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// The VG's free bytes (thick) or the thin pool's headroom (thin).
    pub available: u64,
    /// What `available` is.
    pub what: String,
}

impl Room {
    /// The free bytes of VG `vg` (`free` of them), for a thick volume.
    pub fn thick(vg: &str, free: u64) -> Room {
        Room {
            available: free,
            what: format!("volume group {vg} has {free} bytes free"),
        }
    }

    /// The headroom of thin pool `pool` among its VG's LVs `vg_lvs` (see [`thin_headroom`]).
    pub fn thin(pool: &Lv, vg_lvs: &[Lv], ratio: f64) -> Room {
        let available = thin_headroom(pool, vg_lvs, ratio);
        Room {
            available,
            what: format!(
                "thin pool {}/{} has room for {available} more bytes of thin volumes \
                 (overprovisioning ratio {ratio})",
                pool.vg, pool.name
            ),
        }
    }

    /// `Ok` when `bytes` fit, else the message: what there is, then `needed` (what is
    /// asked, in words).
    pub fn take(&self, bytes: u64, needed: impl FnOnce() -> String) -> Result<(), String> {
        if bytes <= self.available {
            Ok(())
        } else {
            Err(format!("{}, {}", self.what, needed()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn range(required: i64, limit: i64) -> Option<CapacityRange> {
        Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        })
    }

    fn size(required: i64, limit: i64, default: u64, extent: u64) -> Result<u64, CapacityError> {
        SizeRequest::parse(range(required, limit).as_ref())?.size(default, extent)
    }

    #[test]
    fn rounds_up_to_the_extent() {
        let e = 4 * MIB;
        assert_eq!(size(64 * MIB as i64, 0, 0, e), Ok(64 * MIB));
        assert_eq!(size(1, 0, 0, e), Ok(4 * MIB));
        assert_eq!(size(10 * MIB as i64 + 1, 0, 0, e), Ok(12 * MIB));
        // Unset: the default, rounded.
        assert_eq!(size(0, 0, 1 << 30, e), Ok(1 << 30));
        assert_eq!(
            SizeRequest::parse(None).unwrap().size(5 * MIB, e),
            Ok(8 * MIB)
        );
        // Only a limit: the default capped by it.
        assert_eq!(size(0, 8 * MIB as i64, 1 << 30, e), Ok(8 * MIB));
        // Rounding up passes the limit but a multiple fits below it.
        assert_eq!(size(5 * MIB as i64, 9 * MIB as i64, 0, e), Ok(8 * MIB));
    }

    #[test]
    fn refuses_what_cannot_fit() {
        let e = 4 * MIB;
        assert!(matches!(
            size(5 * MIB as i64, 7 * MIB as i64, 0, e),
            Err(CapacityError::NoFit { .. })
        ));
        assert!(matches!(
            size(0, MIB as i64, 1 << 30, e),
            Err(CapacityError::NoFit { .. })
        ));
        assert_eq!(
            size(-1, 0, 0, e),
            Err(CapacityError::Negative {
                field: "required_bytes",
                value: -1
            })
        );
        assert!(matches!(
            size(0, -5, 0, e),
            Err(CapacityError::Negative { .. })
        ));
        assert!(matches!(
            size(10, 5, 0, e),
            Err(CapacityError::LimitBelowRequired { .. })
        ));
        assert_eq!(
            size(i64::MAX, 0, 0, e),
            Err(CapacityError::TooLarge(i64::MAX as u64))
        );
    }

    #[test]
    fn accepts_existing_sizes_in_range() {
        let r = SizeRequest::parse(range(64 * MIB as i64, 64 * MIB as i64).as_ref()).unwrap();
        assert!(r.accepts(64 * MIB));
        assert!(!r.accepts(128 * MIB));
        let open = SizeRequest::parse(range(64 * MIB as i64, 0).as_ref()).unwrap();
        assert!(open.accepts(128 * MIB) && !open.accepts(32 * MIB));
    }

    fn lv(name: &str, attr: &str, size: u64, pool: Option<&str>) -> Lv {
        Lv {
            vg: "vg".into(),
            name: name.into(),
            size,
            attr: attr.into(),
            tags: vec![],
            pool: pool.map(String::from),
            health: String::new(),
            data_percent: None,
            origin: None,
            origin_size: None,
            created: None,
        }
    }

    #[test]
    fn thin_headroom_counts_virtual_sizes() {
        let pool = lv("pool0", "twi-aotz--", 256 * MIB, None);
        let lvs = vec![
            pool.clone(),
            lv("a", "Vwi-a-tz--", 100 * MIB, Some("pool0")),
            lv("b", "Vwi-a-tz--", 50 * MIB, Some("other")),
            lv("c", "-wi-a-----", 50 * MIB, None),
        ];
        assert_eq!(thin_headroom(&pool, &lvs, 1.0), 156 * MIB);
        assert_eq!(thin_headroom(&pool, &lvs, 2.0), 412 * MIB);
        assert_eq!(thin_headroom(&pool, &lvs, 0.25), 0);
    }
}
