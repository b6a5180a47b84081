//! A Kubernetes CSI driver that gives pods persistent block volumes from LVM on a storage
//! node, exported over iSCSI: OpenStack Cinder's LVM backend, in Kubernetes terms.
//!
//! # Layout
//! - [`cli`]: the command line of the one binary (`controller`, `node`, `doctor`).
//! - [`server`]: the gRPC server on a unix socket; [`telemetry`]: logging.
//! - [`rpc`]: what both services' RPCs share: one span per call, and the reply.
//! - [`metrics`]: Prometheus metrics, the per-RPC span/metrics layer, the HTTP endpoints.
//! - [`health`]: liveness for `/healthz`, from the process's own Identity Probe.
//! - [`doctor`]: host checks for a storage or compute node, with a fix for each problem.
//! - [`csi`]: the generated CSI v1 types, with secrets redacted from `Debug`.
//! - [`error`]: the one mapping from our errors to gRPC codes.
//! - [`identity`]: the Identity service and readiness probe.
//! - [`controller`]: the Controller service (storage node): [`lvm`] + [`export`].
//! - [`node`]: the Node service (every node): iSCSI login, device discovery, mounts.
//! - [`domain`]: the vocabulary both halves share: volume ids, iSCSI names, portals, the
//!   CHAP key and its credentials, publish_context, access modes.
//! - [`ops`]: one operation per volume at a time.
//! - [`exec`]: the one way external tools run (argv only, timeouts, redaction).
//! - [`kube`]: the Node annotation that carries a node's initiator IQN.

pub mod cli;
pub mod controller;
pub mod csi;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod exec;
pub mod export;
pub mod health;
pub mod identity;
pub mod kube;
pub mod lvm;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod rpc;
pub mod server;
pub mod telemetry;
