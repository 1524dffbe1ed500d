//! The supervisor: starts the tasks, tells systemd how things stand, reloads on SIGHUP and
//! stops on SIGTERM/SIGINT. Shutdown is a `CancellationToken` handed to every task.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::{self, ControlSocket, ControlState};
use super::{load_config, report, socket_path, DaemonError, Options};
use crate::config::{Config, ConfigError};
use crate::logging::LogHandle;
use crate::optimize;
use crate::report::{ConfigInfo, Reports};
use crate::runtime::tasks::{Heartbeat, TaskState, Tasks};
use crate::sampler::{self, Sampler};
use crate::swap::{self, engine::Engine};
use crate::sys::notify::{Notice, Notifier, SdNotifier};
use crate::sys::procfs::ProcFs;
use crate::sys::swap_os::RealSwapOs;
use crate::sys::unix_ms;

/// How long after READY=1 the start-up mappings are trimmed.
const TRIM_AFTER: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

tokio::task_local! {
    /// The name of the task being polled, so a panic (which aborts in release builds) is
    /// logged with the task it happened in.
    static TASK_NAME: &'static str;
}

type Joined = (&'static str, Result<anyhow::Result<()>, JoinError>);

/// Signal streams, created once before the loop so no signal is lost between iterations.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

pub async fn run(opts: Options, log: LogHandle) -> Result<(), DaemonError> {
    let started = Instant::now();
    let (config, from_file) = load_config(&opts.config_path, opts.config_explicit)?;
    log.set_level(config.log_level);
    let path = opts.config_path.display().to_string();
    if from_file {
        tracing::info!(config = %path, "config loaded");
    } else {
        tracing::warn!(config = %path, "no config file; running on built-in defaults");
    }
    if opts.dry_run {
        tracing::info!("dry run: every decision is logged, nothing on the system is changed");
    }
    let marker = super::marker::Marker::new((!opts.dry_run).then(crate::sys::paths::state_dir).as_deref());
    install_panic_hook(marker.clone());
    let notifier: Arc<dyn Notifier> = Arc::new(SdNotifier::from_env());
    let mut signals = Signals::new().map_err(|e| DaemonError::Startup(format!("cannot watch signals: {e}")))?;
    let socket_file = socket_path(&config.control_socket).map_err(DaemonError::Startup)?;
    let socket = ControlSocket::bind(&socket_file).map_err(|e| DaemonError::Startup(e.to_string()))?;
    tracing::info!(socket = %socket.path().display(), "control socket ready");

    let cancel = CancellationToken::new();
    let tasks = Tasks::default();
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let (snapshot_tx, snapshot_rx) = watch::channel(None);
    let (info_tx, info_rx) = watch::channel(ConfigInfo {
        path: opts.config_path.clone(),
        from_file,
        loaded_at: started,
        loaded_at_unix_ms: unix_ms(),
        last_reload_error: None,
    });
    let (note_tx, note_rx) = watch::channel(String::new());

    let mut set = TaskSet { set: JoinSet::new(), tasks: tasks.clone() };
    let sample_interval = config_rx.borrow().sample_interval;
    set.spawn("sampler", sample_interval, |hb| {
        let task = sampler::run(Sampler::new(ProcFs::default()), config_rx.clone(), snapshot_tx, hb.clone(), cancel.clone());
        async move {
            hb.started();
            task.await
        }
    });
    // Where every task's alerts go (the alerts task, spawned below).
    let (alert_tx, alert_rx) = crate::alerts::task::inbox();
    let (swap_tx, swap_rx) = tokio::sync::mpsc::channel(8);
    let swap_os = RealSwapOs::new(ProcFs::default(), crate::sys::paths::state_dir());
    let mut engine = Engine::new(&config_rx.borrow(), Box::new(swap_os), opts.dry_run);
    engine.alerts = Some(alert_tx.clone());
    let (swap_metrics_tx, swap_metrics_rx) = watch::channel(Arc::new(crate::metrics::SwapMetrics::default()));
    engine.metrics = Some(swap_metrics_tx);
    let check_interval = config_rx.borrow().swap.check_interval;
    set.spawn("swap", check_interval, |hb| swap::task::run(engine, config_rx.clone(), snapshot_rx.clone(), swap_rx, hb, cancel.clone()));
    let (optimize_tx, optimize_rx) = watch::channel(None);
    let dry_run = opts.dry_run;
    set.spawn("optimize", optimize::task::HEARTBEAT_PERIOD, |hb| {
        optimize::task::run(config_rx.clone(), snapshot_rx.clone(), optimize_tx, hb, cancel.clone(), dry_run)
    });
    let (emergency_tx, emergency_rx) = watch::channel(Arc::new(optimize::emergency::EmergencyReport::default()));
    let (free_memory_tx, free_memory_rx) = tokio::sync::mpsc::channel(4);
    let mut measures =
        optimize::emergency::Emergency::new(&config_rx.borrow(), Some(swap_tx.clone()), Arc::new(crate::sys::node::RealNode), dry_run);
    measures.alerts = Some(alert_tx.clone());
    set.spawn("emergency", optimize::emergency::HEARTBEAT_PERIOD, |hb| {
        optimize::emergency::run(config_rx.clone(), snapshot_rx.clone(), measures, free_memory_rx, emergency_tx, hb, cancel.clone())
    });
    let (alerts_tx, alerts_rx) = watch::channel(Arc::new(crate::alerts::task::AlertsReport::default()));
    set.spawn("alerts", crate::alerts::task::HEARTBEAT_PERIOD, |hb| {
        crate::alerts::task::run(config_rx.clone(), alert_rx, alerts_tx, hb, cancel.clone(), dry_run)
    });
    if let Some(why) = marker.begin() {
        let text = format!("cluster-ai restarted; its last run did not stop cleanly: {why}");
        tracing::warn!("{text}");
        crate::alerts::task::raise(&Some(alert_tx.clone()), crate::alerts::Alert::notice("task/unclean-stop", "critical", text));
    }
    let (health_tx, health_rx) = watch::channel(Arc::new(crate::health::HealthReport::default()));
    let alerts = Some(alert_tx.clone());
    set.spawn("health", crate::health::task::HEARTBEAT_PERIOD, |hb| {
        crate::health::task::run(config_rx.clone(), health_tx, alerts, hb, cancel.clone(), dry_run)
    });
    let reports = Reports {
        started,
        dry_run: opts.dry_run,
        tasks: tasks.clone(),
        snapshots: snapshot_rx.clone(),
        config: info_rx,
        optimize: optimize_rx,
        emergency: emergency_rx,
        health: health_rx.clone(),
        alerts: alerts_rx,
    };
    let metrics_state = reports.clone();
    let state = ControlState { reports, swap: swap_tx, free_memory: free_memory_tx };
    set.spawn("control", control::HEARTBEAT_PERIOD, |hb| control::run(socket, state, hb, cancel.clone()));
    set.spawn("metrics", crate::metrics::server::HEARTBEAT_PERIOD, |hb| {
        crate::metrics::server::run(config_rx.clone(), metrics_state, swap_metrics_rx, hb, cancel.clone())
    });
    let set = &mut set.set;

    tokio::select! {
        _ = tasks.all_started() => {}
        Some(Ok(joined)) = set.join_next() => {
            let failure = failure_of(&tasks, joined, false);
            return stop(&notifier, &cancel, &tasks, set, &mut signals, failure, &marker).await;
        }
        _ = tokio::time::sleep(START_TIMEOUT) => {
            let failure = DaemonError::Startup(format!("tasks did not start within {START_TIMEOUT:?}"));
            return stop(&notifier, &cancel, &tasks, set, &mut signals, Some(failure), &marker).await;
        }
    }
    notifier.send(&[Notice::Ready, Notice::Status("started".into())]);
    tracing::info!(pid = std::process::id(), "ready");
    // Also without systemd: it is what logs a task that stopped beating.
    // On the tickers' common grid (sys/ticker.rs): the ping rides on a wakeup the sampler makes
    // anyway. A timer that cannot be made is a failed start, as a task's would be.
    let report_ticker = match crate::sys::ticker::Ticker::new(report::period(notifier.as_ref())) {
        Ok(t) => t,
        Err(e) => {
            let failure = DaemonError::Startup(format!("cannot make the watchdog's timer: {e}"));
            return stop(&notifier, &cancel, &tasks, set, &mut signals, Some(failure), &marker).await;
        }
    };
    tokio::spawn(report::run(report_ticker, tasks.clone(), notifier.clone(), snapshot_rx, note_rx, health_rx, cancel.clone()));
    tokio::spawn(trim_after_start(cancel.clone()));

    let failure = loop {
        tokio::select! {
            _ = signals.hangup.recv() => {
                reload(&opts, &config_tx, &info_tx, &note_tx, &notifier, &log).await;
            }
            _ = signals.terminate.recv() => {
                tracing::info!(signal = "SIGTERM", "stopping");
                break None;
            }
            _ = signals.interrupt.recv() => {
                tracing::info!(signal = "SIGINT", "stopping");
                break None;
            }
            Some(Ok(joined)) = set.join_next() => break failure_of(&tasks, joined, false),
        }
    };
    if let Some(f) = &failure {
        let text = format!("{f}; cluster-ai stops (systemd restarts it)");
        crate::alerts::task::raise(&Some(alert_tx.clone()), crate::alerts::Alert::notice("task/failed", "critical", text));
    }
    stop(&notifier, &cancel, &tasks, set, &mut signals, failure, &marker).await
}

/// Once start-up's one-off work is over (first plan, baseline swap file), unmaps the read-only
/// file pages it touched: see `sys::trim`.
async fn trim_after_start(cancel: CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(TRIM_AFTER) => match tokio::task::spawn_blocking(crate::sys::trim::file_mappings).await {
            Ok(Ok(bytes)) => tracing::info!(bytes, "start-up done: unmapped {} of read-only file pages (they stay in the page cache)", crate::config::human_size(bytes)),
            Ok(Err(e)) => tracing::debug!("cannot read /proc/self/smaps to trim start-up mappings: {e}"),
            Err(e) => tracing::debug!("trim start-up mappings: {e}"),
        },
    }
}

