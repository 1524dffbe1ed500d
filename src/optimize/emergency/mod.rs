//! The emergency measures: what the optimize task's half that watches the sampler does when
//! CPU, memory or disk stays over its threshold (`[emergency]`), through each peer's own API.
//! It runs as the supervised task "emergency", beside the planner, so a slow peer never delays
//! a re-plan; every call has a deadline and the heartbeat beats while it waits.
//!
//! - CPU: raise the CPU weight of the critical units (systemd, run time only), retire one Dask
//!   worker per step (never below the minimum); when calm, weights back and the worker unit
//!   restarted.
//! - Memory: the swap task expands now; the Ollama model with the most system RAM is unloaded
//!   (`ollama`); the page cache dropped when opted in.
//! - Disk: the cleaners that are switched on, each limited to what it is told.

pub mod ollama;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::peers::{self, PeerError};
use super::watch::{Limits, Step, Watch, WatchReport};
use crate::config::{human_size, Config, EmergencyConfig};
use crate::runtime::Os;
use crate::runtime::TaskCtx;
use crate::sampler::{Snapshot, SnapshotReceiver};
use crate::swap::task::{SwapCommand, SwapSender};
use crate::sys::http::Endpoint;
use crate::sys::node::Node;
use crate::sys::systemd::ServiceManager;
use crate::sys::ticker::Ticker;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
const RECENT: usize = 20;
/// Models `free-memory` unloads in one step at most (a pressure step unloads one).
const MAX_UNLOADS: usize = 8;
/// One step's Ollama requests together (listing and unloading) take at most this long.
const OLLAMA_BUDGET: Duration = Duration::from_secs(30);
/// Loaded models shown in `status`, in the measure's order.
const RANKED_SHOWN: usize = 20;

/// One thing a measure did (or, with `act = false`, would have done).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub at_unix_ms: u64,
    /// "cpu", "memory", "disk", "free-memory".
    pub measure: String,
    /// e.g. "retire_dask_worker", "unload_ollama_model", "docker_prune_images".
    pub action: String,
    /// The numbers that made it act, e.g. "cpu 97% >= 90% for 30s".
    pub why: String,
    pub detail: String,
    /// What it freed, where that is known.
    pub freed_bytes: Option<u64>,
    pub done: bool,
}

/// What `status` and `{"command":"emergency"}` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmergencyReport {
    pub act: bool,
    pub watches: BTreeMap<String, WatchReport>,
    /// Actions carried out since the daemon started, by kind.
    pub counts: BTreeMap<String, u64>,
    /// Bytes those actions freed, by kind (where the action can tell).
    #[serde(default)]
    pub freed_bytes: BTreeMap<String, u64>,
    pub recent: Vec<Action>,
    /// A peer's lasting problem, e.g. the Dask API route being off.
    pub problems: BTreeMap<String, String>,
    /// Ollama's loaded models at the memory measure's last look, in the order it unloads them
    /// (at most 20).
    #[serde(default)]
    pub ollama_models: Vec<ollama::RankedModel>,
}

pub type EmergencyReceiver = watch::Receiver<Arc<EmergencyReport>>;

/// `cluster-ai free-memory` through the daemon.
pub type FreeMemoryRequest = oneshot::Sender<Vec<Action>>;

pub struct Emergency {
    cfg: EmergencyConfig,
    /// `[optimize] dask_worker_unit`.
    worker_unit: Option<String>,
    dry_run: bool,
    act: bool,
    cpu: Watch,
    memory: Watch,
    disk: Watch,
    swap: Option<SwapSender>,
    /// The node's housekeeping: the journal's vacuum, the page cache.
    node: Arc<dyn Node>,
    /// systemd, once it answered (`services.connect()`).
    systemd: Option<Arc<dyn ServiceManager>>,
    services: Arc<dyn ServiceManager>,
    /// Workers retired in this CPU episode, to bring back when calm.
    retired: u32,
    /// Critical units' own CPU weights, to put back when calm.
    saved_weights: Vec<(String, u64)>,
    /// Undo steps that failed, retried every `min_interval` while clear.
    cpu_undo_pending: bool,
    last_undo_try: Option<Instant>,
    report: EmergencyReport,
    recent: VecDeque<Action>,
    /// The Dask problem shown is this CPU episode's (cleared when it ends).
    dask_problem_is_episodes: bool,
    /// Ollama models that were acknowledged as unloaded and stayed listed.
    ollama_unreleased: BTreeSet<String>,
    /// The actions of the current `free-memory` request.
    collected: Option<Vec<Action>>,
    /// Each measure taken is also an alert (a notice: it has no end).
    pub alerts: Option<crate::alerts::task::AlertSender>,
}

