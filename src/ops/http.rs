//! The HTTP listener (`[http] listen`): the status page (`/`), `/metrics` (the
//! `OpenMetrics` format) and `/healthz`. It
//! takes a few connections at a time, bounds a request's header and the time to send
//! it, and answers GET only, so a slow or hostile client cannot stall it or the daemon.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::Ops;
use crate::clock::Clock;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// A request's header must arrive within this, and be at most `MAX_HEADER` bytes.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEADER: usize = 16 * 1024;

/// A whole connection, at most.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, clock: Arc<dyn Clock>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "[http] accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ops = Arc::clone(&ops);
        let clock = Arc::clone(&clock);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let ops = Arc::clone(&ops);
                let clock = Arc::clone(&clock);
                async move {
                    // The page and the metrics walk every job's schedule: not on the
                    // runtime's threads.
                    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
                    let response =
                        tokio::task::spawn_blocking(move || route(&ops, &*clock, &method, &path))
                            .await
                            .unwrap_or_else(|_| {
                                answer(
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "text/plain",
                                    "error\n".to_owned(),
                                )
                            });
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "[http] connection ended"),
                Err(_) => debug!("[http] connection took too long; closed"),
            }
        });
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(ops: &Ops, clock: &dyn Clock, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        );
    }
    let now = clock.now();
    match path {
        "/metrics" => answer(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ops.metrics.encode(&ops.next_fires(now)),
        ),
        "/healthz" => match ops.health.check(now) {
            Ok(()) => answer(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        "/" => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::page::render(ops, now),
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /, /metrics or /healthz\n".to_owned(),
        ),
    }
}
