//! The driver's state, kept in LV tags (DESIGN.md: the storage node's LVM metadata is the
//! source of truth). Pure encoding and decoding; no I/O.
//!
//! Tag formats (all start with [`PREFIX`]):
//! - `lvm-iscsi-csi/name=<name>`: the CSI volume name. Its presence marks the LV as one of
//!   ours; a repeated CreateVolume finds the LV by it.
//! - `lvm-iscsi-csi/fs=<fsType>`: the StorageClass `fsType`, returned in volume_context.
//! - `lvm-iscsi-csi/pub=<node id>/<initiator IQN>/<auth>/<scope>/<access>`: one per
//!   publication (ControllerPublishVolume), written before the target is configured; restore
//!   rebuilds the kernel target from these. `<auth>` is `none` or `chap.<key id>` (the key id
//!   names which CHAP key derived the credentials, never the key or a password); `<scope>`
//!   is `single` or `multi` (node access of the capability); `<access>` is `rw` or `ro`.
//! - `lvm-iscsi-csi/snap=<name>`: the CSI snapshot name. Marks the LV as one of our
//!   snapshots: it is never a volume (listed, exported, restored or deleted as one).
//! - `lvm-iscsi-csi/src=<volume id>`: on a snapshot, the volume it was taken of.
//! - `lvm-iscsi-csi/from=<snapshot|volume>/<id>`: on a volume created from a content source,
//!   that source (echoed in the CSI Volume, compared on a repeated CreateVolume).
//! - `lvm-iscsi-csi/copying=<id>`: on a thick volume whose data is still being copied from
//!   `<id>`; removed only once the copy is complete and synced, so a volume interrupted
//!   half-way is never mistaken for a finished one.
//!
//! LVM accepts `[A-Za-z0-9_+.:/=!&#-]` in tags, up to 1024 bytes. Values are escaped so that
//! any string survives: bytes outside `[A-Za-z0-9_+.:-]` become `#` and two lowercase hex
//! digits (so `/`, `=` and `#` never occur unescaped inside a value).

/// The prefix of every tag this driver writes.
pub const PREFIX: &str = "lvm-iscsi-csi/";

/// The longest tag LVM accepts.
pub const MAX_TAG_LEN: usize = 1024;

const NAME_KEY: &str = "name=";
const FS_KEY: &str = "fs=";
const PUB_KEY: &str = "pub=";
const SNAP_KEY: &str = "snap=";
const SRC_KEY: &str = "src=";
const FROM_KEY: &str = "from=";
const COPYING_KEY: &str = "copying=";

/// Where a volume's initial data came from (CSI volume_content_source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    /// A snapshot, by snapshot id.
    Snapshot(String),
    /// Another volume (a clone), by volume id.
    Volume(String),
}

impl ContentSource {
    /// The source's id.
    pub fn id(&self) -> &str {
        match self {
            ContentSource::Snapshot(id) | ContentSource::Volume(id) => id,
        }
    }

    /// This source as an LV tag.
    pub fn to_tag(&self) -> Result<String, TagError> {
        let kind = match self {
            ContentSource::Snapshot(_) => "snapshot",
            ContentSource::Volume(_) => "volume",
        };
        checked(
            "the content source",
            format!("{PREFIX}{FROM_KEY}{kind}/{}", encode(self.id())),
        )
    }

    fn parse(value: &str) -> Option<ContentSource> {
        let (kind, id) = value.split_once('/')?;
        let id = decode(id).filter(|i| !i.is_empty())?;
        match kind {
            "snapshot" => Some(ContentSource::Snapshot(id)),
            "volume" => Some(ContentSource::Volume(id)),
            _ => None,
        }
    }
}

/// A tag that cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the LV tag for {what} would be {len} bytes; LVM allows at most {MAX_TAG_LEN}")]
pub struct TagError {
    /// What the tag holds.
    pub what: &'static str,
    /// Its encoded length.
    pub len: usize,
}

/// How an initiator authenticates to a publication's ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// ACL only, no CHAP.
    None,
    /// CHAP with credentials derived from the key whose id is given.
    Chap {
        /// A short public fingerprint of the CHAP key (lowercase hex).
        key_id: String,
    },
}

