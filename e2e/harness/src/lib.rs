//! The lvm-iscsi-csi lab harness: what the real-kernel tests (`tests/lab_*.rs`), the lab
//! programs (`src/bin/lab_demo`, `src/bin/lab_bench`) and the Kubernetes scenario
//! (`tests/k8s_e2e.rs`) share. Everything here drives the driver from outside, the way
//! Kubernetes and the kernel see it; the driver's own types come from its library.
//!
//! - [`lab`]: the lab guest's environment, the driver binary as a child process, gRPC clients
//!   on its unix sockets, open-iscsi from the initiator side, timings;
//!   [`lab::node`] and [`lab::storage`] look at a volume from either side of the wire.
//! - [`observe`]: what LVM, configfs, iscsiadm, sysfs and mountinfo show, as values (the lab
//!   programs report these instead of the driver's answers).
//! - [`k8s`]: the scenario against a real cluster (Helm install, PVC, pods, leak checks).
//!
//! The lab tests are `#[ignore]`d: `cargo test` builds them and leaves them alone;
//! e2e/lab-test.sh runs them inside a lab guest.

pub mod k8s;
pub mod lab;
pub mod observe;
