//! The supervisor: starts the tasks, tells systemd how things stand, reloads on SIGHUP and
//! stops on SIGTERM/SIGINT. Shutdown is a `CancellationToken` handed to every task.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::control::{self, ControlSocket, ControlState};
use super::{load_config, report, socket_path, DaemonError, Options};
use crate::config::{Config, ConfigError};
use crate::emergency;
use crate::logging::LogHandle;
use crate::optimize;
use crate::report::{ConfigInfo, Reports};
use crate::runtime::tasks::{Heartbeat, TaskState, Tasks};
use crate::runtime::{Os, TaskCtx};
use crate::sampler::{self, Sampler};
use crate::swap::{self, engine::Engine};
use crate::sys::notify::{Notice, Notifier, SdNotifier};
use crate::sys::procfs::ProcFs;
use crate::sys::swap_os::RealSwapOs;
use crate::sys::swap_os::SwapOs;
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

/// A signal the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGHUP (`systemctl reload`): read the config again.
    Hangup,
    /// SIGTERM (`systemctl stop`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

/// The signals the daemon hears, as one stream: from the process's own signals
/// ([`Signals::os`]), or from a test ([`Signals::channel`]). Made once before the loop so no
/// signal is lost between iterations.
pub struct Signals {
    rx: tokio::sync::mpsc::UnboundedReceiver<Sig>,
}

impl Signals {
    /// SIGHUP, SIGTERM and SIGINT of this process (inside a tokio runtime).
    pub fn os() -> std::io::Result<Signals> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for (kind, sig) in
            [(SignalKind::hangup(), Sig::Hangup), (SignalKind::terminate(), Sig::Terminate), (SignalKind::interrupt(), Sig::Interrupt)]
        {
            let mut stream = signal(kind)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Signals { rx })
    }

    /// Signals a test sends.
    pub fn channel() -> (tokio::sync::mpsc::UnboundedSender<Sig>, Signals) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, Signals { rx })
    }

    async fn next(&mut self) -> Sig {
        match self.rx.recv().await {
            Some(s) => s,
            // Nobody can send any more: wait for ever, as a process nobody signals does.
            None => std::future::pending().await,
        }
    }

    /// The next SIGTERM or SIGINT (a SIGHUP while stopping is ignored).
    async fn stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                Sig::Terminate => return "SIGTERM",
                Sig::Interrupt => return "SIGINT",
                Sig::Hangup => {}
            }
        }
    }
}

/// Every OS boundary the daemon crosses, built once: [`Deps::real`] on a machine; tests build
/// one from fakes (the `fakes` feature), so the whole daemon runs in-process.
pub struct Deps {
    pub notifier: Arc<dyn Notifier>,
    pub signals: Signals,
    pub os: Os,
    pub swap_os: Box<dyn SwapOs>,
    /// Where the sampler reads `/proc`.
    pub procfs: ProcFs,
    /// Where the daemon keeps its state (the clean-stop marker, the alert queue).
    pub state_dir: PathBuf,
    /// Process-wide set-up a test process must not get: the panic hook and the trim of
    /// start-up mappings.
    pub process_wide: bool,
}

impl Deps {
    /// This machine: sd_notify, the process's signals, systemd on the system bus, `/proc`,
    /// `/var/lib/cluster-ai`. Inside a tokio runtime.
    pub fn real() -> Result<Deps, DaemonError> {
        let state_dir = crate::sys::paths::state_dir();
        Ok(Deps {
            notifier: Arc::new(SdNotifier::from_env()),
            signals: Signals::os().map_err(|e| DaemonError::Startup(format!("cannot watch signals: {e}")))?,
            os: Os::real(),
            swap_os: Box::new(RealSwapOs::new(ProcFs::default(), state_dir.clone())),
            procfs: ProcFs::default(),
            state_dir,
            process_wide: true,
        })
    }
}

/// The daemon on this machine (`cluster-ai run`).
pub async fn run(opts: Options, log: LogHandle) -> Result<(), DaemonError> {
    run_with(opts, Deps::real()?, log).await
}

