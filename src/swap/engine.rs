//! The synchronous core of swap management, shared by the daemon's swap task and the direct
//! `cluster-ai swap …` commands: readings, books, decisions, and the operations that carry
//! them out. Operations block (fallocate, swapoff): the task runs them off the runtime.

use std::path::{Path, PathBuf};
use std::time::Instant as StdInstant;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::files::{self, Inventory, ManagedFile};
use super::kernel::{self, Sysctl};
use super::policy::{self, Books, Decision, Hold, PolicyState, Readings};
use crate::config::{format_size, Config, SwapConfig};
use crate::sys::fs::{disk_usage, DiskUsage};
use crate::sys::procfs::{parse_meminfo, ProcError, ProcFile, ProcFs};
use crate::sys::swap::{self as sys, SwapEntry, SwapFs};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "why")]
pub enum Mode {
    /// Creating and removing swap files.
    Managing,
    /// Reporting only, for the reason given (no root, a refused swap.dir, …).
    MonitoringOnly(String),
    /// `swap clean` through the daemon; `swap expand` or a reload resumes.
    Paused,
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
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{0}")]
    Read(#[from] ProcError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct Engine {
    pub cfg: SwapConfig,
    kernel_tune: bool,
    procfs: ProcFs,
    meminfo: Option<ProcFile>,
    swaps: Option<ProcFile>,
    state_dir: PathBuf,
    pub state: PolicyState,
    pub mode: Mode,
    fs: Option<SwapFs>,
    pub dry_run: bool,
    pub trigger: String,
    guard_active: bool,
    last_logged: Option<Decision>,
}

/// What one look at memory found.
pub struct Look {
    pub readings: Readings,
    pub inventory: Inventory,
    pub decision: Decision,
}

impl Engine {
    pub fn new(config: &Config, procfs: ProcFs, state_dir: PathBuf, dry_run: bool) -> Self {
        Self {
            cfg: config.swap.clone(),
            kernel_tune: config.kernel.tune,
            procfs,
            meminfo: None,
            swaps: None,
            state_dir,
            state: PolicyState::default(),
            mode: Mode::MonitoringOnly("not started".into()),
            fs: None,
            dry_run,
            trigger: "adaptive poll".into(),
            guard_active: false,
            last_logged: None,
        }
    }

    /// Decides whether swap can be managed here (root with CAP_SYS_ADMIN, a safe swap.dir)
    /// and says so once; when it can, cleans up after a crash and applies kernel tuning.
    pub fn start(&mut self) {
        self.probe();
        self.recover();
        if self.mode == Mode::Managing && self.kernel_tune {
            self.tune_kernel();
        }
    }

    /// Sets the mode (managing or monitoring only, and why) without changing anything.
    pub fn probe(&mut self) {
        self.mode = match self.check_can_manage() {
            Ok(fs) => {
                self.fs = Some(fs);
                Mode::Managing
            }
            Err(why) => {
                tracing::warn!(reason = %why, "cannot manage swap: {why}; monitoring only, the daemon stays up");
                Mode::MonitoringOnly(why)
            }
        };
    }

    /// After a crash: delete partials, adopt active files, enable or delete inactive ones.
    pub fn recover(&mut self) {
        if self.mode != Mode::Managing {
            return;
        }
        match self.inventory() {
            Ok(inv) if !self.dry_run => {
                let r = files::recover(&inv, self.cfg.max_size);
                for p in &r.adopted {
                    tracing::info!(file = %p.display(), "adopted an active swap file from an earlier run");
                }
                for p in &r.enabled {
                    tracing::info!(file = %p.display(), "enabled a complete swap file left inactive by a crash");
                }
                for p in &r.deleted {
                    tracing::info!(file = %p.display(), "deleted a swap file left unfinished or unneeded by a crash");
                }
                for f in &r.failed {
                    tracing::error!("crash recovery: {f}");
                }
            }
            Ok(inv) => tracing::info!(partials = inv.partials.len(), inactive = inv.inactive.len(), "dry run: crash recovery skipped"),
            Err(e) => tracing::error!("cannot read the swap table: {e}"),
        }
    }

    fn check_can_manage(&self) -> Result<SwapFs, String> {
        if !sys::has_cap_sys_admin(self.procfs.root()) {
            return Err("swapon/swapoff need CAP_SYS_ADMIN (run as root)".into());
        }
        sys::check_swap_dir(&self.cfg.dir, nix::unistd::geteuid().as_raw()).map_err(|e| e.to_string())
    }

