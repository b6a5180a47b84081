//! The tower layer every CSI server runs under: it opens the one tracing span of each RPC
//! ([`crate::rpc::span`], on which the services record the volume id, so every log line of a
//! call carries the method and the volume) and records the call in it: the in-flight gauge,
//! the latency histogram and the call counter by gRPC code.
//!
//! The code comes from the response's `grpc-status` header: tonic answers an error with a
//! trailers-only response, whose headers carry the status; a successful unary call sends the
//! status in trailers after the body, so its headers have none, which means OK.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

use super::{Metrics, RpcLabels};

/// Adds per-RPC spans and metrics to a tonic server (`Server::builder().layer(...)`).
#[derive(Clone)]
pub struct RpcLayer {
    /// Where to record.
    metrics: Metrics,
}

impl RpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        RpcLayer { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around the server's routes.
#[derive(Clone)]
pub struct RpcService<S> {
    /// The routes.
    inner: S,
    /// Where to record.
    metrics: Metrics,
}

/// The future of one call through [`RpcService`].
type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for RpcService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let labels = rpc_labels(req.uri().path());
        let span = crate::rpc::span(&labels.method);
        let quiet = labels.service == "Identity";
        let started = Instant::now();
        let mut call = Call {
            gauge: Some(self.metrics.rpc_started(labels.clone())),
            metrics: self.metrics.clone(),
            labels,
            started,
        };
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let code = match &result {
                    Ok(response) => code_of(response.headers()),
                    // The routes never fail; an error here becomes UNKNOWN on the wire.
                    Err(_) => "Unknown",
                };
                call.finish(code, quiet);
                result
            }
            .instrument(span),
        )
    }
}

/// One RPC being served; records CANCELLED if dropped before it finished (the client went
/// away and tonic dropped the handler).
struct Call {
    /// In-flight gauge unit; `None` once finished.
    gauge: Option<super::RpcGauge>,
    /// Where to record.
    metrics: Metrics,
    /// Service and method.
    labels: RpcLabels,
    /// When the request arrived.
    started: Instant,
}

impl Call {
    /// Records the outcome and logs one line (Identity calls at debug: probes are frequent).
    fn finish(&mut self, code: &'static str, quiet: bool) {
        let elapsed = self.started.elapsed();
        self.metrics.rpc_finished(&self.labels, code, elapsed);
        self.gauge = None;
        let elapsed_ms = elapsed.as_millis() as u64;
        if quiet {
            tracing::debug!(code, elapsed_ms, "rpc finished");
        } else {
            tracing::info!(code, elapsed_ms, "rpc finished");
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.gauge.is_some() {
            self.finish("Cancelled", false);
        }
    }
}

/// Service and method of a gRPC path (`/csi.v1.Controller/CreateVolume`); anything that is
/// not a CSI v1 method counts as `unknown` so labels stay bounded.
fn rpc_labels(path: &str) -> RpcLabels {
    let parsed = path
        .strip_prefix("/csi.v1.")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(service, method)| {
            !service.is_empty()
                && !method.is_empty()
                && [*service, *method]
                    .iter()
                    .all(|s| s.chars().all(|c| c.is_ascii_alphanumeric()))
        });
    let (service, method) = parsed.unwrap_or(("unknown", "unknown"));
    RpcLabels {
        service: service.to_string(),
        method: method.to_string(),
    }
}

/// The gRPC code name carried by response headers; none means OK (see the module doc).
fn code_of(headers: &http::HeaderMap) -> &'static str {
    let Some(value) = headers.get("grpc-status") else {
        return "Ok";
    };
    let code = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Unknown);
    code_name(code)
}