/// One node's publication of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The CSI node id (Kubernetes node name, or an IQN in standalone use).
    pub node_id: String,
    /// The node's initiator IQN that has the ACL.
    pub initiator: String,
    /// CHAP or not.
    pub auth: Auth,
    /// Whether the capability allows several nodes (MULTI_NODE_*).
    pub multi_node: bool,
    /// Whether it was published read-only.
    pub readonly: bool,
}

impl Publication {
    /// This publication as an LV tag.
    pub fn to_tag(&self) -> Result<String, TagError> {
        let auth = match &self.auth {
            Auth::None => "none".to_string(),
            Auth::Chap { key_id } => format!("chap.{}", encode(key_id)),
        };
        let tag = format!(
            "{PREFIX}{PUB_KEY}{}/{}/{auth}/{}/{}",
            encode(&self.node_id),
            encode(&self.initiator),
            if self.multi_node { "multi" } else { "single" },
            if self.readonly { "ro" } else { "rw" },
        );
        checked("a publication", tag)
    }

    fn parse(value: &str) -> Option<Publication> {
        let mut fields = value.split('/');
        let node_id = decode(fields.next()?)?;
        let initiator = decode(fields.next()?)?;
        let auth = match fields.next()? {
            "none" => Auth::None,
            other => Auth::Chap {
                key_id: decode(other.strip_prefix("chap.")?)?,
            },
        };
        let multi_node = match fields.next()? {
            "single" => false,
            "multi" => true,
            _ => return None,
        };
        let readonly = match fields.next()? {
            "rw" => false,
            "ro" => true,
            _ => return None,
        };
        if fields.next().is_some() || node_id.is_empty() || initiator.is_empty() {
            return None;
        }
        Some(Publication {
            node_id,
            initiator,
            auth,
            multi_node,
            readonly,
        })
    }
}

/// Everything the driver keeps in one LV's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeTags {
    /// The CSI name; `None` when the LV is not one of ours.
    pub name: Option<String>,
    /// The StorageClass `fsType`, if it had one.
    pub fs_type: Option<String>,
    /// Publications, in tag order.
    pub publications: Vec<Publication>,
    /// The CSI snapshot name: set only on our snapshots, which are never volumes.
    pub snapshot: Option<String>,
    /// On a snapshot: the id of the volume it was taken of.
    pub source_volume: Option<String>,
    /// On a volume: the content source it was created from.
    pub content_source: Option<ContentSource>,
    /// On a volume: the source whose data copy has not completed yet.
    pub copying: Option<String>,
    /// Tags with our prefix that could not be decoded (kept so they can be reported).
    pub unreadable: Vec<String>,
}

impl VolumeTags {
    /// Reads our tags out of an LV's tag list; other software's tags are ignored.
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> VolumeTags {
        let mut out = VolumeTags::default();
        for tag in tags {
            let tag = tag.as_ref();
            let Some(rest) = tag.strip_prefix(PREFIX) else {
                continue;
            };
            let ok = if let Some(v) = rest.strip_prefix(NAME_KEY) {
                decode(v).filter(|n| !n.is_empty()).map(|n| {
                    // Two name tags cannot happen through this driver; keep the first.
                    out.name.get_or_insert(n);
                })
            } else if let Some(v) = rest.strip_prefix(FS_KEY) {
                decode(v).map(|f| {
                    out.fs_type.get_or_insert(f);
                })
            } else if let Some(v) = rest.strip_prefix(PUB_KEY) {
                Publication::parse(v).map(|p| out.publications.push(p))
            } else if let Some(v) = rest.strip_prefix(SNAP_KEY) {
                decode(v).filter(|n| !n.is_empty()).map(|n| {
                    out.snapshot.get_or_insert(n);
                })
            } else if let Some(v) = rest.strip_prefix(SRC_KEY) {
                decode(v).filter(|n| !n.is_empty()).map(|n| {
                    out.source_volume.get_or_insert(n);
                })
            } else if let Some(v) = rest.strip_prefix(FROM_KEY) {
                ContentSource::parse(v).map(|c| {
                    out.content_source.get_or_insert(c);
                })
            } else if let Some(v) = rest.strip_prefix(COPYING_KEY) {
                decode(v).filter(|n| !n.is_empty()).map(|n| {
                    out.copying.get_or_insert(n);
                })
            } else {
                None
            };
            if ok.is_none() {
                out.unreadable.push(tag.to_string());
            }
        }
        out
    }

