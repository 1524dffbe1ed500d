//! The metrics task: `GET /metrics` on `[metrics] listen`, over HTTP/1.1 (hyper's server), with
//! TLS and basic auth when `[metrics] web_config_file` asks for them (`web_config`), one request
//! per connection. A scrape costs one encoding of what the tasks already publish;
//! anything else gets 404. At most 8 connections at once, shared fairly (`runtime::slots`): a
//! client that has not sent its request head within 2 s is dropped, and sooner when a newcomer
//! needs its slot, so slow clients cannot shut out Prometheus; a whole exchange gets 10 s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::web_config::Web;
use super::{SwapMetrics, View};
use crate::report::{MetricsReport, Reports};
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

pub async fn run(state: Reports, swap: SwapMetricsReceiver, report: watch::Sender<MetricsReport>, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, os, .. } = ctx;
    heartbeat.started();
    let procfs = crate::sys::procfs::ProcFs::default();
    let boot_time = crate::sys::proc_self::boot_time(&procfs)
        .map_err(|e| tracing::warn!("metrics: no process_* metrics (the boot time is needed for the start time): {e}"))
        .ok();
    let source = Arc::new(Scrape { state, swap, procfs, boot_time });
    let mut clients = crate::runtime::slots::Slots::new(MAX_CLIENTS);
    let mut ticker = os.clock.ticker(HEARTBEAT_PERIOD);
    // The web configuration in use: re-read on every reload; a file that no longer loads keeps
    // the last good one (as a config reload does), and none at all keeps /metrics closed.
    let web_file = config.borrow_and_update().metrics.web_config_file.clone();
    let (loaded, mut problem) = load_web(web_file.as_deref(), None);
    let mut web: Option<(Option<PathBuf>, Web)> = loaded;
    // The last bind error said: a bind that fails (the port taken, no descriptor left) is
    // tried again at each heartbeat, and said again only when its error changes.
    let mut bind_error: Option<String> = None;
    loop {
        let listen = config.borrow_and_update().metrics.listen;
        let mut url = None;
        let listener = match (listen, &web) {
            (None, _) => None,
            (Some(_), None) => None,
            (Some(addr), Some((_, w))) => match TcpListener::bind(addr).await {
                Ok(l) => {
                    bind_error = None;
                    let addr = l.local_addr().unwrap_or(addr);
                    let scheme = if w.tls.is_some() { "https" } else { "http" };
                    tracing::info!(listen = %addr, "metrics: serving {scheme}://{addr}/metrics");
                    url = Some(format!("{scheme}://{addr}/metrics"));
                    Some(l)
                }
                Err(e) => {
                    if bind_error.as_deref() != Some(e.to_string().as_str()) {
                        tracing::error!(
                            listen = %addr,
                            "metrics: cannot listen on {addr}: {e}; tried again every {} s (or set [metrics] listen to another address, \"\" turns it off)",
                            HEARTBEAT_PERIOD.as_secs()
                        );
                    }
                    bind_error = Some(e.to_string());
                    None
                }
            },
        };
        let basic_auth = web.as_ref().is_some_and(|(_, w)| w.auth.is_some());
        report.send_replace(MetricsReport { url: url.clone(), basic_auth, problem: problem.clone() });
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
                    let (new_listen, new_file) = {
                        let c = config.borrow();
                        (c.metrics.listen, c.metrics.web_config_file.clone())
                    };
                    let tls_of = |w: &Option<(Option<PathBuf>, Web)>| w.as_ref().map(|(_, w)| w.tls.is_some());
                    let had = tls_of(&web);
                    (web, problem) = load_web(new_file.as_deref(), web.take());
                    let basic_auth = web.as_ref().is_some_and(|(_, w)| w.auth.is_some());
                    report.send_replace(MetricsReport { url: url.clone().filter(|_| web.is_some()), basic_auth, problem: problem.clone() });
                    if new_listen != listen || had != tls_of(&web) {
                        // Rebind: a new address, closed or opened now that the web config
                        // loads, or TLS switched on or off (the "serving" line says which).
                        break;
                    }
                }
                _ = ticker.tick() => {
                    heartbeat.beat();
                    if listener.is_none() && bind_error.is_some() {
                        break;
                    }
                }
                accepted = accept => match accepted {
                    Ok((stream, _)) => {
                        let Some((_, w)) = &web else { continue };
                        let (source, w) = (source.clone(), w.clone());
                        clients.spawn(move |seen| async move {
                            let _ = tokio::time::timeout(CLIENT_TIMEOUT, serve(stream, w, source, seen)).await;
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

/// The web configuration for `file` (plain HTTP when none), and the file's problem when it
/// does not load. Then the previous configuration of the same file stays in use, and with none
/// /metrics stays closed: a broken file never opens the endpoint to anyone.
fn load_web(file: Option<&Path>, previous: Option<(Option<PathBuf>, Web)>) -> (Option<(Option<PathBuf>, Web)>, Option<String>) {
    let Some(path) = file else { return (Some((None, Web::open())), None) };
    match Web::load(path) {
        Ok(w) => {
            let tls = if w.tls.is_some() { "TLS" } else { "no TLS" };
            let auth = if w.auth.is_some() { "basic auth" } else { "no authentication" };
            tracing::info!(web_config_file = %crate::sys::display_path(path), "metrics: web config loaded: {tls}, {auth}");
            if w.tls.is_none() && w.auth.is_some() {
                tracing::warn!(
                    "metrics: basic auth without TLS sends passwords in the clear; add tls_server_config to the web config file"
                );
            }
            (Some((Some(path.to_path_buf()), w)), None)
        }
        Err(e) => match previous.filter(|(p, _)| p.as_deref() == Some(path)) {
            Some(kept) => {
                tracing::error!("metrics: [metrics] web_config_file: {e}; keeping the web config loaded before");
                (Some(kept), Some(format!("{e}; serving with the web config loaded before")))
            }
            None => {
                tracing::error!("metrics: [metrics] web_config_file: {e}; /metrics stays closed until it is fixed and the config reloaded");
                (None, Some(format!("{e}; /metrics is closed until it is fixed and the config reloaded")))
            }
        },
    }
}

/// What a scrape reads.
struct Scrape {
    state: Reports,
    swap: SwapMetricsReceiver,
    procfs: crate::sys::procfs::ProcFs,
    /// `btime`, read once at start (`None`: no `process_*` metrics).
    boot_time: Option<u64>,
}

type Source = Arc<Scrape>;

/// One connection through hyper's HTTP/1.1 server, after the TLS handshake when the web config
/// has TLS (within the head's time limit): one request, then closed.
async fn serve(stream: TcpStream, web: Web, source: Source, seen: RequestSeen) {
    let auth = web.auth.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        seen.mark();
        let (source, auth) = (source.clone(), auth.clone());
        async move { Ok::<_, std::convert::Infallible>(respond(&req, &source, auth).await) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(8192)
        .clone();
    let result = match &web.tls {
        None => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
        Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
            Ok(Err(e)) => {
                tracing::debug!("metrics: a client's TLS handshake: {e}");
                return;
            }
            Err(_) => return,
        },
    };
    if let Err(e) = result {
        tracing::debug!("metrics: a client's connection: {e}");
    }
}

async fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    source: &Source,
    auth: Option<Arc<super::web_config::Authenticator>>,
) -> hyper::Response<Full<Bytes>> {
    use hyper::{header, Method, StatusCode};
    if let Some(auth) = auth {
        let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        // bcrypt takes tens of milliseconds: off the runtime's one thread.
        let ok = tokio::task::spawn_blocking(move || auth.check(given.as_deref())).await.unwrap_or(false);
        if !ok {
            let mut answer = hyper::Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
            *answer.status_mut() = StatusCode::UNAUTHORIZED;
            answer.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic"));
            answer.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            return answer;
        }
    }
    // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic format.
    let openmetrics =
        req.headers().get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let process = source.boot_time.and_then(|boot| {
                crate::sys::proc_self::ProcessStats::read(&source.procfs, boot)
                    .map_err(|e| tracing::debug!("metrics: process_* metrics: {e}"))
                    .ok()
            });
            let view = View {
                status: source.state.node_report(),
                swap: source.swap.borrow().as_ref().clone(),
                process,
                now_unix: crate::sys::unix_ms() as f64 / 1000.0,
            };
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