    fn tune_kernel(&self) {
        let Some(rotational) = sys::rotational(Path::new("/"), &self.cfg.dir) else {
            tracing::warn!(dir = %self.cfg.dir.display(), "kernel.tune: cannot tell whether swap.dir is on an SSD or a spinning disk; leaving vm.* as they are");
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
        match Sysctl::new(self.procfs.root()).apply(&self.state_dir, want) {
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
    /// must run again (a new `swap.dir` to check and recover, or management paused by
    /// `swap clean`); it does file work, so the caller runs it off the async runtime.
    pub fn set_config(&mut self, config: &Config) -> bool {
        let dir_changed = config.swap.dir != self.cfg.dir;
        self.cfg = config.swap.clone();
        self.kernel_tune = config.kernel.tune;
        dir_changed || self.mode == Mode::Paused
    }

    fn read_swaps(&mut self) -> Result<String, ProcError> {
        let f = match &mut self.swaps {
            Some(f) => f,
            None => self.swaps.insert(self.procfs.open("swaps")?),
        };
        Ok(f.read()?.to_string())
    }

    pub fn inventory(&mut self) -> Result<Inventory, SwapError> {
        let text = self.read_swaps()?;
        let path = self.procfs.path("swaps");
        Inventory::read(&self.cfg.dir, &text).map_err(|what| SwapError::Read(ProcError::Parse { path, what }))
    }

    pub fn readings(&mut self, now: Instant) -> Result<Readings, SwapError> {
        let f = match &mut self.meminfo {
            Some(f) => f,
            None => self.meminfo.insert(self.procfs.open("meminfo")?),
        };
        let m = f.parse(parse_meminfo)?;
        Ok(Readings { now, mem_total: m.total, mem_available: m.available })
    }

    fn books(&self, inv: &Inventory) -> Books {
        Books {
            managed_total: inv.managed_total(),
            managed_used: inv.managed_used(),
            newest: inv.newest().map(|n| (n.size_bytes, n.used_bytes)),
            disk: disk_usage(&self.cfg.dir).ok().map(|d| (d.total_bytes, d.available_bytes)),
        }
    }

    /// Reads memory and the books, and asks the policy.
    pub fn look(&mut self, now: Instant) -> Result<Look, SwapError> {
        let readings = self.readings(now)?;
        let inventory = self.inventory()?;
        let books = self.books(&inventory);
        let decision = policy::decide(&self.cfg, &readings, &books, &mut self.state);
        self.note_guard(&decision);
        Ok(Look { readings, inventory, decision })
    }

    /// The disk guard warns once per episode, with the numbers.
    fn note_guard(&mut self, d: &Decision) {
        let blocked = matches!(d, Decision::Hold { why: Hold::DiskGuard { .. } });
        if blocked && !self.guard_active {
            tracing::warn!(dir = %self.cfg.dir.display(), "swap cannot grow: {}", d.describe());
        } else if !blocked && self.guard_active {
            tracing::info!("disk guard released");
        }
        self.guard_active = blocked;
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

    /// Adds one file of `size` (blocking). Checks max_size and the disk guard.
    pub fn expand(&mut self, size: u64, reason: &str, memory_percent: f64) -> Result<PathBuf, SwapError> {
        let fs = self.managing_fs()?;
        let inv = self.inventory()?;
        let size = size / policy::MIN_FILE * policy::MIN_FILE;
        if size < policy::MIN_FILE {
            return Err(SwapError::Refused("a swap file must be at least 1M".into()));
        }
        if inv.managed_total() + size > self.cfg.max_size {
            return Err(SwapError::Refused(format!(
                "{} more would pass swap.max_size {} ({} managed now)",
                format_size(size),
                format_size(self.cfg.max_size),
                format_size(inv.managed_total())
            )));
        }
        if let Some((total, available)) = self.books(&inv).disk {
            let reserve = self.cfg.disk_reserve.bytes(total);
            if available < size + reserve {
                return Err(SwapError::Refused(format!(
                    "disk guard: a {} file would leave {} free on {}, below swap.disk_reserve {}",
                    format_size(size),
                    format_size(available.saturating_sub(size)),
                    self.cfg.dir.display(),
                    format_size(reserve)
                )));
            }
        }
        let start = StdInstant::now();
        let path = files::create(&self.cfg.dir, fs, inv.next_seq(), size, inv.next_priority())?;
        let swap_percent = percent(inv.managed_used(), inv.managed_total() + size);
        tracing::info!(
            file = %path.display(),
            size = size,
            reason,
            memory_percent,
            swap_percent,
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "swap file added: {} ({reason})",
            format_size(size)
        );
        Ok(path)
    }

    /// Removes the newest managed file (blocking), if what is left keeps min_size and its
    /// pages fit in available memory.
    pub fn shrink(&mut self, reason: &str) -> Result<PathBuf, SwapError> {
        self.managing_fs()?;
        let inv = self.inventory()?;
        let Some(newest) = inv.newest().cloned() else {
            return Err(SwapError::Refused("no managed swap file to remove".into()));
        };
        if inv.managed_total() - newest.size_bytes < self.cfg.min_size {
            return Err(SwapError::Refused(format!(
                "removing {} would leave {} managed, below swap.min_size {}",
                newest.path.display(),
                format_size(inv.managed_total() - newest.size_bytes),
                format_size(self.cfg.min_size)
            )));
        }
        let r = self.readings(Instant::now())?;
        if newest.used_bytes + r.mem_total / 10 > r.mem_available {
            return Err(SwapError::Refused(format!(
                "the {} in use in {} would not fit in {} of available memory",
                format_size(newest.used_bytes),
                newest.path.display(),
                format_size(r.mem_available)
            )));
        }
        self.remove_file(&newest, reason, r.used_percent())?;
        Ok(newest.path)
    }

    fn remove_file(&mut self, f: &ManagedFile, reason: &str, memory_percent: f64) -> Result<(), SwapError> {
        let start = StdInstant::now();
        files::remove(&f.path)?;
        tracing::info!(
            file = %f.path.display(),
            size = f.size_bytes,
            used = f.used_bytes,
            reason,
            memory_percent,
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "swap file removed ({reason})"
        );
        Ok(())
    }

    /// swapoff and delete every managed file, newest first, and put back kernel tunables.
    /// Refused when memory could not take their pages, unless `force`.
    pub fn clean(&mut self, force: bool) -> Result<String, SwapError> {
        self.managing_fs()?;
        let inv = self.inventory()?;
        let r = self.readings(Instant::now())?;
        let used = inv.managed_used();
        if !force && used + r.mem_total / 10 > r.mem_available {
            return Err(SwapError::Refused(format!(
                "{} of managed swap is in use and {} of memory is available: swapping it all in could run out of memory; use --force to do it anyway",
                format_size(used),
                format_size(r.mem_available)
            )));
        }
        let mut removed = 0;
        for f in inv.managed.iter().rev() {
            self.remove_file(f, "swap clean", r.used_percent())?;
            removed += 1;
        }
        for p in inv.inactive.iter().chain(&inv.partials) {
            files::delete(p)?;
            removed += 1;
        }
        let restored = match Sysctl::new(self.procfs.root()).restore(&self.state_dir) {
            Ok(Some(t)) => format!("; vm.swappiness {} and vm.vfs_cache_pressure {} restored", t.swappiness, t.vfs_cache_pressure),
            Ok(None) => String::new(),
            Err(e) => format!("; restoring kernel settings failed: {e}"),
        };
        Ok(format!("removed {removed} swap file(s) from {}{restored}", self.cfg.dir.display()))
    }

    fn managing_fs(&self) -> Result<SwapFs, SwapError> {
        match (&self.mode, self.fs) {
            (Mode::MonitoringOnly(why), _) => Err(SwapError::Refused(format!("cannot manage swap: {why}"))),
            (_, None) => Err(SwapError::Refused("swap management has not started".into())),
            _ if self.dry_run => Err(SwapError::Refused("dry run: nothing is changed".into())),
            (_, Some(fs)) => Ok(fs),
        }
    }

    pub fn status(&mut self, poll_interval_ms: u64) -> Result<SwapStatus, SwapError> {
        let mut st = self.state;
        let readings = self.readings(Instant::now())?;
        let inv = self.inventory()?;
        let books = self.books(&inv);
        let decision = policy::decide(&self.cfg, &readings, &books, &mut st);
        let disk = disk_usage(&self.cfg.dir).ok();
        Ok(SwapStatus {
            mode: self.mode.clone(),
            dry_run: self.dry_run,
            trigger: self.trigger.clone(),
            dir: self.cfg.dir.clone(),
            managed_total_bytes: inv.managed_total(),
            managed_used_bytes: inv.managed_used(),
            managed: inv.managed,
            min_size_bytes: self.cfg.min_size,
            max_size_bytes: self.cfg.max_size,
            foreign: inv.foreign,
            memory_used_percent: readings.used_percent(),
            memory_threshold_percent: self.cfg.memory_threshold,
            disk_reserve_bytes: disk.as_ref().map(|d| self.cfg.disk_reserve.bytes(d.total_bytes)),
            disk,
            disk_guard: matches!(decision, Decision::Hold { why: Hold::DiskGuard { .. } }).then(|| decision.describe()),
            next_step: decision.describe(),
            poll_interval_ms,
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