fn limits(threshold: u8, sustain: Duration, c: &EmergencyConfig) -> Limits {
    Limits {
        threshold: f64::from(threshold),
        hysteresis: f64::from(c.hysteresis),
        sustain,
        calm: c.calm_period,
        min_interval: c.min_interval,
    }
}

impl Emergency {
    pub fn new(cfg: &Config, swap: Option<SwapSender>, os: Os, dry_run: bool) -> Self {
        let c = &cfg.emergency;
        let mut e = Emergency {
            cfg: c.clone(),
            worker_unit: cfg.optimize.dask_worker_unit.clone(),
            dry_run,
            act: c.act && !dry_run,
            cpu: Watch::new(limits(c.cpu_threshold, c.cpu_sustain, c)),
            memory: Watch::new(limits(c.memory_threshold, c.memory_sustain, c)),
            disk: Watch::new(limits(c.disk_threshold, c.disk_sustain, c)),
            swap,
            node: os.node,
            systemd: None,
            services: os.services,
            retired: 0,
            saved_weights: Vec::new(),
            cpu_undo_pending: false,
            last_undo_try: None,
            report: EmergencyReport::default(),
            recent: VecDeque::new(),
            dask_problem_is_episodes: false,
            ollama_unreleased: BTreeSet::new(),
            collected: None,
            alerts: None,
        };
        e.report.act = e.act;
        e
    }

    pub fn reconfigure(&mut self, cfg: &Config) {
        let dry_run = self.dry_run;
        let c = &cfg.emergency;
        self.cpu.set_limits(limits(c.cpu_threshold, c.cpu_sustain, c));
        self.memory.set_limits(limits(c.memory_threshold, c.memory_sustain, c));
        self.disk.set_limits(limits(c.disk_threshold, c.disk_sustain, c));
        self.act = c.act && !dry_run;
        self.report.act = self.act;
        self.cfg = c.clone();
        self.worker_unit = cfg.optimize.dask_worker_unit.clone();
    }

    pub fn report(&self, now: Instant) -> EmergencyReport {
        let mut r = self.report.clone();
        r.watches = [("cpu", &self.cpu), ("memory", &self.memory), ("disk", &self.disk)]
            .into_iter()
            .map(|(n, w)| (n.to_string(), w.report(now)))
            .collect();
        r.recent = self.recent.iter().cloned().collect();
        r
    }

