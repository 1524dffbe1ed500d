//! The optimize task: plans at start, on every reload, when the machine's memory size changes
//! (RAM hot-added, a container's limit raised) and when the kernel says a GPU, a memory block
//! or a CPU came or went (a uevent), and, with `[optimize] apply`, writes the
//! env files whose content changed. Event-driven, no timer of its own beyond the heartbeat.
//! Each unit whose file it wrote is then restarted through systemd's D-Bus API, exactly once
//! per change (a file is written only when its content changes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::apply::{self, FileOutcome};
use super::plan::{self, Plan};
use super::profile::{gather, set_worker_unit, Sources};
use crate::config::{human_size, Config};
use crate::runtime::TaskCtx;
use crate::sampler::SnapshotReceiver;
use crate::sys::systemd::{ServiceManager, UnitMemory};
use crate::sys::uevent::{hardware_change, Uevent, Uevents};

/// The task is idle between events; it beats this often so a wedged runtime shows.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
const GATHER_TIMEOUT: Duration = Duration::from_secs(30);
/// A device arriving is a burst of events (PCI device, driver bound, DRM nodes): the task
/// re-plans once, this long after the first.
pub const HARDWARE_SETTLE: Duration = Duration::from_secs(2);

/// The latest plan and what became of its files; `cluster-ai status` and the control socket's
/// `{"command":"optimize"}` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeState {
    /// What made it plan: "start", "config reloaded", "memory size changed", "hardware
    /// changed: GPU card1 add".
    pub reason: String,
    pub planned_at_unix_ms: u64,
    /// `[optimize] apply` (and not a dry run): the files are written.
    pub apply: bool,
    pub plan: Plan,
    pub files: Vec<FileOutcome>,
    pub restart_needed: Vec<String>,
    /// What became of each restart: "restarted" or "failed: …" (empty when nothing was
    /// written).
    #[serde(default)]
    pub restarts: Vec<(String, String)>,
}

pub type OptimizeReceiver = watch::Receiver<Option<Arc<OptimizeState>>>;