    /// The publication of `node_id`, if any.
    pub fn publication(&self, node_id: &str) -> Option<&Publication> {
        self.publications.iter().find(|p| p.node_id == node_id)
    }

    /// The node ids the volume is published to, sorted, without duplicates.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .publications
            .iter()
            .map(|p| p.node_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The tag holding CSI name `name`.
pub fn name_tag(name: &str) -> Result<String, TagError> {
    checked(
        "the volume name",
        format!("{PREFIX}{NAME_KEY}{}", encode(name)),
    )
}

/// The tag holding the StorageClass `fsType`.
pub fn fs_type_tag(fs_type: &str) -> Result<String, TagError> {
    checked("the fsType", format!("{PREFIX}{FS_KEY}{}", encode(fs_type)))
}

/// The tag holding CSI snapshot name `name`.
pub fn snapshot_tag(name: &str) -> Result<String, TagError> {
    checked(
        "the snapshot name",
        format!("{PREFIX}{SNAP_KEY}{}", encode(name)),
    )
}

/// The tag recording the volume a snapshot was taken of.
pub fn source_volume_tag(volume_id: &str) -> Result<String, TagError> {
    checked(
        "the source volume",
        format!("{PREFIX}{SRC_KEY}{}", encode(volume_id)),
    )
}

/// The marker of a volume whose data is being copied from `source_id`.
pub fn copying_tag(source_id: &str) -> Result<String, TagError> {
    checked(
        "the copy marker",
        format!("{PREFIX}{COPYING_KEY}{}", encode(source_id)),
    )
}

fn checked(what: &'static str, tag: String) -> Result<String, TagError> {
    if tag.len() > MAX_TAG_LEN {
        return Err(TagError {
            what,
            len: tag.len(),
        });
    }
    Ok(tag)
}

/// Escapes `value` into the tag-safe alphabet `[A-Za-z0-9_+.:#-]`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b':' | b'-') {
            out.push(char::from(b));
        } else {
            out.push('#');
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// Reverses [`encode`]; `None` for anything [`encode`] cannot have produced.
pub fn decode(s: &str) -> Option<String> {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'#' {
            let hex = s.get(i + 1..i + 3)?;
            if hex.bytes().any(|h| h.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b':' | b'-') {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvm_tag_charset(tag: &str) -> bool {
        tag.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'+' | b'.' | b'-' | b'/' | b'=' | b'!' | b':' | b'&' | b'#'
                )
        })
    }

    #[test]
    fn encoding_round_trips_and_stays_in_lvm_charset() {
        for v in [
            "pvc-0b6c4a9e-1f0e-4b8a-9d8e-2a4f5e6d7c8b",
            "my vol/é",
            "a#b=c/d,e@f",
            "",
            "iqn.2004-10.com.debian:node1",
            "控制器",
        ] {
            let e = encode(v);
            assert!(lvm_tag_charset(&e), "{e}");
            assert!(!e.contains('/') && !e.contains('='), "{e}");
            assert_eq!(decode(&e).as_deref(), Some(v));
        }
        // Same escape as in the tag captured in the lab.
        assert_eq!(encode("my vol/é"), "my#20vol#2f#c3#a9");
    }

    #[test]
    fn decode_rejects_what_encode_never_writes() {
        for bad in ["a/b", "#2", "#zz", "#2F", "a b", "#ff"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn publication_tag_format_is_stable() {
        let p = Publication {
            node_id: "node-1.example".into(),
            initiator: "iqn.2004-10.com.debian:node1".into(),
            auth: Auth::Chap {
                key_id: "0a1b2c3d".into(),
            },
            multi_node: false,
            readonly: false,
        };
        let tag = p.to_tag().unwrap();
        assert_eq!(
            tag,
            "lvm-iscsi-csi/pub=node-1.example/iqn.2004-10.com.debian:node1/chap.0a1b2c3d/single/rw"
        );
        let ro = Publication {
            auth: Auth::None,
            multi_node: true,
            readonly: true,
            ..p.clone()
        };
        assert_eq!(
            ro.to_tag().unwrap(),
            "lvm-iscsi-csi/pub=node-1.example/iqn.2004-10.com.debian:node1/none/multi/ro"
        );
        let parsed = VolumeTags::parse(&[tag, ro.to_tag().unwrap()]);
        assert_eq!(parsed.publications, vec![p, ro]);
        assert_eq!(parsed.node_ids(), ["node-1.example"]);
    }

    #[test]
    fn parses_a_full_tag_list_and_ignores_foreign_tags() {
        let tags = [
            "owner=dba",
            "lvm-iscsi-csi/name=my#20vol",
            "lvm-iscsi-csi/fs=xfs",
            "lvm-iscsi-csi/pub=n2/iqn.2000-01.x:n2/none/single/rw",
            "lvm-iscsi-csi/pub=broken",
            "lvm-iscsi-csi/future=1",
        ];
        let t = VolumeTags::parse(&tags);
        assert_eq!(t.name.as_deref(), Some("my vol"));
        assert_eq!(t.fs_type.as_deref(), Some("xfs"));
        assert_eq!(t.publication("n2").map(|p| p.readonly), Some(false));
        assert!(t.publication("n1").is_none());
        assert_eq!(
            t.unreadable,
            ["lvm-iscsi-csi/pub=broken", "lvm-iscsi-csi/future=1"]
        );
        assert_eq!(VolumeTags::parse::<&str>(&[]), VolumeTags::default());
    }

    #[test]
    fn snapshot_and_content_source_tags_round_trip() {
        let snap = [
            snapshot_tag("snapshot-1").unwrap(),
            source_volume_tag("csivg/pvc-1").unwrap(),
        ];
        assert_eq!(
            snap,
            [
                "lvm-iscsi-csi/snap=snapshot-1",
                "lvm-iscsi-csi/src=csivg#2fpvc-1"
            ]
        );
        let t = VolumeTags::parse(&snap);
        assert_eq!(t.snapshot.as_deref(), Some("snapshot-1"));
        assert_eq!(t.source_volume.as_deref(), Some("csivg/pvc-1"));
        assert_eq!(t.name, None);
        let from = ContentSource::Snapshot("csivg/snap.s1".into());
        let vol = [
            name_tag("pvc-2").unwrap(),
            from.to_tag().unwrap(),
            copying_tag("csivg/snap.s1").unwrap(),
        ];
        assert_eq!(vol[1], "lvm-iscsi-csi/from=snapshot/csivg#2fsnap.s1");
        let t = VolumeTags::parse(&vol);
        assert_eq!(t.content_source, Some(from));
        assert_eq!(t.copying.as_deref(), Some("csivg/snap.s1"));
        let clone = ContentSource::Volume("csivg/pvc-1".into());
        assert_eq!(
            VolumeTags::parse(&[clone.to_tag().unwrap()]).content_source,
            Some(clone)
        );
        let bad = VolumeTags::parse(&["lvm-iscsi-csi/from=disk/x", "lvm-iscsi-csi/snap="]);
        assert_eq!(bad.unreadable.len(), 2);
    }

    #[test]
    fn too_long_tags_are_refused() {
        assert_eq!(name_tag("pvc-1").unwrap(), "lvm-iscsi-csi/name=pvc-1");
        assert_eq!(fs_type_tag("ext4").unwrap(), "lvm-iscsi-csi/fs=ext4");
        // 128 bytes of characters that all need escaping still fit...
        assert!(name_tag(&" ".repeat(128)).is_ok());
        // ...but a value that cannot fit is an error, not a truncated tag.
        let err = name_tag(&" ".repeat(400)).unwrap_err();
        assert_eq!(err.len, PREFIX.len() + NAME_KEY.len() + 1200);
    }
}
