//! The control socket that `cluster-ai status` talks to: one JSON request line per connection,
//! one JSON reply line. Mode 0600, so under systemd only root can ask.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub use crate::sys::socket::BindError;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tasks::{Heartbeat, TaskReport, Tasks};
use crate::optimize::emergency::{EmergencyReceiver, EmergencyReport, FreeMemoryRequest};
use crate::optimize::task::{OptimizeReceiver, OptimizeState};
use crate::sampler::{Snapshot, SnapshotReceiver};
use crate::swap::{
    self,
    task::{SwapRequest, SwapSender},
};
use crate::sys::display_path;

const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once, shared fairly (`runtime::slots`): a newcomer takes the slot of the
/// oldest client that has not sent its request yet; when all are being answered it is told to
/// try again. Keeps descriptors and memory bounded whatever a local user does.
pub const MAX_CLIENTS: usize = 32;
const BUSY: &str = "{\"error\":\"the daemon is answering as many clients as it serves at once; try again\"}\n";
/// After `EMFILE`/`ENFILE`, accepting pauses this long at first, doubling up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The control task is idle between requests; it beats this often so a wedged runtime shows.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);

/// One request line. Each task has its own variant with its own actions, answered by that
/// task's handler: `{"command":"status"}`, `{"command":"swap","action":"expand","size":…}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Swap(SwapRequest),
    /// The optimize task's latest plan and what became of its env files.
    Optimize,
    /// The emergency measures: watches, counts, recent actions, peers' problems.
    Emergency,
    /// `cluster-ai free-memory`: the memory measures now.
    FreeMemory,
    /// The health task's view of every service.
    Health,
    /// The alert channels: sent, failed, queued, what is firing.
    Alerts,
}

impl Request {
    fn answer_timeout(&self) -> Duration {
        match self {
            Request::Status | Request::Optimize | Request::Emergency | Request::Health | Request::Alerts => IO_TIMEOUT,
            // Each Ollama unload has its own deadline; several models may be loaded.
            Request::FreeMemory => Duration::from_secs(120),
            Request::Swap(r) => swap::task::answer_timeout(r),
        }
    }

