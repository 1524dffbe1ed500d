//! What the tasks share below them: the task registry with each task's heartbeat (the
//! supervisor withholds systemd's watchdog ping when one goes stale), the bounded blocking
//! helper, the connection slots of the daemon's listeners, and [`TaskCtx`], what every task
//! is started with.

pub mod slots;
pub mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use tasks::{BlockingError, Heartbeat, TaskReport, TaskState, Tasks};

use crate::config::Config;
use crate::sys::node::Node;
use crate::sys::systemd::ServiceManager;
pub use crate::sys::ticker::{Clock, Ticker};

/// The OS seams the tasks share (one of each per daemon): systemd over one bus connection,
/// and the node's facts and housekeeping. Real in the daemon, fakes in tests.
#[derive(Clone)]
pub struct Os {
    pub services: Arc<dyn ServiceManager>,
    pub node: Arc<dyn Node>,
    /// The tickers and the wall clock: the kernel's in the daemon, tokio's (pausable) in tests.
    pub clock: Clock,
}

impl Os {
    /// This machine: systemd on the system bus (one connection, made on first use) and the
    /// running kernel.
    pub fn real() -> Os {
        Os { services: crate::sys::systemd::SystemBus::shared(), node: Arc::new(crate::sys::node::RealNode), clock: Clock::Kernel }
    }
}

/// What every task is started with, in one place rather than in arguments whose order
/// differs per task.
pub struct TaskCtx {
    /// The config; a reload sends a new one.
    pub config: watch::Receiver<Arc<Config>>,
    /// This task's heartbeat (the watchdog's view of it).
    pub heartbeat: Heartbeat,
    /// Cancelled when the daemon stops.
    pub cancel: CancellationToken,
    /// `run --dry-run`: decide and log, change nothing.
    pub dry_run: bool,
    /// Where the daemon keeps its state (`/var/lib/cluster-ai`); `None` under `--dry-run`,
    /// which writes nothing.
    pub state_dir: Option<PathBuf>,
    pub os: Os,
}

#[cfg(any(test, feature = "fakes"))]
impl Os {
    /// Fakes: systemd in memory with no units, a node named "test-node", and tokio's clock
    /// (a test under `tokio::time::pause()` moves every task's time). Inside a tokio runtime.
    pub fn fake() -> Os {
        Os {
            clock: Clock::tokio(),
            services: crate::sys::systemd::fake::FakeServiceManager::new(),
            node: Arc::new(crate::sys::node::fake::FakeNode::new("test-node")),
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl TaskCtx {
    /// A context for one task under test, on `os`: the sender of its config (a test
    /// "reloads" through it) comes back with it; nothing is kept on disk.
    pub fn fake(name: &'static str, config: Config, os: Os) -> (TaskCtx, watch::Sender<Arc<Config>>) {
        let (tx, rx) = watch::channel(Arc::new(config));
        let heartbeat = Tasks::default().register(name, std::time::Duration::from_secs(30));
        (TaskCtx { config: rx, heartbeat, cancel: CancellationToken::new(), dry_run: false, state_dir: None, os }, tx)
    }
}
