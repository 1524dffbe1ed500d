//! Logs go to journald when stderr is the journal (systemd sets `JOURNAL_STREAM` to its
//! device:inode), else to stderr as text. The level comes from `log_level` and follows a
//! reload; `RUST_LOG`, when set, wins over both.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

use crate::config::LogLevel;

pub struct LogHandle {
    filter: reload::Handle<Targets, Registry>,
    from_env: bool,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        if self.from_env {
            return;
        }
        if let Err(e) = self.filter.reload(targets(level)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

pub use crate::sys::process::stderr_is_journal;

/// Whether text output may carry ANSI colour: only on a terminal, and never when `NO_COLOR` is
/// set to anything but the empty string (<https://no-color.org>).
pub fn colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Every target at `level`.
fn targets(level: LogLevel) -> Targets {
    level.as_str().parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// `RUST_LOG` takes a level (`debug`) or per-module levels (`cluster_ai=debug,zbus=warn`): the
/// directives of tracing's `Targets` filter, without span or field filters (which would cost the
/// binary a regex engine).
/// A handle that changes nothing (the in-process tests' daemon: the test process has its own
/// logger, or none).
pub fn detached() -> LogHandle {
    let (_, filter) = reload::Layer::<Targets, Registry>::new(targets(LogLevel::Info));
    LogHandle { filter, from_env: true }
}

pub fn init(level: LogLevel) -> LogHandle {
    let env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse::<Targets>().ok());
    let from_env = env.is_some();
    let (filter, handle) = reload::Layer::new(env.unwrap_or_else(|| targets(level)));
    let journald = stderr_is_journal().then(|| tracing_journald::layer().ok()).flatten();
    let text = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour(std::io::IsTerminal::is_terminal(&std::io::stderr()), std::env::var_os("NO_COLOR")))
            .with_target(false)
    });
    let _ = tracing_subscriber::registry().with(filter).with(journald).with(text).try_init();
    LogHandle { filter: handle, from_env }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_set() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset, as no-color.org says");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn each_log_level_and_rust_log_directives_filter_as_documented() {
        let t = targets(LogLevel::Warn);
        assert!(t.would_enable("cluster_ai::swap", &Level::WARN));
        assert!(!t.would_enable("cluster_ai::swap", &Level::INFO));
        assert!(targets(LogLevel::Trace).would_enable("zbus", &Level::TRACE));
        let env: Targets = "info,zbus=warn".parse().unwrap();
        assert!(env.would_enable("cluster_ai", &Level::INFO));
        assert!(!env.would_enable("zbus::connection", &Level::INFO));
    }
}
