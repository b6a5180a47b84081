//! ControllerPublishVolume and ControllerUnpublishVolume: Cinder's initialize_connection and
//! terminate_connection. A publication is an LV tag (written first, as the intent), a target
//! for the volume and an ACL for the node's initiator, with CHAP when a key is known.

use std::collections::HashMap;

use crate::csi::{ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest};
use crate::domain::iqn::IqnError;
use crate::domain::{ChapKey, Iqn, PublishContext, VolumeId};
use crate::export::{AclSpec, TargetError};
use crate::lvm::tags::{Auth, Publication, VolumeTags};
use crate::lvm::LvmError;

use super::capability::{self, Access};
use super::create::parse_known;
use super::error::Context;
use super::{ControllerError, Core};

/// Longest node id accepted: a Kubernetes node name (DNS subdomain) can have 253 bytes.
const MAX_NODE_ID: usize = 253;

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
        .ok_or(ControllerError::Missing("volume_capability"))?;
    let access = capability::check(cap).map_err(ControllerError::Capability)?;
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
) -> Result<Option<VolumeId>, ControllerError> {
    let id = parse_known(&req.volume_id)?;
    check_node_id(&req.node_id)?;
    Ok(id)
}

fn check_node_id(node_id: &str) -> Result<(), ControllerError> {
    if node_id.is_empty() {
        return Err(ControllerError::Missing("node_id"));
    }
    if node_id.len() > MAX_NODE_ID || node_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ControllerError::Invalid {
            field: "node_id",
            reason: "longer than 253 bytes, or contains whitespace or control characters".into(),
        });
    }
    Ok(())
}

/// The tag change that records a publication, decided from the volume's tags.
#[derive(Debug)]
struct Change {
    /// Tags to add.
    add: Vec<String>,
    /// Tags to delete.
    delete: Vec<String>,
    /// The LV's tags once changed.
    after: Vec<String>,
    /// Initiators of this node's earlier publications that are no longer its initiator.
    old_initiators: Vec<String>,
}

impl Change {
    /// Deleting the tags of publications `mine` from an LV tagged `tags`.
    fn removing(tags: &[String], mine: &[&Publication]) -> Result<Change, ControllerError> {
        let delete = tags_of(mine)?;
        Ok(Change {
            after: tags_after(tags, &[], &delete),
            add: vec![],
            delete,
            old_initiators: vec![],
        })
    }

    /// Whether anything is to be written.
    fn writes(&self) -> bool {
        !self.add.is_empty() || !self.delete.is_empty()
    }
}

/// The LV's tags after deleting `delete` and adding `add`.
fn tags_after(tags: &[String], add: &[String], delete: &[String]) -> Vec<String> {
    let mut after: Vec<String> = tags
        .iter()
        .filter(|t| !delete.contains(t))
        .cloned()
        .collect();
    after.extend(add.iter().filter(|t| !tags.contains(t)).cloned());
    after
}

/// What recording `wanted` on volume `id`, whose LV has `lv_tags`, takes; the publish
/// conflicts are refused here.
fn publication_change(
    id: &VolumeId,
    lv_tags: &[String],
    wanted: &Publication,
) -> Result<Change, ControllerError> {
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
    Ok(Change {
        after: tags_after(lv_tags, &add, &delete),
        add,
        delete,
        old_initiators: mine
            .iter()
            .filter(|p| p.initiator != wanted.initiator)
            .map(|p| p.initiator.clone())
            .collect(),
    })
}