/// The daemon on the given dependencies: what [`run`] does, and what in-process tests run.
pub async fn run_with(opts: Options, deps: Deps, log: LogHandle) -> Result<(), DaemonError> {
    let Deps { notifier, mut signals, os, swap_os, procfs, state_dir, process_wide } = deps;
    let started = Instant::now();
    let clock = os.clock;
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
    let marker = super::marker::Marker::new((!opts.dry_run).then_some(state_dir.as_path()));
    if process_wide {
        install_panic_hook(marker.clone());
    }
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
    let dry_run = opts.dry_run;
    let state_dir = (!dry_run).then_some(state_dir);
    let ctx = |heartbeat: Heartbeat| TaskCtx {
        config: config_rx.clone(),
        heartbeat,
        cancel: cancel.clone(),
        dry_run,
        state_dir: state_dir.clone(),
        os: os.clone(),
    };
    let sample_interval = config_rx.borrow().sample_interval;
    set.spawn("sampler", sample_interval, |hb| {
        let task = sampler::run(Sampler::new(procfs), snapshot_tx, ctx(hb.clone()));
        async move {
            hb.started();
            task.await
        }
    });
    // Where every task's alerts go (the alerts task, spawned below).
    let (alert_tx, alert_rx) = crate::alerts::task::inbox();
    let (swap_tx, swap_rx) = tokio::sync::mpsc::channel(8);
    let mut engine = Engine::new(&config_rx.borrow(), swap_os, opts.dry_run);
    engine.alerts = Some(alert_tx.clone());
    let (swap_metrics_tx, swap_metrics_rx) = watch::channel(Arc::new(crate::metrics::SwapMetrics::default()));
    engine.metrics = Some(swap_metrics_tx);
    let check_interval = config_rx.borrow().swap.check_interval;
    set.spawn("swap", check_interval, |hb| swap::task::run(engine, snapshot_rx.clone(), swap_rx, ctx(hb)));
    let (optimize_tx, optimize_rx) = watch::channel(None);
    set.spawn("optimize", optimize::task::HEARTBEAT_PERIOD, |hb| optimize::task::run(snapshot_rx.clone(), optimize_tx, ctx(hb)));
    let (emergency_tx, emergency_rx) = watch::channel(Arc::new(emergency::EmergencyReport::default()));
    let (free_memory_tx, free_memory_rx) = tokio::sync::mpsc::channel(4);
    // The health report is made here, before both tasks: the CPU measure reads the critical
    // services' probes from it.
    let (health_tx, health_rx) = watch::channel(Arc::new(crate::health::HealthReport::default()));
    let mut measures = emergency::Emergency::new(&config_rx.borrow(), Some(swap_tx.clone()), os.clone(), dry_run);
    measures.alerts = Some(alert_tx.clone());
    measures.health = Some(health_rx.clone());
    set.spawn("emergency", emergency::HEARTBEAT_PERIOD, |hb| {
        emergency::run(measures, snapshot_rx.clone(), free_memory_rx, emergency_tx, ctx(hb))
    });
    let (alerts_tx, alerts_rx) = watch::channel(Arc::new(crate::alerts::task::AlertsReport::default()));
    set.spawn("alerts", crate::alerts::task::HEARTBEAT_PERIOD, |hb| crate::alerts::task::run(alert_rx, alerts_tx, ctx(hb)));
    if let Some(why) = marker.begin() {
        let text = format!("cluster-ai restarted; its last run did not stop cleanly: {why}");
        tracing::warn!("{text}");
        crate::alerts::task::raise(
            &Some(alert_tx.clone()),
            crate::alerts::Alert::notice(crate::alerts::AlertKey::UncleanStop, crate::alerts::Severity::Critical, text),
        );
    }
    let alerts = Some(alert_tx.clone());
    set.spawn("health", crate::health::task::HEARTBEAT_PERIOD, |hb| crate::health::task::run(health_tx, alerts, ctx(hb)));
    let (metrics_report_tx, metrics_report_rx) = watch::channel(crate::report::MetricsReport::default());
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
        metrics: metrics_report_rx,
    };
    let metrics_state = reports.clone();
    let state = ControlState { reports, swap: swap_tx, free_memory: free_memory_tx };
    set.spawn("control", control::HEARTBEAT_PERIOD, |hb| control::run(socket, state, ctx(hb)));
    set.spawn("metrics", crate::metrics::server::HEARTBEAT_PERIOD, |hb| {
        crate::metrics::server::run(metrics_state, swap_metrics_rx, metrics_report_tx, ctx(hb))
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
    // anyway.
    let report_ticker = clock.ticker(report::period(notifier.as_ref()));
    tokio::spawn(report::run(report_ticker, tasks.clone(), notifier.clone(), snapshot_rx, note_rx, health_rx, cancel.clone()));
    if process_wide {
        tokio::spawn(trim_after_start(cancel.clone()));
    }

    let failure = loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Hangup => reload(&opts, &config_tx, &info_tx, &note_tx, &notifier, &log).await,
                Sig::Terminate | Sig::Interrupt => {
                    tracing::info!(signal = if sig == Sig::Terminate { "SIGTERM" } else { "SIGINT" }, "stopping");
                    break None;
                }
            },
            Some(Ok(joined)) = set.join_next() => break failure_of(&tasks, joined, false),
        }
    };
    if let Some(f) = &failure {
        let text = format!("{f}; cluster-ai stops (systemd restarts it)");
        crate::alerts::task::raise(
            &Some(alert_tx.clone()),
            crate::alerts::Alert::notice(crate::alerts::AlertKey::TaskFailed, crate::alerts::Severity::Critical, text),
        );
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
