//! The control socket that `cluster-ai status` talks to: one JSON request line per connection,
//! one JSON reply line. Mode 0600, so under systemd only root can ask.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tasks::{Heartbeat, TaskReport, Tasks};
use crate::sampler::{Snapshot, SnapshotReceiver};
use crate::swap::task::{SwapCommand, SwapSender, SWAPOFF_TIMEOUT};

const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The control task is idle between requests; it beats this often so a wedged runtime shows.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    SwapStatus,
    SwapExpand { size: Option<u64> },
    SwapShrink,
    SwapClean { force: bool },
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
pub struct ControlState {
    pub started: Instant,
    pub dry_run: bool,
    pub tasks: Tasks,
    pub snapshots: SnapshotReceiver,
    pub config: watch::Receiver<ConfigInfo>,
    pub swap: SwapSender,
}

impl ControlState {
    fn status(&self) -> StatusReply {
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another cluster-ai daemon already answers on {0}; stop it first")]
    InUse(PathBuf),
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The listening socket; the file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path`, creating its directory (0700) if missing. A socket file left by a crashed
    /// daemon is replaced; one that still answers means a second daemon, which is refused.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let io = |what| move |source| BindError::Io { path: path.to_path_buf(), what, source };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("cannot create the socket directory"))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
        }
        let listener = UnixListener::bind(path).map_err(io("cannot bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("cannot chmod 0600"))?;
        Ok(Self { listener, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The control task.
pub async fn run(socket: ControlSocket, state: ControlState, heartbeat: Heartbeat, cancel: CancellationToken) -> anyhow::Result<()> {
    let state = std::sync::Arc::new(state);
    let mut ticker = crate::sys::ticker::Ticker::new(HEARTBEAT_PERIOD)?;
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
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, &state).await {
                            tracing::debug!(error = %e, "control client went away");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
        }
    }
}

async fn serve(stream: UnixStream, state: &ControlState) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_value(state.status()).map_err(std::io::Error::other)?,
        Ok(req) => ask_swap(&state.swap, req).await,
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let mut out = reply.to_string();
    out.push('\n');
    tokio::time::timeout(IO_TIMEOUT, write.write_all(out.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client does not read"))?
}

/// Forwards a swap request to the swap task, the one owner of the swap state.
async fn ask_swap(swap: &SwapSender, req: Request) -> serde_json::Value {
    use serde_json::json;
    let gone = || json!({ "error": "the swap task is not running" });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = match req {
        Request::SwapStatus => {
            let (stx, srx) = tokio::sync::oneshot::channel();
            if swap.send(SwapCommand::Status(stx)).await.is_err() {
                return gone();
            }
            return match srx.await {
                Ok(Ok(status)) => serde_json::to_value(status).unwrap_or_else(|e| json!({ "error": e.to_string() })),
                Ok(Err(e)) => json!({ "error": e }),
                Err(_) => gone(),
            };
        }
        Request::SwapExpand { size } => SwapCommand::Expand { size, reply: Some(tx) },
        Request::SwapShrink => SwapCommand::Shrink(tx),
        Request::SwapClean { force } => SwapCommand::Clean { force, reply: tx },
        Request::Status => return json!({ "error": "not a swap request" }),
    };
    if swap.send(cmd).await.is_err() {
        return gone();
    }
    match tokio::time::timeout(SWAPOFF_TIMEOUT + Duration::from_secs(10), rx).await {
        Ok(Ok(Ok(message))) => json!({ "message": message }),
        Ok(Ok(Err(e))) => json!({ "error": e }),
        Ok(Err(_)) => gone(),
        Err(_) => json!({ "error": "the swap task did not answer in time" }),
    }
}

/// The client side, for one-shot commands: blocking, with timeouts, no runtime needed.
pub fn request(path: &Path, request: &Request) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("no cluster-ai daemon answers on {} (is it running? `systemctl status cluster-ai`)", path.display()))?;
    // Swap operations (swapoff of a full file) can take minutes; questions answer at once.
    let wait = match request {
        Request::Status | Request::SwapStatus => IO_TIMEOUT,
        _ => SWAPOFF_TIMEOUT + Duration::from_secs(20),
    };
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).with_context(|| format!("the daemon on {} did not answer", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&reply).with_context(|| format!("the daemon on {} answered something that is not JSON", path.display()))?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("{err}");
    }
    Ok(value)
}
