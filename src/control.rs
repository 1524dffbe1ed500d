//! The control socket's protocol and its client: one JSON request line per connection, one
//! JSON reply line (`{"command":"status"}`, `{"command":"swap","action":"expand","size":…}`).
//! The daemon's side is `daemon::control`; one-shot commands use [`request`] (blocking, with
//! timeouts, no runtime needed).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::report::NodeReport as StatusReply;
use crate::swap::{self, task::SwapRequest};
use crate::sys::display_path;

/// How long either side waits for the other's line (the request, or a reply that needs no work).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub fn answer_timeout(&self) -> Duration {
        match self {
            Request::Status | Request::Optimize | Request::Emergency | Request::Health | Request::Alerts => IO_TIMEOUT,
            // Each Ollama unload has its own deadline; several models may be loaded.
            Request::FreeMemory => Duration::from_secs(120),
            Request::Swap(r) => swap::task::answer_timeout(r),
        }
    }

    /// Whether the request changes something (a lost answer then leaves its outcome unknown).
    pub fn acts(&self) -> bool {
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
    /// The exit status ([`crate::commands::exit`]): as the LSB status action, 3 not running
    /// and 4 unknown; 1 for a request the daemon refused.
    pub fn exit_code(&self) -> u8 {
        use crate::exit;
        match self {
            ClientError::NotRunning(_) => exit::NOT_RUNNING,
            ClientError::Refused(_) => exit::FAILURE,
            _ => exit::UNKNOWN,
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
