//! The emergency measures: what the daemon does when CPU, memory or disk stays over its
//! conditions (`[emergency]`; for CPU and memory more than a percentage: `conditions`), through
//! each peer's own API, one file per measure (`cpu`, `memory`, `disk`). It runs as the supervised task "emergency", beside the optimize task's
//! planner, so a slow peer never delays a re-plan; every call has a deadline and the heartbeat beats while it waits.
//!
//! - CPU: raise the CPU weight of the critical units (systemd, run time only), retire one Dask
//!   worker per step (never below the minimum); when calm, weights back and the worker unit
//!   restarted.
//! - Memory: the swap task expands now; the Ollama model with the most system RAM is unloaded
//!   (`ollama`); the page cache dropped when opted in.
//! - Disk: the cleaners that are switched on, each limited to what it is told.

pub mod conditions;
mod cpu;
mod disk;
mod memory;
pub mod ollama;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use self::cpu::SavedWeight;
use crate::config::{human_size, Config, EmergencyConfig};
use crate::optimize::peers::{self, PeerError};
use crate::optimize::watch::{Limits, Step, Watch, WatchReport};
use crate::runtime::Os;
use crate::runtime::TaskCtx;
use crate::sampler::{Snapshot, SnapshotReceiver};
use crate::swap::task::{SwapCommand, SwapSender};
use crate::sys::http::Endpoint;
use crate::sys::node::Node;
use crate::sys::systemd::ServiceManager;

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
    /// Per measure ("cpu", "memory"), which of its conditions held at the last sample, e.g.
    /// "cpu 100% >= 90%, cpu pressure 60% >= 20%, no critical service slow (dask-scheduler
    /// 15ms < 1.0s)" (see `emergency::conditions`).
    #[serde(default)]
    pub conditions: BTreeMap<String, String>,
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
    /// Critical units' own CPU weights, to put back when calm, with the weight we set: a
    /// unit whose weight someone else changed since is left as it is.
    saved_weights: Vec<SavedWeight>,
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
    /// The health task's report: the critical services' probes, for the CPU measure.
    pub health: Option<crate::health::task::HealthReceiver>,
    /// The whole config, for the health services' intervals (how long a probe counts).
    config: Config,
    /// Each critical service's latest slow probe, while it counts.
    slow_probes: conditions::SlowProbes,
    /// Where each measure stood at the last sample ("quiet", "busy", "starved"), to log changes once.
    standing: BTreeMap<&'static str, &'static str>,
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
            health: None,
            config: cfg.clone(),
            standing: BTreeMap::new(),
            slow_probes: conditions::SlowProbes::default(),
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
        self.config = cfg.clone();
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
        let latest = match &self.health {
            Some(h) => conditions::critical_probes(&h.borrow(), &self.config, s.taken_at_unix_ms),
            None => Vec::new(),
        };
        let probes = self.slow_probes.weigh(latest, self.cfg.critical_probe_slow, s.taken_at_unix_ms);
        let cpu = conditions::cpu(s, &probes, &self.cfg);
        let memory = conditions::memory(s, &self.cfg);
        self.stand("cpu", &cpu);
        self.stand("memory", &memory);
        let cpu_step = self.cpu.observe_level(cpu.value, cpu.level, now);
        let memory_step = self.memory.observe_level(memory.value, memory.level, now);
        let disk_step = self.disk.observe(disk, now);
        match cpu_step {
            Step::Act => {
                let why = format!("{} for {}", cpu.held, fmt(self.cfg.cpu_sustain));
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
            let why = format!("cpu clear for {}: {}", fmt(self.cfg.calm_period), cpu.held);
            self.cpu_undo_pending = !self.cpu_undo(&why).await;
        }
        if memory_step == Step::Act {
            let why = format!("{} for {}", memory.held, fmt(self.cfg.memory_sustain));
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

    /// Shows which conditions held (`status`), and logs once when a measure's standing
    /// changes: quiet, busy (the percentage alone: left alone) or all conditions held.
    fn stand(&mut self, measure: &'static str, v: &conditions::Verdict) {
        self.report.conditions.insert(measure.to_string(), v.held.clone());
        let standing = match (v.level.over, v.percent_over) {
            (true, _) => "held",
            (false, true) => "busy",
            (false, false) => "quiet",
        };
        let was = self.standing.insert(measure, standing);
        if was.is_some_and(|w| w == standing) || (was.is_none() && standing == "quiet") {
            return;
        }
        match standing {
            "held" => {
                tracing::warn!(measure, conditions = %v.held, "emergency: {measure}: every condition holds ({}); the measure acts once it lasts", v.held)
            }
            "busy" => tracing::info!(measure, conditions = %v.held, "emergency: {measure}: over its percentage, not acting: {}", v.held),
            _ => tracing::info!(measure, conditions = %v.held, "emergency: {measure}: below its percentage again: {}", v.held),
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
            let alert = crate::alerts::Alert::notice(
                crate::alerts::AlertKey::Emergency(action.to_string()),
                crate::alerts::Severity::Warning,
                format!("emergency ({why}): {verb}{detail}{freed}"),
            );
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
}

fn fmt(d: Duration) -> String {
    crate::config::format_duration(d)
}

pub async fn run(
    mut emergency: Emergency,
    mut snapshots: SnapshotReceiver,
    mut free_memory: mpsc::Receiver<FreeMemoryRequest>,
    state: watch::Sender<Arc<EmergencyReport>>,
    ctx: TaskCtx,
) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, os, .. } = ctx;
    let mut ticker = os.clock.ticker(HEARTBEAT_PERIOD);
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
            _ = ticker.tick() => {
                heartbeat.beat();
            }
        }
        state.send_replace(Arc::new(emergency.report(Instant::now())));
    }
}

#[cfg(test)]
mod episodes;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::cpu::retired_detail;
    use crate::optimize::peers::Retired;

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
}
