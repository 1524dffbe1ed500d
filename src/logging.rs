//! Logs go to journald when stderr is the journal (systemd sets `JOURNAL_STREAM` to its
//! device:inode), else to stderr as text. The level comes from `log_level` and follows a
//! reload; `RUST_LOG`, when set, wins over both.

use std::os::fd::AsRawFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogLevel;

pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        if self.from_env {
            return;
        }
        if let Err(e) = self.filter.reload(EnvFilter::new(level.as_str())) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

/// Whether stderr is connected to the journal, as sd_journal_stream_fd(3) documents it.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

pub fn init(level: LogLevel) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().and_then(|v| EnvFilter::try_new(v).ok());
    let from_env = env.is_some();
    let (filter, handle) = reload::Layer::new(env.unwrap_or_else(|| EnvFilter::new(level.as_str())));
    let journald = stderr_is_journal().then(|| tracing_journald::layer().ok()).flatten();
    let text = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    let _ = tracing_subscriber::registry().with(filter).with(journald).with(text).try_init();
    LogHandle { filter: handle, from_env }
}
