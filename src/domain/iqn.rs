//! iSCSI names (RFC 3720 section 3.2.6, RFC 3721): the one check for initiator and target
//! names, wherever they come from (a node id, a Node annotation, the initiator name file,
//! publish_context, a target's listing).
//!
//! This rule replaced five slightly different ones. What changed for each former caller:
//! - controller (node ids, the Node annotation): the month must be 01-12 and no label of
//!   the domain may be empty; `EUI.`/`NAA.` are accepted in upper case.
//! - node (the initiator name file, publish_context's `targetIqn`): the date and the domain
//!   are now checked (`iqn.x:a` passed before); `_` is allowed after the `:`.
//! - doctor (the initiator name file): upper-case letters and `_` are allowed after the `:`.
//! - tgt (telling initiator names from addresses in ACL listings): a malformed name with an
//!   `iqn.` prefix is no longer taken for a name.
//!
//! `/`, whitespace, control and shell characters were refused by every caller and still are.

use std::fmt;
use std::str::FromStr;

/// RFC 3720's limit on an iSCSI name, in bytes.
pub const MAX_IQN_LEN: usize = 223;

/// A valid iSCSI name: `iqn.YYYY-MM.<reversed domain>[:<anything>]`, `eui.` and 16 hex
/// digits, or `naa.` and 16 or 32 hex digits.
///
/// The part after `:` is limited to letters, digits, `.`, `-`, `:` and `_`: RFC 3720 allows
/// more (any stringprep'd Unicode), but the name becomes a configfs directory, a tgtadm and
/// iscsiadm argument and a file name, so `/`, whitespace, control and shell characters stay
/// out. Everything that open-iscsi (`iscsi-iname`), Windows and the storage vendors generate
/// is in that set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iqn(String);

/// Why a string is not an iSCSI name (a sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a valid iSCSI name: {reason}", name.escape_debug())]
pub struct IqnError {
    /// The string.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

impl Iqn {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Iqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for Iqn {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for Iqn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Iqn {
    type Err = IqnError;

