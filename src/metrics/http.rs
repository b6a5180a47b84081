//! The metrics endpoint: a tiny HTTP/1.1 listener (hyper, already in the tree through tonic)
//! answering `GET /metrics` with the Prometheus text exposition and `GET /healthz` with
//! `ok` (the process is up; readiness is the CSI Probe's job).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Metrics;

/// `Content-Type` of the Prometheus text format.
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Binds `addr` and serves `metrics` on it in a background task for the life of the
/// process. Fails only when the address cannot be bound.
pub async fn start(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "serving metrics on /metrics");
    tokio::spawn(serve(listener, metrics));
    Ok(local)
}

/// Accepts connections on `listener` forever, one task per connection.
async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: keep serving once it passes.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

/// The answer to one request.
fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = route(req.method(), req.uri().path(), metrics);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Status, content type and body for a method and path.
fn route(method: &Method, path: &str, metrics: &Metrics) -> (StatusCode, &'static str, String) {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match path {
        "/metrics" => (StatusCode::OK, CONTENT_TYPE, metrics.render()),
        "/healthz" => (StatusCode::OK, PLAIN, "ok\n".into()),
        _ => (
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        let m = Metrics::new();
        m.set_iscsi_sessions(4);
        let addr = start("127.0.0.1:0".parse().unwrap(), m).await.unwrap();

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

    #[test]
    fn only_get_is_allowed() {
        let m = Metrics::new();
        assert_eq!(
            route(&Method::POST, "/metrics", &m).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(route(&Method::HEAD, "/healthz", &m).0, StatusCode::OK);
    }
}
