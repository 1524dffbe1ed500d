//! The synchronous core of swap management, shared by the daemon's swap task and the direct
//! `cluster-ai swap …` commands: readings, books, decisions, and the operations that carry
//! them out. Operations block (fallocate, swapoff): the task runs them off the runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use super::files::SwapError;
use super::files::{self, impossible_here, Inventory, ManagedFile};
use super::kernel;
use super::policy::{self, Books, Decision, Hold, PolicyState, Readings, SpareStep};
use crate::config::{format_size, human_size, Config, SwapConfig};
use crate::sys::display_path;
use crate::sys::fs::DiskUsage;
use crate::sys::swap::{SwapEntry, SwapFs};
use crate::sys::swap_os::SwapOs;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "why")]
pub enum Mode {
    /// Creating and removing swap files.
    Managing,
    /// Reporting only, for the reason given (no root, a refused swap.dir, …).
    MonitoringOnly(String),
    /// `swap clean` through the daemon; `swap expand` or a reload resumes.
    Paused,
    /// A command looking with no daemon running: nothing adds or removes swap now.
    NoDaemon,
}

/// Everything `swap status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapStatus {
    pub mode: Mode,
    pub dry_run: bool,
    /// How memory is watched: a PSI trigger plus an adaptive poll, or the poll alone.
    pub trigger: String,
    pub dir: PathBuf,
    pub managed: Vec<ManagedFile>,
    pub managed_total_bytes: u64,
    pub managed_used_bytes: u64,
    /// The spare file kept ready (made, not enabled: disk only, not swap), if there is one.
    /// (Defaults: an answer from a daemon older than the spare has neither.)
    #[serde(default)]
    pub spare: Option<PathBuf>,
    #[serde(default)]
    pub spare_bytes: Option<u64>,
    pub min_size_bytes: u64,
    pub max_size_bytes: u64,
    pub foreign: Vec<SwapEntry>,
    pub memory_used_percent: f64,
    pub memory_threshold_percent: u8,
    pub disk: Option<DiskUsage>,
    pub disk_reserve_bytes: Option<u64>,
    /// Set while the disk guard blocks growth.
    pub disk_guard: Option<String>,
    pub next_step: String,
    pub poll_interval_ms: u64,
    /// The operation running now, if any (`swap status` answers from the books meanwhile).
    pub running: Option<String>,
    /// How many times the task has looked at memory and decided, since it started.
    pub looks: u64,
}

pub struct Engine {
    pub cfg: SwapConfig,
    kernel_tune: bool,
    os: Box<dyn SwapOs>,
    pub state: PolicyState,
    pub mode: Mode,
    fs: Option<SwapFs>,
    pub dry_run: bool,
    pub trigger: String,
    /// How long to wait for the lock on swap.dir held by another cluster-ai.
    pub lock_wait: Duration,
    guard_active: bool,
    /// Swap is at `max_size` while memory still wants more (an alert is firing).
    max_active: bool,
    /// Where the disk guard's and max_size's episodes are raised as alerts.
    pub alerts: Option<crate::alerts::task::AlertSender>,
    /// Where the counters and gauges of `/metrics` are published (after each look and change).
    pub metrics: Option<tokio::sync::watch::Sender<std::sync::Arc<super::metrics::SwapMetrics>>>,
    counters: super::metrics::SwapMetrics,
    last_logged: Option<Decision>,
    /// The last error logged, so a condition that lasts is logged once per episode.
    last_error: Option<String>,
    looks: u64,
    /// The books at the last look, for [`Engine::poll_interval`] between looks.
    last_books: Books,
    /// When the look whose decision is being carried out was taken (for the log line's
    /// `decision_ms`: decision → swapon).
    pub decided: Option<StdInstant>,
    /// After a spare could not be made: no new try before this.
    spare_retry_at: Option<StdInstant>,
}

/// How long after a failed spare the next is tried.
pub const SPARE_RETRY: Duration = Duration::from_secs(60);

/// What one look at memory found.
pub struct Look {
    pub readings: Readings,
    pub inventory: Inventory,
    pub decision: Decision,
    /// What to do with the spare when the decision holds ([`policy::spare_step`]).
    pub spare: Option<SpareStep>,
}