/// The daemon's tasks: each registered for the watchdog and spawned under one name.
struct TaskSet {
    set: JoinSet<Joined>,
    tasks: Tasks,
}

impl TaskSet {
    /// Registers `name` (it must beat at least every `period`) and spawns the future `make`
    /// builds from its heartbeat. The inner spawn catches a panic (in builds that unwind) so
    /// the supervisor can name the task that failed.
    fn spawn<F, Fut>(&mut self, name: &'static str, period: Duration, make: F)
    where
        F: FnOnce(Heartbeat) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let task = make(self.tasks.register(name, period));
        let inner = tokio::spawn(TASK_NAME.scope(name, task));
        self.set.spawn(async move { (name, inner.await) });
    }
}

/// Records how a task ended; returns the failure, if it was one.
fn failure_of(tasks: &Tasks, (name, result): Joined, stopping: bool) -> Option<DaemonError> {
    let reason = match result {
        Ok(Ok(())) if stopping => None,
        Ok(Ok(())) => Some("stopped unexpectedly".to_string()),
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) if e.is_panic() => Some(format!("panicked: {}", panic_text(e.into_panic()))),
        Err(e) => Some(e.to_string()),
    };
    match reason {
        None => {
            tasks.set_state(name, TaskState::Stopped);
            None
        }
        Some(reason) => {
            tracing::error!(task = name, "task {name} failed: {reason}");
            tasks.set_state(name, TaskState::Failed(reason.clone()));
            Some(DaemonError::TaskFailed { task: name, reason })
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into())
}

