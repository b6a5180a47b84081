//! ControllerPublishVolume and ControllerUnpublishVolume: Cinder's initialize_connection and
//! terminate_connection. A publication is an LV tag (written first, as the intent), a target
//! for the volume and an ACL for the node's initiator, with CHAP when a key is known.

use std::collections::HashMap;

use crate::csi::{ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest};
use crate::domain::{ChapKey, Iqn, VolumeId};
use crate::lvm::tags::{Auth, Publication, VolumeTags};

use super::capability::{self, Access};
use super::exports::Exports;
use super::request::{check_node_id, parse_known, RequestError};
use super::volumes::{Change, Step, Volumes};
use super::ControllerError;

/// A checked ControllerPublishVolume request.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// The volume.
    pub id: VolumeId,
    /// The CSI node id.
    pub node_id: String,
    /// What the capability allows.
    pub access: Access,
    /// Publish read-only.
    pub readonly: bool,
    /// The CHAP key from the request's secrets.
    pub key: Option<ChapKey>,
}

/// Checks a ControllerPublishVolume request before anything runs.
pub fn validate_publish(
    req: &ControllerPublishVolumeRequest,
) -> Result<PublishPlan, ControllerError> {
    // A malformed id is refused now; an id that merely names no volume of ours is NOT_FOUND,
    // but only once the rest of the request is known to be complete.
    let id = parse_known(&req.volume_id)?;
    check_node_id(&req.node_id)?;
    let cap = req
        .volume_capability
        .as_ref()
        .ok_or(RequestError::Missing("volume_capability"))?;
    let access = capability::check(cap).map_err(RequestError::Capability)?;
    let key = ChapKey::from_secrets(&req.secrets)?;
    let id = id.ok_or_else(|| ControllerError::VolumeNotFound {
        id: req.volume_id.clone(),
    })?;
    Ok(PublishPlan {
        id,
        node_id: req.node_id.clone(),
        access,
        readonly: req.readonly,
        key,
    })
}

/// Checks a ControllerUnpublishVolume request: `None` when the id cannot name a volume of
/// ours (nothing to do).
pub fn validate_unpublish(
    req: &ControllerUnpublishVolumeRequest,
) -> Result<Option<VolumeId>, RequestError> {
    let id = parse_known(&req.volume_id)?;
    check_node_id(&req.node_id)?;
    Ok(id)
}

/// A publication's tag change, and the initiators of this node's earlier publications that
/// are no longer its initiator.
#[derive(Debug)]
struct Recording {
    /// The tag change.
    change: Change,
    /// Initiators that lose access (the node's initiator changed: reinstalled host).
    old_initiators: Vec<String>,
}

/// The change deleting the tags of publications `mine` from an LV tagged `tags`.
fn removing(tags: &[String], mine: &[&Publication]) -> Result<Change, ControllerError> {
    Ok(Change::new(tags, vec![], tags_of(mine)?))
}

