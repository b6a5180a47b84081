//! The publish_context ControllerPublishVolume returns and NodeStageVolume (and
//! NodePublishVolume for block) receive: where and how to reach a volume's LUN. The keys and
//! their formats are written once, here: the controller builds it, the node parses it.

use std::collections::HashMap;

use super::{Iqn, Portal};

/// Key: the target IQN to log in to.
pub const TARGET_IQN: &str = "targetIqn";
/// Key: the portals, `ADDRESS:PORT` or `[IPv6]:PORT`, separated by commas.
pub const PORTALS: &str = "portals";
/// Key: the LUN of the volume on the target (decimal).
pub const LUN: &str = "lun";
/// Key: `CHAP` or `None`. The credentials themselves never travel: the node derives them
/// from the same key.
pub const AUTH_METHOD: &str = "authMethod";
/// [`AUTH_METHOD`] with CHAP (mutual).
pub const AUTH_CHAP: &str = "CHAP";
/// [`AUTH_METHOD`] without authentication (ACL only).
pub const AUTH_NONE: &str = "None";

/// SAM's largest flat-space LUN.
const MAX_LUN: u32 = 16383;

/// Where and how to reach a volume's LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishContext {
    /// Target IQN.
    pub iqn: Iqn,
    /// Portals, first preferred; never empty once parsed.
    pub portals: Vec<Portal>,
    /// LUN number (0 with LIO, 1 with tgt).
    pub lun: u32,
    /// Whether the target requires CHAP.
    pub chap: bool,
}

/// Why a publish_context cannot be used (a sentence naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// A key is missing or empty.
    #[error("key `{0}` missing (it comes from ControllerPublishVolume)")]
    Missing(&'static str),
    /// A key's value is malformed.
    #[error("`{key}` {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong (quoting the value).
        reason: String,
    },
}

impl PublishContext {
    /// The map sent to the CO.
    pub fn to_map(&self) -> HashMap<String, String> {
        let portals: Vec<String> = self.portals.iter().map(ToString::to_string).collect();
        HashMap::from([
            (TARGET_IQN.to_string(), self.iqn.to_string()),
            (PORTALS.to_string(), portals.join(",")),
            (LUN.to_string(), self.lun.to_string()),
            (
                AUTH_METHOD.to_string(),
                if self.chap { AUTH_CHAP } else { AUTH_NONE }.to_string(),
            ),
        ])
    }

    /// Parses the map a CO hands back.
    pub fn parse(ctx: &HashMap<String, String>) -> Result<Self, ContextError> {
        let get = |key: &'static str| {
            ctx.get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or(ContextError::Missing(key))
        };
        let invalid = |key, reason: String| ContextError::Invalid { key, reason };
        let iqn = get(TARGET_IQN)?
            .parse::<Iqn>()
            .map_err(|e| invalid(TARGET_IQN, e.to_string()))?;
        let portals = get(PORTALS)?
            .split(',')
            .map(|p| p.trim().parse::<Portal>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(PORTALS, e.to_string()))?;
        let lun = get(LUN)?;
        let lun = lun
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= MAX_LUN)
            .ok_or_else(|| invalid(LUN, format!("`{}` is not a LUN number", lun.escape_debug())))?;
        let chap = match get(AUTH_METHOD)? {
            AUTH_CHAP => true,
            AUTH_NONE => false,
            other => {
                return Err(invalid(
                    AUTH_METHOD,
                    format!("`{}` is neither CHAP nor None", other.escape_debug()),
                ))
            }
        };
        Ok(PublishContext {
            iqn,
            portals,
            lun,
            chap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn publish_context() {
        let good = ctx(&[
            (TARGET_IQN, "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1"),
            (PORTALS, "10.0.0.5:3260, [fd00::5]:3260"),
            (LUN, "1"),
            (AUTH_METHOD, "CHAP"),
        ]);
        let t = PublishContext::parse(&good).unwrap();
        assert_eq!(t.portals.len(), 2);
        assert_eq!((t.lun, t.chap), (1, true));
        for key in [TARGET_IQN, PORTALS, LUN, AUTH_METHOD] {
            let mut m = good.clone();
            m.remove(key);
            let err = PublishContext::parse(&m).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for (key, bad) in [
            (TARGET_IQN, "not-an-iqn"),
            (TARGET_IQN, "iqn.x:a b"),
            (PORTALS, "10.0.0.5:x"),
            (PORTALS, "10.0.0.5:3260,"),
            (LUN, "-1"),
            (LUN, "99999"),
            (AUTH_METHOD, "chap"),
        ] {
            let mut m = good.clone();
            m.insert(key.into(), bad.into());
            let err = PublishContext::parse(&m).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={bad}: {err}");
        }
    }

    #[test]
    fn round_trip() {
        for chap in [true, false] {
            let c = PublishContext {
                iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1".parse().unwrap(),
                portals: vec![
                    "10.0.0.1:3260".parse().unwrap(),
                    "[fd00::1]".parse().unwrap(),
                ],
                lun: 1,
                chap,
            };
            let map = c.to_map();
            assert_eq!(map[PORTALS], "10.0.0.1:3260,[fd00::1]:3260");
            assert_eq!(map[AUTH_METHOD], if chap { "CHAP" } else { "None" });
            assert_eq!(PublishContext::parse(&map), Ok(c));
        }
    }

    #[test]
    fn the_wire_format_is_unchanged() {
        // What ControllerPublishVolume has always returned: attached volumes keep it in
        // their VolumeAttachment.
        let c = PublishContext {
            iqn: "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1".parse().unwrap(),
            portals: vec!["10.0.0.1:3260".parse().unwrap()],
            lun: 0,
            chap: true,
        };
        assert_eq!(
            c.to_map(),
            ctx(&[
                ("targetIqn", "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1"),
                ("portals", "10.0.0.1:3260"),
                ("lun", "0"),
                ("authMethod", "CHAP"),
            ])
        );
    }
}
