//! `cluster-ai run`: the daemon in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::RunArgs;
use crate::config::LogLevel;
use crate::daemon::{self, Options};
use crate::logging;
use crate::sys::paths::DEFAULT_CONFIG;

/// How long an idle blocking thread is kept: for the daemon's life (a hundred years).
const KEEP_BLOCKING_THREADS: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
/// Blocking threads at most: a long swapoff, the alert queue's file and a reload's reading at
/// once, and one more.
const MAX_BLOCKING_THREADS: usize = 4;

pub fn main(args: RunArgs) -> ExitCode {
    let log = logging::init(LogLevel::Info);
    let opts = Options {
        config_explicit: args.config.is_some(),
        config_path: args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        dry_run: args.dry_run,
    };
    // One thread: the daemon's work is a few small reads every few seconds; worker threads
    // would only add memory and wakeups.
    // Blocking threads (swap file work, the alert queue's file, a reload's reading) are kept
    // once made, and one is made now. Tokio's blocking pool panics ("OS can't spawn worker
    // thread"), which aborts a release build, when the OS refuses a thread (EAGAIN: the unit's
    // TasksMax, a pids limit, no memory for a stack) while the pool has none: that was every
    // moment but a second after a swap operation, and a node short of memory or tasks is when
    // the daemon must not die. With one kept, such work waits for it instead. A parked thread
    // costs its touched stack and no wakeups (it sleeps on a condvar for KEEP_BLOCKING_THREADS);
    // at most MAX_BLOCKING_THREADS are made (start-up made five at once, all then kept), and
    // work beyond them waits its turn.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(KEEP_BLOCKING_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    drop(runtime.spawn_blocking(|| ()));
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