/// STOPPING=1, cancel every task, wait for them (bounded); a second signal exits at once. The
/// marker says how it ended (see `marker`).
async fn stop(
    notifier: &Arc<dyn Notifier>,
    cancel: &CancellationToken,
    tasks: &Tasks,
    set: &mut JoinSet<Joined>,
    signals: &mut Signals,
    failure: Option<DaemonError>,
    marker: &super::marker::Marker,
) -> Result<(), DaemonError> {
    let result = stop_tasks(notifier, cancel, tasks, set, signals, failure).await;
    match &result {
        Ok(()) => marker.end(),
        Err(e) => marker.failed(&e.to_string()),
    }
    result
}

async fn stop_tasks(
    notifier: &Arc<dyn Notifier>,
    cancel: &CancellationToken,
    tasks: &Tasks,
    set: &mut JoinSet<Joined>,
    signals: &mut Signals,
    mut failure: Option<DaemonError>,
) -> Result<(), DaemonError> {
    notifier.send(&[Notice::Stopping, Notice::Status("stopping".into())]);
    cancel.cancel();
    let deadline = tokio::time::sleep(STOP_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(j)) => {
                    if let Some(f) = failure_of(tasks, j, true) {
                        failure.get_or_insert(f);
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "task wrapper failed"),
            },
            name = signals.stop() => {
                tracing::warn!(signal = name, "second signal: exiting now");
                return Err(DaemonError::Forced);
            }
            _ = &mut deadline => {
                set.abort_all();
                return Err(failure.unwrap_or(DaemonError::Startup(format!("tasks did not stop within {STOP_TIMEOUT:?}"))));
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// Re-reads the config, off the runtime (a config path that is a FIFO or on a hung mount must
/// not stall the daemon). Only a valid config is published; an invalid one is logged with its
/// `path:line:col` and the running config stays.
async fn reload(
    opts: &Options,
    config_tx: &watch::Sender<Arc<Config>>,
    info_tx: &watch::Sender<ConfigInfo>,
    note_tx: &watch::Sender<String>,
    notifier: &Arc<dyn Notifier>,
    log: &LogHandle,
) {
    notifier.send(&[Notice::Reloading, Notice::Status("reloading config".into())]);
    let path: &Path = &opts.config_path;
    let (owned, explicit) = (path.to_path_buf(), opts.config_explicit);
    let loaded = tokio::time::timeout(RELOAD_TIMEOUT, tokio::task::spawn_blocking(move || load_config(&owned, explicit))).await;
    let loaded = match loaded {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ConfigError::Read { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }),
        Err(_) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("not read within {RELOAD_TIMEOUT:?}")),
        }),
    };
    match loaded {
        Ok((new, from_file)) => {
            let old = config_tx.borrow().clone();
            let changes = new.changes_from(&old);
            if new.control_socket != old.control_socket {
                tracing::warn!("control_socket changes take effect at the next start");
            }
            log.set_level(new.log_level);
            let listed = if changes.is_empty() { "nothing changed".to_string() } else { changes.join(", ") };
            tracing::info!(config = %path.display(), from_file, "config reloaded: {listed}");
            config_tx.send_replace(Arc::new(new));
            info_tx.send_modify(|i| {
                i.from_file = from_file;
                i.loaded_at = Instant::now();
                i.loaded_at_unix_ms = unix_ms();
                i.last_reload_error = None;
            });
            note_tx.send_replace("config reloaded".into());
            notifier.send(&[Notice::Ready, Notice::Status("config reloaded".into())]);
        }
        Err(e) => {
            let why = e.to_string();
            tracing::error!(config = %path.display(), "reload failed; keeping the running config: {why}");
            let first = why.lines().next().unwrap_or_default().to_string();
            info_tx.send_modify(|i| i.last_reload_error = Some(why.clone()));
            let note = format!("reload failed: {first}");
            note_tx.send_replace(note.clone());
            notifier.send(&[Notice::Ready, Notice::Status(note)]);
        }
    }
}

fn install_panic_hook(marker: super::marker::Marker) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let task = TASK_NAME.try_with(|n| *n).unwrap_or("main");
        tracing::error!(task, "task {task} panicked: {info}");
        marker.failed(&format!("task {task} panicked: {info}"));
        default(info);
    }));
}