/// What recording `wanted` on volume `id`, whose LV has `lv_tags`, takes; the publish
/// conflicts are refused here.
fn publication_change(
    id: &VolumeId,
    lv_tags: &[String],
    wanted: &Publication,
) -> Result<Recording, ControllerError> {
    let tags = VolumeTags::parse(lv_tags);
    if let Some(source) = &tags.copying {
        // Its data is incomplete: a node must never see it.
        return Err(ControllerError::NotReady {
            id: id.to_string(),
            from: source.clone(),
        });
    }
    let node_id = &wanted.node_id;
    let mine: Vec<&Publication> = tags
        .publications
        .iter()
        .filter(|p| p.node_id == *node_id)
        .collect();
    for p in &mine {
        if p.readonly != wanted.readonly {
            return Err(ControllerError::PublishConflict {
                id: id.to_string(),
                node_id: node_id.clone(),
                detail: format!(
                    "readonly={} (asked readonly={})",
                    p.readonly, wanted.readonly
                ),
            });
        }
        if p.multi_node != wanted.multi_node {
            return Err(ControllerError::PublishConflict {
                id: id.to_string(),
                node_id: node_id.clone(),
                detail: "another access mode (single-node vs multi-node)".into(),
            });
        }
    }
    let others: Vec<&Publication> = tags
        .publications
        .iter()
        .filter(|p| p.node_id != *node_id)
        .collect();
    if !others.is_empty() && (!wanted.multi_node || others.iter().any(|p| !p.multi_node)) {
        let mut nodes: Vec<String> = others.iter().map(|p| p.node_id.clone()).collect();
        nodes.sort();
        nodes.dedup();
        return Err(ControllerError::PublishedElsewhere {
            id: id.to_string(),
            nodes,
        });
    }
    let tag = wanted.to_tag()?;
    let delete: Vec<String> = mine
        .iter()
        .map(|p| p.to_tag())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|t| *t != tag)
        .collect();
    let add = if lv_tags.contains(&tag) {
        vec![]
    } else {
        vec![tag]
    };
    Ok(Recording {
        change: Change::new(lv_tags, add, delete),
        old_initiators: mine
            .iter()
            .filter(|p| p.initiator != wanted.initiator)
            .map(|p| p.initiator.clone())
            .collect(),
    })
}

/// ControllerPublishVolume and ControllerUnpublishVolume, over LVM and the target.
pub(crate) struct Publish<'a> {
    /// Our LVs (the publication records).
    pub(crate) volumes: &'a Volumes,
    /// Their exports.
    pub(crate) exports: &'a Exports,
}

