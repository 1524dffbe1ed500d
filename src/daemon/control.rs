//! The control task: the daemon's side of the control socket (`crate::control` is the
//! protocol and the client). Mode 0600, so under systemd only root can ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub use crate::sys::socket::BindError;
use tokio::time::Instant;

use crate::control::{Request, IO_TIMEOUT};
use crate::emergency::FreeMemoryRequest;
use crate::report::Reports;
use crate::runtime::TaskCtx;
use crate::swap::{self, task::SwapSender};

const MAX_REQUEST: u64 = 4096;
/// Clients served at once, shared fairly (`runtime::slots`): a newcomer takes the slot of the
/// oldest client that has not sent its request yet; when all are being answered it is told to
/// try again. Keeps descriptors and memory bounded whatever a local user does.
pub const MAX_CLIENTS: usize = 32;
const BUSY: &str = "{\"error\":\"the daemon is answering as many clients as it serves at once; try again\"}\n";
/// After `EMFILE`/`ENFILE`, accepting pauses this long at first, doubling up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The control task is idle between requests; it beats this often so a wedged runtime shows.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);

/// What the control task reads and where it sends the requests that act.
#[derive(Clone)]
pub struct ControlState {
    pub reports: Reports,
    pub swap: SwapSender,
    pub free_memory: tokio::sync::mpsc::Sender<FreeMemoryRequest>,
}

/// The listening socket; the file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        crate::sys::socket::remove(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path` (see [`crate::sys::socket::bind_private`]).
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let std_listener = crate::sys::socket::bind_private(path)?;
        let listener = UnixListener::from_std(std_listener).map_err(|source| BindError::Io {
            path: path.to_path_buf(),
            what: "cannot watch the socket",
            source,
        })?;
        Ok(Self { listener, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The control task.
pub async fn run(socket: ControlSocket, state: ControlState, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { heartbeat, cancel, os, .. } = ctx;
    let state = std::sync::Arc::new(state);
    let mut clients = crate::runtime::slots::Slots::new(MAX_CLIENTS);
    let mut ticker = os.clock.ticker(HEARTBEAT_PERIOD);
    // An episode of EMFILE/ENFILE: the backoff, and when the last one was seen. It ends once
    // accepting has worked for a second without one.
    let mut backoff: Option<(Duration, Instant)> = None;
    heartbeat.started();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                heartbeat.beat();
            }
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if backoff.is_some_and(|(_, last)| last.elapsed() > Duration::from_secs(1)) {
                        backoff = None;
                        tracing::info!("control socket: accepting connections again");
                    }
                    if clients.all_answering() {
                        // Not waited for: the reply fits the socket's buffer or is not sent.
                        let _ = stream.try_write(BUSY.as_bytes());
                        continue;
                    }
                    let state = state.clone();
                    clients.spawn(move |seen| async move {
                        if let Err(e) = serve(stream, &state, seen).await {
                            tracing::debug!(error = %e, "control client went away");
                        }
                    });
                }
                // Out of descriptors: accepting again at once would spin. Say it once per
                // episode and wait for clients to leave.
                Err(e) if crate::sys::socket::out_of_descriptors(&e) => {
                    let wait = match backoff {
                        None => {
                            tracing::warn!(error = %e, "control socket: out of file descriptors; new connections wait until some close");
                            ACCEPT_BACKOFF
                        }
                        Some((w, _)) => (w * 2).min(Duration::from_secs(1)),
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = Some((wait, Instant::now()));
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
        }
    }
}

async fn serve(stream: UnixStream, state: &ControlState, seen: crate::runtime::slots::RequestSeen) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::with_capacity(1024, tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    seen.mark();
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_value(state.reports.node_report()).map_err(std::io::Error::other)?,
        Ok(Request::Swap(req)) => swap::task::answer(&state.swap, req).await,
        Ok(Request::Optimize) => match state.reports.optimize.borrow().as_deref() {
            Some(plan) => serde_json::to_value(plan).map_err(std::io::Error::other)?,
            None => serde_json::json!({ "error": "the optimize task has no plan yet" }),
        },
        Ok(Request::Emergency) => serde_json::to_value(state.reports.emergency.borrow().as_ref()).map_err(std::io::Error::other)?,
        Ok(Request::Health) => serde_json::to_value(state.reports.health.borrow().as_ref()).map_err(std::io::Error::other)?,
        Ok(Request::Alerts) => serde_json::to_value(state.reports.alerts.borrow().as_ref()).map_err(std::io::Error::other)?,
        Ok(Request::FreeMemory) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match state.free_memory.try_send(tx) {
                Err(_) => serde_json::json!({ "error": "the emergency task is busy or not running; try again" }),
                Ok(()) => match rx.await {
                    Ok(actions) => serde_json::json!({ "actions": actions }),
                    Err(_) => serde_json::json!({ "error": "the emergency task stopped before answering" }),
                },
            }
        }
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let mut out = reply.to_string();
    out.push('\n');
    tokio::time::timeout(IO_TIMEOUT, write.write_all(out.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client does not read"))?
}