    /// One sample: each watch decides, the measures that are due run.
    pub async fn observe(&mut self, s: &Snapshot, now: Instant) {
        let disk = [&s.disk_root, &s.disk_swap_dir].into_iter().flatten().map(|d| d.used_percent).reduce(f64::max);
        let cpu_step = self.cpu.observe(s.cpu_busy_percent, now);
        let memory_step = self.memory.observe(Some(s.memory_used_percent), now);
        let disk_step = self.disk.observe(disk, now);
        match cpu_step {
            Step::Act => {
                let why = format!(
                    "cpu {:.0}% >= {}% for {}",
                    s.cpu_busy_percent.unwrap_or(0.0),
                    self.cfg.cpu_threshold,
                    fmt(self.cfg.cpu_sustain)
                );
                self.cpu_act(&why).await;
            }
            Step::Undo => {
                self.cpu_undo_pending = true;
                self.last_undo_try = None;
                if std::mem::take(&mut self.dask_problem_is_episodes) && self.report.problems.remove("dask").is_some() {
                    tracing::info!(peer = "dask", "emergency: the CPU episode is over; Dask's problem in it no longer stands");
                }
            }
            Step::Nothing => {}
        }
        if self.cpu_undo_pending
            && !self.cpu.active()
            && self.last_undo_try.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.min_interval)
        {
            self.last_undo_try = Some(now);
            let why =
                format!("cpu below {}% for {}", self.cfg.cpu_threshold.saturating_sub(self.cfg.hysteresis), fmt(self.cfg.calm_period));
            self.cpu_undo_pending = !self.cpu_undo(&why).await;
        }
        if memory_step == Step::Act {
            let why =
                format!("memory {:.0}% >= {}% for {}", s.memory_used_percent, self.cfg.memory_threshold, fmt(self.cfg.memory_sustain));
            self.memory_act("memory", &why).await;
        } else if memory_step == Step::Undo {
            tracing::info!(measure = "memory", "emergency: memory clear for {}", fmt(self.cfg.calm_period));
        }
        if disk_step == Step::Act {
            let which: Vec<String> = [&s.disk_root, &s.disk_swap_dir]
                .into_iter()
                .flatten()
                .filter(|d| d.used_percent >= f64::from(self.cfg.disk_threshold))
                .map(|d| format!("{} {:.0}%", crate::sys::display_path(&d.path), d.used_percent))
                .collect();
            let why = format!("disk {} >= {}% for {}", which.join(", "), self.cfg.disk_threshold, fmt(self.cfg.disk_sustain));
            self.disk_act(&why).await;
        } else if disk_step == Step::Undo {
            tracing::info!(measure = "disk", "emergency: disk clear for {}", fmt(self.cfg.calm_period));
        }
    }

    fn record(&mut self, measure: &str, action: &str, why: &str, detail: String, freed_bytes: Option<u64>, done: bool) {
        let freed = freed_bytes.map(|b| format!(", freed {}", human_size(b))).unwrap_or_default();
        let verb = if done {
            ""
        } else if self.act {
            "failed: "
        } else {
            "would: "
        };
        tracing::warn!(measure, action, why, freed_bytes = freed_bytes.unwrap_or(0), done, "emergency ({why}): {verb}{detail}{freed}");
        if self.act {
            let alert =
                crate::alerts::Alert::notice(format!("emergency/{action}"), "warning", format!("emergency ({why}): {verb}{detail}{freed}"));
            crate::alerts::task::raise(&self.alerts, alert.label("measure", measure));
        }
        if done {
            // Byte counts come from peers (Ollama's size, Docker's SpaceReclaimed): saturating.
            let count = self.report.counts.entry(action.to_string()).or_default();
            *count = count.saturating_add(1);
            let freed = self.report.freed_bytes.entry(action.to_string()).or_default();
            *freed = freed.saturating_add(freed_bytes.unwrap_or(0));
        }
        let a = Action {
            at_unix_ms: crate::sys::unix_ms(),
            measure: measure.into(),
            action: action.into(),
            why: why.into(),
            detail,
            freed_bytes,
            done,
        };
        if let Some(c) = &mut self.collected {
            c.push(a.clone());
        }
        self.recent.push_back(a);
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// A peer's problem, logged once per episode (and "ok again" when it clears).
    fn problem(&mut self, peer: &str, problem: Option<String>) {
        match (problem, self.report.problems.get(peer)) {
            (Some(p), Some(old)) if *old == p => {}
            (Some(p), _) => {
                tracing::error!(peer, "emergency: {peer}: {p}");
                self.report.problems.insert(peer.into(), p);
            }
            (None, Some(_)) => {
                tracing::info!(peer, "emergency: {peer} answers again");
                self.report.problems.remove(peer);
            }
            (None, None) => {}
        }
    }

    async fn systemd(&mut self) -> Option<Arc<dyn ServiceManager>> {
        if self.systemd.is_none() {
            match self.services.connect().await {
                Ok(()) => {
                    self.problem("systemd", None);
                    self.systemd = Some(self.services.clone());
                }
                Err(e) => self.problem("systemd", Some(e.to_string())),
            }
        }
        self.systemd.clone()
    }

    async fn cpu_act(&mut self, why: &str) {
        // Critical units first, once per episode: their own weight is kept to be put back.
        if self.saved_weights.is_empty() && !self.cfg.critical_units.is_empty() {
            let weight = self.cfg.critical_cpu_weight;
            for unit in self.cfg.critical_units.clone() {
                if !self.act {
                    self.record("cpu", "raise_cpu_weight", why, format!("set CPUWeight={weight} on {unit}"), None, false);
                    continue;
                }
                let Some(sd) = self.systemd().await else { break };
                let outcome = async {
                    let old = sd.cpu_weight(&unit).await?;
                    sd.set_cpu_weight(&unit, weight).await?;
                    Ok::<u64, crate::sys::systemd::SystemdError>(old)
                }
                .await;
                match outcome {
                    Ok(old) => {
                        self.saved_weights.push((unit.clone(), old));
                        self.record(
                            "cpu",
                            "raise_cpu_weight",
                            why,
                            format!("{unit}: CPUWeight {} -> {weight}", weight_text(old)),
                            None,
                            true,
                        );
                    }
                    Err(e) => self.record("cpu", "raise_cpu_weight", why, format!("{unit}: {e}"), None, false),
                }
            }
        }
        let Some(url) = self.cfg.dask_scheduler.clone() else { return };
        let Ok(scheduler) = Endpoint::parse_url(&url) else { return };
        let n = match peers::dask_worker_count(&scheduler).await {
            Ok(count) => u32::try_from(count).unwrap_or(u32::MAX),
            Err(e) => return self.dask_problem(&url, e),
        };
        self.problem("dask", None);
        if n <= self.cfg.dask_min_workers {
            tracing::info!(
                measure = "cpu",
                workers = n,
                "emergency ({why}): Dask has {n} workers, the minimum ({}); none retired",
                self.cfg.dask_min_workers
            );
            return;
        }
        if !self.act {
            return self.record("cpu", "retire_dask_worker", why, format!("retire one of {n} Dask workers"), None, false);
        }
        match peers::dask_retire_one(&scheduler).await {
            Ok(r) if r.count > 0 => self.retired_workers(why, n, &r, ""),
            Ok(_) => self.record("cpu", "retire_dask_worker", why, "the scheduler retired no worker".into(), None, false),
            // A 5xx or no answer in time is an outcome unknown, not a failure: distributed can
            // answer 500 after retiring (distributed#8370), and retiring a worker that holds
            // data can outlast any deadline (dask-kubernetes#821). What the scheduler did is
            // read back: the workers that are gone were retired by us.
            Err(e @ (PeerError::Http(_) | PeerError::Status { status: 500..=599, .. })) => match peers::dask_worker_count(&scheduler).await
            {
                Ok(now) if u32::try_from(now).unwrap_or(u32::MAX) < n => {
                    let now = u32::try_from(now).unwrap_or(u32::MAX);
                    self.problem("dask", None);
                    let gone = peers::Retired { count: (n - now) as usize, shown: Vec::new() };
                    self.retired_workers(why, n, &gone, &format!(" (the scheduler answered: {e}; read back: {now} left)"));
                }
                _ => self.dask_problem(&url, e),
            },
            Err(e) => self.dask_problem(&url, e),
        }
    }

    /// Workers that were retired (by the scheduler's word or read back), counted to bring back
    /// when calm.
    fn retired_workers(&mut self, why: &str, n: u32, r: &peers::Retired, how: &str) {
        self.retired = self.retired.saturating_add(u32::try_from(r.count).unwrap_or(u32::MAX));
        let detail = format!("{}{how}", retired_detail(n, r));
        self.record("cpu", "retire_dask_worker", why, detail, None, true);
    }

    fn dask_problem(&mut self, url: &str, e: PeerError) {
        // The route being off lasts until the scheduler's config changes; anything else is
        // this CPU episode's and ends with it.
        self.dask_problem_is_episodes = !matches!(e, PeerError::RouteOff);
        let p = match e {
            PeerError::RouteOff => format!("{url}: {e}"),
            e => format!("{url}: {e} (retried at the next step)"),
        };
        self.problem("dask", Some(p));
    }

    /// Puts back what the CPU measure changed; `true` when nothing is left to undo.
    async fn cpu_undo(&mut self, why: &str) -> bool {
        let mut left = false;
        if !self.saved_weights.is_empty() {
            let saved = std::mem::take(&mut self.saved_weights);
            if let Some(sd) = self.systemd().await {
                let mut failed = Vec::new();
                let mut results = Vec::new();
                for (unit, old) in saved {
                    match sd.set_cpu_weight(&unit, old).await {
                        Ok(()) => results.push((format!("{unit}: CPUWeight back to {}", weight_text(old)), true)),
                        Err(e) => {
                            results.push((format!("{unit}: {e}"), false));
                            failed.push((unit, old));
                        }
                    }
                }
                for (detail, ok) in results {
                    self.record("cpu", "restore_cpu_weight", why, detail, None, ok);
                }
                left |= !failed.is_empty();
                self.saved_weights = failed;
            } else {
                self.saved_weights = saved;
                left = true;
            }
        }
        if self.retired > 0 {
            match self.worker_unit.clone() {
                Some(unit) => {
                    let outcome = match self.systemd().await {
                        Some(sd) => sd.restart(&unit).await.map_err(|e| e.to_string()),
                        None => Err("systemd is not reachable".to_string()),
                    };
                    let ok = outcome.is_ok();
                    let detail = match outcome {
                        Ok(()) => format!("restarted {unit} to bring back {} retired Dask worker(s)", self.retired),
                        Err(e) => format!("restart {unit}: {e}"),
                    };
                    self.record("cpu", "restart_dask_workers", why, detail, None, ok);
                    if ok {
                        self.retired = 0;
                    }
                    left |= !ok;
                }
                None => {
                    tracing::warn!(
                        measure = "cpu",
                        "emergency ({why}): {} retired Dask worker(s) stay retired: set [optimize] dask_worker_unit to have them restarted, or restart them yourself",
                        self.retired
                    );
                    self.retired = 0;
                }
            }
        }
        !left
    }

    /// The memory measures; also `cluster-ai free-memory` (measure "free-memory").
    pub async fn memory_act(&mut self, measure: &str, why: &str) -> Vec<Action> {
        self.collected = Some(Vec::new());
        if let Some(swap) = &self.swap {
            if self.act {
                let sent = swap.try_send(SwapCommand::Expand { size: None, reply: None }).is_ok();
                let detail = if sent { "asked the swap task to expand now" } else { "the swap task is busy; it expands on its own check" };
                self.record(measure, "expand_swap", why, detail.into(), None, sent);
            } else {
                self.record(measure, "expand_swap", why, "ask the swap task to expand now".into(), None, false);
            }
        }
        if let Some(url) = self.cfg.ollama.clone() {
            if let Ok(ollama) = Endpoint::parse_url(&url) {
                self.unload_ollama(measure, why, &url, &ollama).await;
            }
        }
        if self.cfg.drop_page_cache {
            if self.act {
                let node = self.node.clone();
                match tokio::task::spawn_blocking(move || node.drop_page_cache()).await {
                    Ok(Ok(freed)) => self.record(measure, "drop_page_cache", why, "dropped the clean page cache".into(), Some(freed), true),
                    Ok(Err(e)) => self.record(measure, "drop_page_cache", why, format!("drop the page cache: {e}"), None, false),
                    Err(e) => self.record(measure, "drop_page_cache", why, format!("drop the page cache: {e}"), None, false),
                }
            } else {
                self.record(measure, "drop_page_cache", why, "drop the clean page cache".into(), None, false);
            }
        }
        self.collected.take().unwrap_or_default()
    }

    /// Unloads the model with the most system RAM (a pressure step) or up to [`MAX_UNLOADS`]
    /// of them (`free-memory`), ranked by `ollama::rank`, within [`OLLAMA_BUDGET`] for the whole
    /// step: an `/api/ps` listing thousands of models, or an Ollama that answers each request
    /// after a minute, costs one bounded step, and the CPU and disk measures still run after it.
    /// Only `/api/ps` is believed: after each unload it is read again, and a model still listed
    /// is said once, not counted, and not asked again while it stays loaded; the next one is
    /// tried in the same step.
    async fn unload_ollama(&mut self, measure: &str, why: &str, url: &str, ollama: &Endpoint) {
        let deadline = Instant::now() + OLLAMA_BUDGET;
        let out_of_time = || format!("the step's {}s for Ollama ran out; the rest wait for the next step", OLLAMA_BUDGET.as_secs());
        let loaded = match tokio::time::timeout_at(deadline, peers::ollama_loaded(ollama)).await {
            Ok(Ok(m)) => {
                self.problem("ollama", None);
                m
            }
            Ok(Err(e)) => return self.problem("ollama", Some(format!("{url}: {e} (retried at the next step)"))),
            Err(_) => return self.problem("ollama", Some(format!("{url}: {}", out_of_time()))),
        };
        let (listed, models) = (loaded.total, loaded.largest);
        // Only names still listed stay set aside (an Ollama with more than MODELS_KEPT models
        // lists some beyond what is read: those are kept set aside too).
        if listed <= peers::MODELS_KEPT {
            self.ollama_unreleased.retain(|n| models.iter().any(|m| m.name == *n));
        }
        let ranked = ollama::rank(models, &self.cfg.keep_models, &self.ollama_unreleased);
        self.report.ollama_models = ranked.iter().take(RANKED_SHOWN).map(|(m, v)| ollama::view(m, *v)).collect();
        // One released per step on pressure; a bounded number for free-memory.
        let want = if measure == "memory" { 1 } else { MAX_UNLOADS };
        if listed > MAX_UNLOADS && measure != "memory" {
            tracing::warn!(
                measure,
                "emergency: Ollama lists {listed} models; unloading at most the {MAX_UNLOADS} with the most RAM in this step"
            );
        }
        let (mut released, mut tried, mut still_listed) = (0, 0, listed);
        for (m, _) in ranked.into_iter().filter(|(_, v)| *v == ollama::Verdict::Unload) {
            if released >= want || tried >= MAX_UNLOADS {
                break;
            }
            tried += 1;
            let name = crate::sys::one_line(&m.name, 120);
            let ram = m.ram_bytes();
            if !self.act {
                self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}"), Some(ram), false);
                released += 1;
                continue;
            }
            match tokio::time::timeout_at(deadline, peers::ollama_unload(ollama, &m.name)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}: {e}"), None, false);
                    continue;
                }
                Err(_) => {
                    self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}: {}", out_of_time()), None, false);
                    break;
                }
            }
            // Gone means: no longer among the models read, and one model fewer listed.
            match tokio::time::timeout_at(deadline, peers::ollama_loaded(ollama)).await {
                Ok(Ok(after)) if after.total >= still_listed || after.largest.iter().any(|a| a.name == m.name) => {
                    still_listed = after.total;
                    self.ollama_unreleased.insert(m.name.clone());
                    let detail = format!(
                        "unload Ollama model {name}: Ollama acknowledged it but still lists it (ollama#7606); not counted, and not asked again while it stays loaded"
                    );
                    self.record(measure, "unload_ollama_model", why, detail, None, false);
                }
                Ok(Ok(after)) => {
                    still_listed = after.total;
                    released += 1;
                    self.record(measure, "unload_ollama_model", why, format!("unloaded Ollama model {name}"), Some(ram), true);
                }
                Ok(Err(e)) => {
                    // Acknowledged, not confirmed: done, but nothing counted as freed.
                    released += 1;
                    let detail = format!("unloaded Ollama model {name} (not confirmed: /api/ps: {e})");
                    self.record(measure, "unload_ollama_model", why, detail, None, true);
                }
                Err(_) => {
                    let detail = format!("unloaded Ollama model {name} (not confirmed: {})", out_of_time());
                    self.record(measure, "unload_ollama_model", why, detail, None, true);
                    break;
                }
            }
        }
        if tried == 0 && measure != "memory" {
            tracing::info!(measure, "emergency: no Ollama model to unload ({listed} loaded: kept, in GPU memory, or not released)");
        }
    }

    async fn disk_act(&mut self, why: &str) {
        let c = self.cfg.clone();
        if c.journal_vacuum_size.is_none() && c.pip_cache_dirs.is_empty() && !c.docker_prune && c.temp_dirs.is_empty() {
            self.problem(
                "disk",
                Some("disk is over its threshold and no cleaner is on: see [emergency] journal_vacuum_size, pip_cache_dirs, docker_prune, temp_dirs".into()),
            );
            return;
        }
        if let Some(size) = c.journal_vacuum_size {
            self.vacuum_journal(why, size).await;
        }
        for dir in c.pip_cache_dirs {
            self.sweep(why, "clean_pip_cache", dir, None).await;
        }
        for dir in c.temp_dirs {
            self.sweep(why, "clean_temp_dir", dir, Some(c.temp_max_age)).await;
        }
        if c.docker_prune {
            let docker = Endpoint::Unix(c.docker_socket.clone());
            if !self.act {
                self.record("disk", "docker_prune", why, "prune Docker's dangling images and build cache".into(), None, false);
                return;
            }
            match peers::docker_prune_images(&docker).await {
                Ok(p) => {
                    self.problem("docker", None);
                    self.record(
                        "disk",
                        "docker_prune_images",
                        why,
                        format!("pruned {} dangling Docker image(s)", p.items),
                        Some(p.bytes),
                        true,
                    );
                }
                Err(e) => return self.problem("docker", Some(format!("{docker}: {e}"))),
            }
            match peers::docker_prune_build_cache(&docker).await {
                Ok(p) => self.record(
                    "disk",
                    "docker_prune_build_cache",
                    why,
                    format!("pruned {} build cache record(s)", p.items),
                    Some(p.bytes),
                    true,
                ),
                Err(e) => self.record("disk", "docker_prune_build_cache", why, format!("prune the build cache: {e}"), None, false),
            }
        }
    }

    async fn vacuum_journal(&mut self, why: &str, size: u64) {
        let arg = format!("--vacuum-size={size}");
        if !self.act {
            return self.record("disk", "vacuum_journal", why, format!("journalctl {arg}"), None, false);
        }
        let node = self.node.clone();
        match tokio::task::spawn_blocking(move || node.vacuum_journal(size)).await {
            Ok(Ok(freed)) => self.record("disk", "vacuum_journal", why, format!("journalctl {arg}"), Some(freed), true),
            Ok(Err(e)) => self.record("disk", "vacuum_journal", why, e, None, false),
            Err(e) => self.record("disk", "vacuum_journal", why, format!("journalctl {arg}: {e}"), None, false),
        }
    }

    async fn sweep(&mut self, why: &str, action: &str, dir: PathBuf, age: Option<Duration>) {
        let shown = crate::sys::display_path(&dir);
        let what = match age {
            Some(a) => format!("files older than {} under {shown}", fmt(a)),
            None => format!("files under {shown}"),
        };
        if !self.act {
            return self.record("disk", action, why, format!("remove {what}"), None, false);
        }
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || crate::sys::sweep::remove_files(&d, age)).await {
            Ok(Ok(s)) => {
                let errors = if s.errors > 0 { format!(" ({} left: not readable or not removable)", s.errors) } else { String::new() };
                self.record("disk", action, why, format!("removed {} {what}{errors}", s.files), Some(s.bytes), true)
            }
            Ok(Err(e)) => self.record("disk", action, why, format!("{shown}: {e}"), None, false),
            Err(e) => self.record("disk", action, why, format!("{shown}: {e}"), None, false),
        }
    }
}

