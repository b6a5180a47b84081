//! The HTTP endpoints: a tiny HTTP/1.1 listener (hyper, already in the tree through tonic)
//! answering `GET /metrics` with the Prometheus text exposition (on `--metrics-address`) and
//! `GET /healthz` with this process's liveness ([`crate::health`]: the Identity Probe, as the
//! livenessprobe sidecar would answer; on `--health-address` and `--metrics-address`).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Metrics;
use crate::health::{Liveness, Verdict};

/// `Content-Type` of the Prometheus text format.
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What one listener serves.
#[derive(Clone)]
pub struct Endpoints {
    /// `/metrics`, when this listener serves them.
    pub metrics: Option<Metrics>,
    /// `/healthz`.
    pub health: Liveness,
}

/// Serves the process's endpoints on the addresses given: `/metrics` and `/healthz` on
/// `metrics`, `/healthz` on `health` (one listener when both are the same address).
pub async fn start_all(
    metrics: Option<SocketAddr>,
    health: Option<SocketAddr>,
) -> Result<(), String> {
    let liveness = crate::health::global().clone();
    let bind = |addr: SocketAddr, with_metrics: bool| {
        let endpoints = Endpoints {
            metrics: with_metrics.then(|| super::global().clone()),
            health: liveness.clone(),
        };
        async move {
            start(addr, endpoints)
                .await
                .map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))
        }
    };
    if let Some(addr) = metrics {
        bind(addr, true).await?;
    }
    match health {
        Some(addr) if Some(addr) != metrics => bind(addr, false).await.map(drop),
        _ => Ok(()),
    }
}

/// Binds `addr` and serves `endpoints` on it in a background task for the life of the
/// process. Fails only when the address cannot be bound.
pub async fn start(addr: SocketAddr, endpoints: Endpoints) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let paths = if endpoints.metrics.is_some() {
        "/metrics and /healthz"
    } else {
        "/healthz"
    };
    tracing::info!(address = %local, "serving {paths} over HTTP");
    tokio::spawn(serve(listener, endpoints));
    Ok(local)
}

/// Accepts connections on `listener` forever, one task per connection.
async fn serve(listener: TcpListener, endpoints: Endpoints) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: keep serving once it passes.
                tracing::warn!(error = %e, "HTTP endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(respond(&req, &endpoints).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP endpoint: connection ended with an error");
            }
        });
    }
}

/// The answer to one request.
async fn respond(req: &Request<Incoming>, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(req.method(), req.uri().path(), endpoints).await;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Status, content type and body for a method and path.
async fn route(
    method: &Method,
    path: &str,
    endpoints: &Endpoints,
) -> (StatusCode, &'static str, String) {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match (path, &endpoints.metrics) {
        ("/metrics", Some(metrics)) => (StatusCode::OK, CONTENT_TYPE, metrics.render()),
        ("/healthz", _) => match endpoints.health.check().await {
            Verdict::Alive => (StatusCode::OK, PLAIN, "ok\n".into()),
            Verdict::NotServing => (
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                "starting: the CSI services are not serving yet\n".into(),
            ),
            Verdict::Failed(why) => (StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{why}\n")),
        },
        (_, Some(_)) => (
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics or /healthz\n".into(),
        ),
        (_, None) => (
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Health, IdentityService, Readiness};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one HTTP/1.1 request and returns the raw answer.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    struct Fixed(Health);

    #[async_trait::async_trait]
    impl Readiness for Fixed {
        async fn check(&self) -> Health {
            self.0.clone()
        }
    }

    /// A liveness answering from an Identity service whose Probe finds `health`.
    fn liveness(health: Health) -> Liveness {
        let l = Liveness::default();
        l.answer_from(Arc::new(IdentityService::new(
            "d",
            Arc::new(Fixed(health)),
            false,
        )));
        l
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        let m = Metrics::new();
        m.set_iscsi_sessions(4);
        let endpoints = Endpoints {
            metrics: Some(m),
            health: liveness(Health::Ready),
        };
        let addr = start("127.0.0.1:0".parse().unwrap(), endpoints)
            .await
            .unwrap();

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(
            metrics
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nlvm_iscsi_csi_iscsi_sessions 4\n"),
            "{metrics}"
        );

        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(health.ends_with("\r\n\r\nok\n"), "{health}");

        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn healthz_answers_from_the_probe_and_metrics_only_where_asked() {
        let broken = Endpoints {
            metrics: None,
            health: liveness(Health::Broken("iscsid is not running".into())),
        };
        let addr = start("127.0.0.1:0".parse().unwrap(), broken).await.unwrap();
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 500"), "{health}");
        assert!(
            health.ends_with("\r\n\r\niscsid is not running\n"),
            "{health}"
        );
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 404"));

        let starting = Endpoints {
            metrics: None,
            health: Liveness::default(),
        };
        let (status, _, body) = route(&Method::GET, "/healthz", &starting).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let (status, _, _) = route(
            &Method::GET,
            "/healthz",
            &Endpoints {
                metrics: None,
                health: liveness(Health::Starting),
            },
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn only_get_is_allowed() {
        let e = Endpoints {
            metrics: Some(Metrics::new()),
            health: liveness(Health::Ready),
        };
        assert_eq!(
            route(&Method::POST, "/metrics", &e).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(route(&Method::HEAD, "/healthz", &e).await.0, StatusCode::OK);
    }
}