impl Core {
    /// Publishes `plan.id` to the node whose initiator is `initiator`; returns
    /// publish_context. Repeating it returns the same context.
    ///
    /// One LVM command when the volume's tags are known (`tag_cache`): the tag write,
    /// made only if the tags are still what they were; else (or when nothing is to be
    /// written) the LV is read first.
    pub(crate) async fn publish(
        &self,
        plan: &PublishPlan,
        initiator: &Iqn,
    ) -> Result<HashMap<String, String>, ControllerError> {
        let id = &plan.id;
        let key = plan.key.as_ref().or(self.settings.chap_key.as_ref());
        let wanted = Publication {
            node_id: plan.node_id.clone(),
            initiator: initiator.to_string(),
            auth: key.map_or(Auth::None, |k| Auth::Chap { key_id: k.id() }),
            multi_node: plan.access.multi_node,
            readonly: plan.readonly,
        };
        let what = || format!("recording the publication of {id} to node {}", plan.node_id);
        // The intent first: if anything below fails, restore (or the retry) finishes it.
        let mut change = None;
        if let Some(cached) = self.tags.get(id) {
            if let Ok(c) = publication_change(id, &cached, &wanted) {
                if c.writes() && self.write_if_unchanged(id, &cached, &c).await {
                    change = Some(c);
                }
            }
        }
        let change = match change {
            Some(c) => c,
            None => {
                let v = self
                    .volume(id)
                    .await?
                    .ok_or_else(|| ControllerError::VolumeNotFound { id: id.to_string() })?;
                let c = publication_change(id, &v.lv.tags, &wanted)?;
                if c.writes() {
                    self.write_tags(id, &c).await.context(what)?;
                }
                c
            }
        };

        let spec = self.export_spec(id);
        self.target
            .ensure_export(&spec)
            .await
            .context(|| format!("exporting {id} as {}", spec.iqn))?;
        let chap = key.map(|k| k.credentials(id, initiator));
        if chap.is_none() {
            tracing::warn!(volume_id = %id, node_id = %plan.node_id,
                "no CHAP key in the request's secrets or --chap-key-file: the ACL alone protects this export");
        }
        let acl = AclSpec {
            initiator: initiator.to_string(),
            chap,
        };
        self.target
            .ensure_acl(&spec.iqn, &acl)
            .await
            .context(|| format!("allowing initiator {initiator} on {}", spec.iqn))?;
        // The node's initiator changed (reinstalled host): the old one loses access.
        for old in &change.old_initiators {
            self.target
                .remove_acl(&spec.iqn, old)
                .await
                .context(|| format!("removing the old initiator {old} from {}", spec.iqn))?;
        }
        tracing::info!(volume_id = %id, node_id = %plan.node_id, %initiator, iqn = %spec.iqn, "volume published");
        // Valid by construction from a checked --iqn-prefix.
        let iqn = spec
            .iqn
            .parse()
            .map_err(|e: IqnError| TargetError::Invalid {
                what: "target name",
                value: e.name,
                reason: "not a valid iSCSI name: check --iqn-prefix",
            })
            .context(|| format!("exporting {id}"))?;
        Ok(PublishContext {
            iqn,
            portals: self.settings.portals.clone(),
            lun: self.target.data_lun(),
            chap: key.is_some(),
        }
        .to_map())
    }

    /// Writes `change` if the tags of `id` are still `cached`: `true` when written. On
    /// `false` the caller reads the LV and decides again.
    async fn write_if_unchanged(&self, id: &VolumeId, cached: &[String], change: &Change) -> bool {
        let written = self
            .lvm
            .change_tags_if(id.vg(), id.lv(), &change.add, &change.delete, cached)
            .await;
        match written {
            Ok(true) => {
                self.tags.put(id, change.after.clone());
                return true;
            }
            Ok(false) => {
                tracing::debug!(volume_id = %id, "the tags changed since this process saw them: reading them")
            }
            Err(e) => {
                tracing::debug!(volume_id = %id, error = %crate::error::full_message(&e), "conditional tag write failed: reading the volume")
            }
        }
        self.tags.forget(id);
        false
    }

    /// Writes `change` (decided from a fresh read of the LV).
    async fn write_tags(&self, id: &VolumeId, change: &Change) -> Result<(), LvmError> {
        let written = self
            .lvm
            .change_tags(id.vg(), id.lv(), &change.add, &change.delete)
            .await;
        match &written {
            Ok(()) => self.tags.put(id, change.after.clone()),
            Err(_) => self.tags.forget(id),
        }
        written
    }

    /// Removes the publication of `id` to `node_id`: ACL, then tag, then the export when no
    /// publication is left. An unknown volume or node is success.
    ///
    /// With the volume's tags known (`tag_cache`), the tag is deleted without reading the LV
    /// first, only if the tags are still what they were; anything else reads the LV.
    pub(crate) async fn unpublish(
        &self,
        id: &VolumeId,
        node_id: &str,
    ) -> Result<(), ControllerError> {
        if let Some(cached) = self.tags.get(id) {
            if self.unpublish_known(id, node_id, &cached).await? {
                return Ok(());
            }
        }
        let Some(v) = self.volume(id).await? else {
            tracing::info!(volume_id = %id, "volume does not exist: nothing to unpublish");
            return Ok(());
        };
        let (mine, rest) = split(&v.tags, node_id);
        if mine.is_empty() && !rest.is_empty() {
            tracing::info!(volume_id = %id, node_id, "volume is not published to this node");
            return Ok(());
        }
        self.check_restored()?;
        let iqn = self.iqn(id);
        self.remove_acls(&iqn, &mine, &rest).await?;
        if !mine.is_empty() {
            let change = Change::removing(&v.lv.tags, &mine)?;
            self.write_tags(id, &change)
                .await
                .context(|| format!("removing the publication of {id} to node {node_id}"))?;
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
            self.target
                .remove_export(iqn)
                .await
                .context(|| format!("removing export {iqn}"))?;
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
        self.check_restored()?;
        let iqn = self.iqn(id);
        // Taking access away first is safe even if the cache is stale.
        self.remove_acls(&iqn, &mine, &rest).await?;
        let change = Change::removing(cached, &mine)?;
        if !self.write_if_unchanged(id, cached, &change).await {
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
            self.target
                .remove_acl(iqn, &p.initiator)
                .await
                .context(|| format!("removing initiator {} from {iqn}", p.initiator))?;
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