impl Engine {
    pub fn new(config: &Config, os: Box<dyn SwapOs>, dry_run: bool) -> Self {
        Self {
            cfg: config.swap.clone(),
            kernel_tune: config.kernel.tune,
            os,
            state: PolicyState::default(),
            mode: Mode::MonitoringOnly("not started".into()),
            fs: None,
            dry_run,
            trigger: "adaptive poll".into(),
            // Below the supervisor's start timeout: a daemon that cannot have swap.dir soon
            // starts monitoring only, naming who holds it, rather than not at all.
            lock_wait: Duration::from_secs(5),
            guard_active: false,
            max_active: false,
            alerts: None,
            metrics: None,
            counters: super::metrics::SwapMetrics::default(),
            last_logged: None,
            last_error: None,
            looks: 0,
            last_books: Books::default(),
            decided: None,
            spare_retry_at: None,
        }
    }

    /// Decides whether swap can be managed here (root with CAP_SYS_ADMIN, a safe swap.dir,
    /// its lock) and says so once; when it can, cleans up after a crash and applies kernel
    /// tuning.
    pub fn start(&mut self) {
        self.probe();
        if self.mode == Mode::Managing && !self.dry_run {
            if let Err(why) = self.os.lock_dir(self.lock_wait) {
                self.mode = Mode::MonitoringOnly(why);
            }
        }
        if let Mode::MonitoringOnly(why) = &self.mode {
            tracing::warn!(reason = %why, "cannot manage swap: {why}; monitoring only");
        }
        self.recover();
        if self.mode == Mode::Managing && self.kernel_tune {
            self.tune_kernel();
        }
    }

    /// Sets the mode (managing or monitoring only, and why) and opens swap.dir, without
    /// changing anything in it and without logging.
    pub fn probe(&mut self) {
        self.mode = match self.check_can_manage() {
            Ok(fs) => {
                self.fs = Some(fs);
                Mode::Managing
            }
            Err(why) => Mode::MonitoringOnly(why),
        };
    }

    /// For a command acting with no daemon: takes the lock on swap.dir for this process's
    /// lifetime, then recovers from any crash, as a daemon's start would.
    pub fn take_over(&mut self) -> Result<(), SwapError> {
        self.probe();
        if let Mode::MonitoringOnly(why) = &self.mode {
            return Err(SwapError::Refused(format!("cannot manage swap: {why}")));
        }
        self.os.lock_dir(self.lock_wait).map_err(SwapError::Refused)?;
        self.recover();
        Ok(())
    }

    /// After a crash: delete partials, adopt active files, enable or delete inactive ones.
    pub fn recover(&mut self) {
        if self.mode != Mode::Managing {
            return;
        }
        match self.inventory() {
            Ok(inv) if !self.dry_run => {
                let listing = self.os.list_dir().unwrap_or_default();
                let size_of = |p: &Path| listing.iter().find(|f| f.name == files::name_of(p)).map_or(u64::MAX, |f| f.size);
                let r = files::recover(self.os.as_mut(), &inv, &size_of, self.cfg.max_size);
                for p in &r.adopted {
                    tracing::info!(file = %display_path(p), "adopted an active swap file from an earlier run");
                }
                for p in &r.enabled {
                    tracing::info!(file = %display_path(p), "enabled a complete swap file left inactive by a crash");
                }
                for p in &r.deleted {
                    tracing::info!(file = %display_path(p), "deleted a swap file left unfinished or unneeded by a crash");
                }
                for f in &r.failed {
                    tracing::error!("crash recovery: {f}");
                }
                if let Some((p, size)) = &inv.spare {
                    tracing::info!(file = %display_path(p), size, "kept the spare swap file from an earlier run as the spare (made, not enabled)");
                }
            }
            Ok(inv) => tracing::info!(partials = inv.partials.len(), inactive = inv.inactive.len(), "dry run: crash recovery skipped"),
            Err(e) => tracing::error!("cannot read the swap table: {e}"),
        }
    }

    fn check_can_manage(&mut self) -> Result<SwapFs, String> {
        if !self.os.can_manage_swap() {
            return Err("swapon/swapoff need CAP_SYS_ADMIN (run as root)".into());
        }
        self.os.open_dir(&self.cfg.dir).map_err(|e| e.to_string())
    }