pub async fn run(mut snapshots: SnapshotReceiver, state: watch::Sender<Option<Arc<OptimizeState>>>, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, dry_run, os, .. } = ctx;
    let mut ticker = os.clock.ticker(HEARTBEAT_PERIOD);
    heartbeat.started();
    let mut memory_total: Option<u64> = None;
    let mut replan = Some("start".to_string());
    let mut uevents = match Uevents::open() {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!("optimize: cannot listen for the kernel's device events ({e}): a GPU or CPU that comes or goes is planned for at the next reload");
            None
        }
    };
    // The first hardware change of a burst, and when the burst is over.
    let mut settling: Option<(String, tokio::time::Instant)> = None;
    loop {
        if let Some(reason) = replan.take() {
            let cfg = config.borrow_and_update().clone();
            let worker_unit = heartbeat.during(worker_unit_memory(&*os.services, &cfg)).await;
            match heartbeat.blocking(GATHER_TIMEOUT, move || plan_once(&cfg, &reason, dry_run, worker_unit)).await {
                Ok(Ok(mut s)) => {
                    log(&s);
                    if s.apply && !s.restart_needed.is_empty() {
                        s.restarts = heartbeat.during(restart(&*os.services, &s.restart_needed)).await;
                    }
                    state.send_replace(Some(Arc::new(s)));
                }
                Ok(Err(e)) => tracing::error!("optimize: cannot read the hardware: {e}"),
                Err(e) => tracing::error!("optimize: planning {e}"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                heartbeat.beat();
            }
            changed = config.changed() => {
                if changed.is_err() { return Ok(()); }
                replan = Some("config reloaded".into());
            }
            event = next_event(&uevents) => match event {
                Ok(e) => if let Some(what) = hardware_change(&e) {
                    tracing::debug!(action = %e.action, devpath = %e.devpath, subsystem = %e.subsystem, "optimize: {what}");
                    settling.get_or_insert_with(|| (what, tokio::time::Instant::now() + HARDWARE_SETTLE));
                },
                Err(e) => {
                    tracing::warn!("optimize: device events stopped ({e}): a GPU or CPU that comes or goes is planned for at the next reload");
                    uevents = None;
                }
            },
            _ = sleep_until(settling.as_ref().map(|s| s.1)), if settling.is_some() => {
                if let Some((what, _)) = settling.take() {
                    replan = Some(format!("hardware changed: {what}"));
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() { return Ok(()); }
                let total = snapshots.borrow_and_update().as_ref().map(|s| s.memory_total_bytes);
                if memory_total.is_some() && total.is_some() && total != memory_total {
                    replan = Some("memory size changed".into());
                }
                memory_total = total.or(memory_total);
                heartbeat.beat();
            }
        }
    }
}

async fn next_event(uevents: &Option<Uevents>) -> std::io::Result<Uevent> {
    match uevents {
        Some(u) => u.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The `[optimize] dask_worker_unit`'s memory limits through systemd, to size the workers by
/// (`None`: no worker unit configured).
pub async fn worker_unit_memory(systemd: &dyn ServiceManager, cfg: &Config) -> Option<(String, Result<Option<UnitMemory>, String>)> {
    let unit = cfg.optimize.dask_worker_unit.clone()?;
    let read = systemd.memory(&unit).await.map_err(|e| e.to_string());
    Some((unit, read))
}

type WorkerUnitMemory = Option<(String, Result<Option<UnitMemory>, String>)>;

fn plan_once(cfg: &Config, reason: &str, dry_run: bool, worker_unit: WorkerUnitMemory) -> Result<OptimizeState, String> {
    let mut profile = gather(cfg, Path::new("/"), Sources::PLAN)?;
    if let Some((unit, read)) = worker_unit {
        set_worker_unit(&mut profile, Path::new("/"), &unit, read);
    }
    let plan = plan::plan(&profile, &cfg.optimize);
    let apply = cfg.optimize.apply && !dry_run;
    let files = apply::env_files(&plan, &cfg.optimize, apply);
    let restart_needed = apply::restart_needed(&files);
    let planned_at_unix_ms = crate::sys::unix_ms();
    Ok(OptimizeState { reason: reason.into(), planned_at_unix_ms, apply, plan, files, restart_needed, restarts: Vec::new() })
}

/// Restarts each unit whose env file was just written, through systemd, one at a time.
pub async fn restart(systemd: &dyn ServiceManager, units: &[String]) -> Vec<(String, String)> {
    match systemd.connect().await {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(units = ?units, "optimize: cannot restart {}: {e}; restart them yourself to apply the new settings", units.join(", "));
            return units.iter().map(|u| (u.clone(), format!("failed: {e}"))).collect();
        }
    };
    let mut out = Vec::new();
    for unit in units {
        match systemd.restart(unit).await {
            Ok(()) => {
                tracing::info!(unit = %unit, "optimize: restarted {unit} to apply its new settings");
                out.push((unit.clone(), "restarted".into()));
            }
            Err(e) => {
                tracing::error!(unit = %unit, "optimize: restart {unit}: {e}");
                out.push((unit.clone(), format!("failed: {e}")));
            }
        }
    }
    out
}

fn log(s: &OptimizeState) {
    let p = &s.plan;
    tracing::info!(
        reason = %s.reason,
        dask_workers = p.dask_workers.value,
        dask_threads = p.dask_threads_per_worker.value,
        dask_memory_limit = p.dask_memory_limit_bytes.value,
        ollama_num_parallel = p.ollama_num_parallel.value,
        ollama_max_loaded_models = p.ollama_max_loaded_models.value,
        "optimize ({}): Dask {} x {} threads, {} per worker; Ollama {} parallel, {} models",
        s.reason,
        p.dask_workers.value,
        p.dask_threads_per_worker.value,
        human_size(p.dask_memory_limit_bytes.value),
        p.ollama_num_parallel.value,
        p.ollama_max_loaded_models.value
    );
    for f in &s.files {
        let changes: Vec<String> = f.changes.iter().map(ToString::to_string).collect();
        match f.outcome.as_str() {
            "unchanged" => {}
            "written" => {
                tracing::info!(file = %crate::sys::display_path(&f.path), "optimize: wrote {} ({})", f.path.display(), changes.join(", "))
            }
            "would write" => tracing::info!(
                file = %crate::sys::display_path(&f.path),
                "optimize: {} differs from the plan ({}); [optimize] apply is off, `cluster-ai optimize` writes it",
                f.path.display(),
                changes.join(", ")
            ),
            failed => tracing::error!(file = %crate::sys::display_path(&f.path), "optimize: {failed}"),
        }
    }
    if !s.apply && !s.restart_needed.is_empty() {
        tracing::info!(units = ?s.restart_needed, "optimize: with [optimize] apply on, {} would be restarted", s.restart_needed.join(", "));
    }
}
