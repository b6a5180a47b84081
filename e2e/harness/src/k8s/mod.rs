//! The Kubernetes scenario (`tests/k8s_e2e.rs`, described in e2e/k8s/README.md): what it
//! needs from its environment ([`settings`]), kube-rs helpers ([`cluster`]), the chart
//! through Helm's engine ([`helm`]) and the user's path end to end ([`scenario`]).

pub mod cluster;
pub mod helm;
pub mod scenario;
pub mod settings;