    fn tune_kernel(&mut self) {
        let Some(rotational) = self.os.rotational() else {
            tracing::warn!(dir = %display_path(&self.cfg.dir), "kernel.tune: cannot tell whether swap.dir is on an SSD or a spinning disk; leaving vm.* as they are");
            return;
        };
        let want = kernel::target(rotational);
        let kind = if rotational { "HDD" } else { "SSD" };
        if self.dry_run {
            tracing::info!(
                "dry run: would set vm.swappiness={} vm.vfs_cache_pressure={} ({kind})",
                want.swappiness,
                want.vfs_cache_pressure
            );
            return;
        }
        match self.os.tune(want) {
            Ok(was) => tracing::info!(
                "kernel tuned for {kind}: vm.swappiness {} -> {}, vm.vfs_cache_pressure {} -> {}",
                was.swappiness,
                want.swappiness,
                was.vfs_cache_pressure,
                want.vfs_cache_pressure
            ),
            Err(e) => tracing::error!("kernel.tune: {e}"),
        }
    }

    /// A new config: the policy's numbers change at once. Returns whether [`Engine::start`]
    /// must run again (a new `swap.dir` to check and recover, management paused by
    /// `swap clean`, or monitoring only: a reload looks afresh at why, which may have been a
    /// moment's trouble, e.g. swap.dir not opened with every descriptor taken); it does file
    /// work, so the caller runs it off the async runtime.
    pub fn set_config(&mut self, config: &Config) -> bool {
        let dir_changed = config.swap.dir != self.cfg.dir;
        self.cfg = config.swap.clone();
        self.kernel_tune = config.kernel.tune;
        dir_changed || self.mode != Mode::Managing
    }

    pub fn inventory(&mut self) -> Result<Inventory, SwapError> {
        Inventory::read(&self.cfg.dir, self.os.as_mut())
    }

    pub fn readings(&mut self, now: Instant) -> Result<Readings, SwapError> {
        let m = self.os.meminfo()?;
        Ok(Readings { now, mem_total: m.total, mem_available: m.available })
    }

    fn books(&self, inv: &Inventory) -> Books {
        Books {
            managed_total: inv.managed_total(),
            managed_used: inv.managed_used(),
            newest: inv.newest().map(|n| (n.size_bytes, n.used_bytes)),
            disk: self.os.dir_usage().map(|d| (d.total_bytes, d.available_bytes)),
            spare: inv.spare.as_ref().map(|(_, size)| *size),
        }
    }

    /// Reads memory and the books, and asks the policy.
    pub fn look(&mut self, now: Instant) -> Result<Look, SwapError> {
        let readings = self.readings(now)?;
        let inventory = self.inventory()?;
        let books = self.books(&inventory);
        let decision = policy::decide(&self.cfg, &readings, &books, &mut self.state);
        // After a failed spare, no other try before SPARE_RETRY (a look can come every 20 ms).
        let waiting = self.spare_retry_at.is_some_and(|t| StdInstant::now() < t);
        let spare = policy::spare_step(&self.cfg, &readings, &books, &self.state, &decision)
            .filter(|s| !(waiting && matches!(s, SpareStep::Make { .. })));
        self.last_books = books;
        self.note_guard(&decision);
        self.looks += 1;
        self.publish(&inventory);
        Ok(Look { readings, inventory, decision, spare })
    }

    /// How long to wait before the next look, for memory as `r` shows it and the managed swap
    /// of the last look ([`policy::poll_interval`]).
    pub fn poll_interval(&self, r: &Readings) -> Duration {
        policy::poll_interval(&self.cfg, r, &self.last_books, &self.state)
    }

    /// The disk guard warns once per episode, with the numbers; only when it is what keeps
    /// swap from growing (not while monitoring only or paused).
    /// Both episodes (disk guard, max_size reached while memory wants more) are alerts too.
    fn note_guard(&mut self, d: &Decision) {
        use crate::alerts::{task::raise, Alert, AlertKey, Severity};
        let managing = self.mode == Mode::Managing;
        let blocked = managing && matches!(d, Decision::Hold { why: Hold::DiskGuard { .. } });
        if blocked && !self.guard_active {
            self.counters.disk_guard_episodes += 1;
            let text = format!("swap cannot grow: {}", d.describe());
            tracing::warn!(dir = %display_path(&self.cfg.dir), "{text}");
            raise(&self.alerts, Alert::firing(AlertKey::SwapDiskGuard, Severity::Warning, text));
        } else if !blocked && self.guard_active {
            tracing::info!("disk guard released");
            raise(
                &self.alerts,
                Alert::resolved(AlertKey::SwapDiskGuard, Severity::Warning, "swap may grow again: the disk guard released", 0),
            );
        }
        self.guard_active = blocked;
        let at_max = managing && matches!(d, Decision::Hold { why: Hold::AtMax { .. } });
        if at_max && !self.max_active {
            self.counters.max_size_episodes += 1;
            raise(
                &self.alerts,
                Alert::firing(
                    AlertKey::SwapMax,
                    Severity::Warning,
                    format!("swap is at swap.max_size and memory is still high: {}", d.describe()),
                ),
            );
        } else if !at_max && self.max_active {
            raise(
                &self.alerts,
                Alert::resolved(AlertKey::SwapMax, Severity::Warning, "swap is below swap.max_size or memory is calm again", 0),
            );
        }
        self.max_active = at_max;
    }