/// "retired Dask worker tcp://… (4 -> 3 workers)". The scheduler's count, not ours: it may
/// retire more than it listed a moment ago, or name more than are shown.
fn retired_detail(listed: u32, r: &peers::Retired) -> String {
    let left = listed.saturating_sub(u32::try_from(r.count).unwrap_or(u32::MAX));
    if r.shown.is_empty() {
        return format!("retired {} Dask worker(s) ({listed} -> {left} workers)", r.count);
    }
    let more = r.count.saturating_sub(r.shown.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("retired Dask worker {}{more} ({listed} -> {left} workers)", r.shown.join(", "))
}

fn fmt(d: Duration) -> String {
    crate::config::format_duration(d)
}

fn weight_text(w: u64) -> String {
    if w == crate::sys::systemd::CPU_WEIGHT_UNSET {
        "unset".into()
    } else {
        w.to_string()
    }
}

pub async fn run(
    mut emergency: Emergency,
    mut snapshots: SnapshotReceiver,
    mut free_memory: mpsc::Receiver<FreeMemoryRequest>,
    state: watch::Sender<Arc<EmergencyReport>>,
    ctx: TaskCtx,
) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, .. } = ctx;
    let mut ticker = Ticker::new(HEARTBEAT_PERIOD)?;
    heartbeat.started();
    state.send_replace(Arc::new(emergency.report(Instant::now())));
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            changed = config.changed() => {
                if changed.is_err() { return Ok(()); }
                let cfg = config.borrow_and_update().clone();
                emergency.reconfigure(&cfg);
            }
            req = free_memory.recv() => {
                let Some(reply) = req else { continue };
                let actions = heartbeat.during(emergency.memory_act("free-memory", "asked by cluster-ai free-memory")).await;
                let _ = reply.send(actions);
            }
            changed = snapshots.changed() => {
                if changed.is_err() { return Ok(()); }
                let snapshot: Option<Arc<Snapshot>> = snapshots.borrow_and_update().clone();
                if let Some(s) = snapshot {
                    heartbeat.during(emergency.observe(&s, Instant::now())).await;
                }
                heartbeat.beat();
            }
            tick = ticker.tick() => {
                tick?;
                heartbeat.beat();
            }
        }
        state.send_replace(Arc::new(emergency.report(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{peers::Retired, retired_detail};
    use crate::sys::node::vacuum_failure;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the scheduler listed before and says it retired, the detail is one line
        /// with a count that never wraps.
        #[test]
        fn any_retirement_is_told_on_one_line(listed in any::<u32>(), count in prop_oneof![0usize..10, any::<usize>()], shown in prop::collection::vec("[a-z:/.0-9]{1,20}", 0..=8)) {
            let r = Retired { count: count.max(shown.len()), shown };
            let d = retired_detail(listed, &r);
            let left = u64::from(listed).saturating_sub(r.count as u64);
            prop_assert!(d.ends_with(&format!("({listed} -> {left} workers)")), "{d}");
            prop_assert!(!d.contains('\n'));
        }
    }

    #[test]
    fn a_vacuum_that_could_not_delete_is_a_failure_with_its_reason() {
        let ok = "Vacuuming done, freed 24.0M of archived journals from /var/log/journal/abc.\n";
        assert_eq!(vacuum_failure(ok), None);
        let ro = "Failed to delete archived journal file /var/log/journal/abc/system@x.journal: Read-only file system\n\
                  Vacuuming done, freed 0B of archived journals from /var/log/journal/abc.\n";
        let e = vacuum_failure(ro).unwrap();
        assert!(e.starts_with("Failed to delete archived journal file") && e.contains("ReadWritePaths=-/var/log/journal"), "{e}");
    }
}