impl Publish<'_> {
    /// Publishes `plan.id` to the node whose initiator is `initiator`; returns
    /// publish_context. Repeating it returns the same context.
    ///
    /// One LVM command when the volume's tags are known (the tag cache): the tag write,
    /// made only if the tags are still what they were; else (or when nothing is to be
    /// written) the LV is read first.
    pub(crate) async fn publish(
        &self,
        plan: &PublishPlan,
        initiator: &Iqn,
    ) -> Result<HashMap<String, String>, ControllerError> {
        let id = &plan.id;
        let key = self.exports.key(plan.key.as_ref());
        let wanted = Publication {
            node_id: plan.node_id.clone(),
            initiator: initiator.to_string(),
            auth: key.map_or(Auth::None, |k| Auth::Chap { key_id: k.id() }),
            multi_node: plan.access.multi_node,
            readonly: plan.readonly,
        };
        // The intent first: if anything below fails, restore (or the retry) finishes it.
        let recording = self.record(id, &wanted).await?;
        if key.is_none() {
            tracing::warn!(volume_id = %id, node_id = %plan.node_id,
                "no CHAP key in the request's secrets or --chap-key-file: the ACL alone protects this export");
        }
        self.exports
            .ensure(id, &Exports::acl(id, initiator, key))
            .await?;
        let iqn = self.exports.iqn(id);
        for old in &recording.old_initiators {
            self.exports.deny(&iqn, old).await?;
        }
        tracing::info!(volume_id = %id, node_id = %plan.node_id, %initiator, %iqn, "volume published");
        Ok(self.exports.publish_context(id, key.is_some())?.to_map())
    }

    /// Records publication `wanted` of `id` in its tags, from the cache when it is still
    /// right, else from a fresh read.
    async fn record(
        &self,
        id: &VolumeId,
        wanted: &Publication,
    ) -> Result<Recording, ControllerError> {
        if let Some(cached) = self.volumes.cached_tags(id) {
            if let Ok(r) = publication_change(id, &cached, wanted) {
                if r.change.writes()
                    && self
                        .volumes
                        .write_if_unchanged(id, &cached, &r.change)
                        .await
                {
                    return Ok(r);
                }
            }
        }
        let v = self
            .volumes
            .volume(id)
            .await?
            .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
        let r = publication_change(id, &v.lv.tags, wanted)?;
        if r.change.writes() {
            let step = Step::Record {
                id: id.clone(),
                node_id: wanted.node_id.clone(),
            };
            self.volumes.write_tags(id, &r.change, step).await?;
        }
        Ok(r)
    }

    /// Removes the publication of `id` to `node_id`: ACL, then tag, then the export when no
    /// publication is left. An unknown volume or node is success.
    ///
    /// With the volume's tags known (the tag cache), the tag is deleted without reading the
    /// LV first, only if the tags are still what they were; anything else reads the LV.
    pub(crate) async fn unpublish(
        &self,
        id: &VolumeId,
        node_id: &str,
    ) -> Result<(), ControllerError> {
        if let Some(cached) = self.volumes.cached_tags(id) {
            if self.unpublish_known(id, node_id, &cached).await? {
                return Ok(());
            }
        }
        let Some(v) = self.volumes.volume(id).await? else {
            tracing::info!(volume_id = %id, "volume does not exist: nothing to unpublish");
            return Ok(());
        };
        let (mine, rest) = split(&v.tags, node_id);
        if mine.is_empty() && !rest.is_empty() {
            tracing::info!(volume_id = %id, node_id, "volume is not published to this node");
            return Ok(());
        }
        self.exports.check_restored()?;
        let iqn = self.exports.iqn(id);
        self.remove_acls(&iqn, &mine, &rest).await?;
        if !mine.is_empty() {
            let step = Step::Unrecord {
                id: id.clone(),
                node_id: node_id.to_string(),
            };
            let change = removing(&v.lv.tags, &mine)?;
            self.volumes.write_tags(id, &change, step).await?;
        }
        self.unpublished(id, node_id, &iqn, &rest).await
    }

    /// The last step of an unpublish: the export goes when no publication (`rest`) is left.
    async fn unpublished(
        &self,
        id: &VolumeId,
        node_id: &str,
        iqn: &str,
        rest: &[&Publication],
    ) -> Result<(), ControllerError> {
        if rest.is_empty() {
            self.exports.remove(iqn).await?;
        }
        tracing::info!(volume_id = %id, node_id, "volume unpublished");
        Ok(())
    }

    /// Unpublishes from the cached tags `cached`: `true` when done, `false` when the LV must
    /// be read (nothing to delete per the cache, or the tags changed meanwhile).
    async fn unpublish_known(
        &self,
        id: &VolumeId,
        node_id: &str,
        cached: &[String],
    ) -> Result<bool, ControllerError> {
        let tags = VolumeTags::parse(cached);
        let (mine, rest) = split(&tags, node_id);
        if mine.is_empty() {
            // An answer without a write is only given from a fresh read.
            return Ok(false);
        }
        self.exports.check_restored()?;
        let iqn = self.exports.iqn(id);
        // Taking access away first is safe even if the cache is stale.
        self.remove_acls(&iqn, &mine, &rest).await?;
        let change = removing(cached, &mine)?;
        if !self.volumes.write_if_unchanged(id, cached, &change).await {
            return Ok(false);
        }
        self.unpublished(id, node_id, &iqn, &rest).await?;
        Ok(true)
    }

    /// Removes the ACLs of the publications `mine`, except initiators `rest` still uses.
    async fn remove_acls(
        &self,
        iqn: &str,
        mine: &[&Publication],
        rest: &[&Publication],
    ) -> Result<(), ControllerError> {
        for p in mine {
            if rest.iter().any(|r| r.initiator == p.initiator) {
                continue;
            }
            self.exports.deny(iqn, &p.initiator).await?;
        }
        Ok(())
    }
}

/// The publications of `tags` to `node_id`, and the others.
fn split<'a>(tags: &'a VolumeTags, node_id: &str) -> (Vec<&'a Publication>, Vec<&'a Publication>) {
    tags.publications.iter().partition(|p| p.node_id == node_id)
}

/// The tags of publications `ps`.
fn tags_of(ps: &[&Publication]) -> Result<Vec<String>, ControllerError> {
    Ok(ps
        .iter()
        .map(|p| p.to_tag())
        .collect::<Result<Vec<_>, _>>()?)
}