    /// Sends the metrics' view of the swap task if it changed.
    fn publish(&mut self, inv: &Inventory) {
        let Some(tx) = &self.metrics else { return };
        let c = &mut self.counters;
        c.managing = self.mode == Mode::Managing;
        c.files = inv.managed.len() as u64;
        c.managed_bytes = inv.managed_total();
        c.managed_used_bytes = inv.managed_used();
        c.spare_bytes = inv.spare.as_ref().map_or(0, |(_, size)| *size);
        c.max_size_bytes = self.cfg.max_size;
        c.disk_guard_active = self.guard_active;
        c.at_max = self.max_active;
        tx.send_if_modified(|old| {
            let changed = **old != *c;
            if changed {
                *old = std::sync::Arc::new(c.clone());
            }
            changed
        });
    }

    /// At stop: what stays active, and how to remove it. Swap stays on purpose (taking it away
    /// from a loaded machine is what could run it out of memory).
    pub fn log_left_active(&mut self) {
        if self.mode != Mode::Managing && self.mode != Mode::Paused {
            return;
        }
        // The spare is no swap: it goes with the daemon (a later start makes one if needed).
        if !self.dry_run {
            if let Err(e) = self.remove_spare("daemon stopping") {
                tracing::warn!("removing the spare swap file at stop: {e}");
            }
        }
        match self.inventory() {
            Ok(inv) if !inv.managed.is_empty() => tracing::info!(
                files = inv.managed.len(),
                bytes = inv.managed_total(),
                "{} swap file(s), {} in all, stay active in {} (kept on purpose: the next start adopts them); `cluster-ai swap clean` removes them",
                inv.managed.len(),
                human_size(inv.managed_total()),
                display_path(&self.cfg.dir)
            ),
            _ => {}
        }
    }

    /// The PSI file the task watches for memory stalls.
    pub fn pressure_file(&self) -> PathBuf {
        self.os.memory_pressure_file()
    }

    /// Logs an error once per episode: again only after a success or a different error.
    /// Returns whether it logged.
    pub fn log_error(&mut self, message: &str) -> bool {
        if self.last_error.as_deref() == Some(message) {
            return false;
        }
        tracing::error!("swap: {message}");
        self.last_error = Some(message.to_string());
        true
    }

    pub fn clear_error(&mut self) {
        if self.last_error.take().is_some() {
            tracing::info!("swap: the error above has cleared");
        }
    }

    /// Whether this decision should change the system now, logging it as it would be taken
    /// when it should not (dry run, monitoring only, paused) — once per change of decision.
    pub fn should_act(&mut self, d: &Decision, r: &Readings) -> bool {
        if matches!(d, Decision::Hold { .. }) {
            self.last_logged = None;
            return false;
        }
        if self.mode == Mode::Managing && !self.dry_run {
            return true;
        }
        if self.last_logged.as_ref() != Some(d) {
            let how = if self.dry_run { "dry run" } else { "not managing" };
            tracing::info!(memory_percent = r.used_percent(), "{how}: would {}", d.describe());
            self.last_logged = Some(d.clone());
        }
        false
    }

    /// Carries out a decision of the policy (blocking) and updates the policy's state.
    pub fn act(&mut self, decision: &Decision, memory_percent: f64) -> Result<String, SwapError> {
        match *decision {
            Decision::Expand { size, reason } => {
                let p = self.expand(size, reason.describe(), memory_percent)?;
                Ok(format!("added {}", display_path(&p)))
            }
            Decision::Shrink => {
                let p = self.shrink("memory calm")?;
                self.state.shrunk(Instant::now());
                Ok(format!("removed {}", display_path(&p)))
            }
            Decision::Hold { .. } => Ok(String::new()),
        }
    }