    fn from_str(name: &str) -> Result<Self, IqnError> {
        check(name).map_err(|reason| IqnError {
            name: name.to_string(),
            reason,
        })?;
        Ok(Iqn(name.to_string()))
    }
}

/// Whether `s` is a valid iSCSI name.
pub fn is_iqn(s: &str) -> bool {
    check(s).is_ok()
}

/// The clap value parser of `--iqn-prefix`: a prefix that makes valid target names once
/// `:<vg>.<lv>` is appended (a trailing `:` is dropped), so a bad one stops start-up instead
/// of every NodeStageVolume.
pub fn parse_prefix(s: &str) -> Result<String, String> {
    let prefix = s.trim_end_matches(':');
    check(&format!("{prefix}:x"))
        .map_err(|reason| format!("IQN prefix `{}` is not usable: {reason}", s.escape_debug()))?;
    Ok(prefix.to_string())
}

fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_IQN_LEN {
        return Err(format!(
            "{} bytes long, at most {MAX_IQN_LEN} allowed",
            name.len()
        ));
    }
    let hex = |rest: &str, lens: &[usize]| {
        lens.contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_hexdigit())
    };
    // The type prefix is matched without case (the hex digits are case-free anyway).
    let prefix = name.get(..4).map(str::to_ascii_lowercase);
    match prefix.as_deref() {
        Some("eui.") => {
            return hex(&name[4..], &[16])
                .then_some(())
                .ok_or_else(|| "an eui. name needs exactly 16 hex digits".into())
        }
        Some("naa.") => {
            return hex(&name[4..], &[16, 32])
                .then_some(())
                .ok_or_else(|| "a naa. name needs 16 or 32 hex digits".into())
        }
        _ => {}
    }
    let Some(rest) = name.strip_prefix("iqn.") else {
        return Err("it must start with iqn., eui. or naa.".into());
    };
    let (head, tail) = match rest.split_once(':') {
        Some((h, t)) => (h, Some(t)),
        None => (rest, None),
    };
    let b = head.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && matches!(head[5..7].parse::<u8>(), Ok(1..=12))
        && b[7] == b'.';
    if !date_ok {
        return Err("it must continue with a date and a domain: iqn.YYYY-MM.com.example".into());
    }
    let domain = &head[8..];
    if let Some(bad) = domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(format!(
            "character {bad:?} is not allowed in the naming authority (lower-case letters, digits, '-', '.')"
        ));
    }
    if domain.split('.').any(str::is_empty) {
        return Err("the naming authority (reversed domain) after the date is malformed".into());
    }
    match tail {
        Some("") => Err("nothing follows the ':'".into()),
        Some(t) => match t
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')))
        {
            Some(bad) => Err(format!(
                "character {bad:?} is not allowed after the ':' (letters, digits, '.', '-', ':', '_')"
            )),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// What open-iscsi's initiator name file (`/etc/iscsi/initiatorname.iscsi`) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorNameFile {
    /// `InitiatorName=<name>`: the value as written, not yet validated ([`Self::iqn`]).
    Named(String),
    /// Only `GenerateName=yes`: the packaging asks for a name to be generated at first start.
    ToGenerate,
    /// Neither line.
    Missing,
}

impl InitiatorNameFile {
    /// Parses the file's text: its first `InitiatorName=` line (`#` starts a comment line).
    pub fn parse(text: &str) -> Self {
        let mut generate = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix("InitiatorName=") {
                return InitiatorNameFile::Named(name.trim().to_string());
            }
            if line.eq_ignore_ascii_case("GenerateName=yes") {
                generate = true;
            }
        }
        if generate {
            InitiatorNameFile::ToGenerate
        } else {
            InitiatorNameFile::Missing
        }
    }

    /// The name, when the file holds a valid one.
    pub fn iqn(&self) -> Option<Iqn> {
        match self {
            InitiatorNameFile::Named(name) => name.parse().ok(),
            InitiatorNameFile::ToGenerate | InitiatorNameFile::Missing => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_iscsi_names() {
        for ok in [
            "iqn.1993-08.org.debian:01:5c8d368c2ff3",
            "iqn.2004-10.com.debian:lab",
            "iqn.2001-04.com.example",
            "iqn.2000-01.com.example",
            "iqn.2026-11.io.csi.lvm-iscsi:csivg.pvc-1",
            "iqn.2026-11.io.csi.lvm-iscsi:vg0.pvc-1",
            "iqn.2004-10.com.debian:Node_1",
            "eui.02004567A425678D",
            "EUI.02004567a425678d",
            "naa.52004567BA64678D",
            "naa.62004567BA64678D0123456789ABCDEF",
        ] {
            assert!(is_iqn(ok), "{ok}");
            assert_eq!(ok.parse::<Iqn>().unwrap().to_string(), ok);
        }
    }

    #[test]
    fn refuses_malformed_and_unsafe_names() {
        for bad in [
            "",
            "node-1",
            "fake-node-id-123",
            "InitiatorName",
            "GenerateName=yes",
            "ALL",
            "10.0.0.0/24",
            "iéé.x",
            "iqn.",
            "iqn.93-08.org.debian",
            "iqn.1993-13.org.debian",
            "iqn.1993-00.org.debian",
            "iqn.1993-08.",
            "iqn.1993-08.Org.debian",
            "iqn.1993-08.org.Debian:01",
            "iqn.1993-08.org..debian",
            "iqn.1993-08.org.debian:",
            "iqn.1993-08.org.debian:a/b",
            "iqn.1993-08.org.debian:a b",
            "iqn.1993-08.org.debian:a\nb",
            "iqn.1993-08.org.debian:a;reboot",
            "iqn.1993-08.org.debian:$(x)",
            "iqn.x:a b",
            "eui.0200",
            "eui.1234",
            "naa.xyz",
            &format!("iqn.1993-08.org.debian:{}", "a".repeat(220)),
        ] {
            let err = bad.parse::<Iqn>().unwrap_err();
            assert!(
                err.to_string().contains("not a valid iSCSI name"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prefixes() {
        let p = "iqn.2026-11.io.csi.lvm-iscsi";
        assert_eq!(parse_prefix(p).as_deref(), Ok(p));
        assert_eq!(parse_prefix(&format!("{p}:")).as_deref(), Ok(p));
        assert!(parse_prefix("iqn.2026-11.io.csi:lab").is_ok());
        for bad in [
            "",
            "lvm-iscsi",
            "iqn.2026-11",
            "iqn.2026-11.io csi",
            "iqn.2026-11.io/x",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_captured_from_real_tools() {
        // tgtadm's target listing (src/export/tgt/testdata) and open-iscsi's session list
        // (src/node/testdata).
        let captured = [
            include_str!("../export/tgt/testdata/show-target.txt"),
            include_str!("../export/tgt/testdata/show-target-foreign.txt"),
            include_str!("../node/testdata/iscsiadm-session.txt"),
            include_str!("../node/testdata/iscsiadm-session-ipv6.txt"),
        ];
        let names: Vec<&str> = captured
            .iter()
            .flat_map(|text| text.split_whitespace())
            .filter(|w| w.starts_with("iqn."))
            .collect();
        assert!(names.len() >= 3, "{names:?}");
        for n in names {
            assert!(is_iqn(n), "{n}");
        }
    }

    #[test]
    fn parses_initiator_name_files() {
        // From the kernel lab (Debian open-iscsi package).
        let debian = "## DO NOT EDIT OR REMOVE THIS FILE!
## If you remove this file, the iSCSI daemon will not start.
InitiatorName=iqn.1993-08.org.debian:01:5c8d368c2ff3
";
        assert_eq!(
            InitiatorNameFile::parse(debian),
            InitiatorNameFile::Named("iqn.1993-08.org.debian:01:5c8d368c2ff3".into())
        );
        assert_eq!(
            InitiatorNameFile::parse(debian)
                .iqn()
                .as_ref()
                .map(Iqn::as_str),
            Some("iqn.1993-08.org.debian:01:5c8d368c2ff3")
        );
        assert_eq!(
            InitiatorNameFile::parse("## comment\nGenerateName=yes\n"),
            InitiatorNameFile::ToGenerate
        );
        assert_eq!(
            InitiatorNameFile::parse("#InitiatorName=iqn.2000-01.x:y\n"),
            InitiatorNameFile::Missing
        );
        assert_eq!(
            InitiatorNameFile::parse("InitiatorName=iqn.x:a\n").iqn(),
            None
        );
        assert_eq!(InitiatorNameFile::Missing.iqn(), None);
    }
}
