//! Prometheus metrics: one registry per process, filled by the per-RPC layer ([`layer`]), by
//! the command runner (external tool durations) and by the services (volume, VG, thin pool
//! and session gauges), and served as text on `--metrics-address` ([`http`]).
//!
//! Recording always happens (it costs a few atomic operations); serving only when the flag
//! is given. Services reach the registry through [`global`]; tests build their own
//! [`Metrics`] so they do not see each other's samples.

pub mod http;
pub mod layer;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Prefix of every metric name.
const PREFIX: &str = "lvm_iscsi_csi";

/// Labels of the per-RPC latency histogram and in-flight gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The CSI service: `Identity`, `Controller` or `Node`.
    pub service: String,
    /// The method, e.g. `CreateVolume`.
    pub method: String,
}

/// Labels of the per-RPC call counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    /// The CSI service.
    service: String,
    /// The method.
    method: String,
    /// The gRPC status code name, e.g. `Ok`, `NotFound`.
    code: &'static str,
}

/// Labels of the per-volume-group gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VgLabels {
    /// Volume group name.
    vg: String,
}

/// Labels of the thin pool gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    /// Volume group holding the pool.
    vg: String,
    /// Thin pool LV name.
    pool: String,
}

/// Labels of the external command histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    /// Basename of the program, e.g. `lvcreate`, `iscsiadm`.
    tool: String,
}

/// Builds a histogram family's members.
type HistogramCtor = fn() -> Histogram;

/// RPC latency buckets: 5 ms to ~82 s (a CreateVolume with wiping, a slow login).
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// External command buckets: 1 ms to ~33 s.
fn command_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metric families (shared by every clone of [`Metrics`]).
struct Families {
    /// Latency of each RPC.
    rpc_duration: Family<RpcLabels, Histogram, HistogramCtor>,
    /// Finished RPCs by gRPC code.
    rpc_calls: Family<RpcCodeLabels, Counter>,
    /// RPCs being served right now.
    rpc_in_flight: Family<RpcLabels, Gauge>,
    /// Volumes (CSI-managed LVs) per VG.
    volumes: Family<VgLabels, Gauge>,
    /// Volumes published to at least one node, per VG.
    published_volumes: Family<VgLabels, Gauge>,
    /// VG size in bytes.
    vg_size: Family<VgLabels, Gauge>,
    /// VG free bytes.
    vg_free: Family<VgLabels, Gauge>,
    /// Thin pool data size in bytes.
    pool_size: Family<PoolLabels, Gauge>,
    /// Thin pool free data bytes.
    pool_free: Family<PoolLabels, Gauge>,
    /// iSCSI sessions on this node.
    iscsi_sessions: Gauge,
    /// NodeStageVolume calls that failed.
    stage_failures: Counter,
    /// Run time of external commands.
    command_duration: Family<ToolLabels, Histogram, HistogramCtor>,
}

/// The process's metrics: a registry and handles to set and observe its members. Cloning is
/// cheap (shared).
#[derive(Clone)]
pub struct Metrics {
    /// The registry, for encoding.
    registry: Arc<Registry>,
    /// The members, for recording.
    families: Arc<Families>,
}

/// The process-wide metrics the server layer, the command runner and the services record
/// into, and `--metrics-address` serves.
pub fn global() -> &'static Metrics {
    static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &GLOBAL
}

