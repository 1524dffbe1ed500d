//! `cluster-ai run`: the daemon in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::config::LogLevel;
use crate::daemon::{self, Options};
use crate::logging;
use crate::sys::paths::DEFAULT_CONFIG;

pub fn main(args: RunArgs) -> ExitCode {
    let log = logging::init(LogLevel::Info);
    let opts = Options {
        config_explicit: args.config.is_some(),
        config_path: args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        dry_run: args.dry_run,
    };
    // One thread: the daemon's work is a few small reads every few seconds; worker threads
    // would only add memory and wakeups.
    // Blocking threads (swap file work) are rare: let them go after a second, not tokio's 10.
    let runtime =
        match tokio::runtime::Builder::new_current_thread().enable_all().thread_keep_alive(std::time::Duration::from_secs(1)).build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(daemon::run(opts, log));
    // Blocking work still running (a swapoff after a second SIGTERM) is not waited for: the
    // kernel leaves a swap file whole whatever point the process stops at, and the next start
    // adopts or cleans up what is there.
    runtime.shutdown_timeout(std::time::Duration::ZERO);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(exit_code = e.exit_code(), "{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