/// A stable label for each gRPC code (the names gRPC's own metrics use).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// A stand-in for tonic's routes: answers with `grpc-status: <status>` when given.
    fn routes(
        status: Option<&'static str>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<()>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<()>, Infallible>> + Send,
    > + Clone {
        tower::service_fn(move |_req: http::Request<()>| async move {
            let mut response = http::Response::new(());
            if let Some(s) = status {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(s));
            }
            Ok::<_, Infallible>(response)
        })
    }

    async fn call(metrics: &Metrics, path: &str, status: Option<&'static str>) {
        let svc = RpcLayer::new(metrics.clone()).layer(routes(status));
        let req = http::Request::builder().uri(path).body(()).unwrap();
        svc.oneshot(req).await.unwrap();
    }

    #[tokio::test]
    async fn counts_calls_by_code_and_times_them() {
        let m = Metrics::new();
        call(&m, "/csi.v1.Controller/CreateVolume", None).await;
        call(&m, "/csi.v1.Controller/CreateVolume", Some("5")).await;
        call(&m, "/csi.v1.Controller/CreateVolume", Some("5")).await;
        call(&m, "/csi.v1.Node/NodeStageVolume", Some("10")).await;
        let t = m.render();
        let calls =
            |labels: &str| sample(&t, &format!("lvm_iscsi_csi_rpc_calls_total{{{labels}}}"));
        assert_eq!(
            calls(r#"service="Controller",method="CreateVolume",code="Ok""#),
            Some(1.0)
        );
        assert_eq!(
            calls(r#"service="Controller",method="CreateVolume",code="NotFound""#),
            Some(2.0)
        );
        assert_eq!(
            calls(r#"service="Node",method="NodeStageVolume",code="Aborted""#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_rpc_duration_seconds_count{service="Controller",method="CreateVolume"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_rpc_in_flight{service="Controller",method="CreateVolume"}"#
            ),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn a_dropped_call_counts_as_cancelled_and_leaves_flight() {
        let m = Metrics::new();
        let pending = tower::service_fn(|_req: http::Request<()>| {
            std::future::pending::<Result<http::Response<()>, Infallible>>()
        });
        let mut svc = RpcLayer::new(m.clone()).layer(pending);
        let req = http::Request::builder()
            .uri("/csi.v1.Node/NodeStageVolume")
            .body(())
            .unwrap();
        let fut = svc.call(req);
        let in_flight = r#"lvm_iscsi_csi_rpc_in_flight{service="Node",method="NodeStageVolume"}"#;
        assert_eq!(sample(&m.render(), in_flight), Some(1.0));
        drop(fut);
        let t = m.render();
        assert_eq!(sample(&t, in_flight), Some(0.0));
        assert_eq!(
            sample(
                &t,
                r#"lvm_iscsi_csi_rpc_calls_total{service="Node",method="NodeStageVolume",code="Cancelled"}"#
            ),
            Some(1.0)
        );
    }

    /// Collects formatted log output.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        /// What was logged so far.
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Sends one request for `path` through the layer around `handler`.
    async fn call_through<S>(path: &str, handler: S)
    where
        S: Service<http::Request<()>, Response = http::Response<()>, Error = Infallible>,
        S::Future: Send + 'static,
    {
        let req = http::Request::builder().uri(path).body(()).unwrap();
        RpcLayer::new(Metrics::new())
            .layer(handler)
            .oneshot(req)
            .await
            .unwrap();
    }

    /// Formatted log output of this thread from now on (until the guard drops).
    fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test]
    async fn handler_logs_carry_the_rpc_span() {
        let (logs, _guard) = capture_logs();
        let handler = tower::service_fn(|_req: http::Request<()>| async {
            tracing::info!("handler ran");
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("6"));
            Ok::<_, Infallible>(response)
        });
        call_through("/csi.v1.Controller/CreateVolume", handler).await;
        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("rpc{method=CreateVolume}: ") && lines[0].ends_with("handler ran"),
            "{text}"
        );
        assert!(
            lines[1].contains("rpc{method=CreateVolume}: ")
                && lines[1].contains("rpc finished code=\"AlreadyExists\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_service_records_the_volume_on_the_rpc_span_and_no_secret() {
        let (logs, _guard) = capture_logs();
        let handler = tower::service_fn(|_req: http::Request<()>| async {
            crate::rpc::annotate(&tonic::Request::new(crate::csi::NodeStageVolumeRequest {
                volume_id: "vg/pvc-1".into(),
                secrets: [("chapKey".to_string(), "hunter2".to_string())].into(),
                ..Default::default()
            }));
            tracing::info!("acting");
            Ok::<_, Infallible>(http::Response::new(()))
        });
        call_through("/csi.v1.Node/NodeStageVolume", handler).await;
        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in lines {
            assert!(
                line.contains("rpc{method=NodeStageVolume volume_id=vg/pvc-1}: "),
                "{text}"
            );
        }
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn paths_map_to_bounded_labels() {
        let l = rpc_labels("/csi.v1.Identity/Probe");
        assert_eq!(
            (l.service.as_str(), l.method.as_str()),
            ("Identity", "Probe")
        );
        for bad in [
            "/",
            "/grpc.health.v1.Health/Check",
            "/csi.v1.Node/",
            "/csi.v1.X/a{b}",
        ] {
            let l = rpc_labels(bad);
            assert_eq!(
                (l.service.as_str(), l.method.as_str()),
                ("unknown", "unknown"),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_header_maps_to_code_names() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), "Ok");
        h.insert("grpc-status", http::HeaderValue::from_static("9"));
        assert_eq!(code_of(&h), "FailedPrecondition");
        h.insert("grpc-status", http::HeaderValue::from_static("junk"));
        assert_eq!(code_of(&h), "Unknown");
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_of(&h), "Unknown");
    }
}