/// Saturates a byte count into a gauge value.
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered and no samples.
    pub fn new() -> Self {
        let f = Families {
            rpc_duration: Family::new_with_constructor(rpc_histogram as HistogramCtor),
            rpc_calls: Family::default(),
            rpc_in_flight: Family::default(),
            volumes: Family::default(),
            published_volumes: Family::default(),
            vg_size: Family::default(),
            vg_free: Family::default(),
            pool_size: Family::default(),
            pool_free: Family::default(),
            iscsi_sessions: Gauge::default(),
            stage_failures: Counter::default(),
            command_duration: Family::new_with_constructor(command_histogram as HistogramCtor),
        };
        let mut r = Registry::with_prefix(PREFIX);
        r.register(
            "rpc_duration_seconds",
            "Latency of CSI RPCs",
            f.rpc_duration.clone(),
        );
        r.register(
            "rpc_calls",
            "Finished CSI RPCs by gRPC status code",
            f.rpc_calls.clone(),
        );
        r.register(
            "rpc_in_flight",
            "CSI RPCs being served",
            f.rpc_in_flight.clone(),
        );
        r.register(
            "volumes",
            "Volumes managed by this driver, per volume group",
            f.volumes.clone(),
        );
        r.register(
            "published_volumes",
            "Volumes published to at least one node, per volume group",
            f.published_volumes.clone(),
        );
        r.register(
            "volume_group_size_bytes",
            "Size of the volume group",
            f.vg_size.clone(),
        );
        r.register(
            "volume_group_free_bytes",
            "Unallocated space in the volume group",
            f.vg_free.clone(),
        );
        r.register(
            "thin_pool_size_bytes",
            "Data size of the thin pool",
            f.pool_size.clone(),
        );
        r.register(
            "thin_pool_free_bytes",
            "Unused data space in the thin pool",
            f.pool_free.clone(),
        );
        r.register(
            "iscsi_sessions",
            "iSCSI sessions open on this node",
            f.iscsi_sessions.clone(),
        );
        r.register(
            "stage_failures",
            "NodeStageVolume calls that failed",
            f.stage_failures.clone(),
        );
        r.register(
            "command_duration_seconds",
            "Run time of external commands, by tool",
            f.command_duration.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            families: Arc::new(f),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would only drop samples.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Controller: the number of volumes in `vg`.
    pub fn set_volumes(&self, vg: &str, count: u64) {
        self.families
            .volumes
            .get_or_create(&vg_labels(vg))
            .set(gauge_value(count));
    }

    /// Controller: the number of volumes in `vg` published to at least one node.
    pub fn set_published_volumes(&self, vg: &str, count: u64) {
        self.families
            .published_volumes
            .get_or_create(&vg_labels(vg))
            .set(gauge_value(count));
    }

    /// Controller: size and free bytes of volume group `vg` (from `vgs`).
    pub fn set_volume_group(&self, vg: &str, size: u64, free: u64) {
        let labels = vg_labels(vg);
        self.families
            .vg_size
            .get_or_create(&labels)
            .set(gauge_value(size));
        self.families
            .vg_free
            .get_or_create(&labels)
            .set(gauge_value(free));
    }

    /// Controller: data size and free data bytes of thin pool `vg/pool` (from `lvs`:
    /// `lv_size` and `lv_size * (100 - data_percent) / 100`).
    pub fn set_thin_pool(&self, vg: &str, pool: &str, size: u64, free: u64) {
        let labels = PoolLabels {
            vg: vg.to_string(),
            pool: pool.to_string(),
        };
        self.families
            .pool_size
            .get_or_create(&labels)
            .set(gauge_value(size));
        self.families
            .pool_free
            .get_or_create(&labels)
            .set(gauge_value(free));
    }

    /// Node: the number of iSCSI sessions open on this host.
    pub fn set_iscsi_sessions(&self, count: u64) {
        self.families.iscsi_sessions.set(gauge_value(count));
    }

    /// Node: one NodeStageVolume failed.
    pub fn stage_failed(&self) {
        self.families.stage_failures.inc();
    }

    /// Runner: `program` (a name or a path; its basename is the label) ran for `elapsed`.
    pub fn observe_command(&self, program: &str, elapsed: Duration) {
        let tool = program.rsplit('/').next().unwrap_or(program).to_string();
        self.families
            .command_duration
            .get_or_create(&ToolLabels { tool })
            .observe(elapsed.as_secs_f64());
    }

    /// Layer: an RPC started; the guard records its end.
    fn rpc_started(&self, labels: RpcLabels) -> RpcGauge {
        self.families.rpc_in_flight.get_or_create(&labels).inc();
        RpcGauge {
            metrics: self.clone(),
            labels,
        }
    }

    /// Layer: an RPC finished with `code` after `elapsed`.
    fn rpc_finished(&self, labels: &RpcLabels, code: &'static str, elapsed: Duration) {
        self.families
            .rpc_duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
        self.families
            .rpc_calls
            .get_or_create(&RpcCodeLabels {
                service: labels.service.clone(),
                method: labels.method.clone(),
                code,
            })
            .inc();
    }
}

fn vg_labels(vg: &str) -> VgLabels {
    VgLabels { vg: vg.to_string() }
}

/// Holds one unit of the in-flight gauge; gives it back when dropped (also when the call is
/// cancelled).
struct RpcGauge {
    /// Where the gauge lives.
    metrics: Metrics,
    /// Which member.
    labels: RpcLabels,
}

impl Drop for RpcGauge {
    fn drop(&mut self) {
        self.metrics
            .families
            .rpc_in_flight
            .get_or_create(&self.labels)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series` (name + labels), if present.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn service_gauges_render_with_labels() {
        let m = Metrics::new();
        m.set_volumes("vg0", 3);
        m.set_published_volumes("vg0", 1);
        m.set_volume_group("vg0", 10 << 30, 4 << 30);
        m.set_thin_pool("vg0", "pool0", 8 << 30, 6 << 30);
        m.set_iscsi_sessions(2);
        m.stage_failed();
        m.stage_failed();
        let t = m.render();
        assert_eq!(sample(&t, r#"lvm_iscsi_csi_volumes{vg="vg0"}"#), Some(3.0));
        assert_eq!(
            sample(&t, r#"lvm_iscsi_csi_published_volumes{vg="vg0"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, r#"lvm_iscsi_csi_volume_group_free_bytes{vg="vg0"}"#),
            Some((4u64 << 30) as f64)
        );
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_thin_pool_size_bytes{vg="vg0",pool="pool0"}"#
            ),
            Some((8u64 << 30) as f64)
        );
        assert_eq!(sample(&t, "lvm_iscsi_csi_iscsi_sessions"), Some(2.0));
        assert_eq!(sample(&t, "lvm_iscsi_csi_stage_failures_total"), Some(2.0));
        assert!(
            t.contains("# TYPE lvm_iscsi_csi_stage_failures_total counter\n"),
            "{t}"
        );
    }

    #[test]
    fn command_durations_are_labelled_by_tool_basename() {
        let m = Metrics::new();
        m.observe_command("/usr/sbin/lvcreate", Duration::from_millis(300));
        m.observe_command("lvcreate", Duration::from_millis(100));
        m.observe_command("iscsiadm", Duration::from_millis(2));
        let t = m.render();
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_command_duration_seconds_count{tool="lvcreate"}"#
            ),
            Some(2.0)
        );
        let sum = sample(
            &t,
            r#"lvm_iscsi_csi_command_duration_seconds_sum{tool="lvcreate"}"#,
        )
        .unwrap();
        assert!((sum - 0.4).abs() < 1e-9, "{sum}");
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_command_duration_seconds_bucket{tool="iscsiadm",le="0.002"}"#
            ),
            Some(1.0),
            "{t}"
        );
    }

    #[test]
    fn in_flight_gauge_is_given_back_on_drop() {
        let m = Metrics::new();
        let labels = RpcLabels {
            service: "Node".into(),
            method: "NodeStageVolume".into(),
        };
        let series = r#"lvm_iscsi_csi_rpc_in_flight{service="Node",method="NodeStageVolume"}"#;
        let g = m.rpc_started(labels);
        assert_eq!(sample(&m.render(), series), Some(1.0));
        drop(g);
        assert_eq!(sample(&m.render(), series), Some(0.0));
    }

    #[test]
    fn byte_counts_saturate() {
        assert_eq!(gauge_value(u64::MAX), i64::MAX);
        assert_eq!(gauge_value(7), 7);
    }
}
