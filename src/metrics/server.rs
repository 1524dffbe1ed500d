//! The metrics task: `GET /metrics` on `[metrics] listen`, over plain HTTP/1.1, one request per
//! connection. A scrape costs one encoding of what the tasks already publish; anything else
//! gets 404, a client that sends nothing for 5 s is dropped, at most 8 are served at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{SwapMetrics, View};
use crate::config::Config;
use crate::daemon::control::ControlState;
use crate::daemon::tasks::Heartbeat;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CLIENTS: usize = 8;

pub type SwapMetricsReceiver = watch::Receiver<Arc<SwapMetrics>>;

pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    state: ControlState,
    swap: SwapMetricsReceiver,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    heartbeat.started();
    let source = Arc::new((state, swap, crate::sys::unix_ms() as f64 / 1000.0));
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
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
                        let Ok(permit) = clients.clone().try_acquire_owned() else { continue };
                        let source = source.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, serve(stream, &source)).await;
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

async fn serve(mut stream: TcpStream, source: &(ControlState, SwapMetricsReceiver, f64)) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 || stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let line = head.lines().next().unwrap_or("");
    // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic format.
    let openmetrics = head.lines().any(|l| l.to_ascii_lowercase().starts_with("accept:") && l.contains("application/openmetrics-text"));
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (state, swap, start) = source;
            let view = View { status: state.status(), swap: swap.borrow().as_ref().clone(), start_time_unix: *start };
            let kind = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            ("200 OK", kind, super::encode(&super::families(&view), openmetrics))
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "cluster-ai serves /metrics only\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_string()),
    };
    let head = format!("HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