    /// Whether the request changes something (a lost answer then leaves its outcome unknown).
    fn acts(&self) -> bool {
        !matches!(
            self,
            Request::Status
                | Request::Optimize
                | Request::Emergency
                | Request::Health
                | Request::Alerts
                | Request::Swap(SwapRequest::Status)
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfigReport {
    pub path: PathBuf,
    /// "file" or "defaults" (the default path did not exist).
    pub source: String,
    pub loaded_at_unix_ms: u64,
    pub loaded_seconds_ago: f64,
    /// The reason the last reload was refused, until a reload succeeds.
    pub last_reload_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReply {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub dry_run: bool,
    pub config: ConfigReport,
    /// Absent until the sampler's first reading.
    pub snapshot: Option<Snapshot>,
    pub tasks: Vec<TaskReport>,
    /// The optimize task's latest plan; absent until it has one.
    #[serde(default)]
    pub optimize: Option<OptimizeState>,
    #[serde(default)]
    pub emergency: Option<EmergencyReport>,
    #[serde(default)]
    pub health: Option<crate::health::HealthReport>,
    #[serde(default)]
    pub alerts: Option<crate::alerts::task::AlertsReport>,
}

/// What the supervisor publishes about the loaded config.
#[derive(Debug, Clone)]
pub struct ConfigInfo {
    pub path: PathBuf,
    pub from_file: bool,
    pub loaded_at: Instant,
    pub loaded_at_unix_ms: u64,
    pub last_reload_error: Option<String>,
}

/// Everything a status reply is made of; the control task only reads it.
#[derive(Clone)]
pub struct ControlState {
    pub started: Instant,
    pub dry_run: bool,
    pub tasks: Tasks,
    pub snapshots: SnapshotReceiver,
    pub config: watch::Receiver<ConfigInfo>,
    pub swap: SwapSender,
    pub optimize: OptimizeReceiver,
    pub emergency: EmergencyReceiver,
    pub free_memory: tokio::sync::mpsc::Sender<FreeMemoryRequest>,
    pub health: crate::health::task::HealthReceiver,
    pub alerts: watch::Receiver<std::sync::Arc<crate::alerts::task::AlertsReport>>,
}

impl ControlState {
    pub fn status(&self) -> StatusReply {
        let now = Instant::now();
        let c = self.config.borrow().clone();
        StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            dry_run: self.dry_run,
            config: ConfigReport {
                path: c.path,
                source: if c.from_file { "file" } else { "defaults" }.into(),
                loaded_at_unix_ms: c.loaded_at_unix_ms,
                loaded_seconds_ago: now.duration_since(c.loaded_at).as_secs_f64(),
                last_reload_error: c.last_reload_error,
            },
            snapshot: self.snapshots.borrow().as_deref().cloned(),
            tasks: self.tasks.report(now),
            optimize: self.optimize.borrow().as_deref().cloned(),
            emergency: Some(self.emergency.borrow().as_ref().clone()),
            health: Some(self.health.borrow().as_ref().clone()),
            alerts: Some(self.alerts.borrow().as_ref().clone()),
        }
    }
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
pub async fn run(socket: ControlSocket, state: ControlState, heartbeat: Heartbeat, cancel: CancellationToken) -> anyhow::Result<()> {
    let state = std::sync::Arc::new(state);
    let mut clients = crate::runtime::slots::Slots::new(MAX_CLIENTS);
    let mut ticker = crate::sys::ticker::Ticker::new(HEARTBEAT_PERIOD)?;
    // An episode of EMFILE/ENFILE: the backoff, and when the last one was seen. It ends once
    // accepting has worked for a second without one.
    let mut backoff: Option<(Duration, Instant)> = None;
    heartbeat.started();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            tick = ticker.tick() => {
                tick?;
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
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
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
        Ok(Request::Status) => serde_json::to_value(state.status()).map_err(std::io::Error::other)?,
        Ok(Request::Swap(req)) => swap::task::answer(&state.swap, req).await,
        Ok(Request::Optimize) => match state.optimize.borrow().as_deref() {
            Some(plan) => serde_json::to_value(plan).map_err(std::io::Error::other)?,
            None => serde_json::json!({ "error": "the optimize task has no plan yet" }),
        },
        Ok(Request::Emergency) => serde_json::to_value(state.emergency.borrow().as_ref()).map_err(std::io::Error::other)?,
        Ok(Request::Health) => serde_json::to_value(state.health.borrow().as_ref()).map_err(std::io::Error::other)?,
        Ok(Request::Alerts) => serde_json::to_value(state.alerts.borrow().as_ref()).map_err(std::io::Error::other)?,
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

/// Why a one-shot command got no answer from a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no cluster-ai daemon is running (nothing answers on {})", display_path(.0))]
    NotRunning(PathBuf),
    #[error("the daemon's control socket {} is root-only: run this command with sudo", display_path(.0))]
    RootOnly(PathBuf),
    #[error("a cluster-ai daemon listens on {} but did not answer within {waited:?} (`systemctl status cluster-ai`, `journalctl -u cluster-ai`)", display_path(path))]
    NotAnswering { path: PathBuf, waited: Duration },
    #[error("the daemon on {} closed the connection before answering (is it stopping?); whether the operation was carried out is unknown: see `cluster-ai swap status`", display_path(.0))]
    OutcomeUnknown(PathBuf),
    #[error("{0}")]
    Refused(String),
    #[error("{}: {what}", display_path(path))]
    Other { path: PathBuf, what: String },
}

impl ClientError {
    /// LSB exit codes for status actions: 3 not running, 4 unknown.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NotRunning(_) => 3,
            ClientError::Refused(_) => 1,
            _ => 4,
        }
    }
}

/// Connects to the daemon's socket, telling "not running" from "not allowed".
pub fn connect(path: &Path) -> Result<std::os::unix::net::UnixStream, ClientError> {
    std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => ClientError::NotRunning(path.to_path_buf()),
        std::io::ErrorKind::PermissionDenied => ClientError::RootOnly(path.to_path_buf()),
        _ => ClientError::Other { path: path.to_path_buf(), what: e.to_string() },
    })
}

/// The client side, for one-shot commands: blocking, with timeouts, no runtime needed.
pub fn request(path: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let mut stream = connect(path)?;
    let other = |e: std::io::Error| ClientError::Other { path: path.to_path_buf(), what: e.to_string() };
    let wait = request.answer_timeout();
    stream.set_read_timeout(Some(wait)).map_err(other)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(other)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::Other { path: path.to_path_buf(), what: e.to_string() })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(other)?;
    let mut reply = String::new();
    match BufReader::new(stream).read_line(&mut reply) {
        Ok(0) if request.acts() => return Err(ClientError::OutcomeUnknown(path.to_path_buf())),
        Ok(0) => return Err(ClientError::NotAnswering { path: path.to_path_buf(), waited: wait }),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Err(ClientError::NotAnswering { path: path.to_path_buf(), waited: wait })
        }
        Err(e) if request.acts() => {
            return Err(ClientError::Other {
                path: path.to_path_buf(),
                what: format!("{e}; whether the operation was carried out is unknown: see `cluster-ai swap status`"),
            })
        }
        Err(e) => return Err(other(e)),
    }
    let value: serde_json::Value = serde_json::from_str(&reply)
        .map_err(|_| ClientError::Other { path: path.to_path_buf(), what: "the daemon answered something that is not JSON".into() })?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ClientError::Refused(err.to_string()));
    }
    Ok(value)
}
