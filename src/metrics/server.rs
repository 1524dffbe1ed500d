//! The metrics task: `GET /metrics` on `[metrics] listen`, over plain HTTP/1.1 (hyper's server),
//! one request per connection. A scrape costs one encoding of what the tasks already publish;
//! anything else gets 404. At most 8 connections at once, shared fairly (`runtime::slots`): a
//! client that has not sent its request head within 2 s is dropped, and sooner when a newcomer
//! needs its slot, so slow clients cannot shut out Prometheus; a whole exchange gets 10 s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{SwapMetrics, View};
use crate::report::Reports;
use crate::runtime::slots::RequestSeen;
use crate::runtime::TaskCtx;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// The request head must be whole within this (hyper's `header_read_timeout`).
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// One whole exchange, a slow reader of the answer included (Prometheus's default scrape
/// timeout is 10 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CLIENTS: usize = 8;

pub type SwapMetricsReceiver = watch::Receiver<Arc<SwapMetrics>>;

pub async fn run(state: Reports, swap: SwapMetricsReceiver, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, .. } = ctx;
    heartbeat.started();
    let source = Arc::new((state, swap, crate::sys::unix_ms() as f64 / 1000.0));
    let mut clients = crate::runtime::slots::Slots::new(MAX_CLIENTS);
    let mut ticker = crate::sys::ticker::Ticker::new(HEARTBEAT_PERIOD)?;
    loop {
        let listen = config.borrow_and_update().metrics.listen;
        let listener = match listen {
            None => None,
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    let addr = l.local_addr().unwrap_or(addr);
                    tracing::info!(listen = %addr, "metrics: serving http://{addr}/metrics");
                    Some(l)
                }
                Err(e) => {
                    tracing::error!(
                        listen = %addr,
                        "metrics: cannot listen on {addr}: {e}; no /metrics until [metrics] listen is changed (\"\" turns it off) and the config reloaded"
                    );
                    None
                }
            },
        };
        loop {
            let accept = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                changed = config.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if config.borrow().metrics.listen != listen {
                        break; // rebind
                    }
                }
                tick = ticker.tick() => {
                    tick?;
                    heartbeat.beat();
                }
                accepted = accept => match accepted {
                    Ok((stream, _)) => {
                        let source = source.clone();
                        clients.spawn(move |seen| async move {
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, serve(stream, source, seen)).await;
                        });
                    }
                    Err(e) => {
                        tracing::debug!("metrics: accept failed: {e}");
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                },
            }
        }
    }
}

type Source = Arc<(Reports, SwapMetricsReceiver, f64)>;

/// One connection through hyper's HTTP/1.1 server: one request, then closed.
async fn serve(stream: TcpStream, source: Source, seen: RequestSeen) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        seen.mark();
        let answer = respond(&req, &source);
        async move { Ok::<_, std::convert::Infallible>(answer) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!("metrics: a client's connection: {e}");
    }
}

fn respond(req: &hyper::Request<hyper::body::Incoming>, source: &Source) -> hyper::Response<Full<Bytes>> {
    use hyper::{header, Method, StatusCode};
    // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic format.
    let openmetrics =
        req.headers().get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let (state, swap, start) = source.as_ref();
            let view = View { status: state.node_report(), swap: swap.borrow().as_ref().clone(), start_time_unix: *start };
            let kind = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            (StatusCode::OK, kind, super::encode(&super::families(&view), openmetrics))
        }
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, "text/plain", "cluster-ai serves /metrics only\n".to_string()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET /metrics\n".to_string()),
    };
    let mut answer = hyper::Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    answer
}
