//! The vocabulary the controller, the node, the export backends and doctor share, parsed
//! once where it enters (command line, request) and typed everywhere after.
//!
//! - [`VolumeId`]: `<vg>/<lv>` in LVM's alphabet, and the names derived from it.
//! - [`Iqn`]: an iSCSI name (RFC 3720), initiator or target; [`InitiatorNameFile`]: what
//!   open-iscsi's initiator name file holds.
//! - [`Portal`]: `ADDRESS[:PORT]`, port 3260 by default.
//! - [`chap`]: the CHAP key and the per-(volume, initiator) credentials derived from it.
//! - [`PublishContext`]: what ControllerPublishVolume tells NodeStageVolume.
//! - [`access`]: which access modes are served.

pub mod access;
pub mod chap;
pub mod iqn;
pub mod portal;
pub mod publish_context;
pub mod volume_id;

pub use access::AccessMode;
pub use chap::ChapKey;
pub use iqn::{InitiatorNameFile, Iqn};
pub use portal::Portal;
pub use publish_context::PublishContext;
pub use volume_id::VolumeId;