    /// Adds one file of `size` (blocking), refused past max_size or the disk guard.
    pub fn expand(&mut self, size: u64, reason: &str, memory_percent: f64) -> Result<PathBuf, SwapError> {
        let decided = self.decided.take();
        let fs = self.managing_fs()?;
        let inv = self.inventory()?;
        if size < policy::MIN_FILE {
            return Err(SwapError::Refused("a swap file must be at least 1M".into()));
        }
        let managed = inv.managed_total();
        if managed.checked_add(size).is_none_or(|total| total > self.cfg.max_size) {
            return Err(SwapError::Refused(format!(
                "{} more would pass swap.max_size {} ({} managed now)",
                human_size(size),
                format_size(self.cfg.max_size),
                human_size(managed)
            )));
        }
        // The spare when it is ready and of this size: a rename and a swapon, no new disk.
        let from_spare = inv.spare.as_ref().is_some_and(|(_, s)| *s == size);
        let size = if from_spare {
            size
        } else {
            policy::check_expand(&self.cfg, &self.books(&inv), size).map_err(|hold| {
                SwapError::Refused(format!("{} on {}", Decision::Hold { why: hold }.describe(), display_path(&self.cfg.dir)))
            })?
        };
        let start = StdInstant::now();
        let made = if from_spare {
            files::enable_spare(self.os.as_mut(), &self.cfg.dir, inv.next_seq(), inv.next_priority())
        } else {
            files::create(self.os.as_mut(), &self.cfg.dir, fs, inv.next_seq(), size, inv.next_priority())
        };
        let (path, steps) = match made {
            Ok(made) => made,
            Err(e) => {
                // Found out once: monitoring only (shown in status), no retry at every look.
                if let Some(why) = impossible_here(&e, fs) {
                    self.mode = Mode::MonitoringOnly(why.clone());
                    return Err(SwapError::Refused(format!(
                        "cannot manage swap: {why}; monitoring only until swap.dir changes or the daemon restarts"
                    )));
                }
                return Err(e.into());
            }
        };
        self.counters.expansions += 1;
        self.counters.expand_seconds.observe(start.elapsed().as_secs_f64());
        if let Ok(inv) = self.inventory() {
            self.publish(&inv);
        }
        let swap_percent = percent(inv.managed_used(), managed + size);
        tracing::info!(
            file = %display_path(&path),
            size = size,
            reason,
            memory_percent,
            swap_percent,
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            decision_ms = decided.map(|d| d.elapsed().as_secs_f64() * 1000.0),
            steps = %steps,
            from_spare,
            "swap file added: {} ({reason})",
            human_size(size)
        );
        Ok(path)
    }

    fn managing_fs(&self) -> Result<SwapFs, SwapError> {
        match (&self.mode, self.fs) {
            (Mode::MonitoringOnly(why), _) => Err(SwapError::Refused(format!("cannot manage swap: {why}"))),
            (Mode::NoDaemon, _) | (_, None) => Err(SwapError::Refused("swap management has not started".into())),
            _ if self.dry_run => Err(SwapError::Refused("dry run: nothing is changed".into())),
            (_, Some(fs)) => Ok(fs),
        }
    }

    /// What `swap status` shows, from a fresh look at memory and the books.
    pub fn status(&mut self, poll_interval_ms: u64) -> Result<SwapStatus, SwapError> {
        let mut st = self.state;
        let readings = self.readings(Instant::now())?;
        let inv = self.inventory()?;
        let books = self.books(&inv);
        let decision = policy::decide(&self.cfg, &readings, &books, &mut st);
        let disk = self.os.dir_usage();
        Ok(SwapStatus {
            mode: self.mode.clone(),
            dry_run: self.dry_run,
            trigger: self.trigger.clone(),
            dir: self.cfg.dir.clone(),
            managed_total_bytes: inv.managed_total(),
            managed_used_bytes: inv.managed_used(),
            spare_bytes: inv.spare.as_ref().map(|(_, size)| *size),
            spare: inv.spare.map(|(p, _)| p),
            managed: inv.managed,
            min_size_bytes: self.cfg.min_size,
            max_size_bytes: self.cfg.max_size,
            foreign: inv.foreign,
            memory_used_percent: readings.used_percent(),
            memory_threshold_percent: self.cfg.memory_threshold,
            disk_reserve_bytes: disk.as_ref().map(|d| self.cfg.disk_reserve.bytes(d.total_bytes)),
            disk,
            disk_guard: (self.mode == Mode::Managing && matches!(decision, Decision::Hold { why: Hold::DiskGuard { .. } }))
                .then(|| decision.describe()),
            next_step: decision.describe(),
            poll_interval_ms,
            running: None,
            looks: self.looks,
        })
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

mod shrink;
mod spare;
#[cfg(test)]
mod tests;
