//! The swap policy: readings + the books + config → one decision. Pure: no clock of its own
//! (the caller passes `now`), no I/O, so every rule is tested as a table of cases.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{human_size, SwapConfig};

/// Managed swap this full (percent used) while memory is high asks for more at once.
pub const SWAP_FILLING_PERCENT: u64 = 80;
/// The smallest file worth making; a smaller remainder below `max_size` is left unused.
pub const MIN_FILE: u64 = 1 << 20;
/// Poll interval once memory is at or above the threshold (to see managed swap filling).
pub const PRESSURE_POLL: Duration = Duration::from_millis(100);
/// The fastest poll, right below the threshold.
pub const FASTEST_POLL: Duration = Duration::from_millis(20);
/// Memory use (percent of RAM per second) a fast allocator can reach; the poll comes at half
/// the time such an allocator needs to close the gap to the threshold.
pub const ASSUMED_GROWTH_PERCENT_PER_S: f64 = 10.0;
/// Farther than this below the threshold (percentage points), poll every `check_interval`.
pub const FAR_GAP: f64 = 25.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readings {
    pub now: Instant,
    pub mem_total: u64,
    pub mem_available: u64,
}

impl Readings {
    pub fn used_percent(&self) -> f64 {
        crate::sys::procfs::used_percent(self.mem_total, self.mem_available)
    }
}

/// What the policy needs to know of managed swap and its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Books {
    pub managed_total: u64,
    pub managed_used: u64,
    /// The newest managed file (the one a shrink removes): size and used bytes.
    pub newest: Option<(u64, u64)>,
    /// Size and available bytes of the filesystem of `swap.dir`.
    pub disk: Option<(u64, u64)>,
}

/// What the policy remembers between decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyState {
    /// Set while memory is high, at each expansion: the next one waits for `check_interval`
    /// unless managed swap fills up. Cleared when memory drops below the threshold.
    pub last_expansion: Option<Instant>,
    /// Since when memory has stayed below `shrink_threshold` (reset by each shrink).
    pub calm_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Less than `min_size` is active.
    Baseline,
    /// Memory use reached `memory_threshold`.
    MemoryHigh,
    /// Memory is high and managed swap is itself filling up.
    SwapFilling,
}

impl Reason {
    /// For the structured log field `reason`.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Baseline => "baseline",
            Reason::MemoryHigh => "memory above threshold",
            Reason::SwapFilling => "managed swap filling",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    Expand {
        size: u64,
        reason: Reason,
    },
    /// Swapoff and delete the newest managed file.
    Shrink,
    Hold {
        why: Hold,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "hold")]
pub enum Hold {
    /// Nothing to do.
    Steady,
    /// Memory is high but the last expansion is recent and managed swap has room.
    Cooldown { next_in_ms: u64 },
    /// `max_size` is reached (less than 1 MiB of room is left).
    AtMax { max_size: u64, managed: u64 },
    /// Removing the newest file would leave less than `min_size`.
    AtMin { min_size: u64 },
    /// A new file would eat into `disk_reserve`.
    DiskGuard { size: u64, available: u64, reserve: u64 },
    /// Memory is calm; the newest file goes when the calm has lasted `calm_period`.
    Calming { shrink_in_ms: u64 },
    /// Calm long enough, but the newest file's pages would not fit in available memory.
    ShrinkWouldNotFit { used: u64, available: u64 },
}

impl Decision {
    /// One line for logs and `swap status`.
    pub fn describe(&self) -> String {
        let ms = |m: u64| format!("{:.0}s", m as f64 / 1000.0);
        match self {
            Decision::Expand { size, reason } => format!(
                "add {} ({})",
                human_size(*size),
                match reason {
                    Reason::Baseline => "below min_size",
                    Reason::MemoryHigh => "memory above memory_threshold",
                    Reason::SwapFilling => "managed swap filling up while memory is high",
                }
            ),
            Decision::Shrink => "remove the newest file (memory calm for calm_period)".into(),
            Decision::Hold { why } => match why {
                Hold::Steady => "nothing to do".into(),
                Hold::Cooldown { next_in_ms } => format!("memory high; next file in {} unless swap fills", ms(*next_in_ms)),
                Hold::AtMax { max_size, managed } => {
                    format!("max_size {} is reached ({} managed)", human_size(*max_size), human_size(*managed))
                }
                Hold::AtMin { min_size } => format!("the newest file is needed for min_size {}", human_size(*min_size)),
                Hold::DiskGuard { size, available, reserve } => format!(
                    "disk guard: a {} file would leave {} free, below disk_reserve {}",
                    human_size(*size),
                    human_size(available.saturating_sub(*size)),
                    human_size(*reserve)
                ),
                Hold::Calming { shrink_in_ms } => {
                    format!("memory calm; the newest file goes in {}", ms(*shrink_in_ms))
                }
                Hold::ShrinkWouldNotFit { used, available } => format!(
                    "calm, but the newest file's {} in use would not fit in {} available memory",
                    human_size(*used),
                    human_size(*available)
                ),
            },
        }
    }
}

impl PolicyState {
    /// After a file was added for `reason`: growth under pressure waits `check_interval` for
    /// the next one (the baseline does not count).
    pub fn expanded(&mut self, reason: Reason, now: Instant) {
        if reason != Reason::Baseline {
            self.last_expansion = Some(now);
        }
    }

    /// After a shrink, the calm must last a whole `calm_period` again before the next one.
    pub fn shrunk(&mut self, now: Instant) {
        self.calm_since = Some(now);
    }
}

/// `min_size` as files can make it: whole MiB, rounded up (a shortfall under 1 MiB is still a
/// shortfall), but never above what `max_size` allows.
pub fn effective_min(cfg: &SwapConfig) -> u64 {
    round_up(cfg.min_size).min(cfg.max_size / MIN_FILE * MIN_FILE)
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(MIN_FILE).saturating_mul(MIN_FILE)
}

/// Whether `used` bytes of swapped-out pages fit in available memory with a tenth of RAM to
/// spare: the rule for every swapoff (shrink, `swap clean`).
pub fn fits_in_memory(used: u64, r: &Readings) -> bool {
    used.checked_add(r.mem_total / 10).is_some_and(|need| need <= r.mem_available)
}

/// The size a new file of `want` bytes may have under `max_size` and the disk guard, in whole
/// MiB, or why there is none.
pub fn check_expand(cfg: &SwapConfig, b: &Books, want: u64) -> Result<u64, Hold> {
    let room = cfg.max_size.saturating_sub(b.managed_total);
    let size = want.min(room) / MIN_FILE * MIN_FILE;
    if size < MIN_FILE {
        return Err(Hold::AtMax { max_size: cfg.max_size, managed: b.managed_total });
    }
    if let Some((total, available)) = b.disk {
        let reserve = cfg.disk_reserve.bytes(total);
        if size.checked_add(reserve).is_none_or(|need| available < need) {
            return Err(Hold::DiskGuard { size, available, reserve });
        }
    }
    Ok(size)
}

/// Whether the newest file may go: `min_size` stays and its pages fit in memory.
pub fn check_shrink(cfg: &SwapConfig, b: &Books, r: &Readings) -> Result<(), Hold> {
    let Some((size, used)) = b.newest else { return Err(Hold::Steady) };
    if b.managed_total.saturating_sub(size) < effective_min(cfg) {
        return Err(Hold::AtMin { min_size: cfg.min_size });
    }
    if !fits_in_memory(used, r) {
        return Err(Hold::ShrinkWouldNotFit { used, available: r.mem_available });
    }
    Ok(())
}

/// The swap task's one decision per look: the baseline up to `min_size` first, then one more
/// file while memory is at or over `memory_threshold` (at once when managed swap is filling,
/// else at most one per `check_interval`), then, after `calm_period` below `shrink_threshold`,
/// the newest file goes if its pages fit in memory.
pub fn decide(cfg: &SwapConfig, r: &Readings, b: &Books, st: &mut PolicyState) -> Decision {
    let used = r.used_percent();
    if used < f64::from(cfg.shrink_threshold) {
        st.calm_since.get_or_insert(r.now);
    } else {
        st.calm_since = None;
    }
    let high = used >= f64::from(cfg.memory_threshold);
    if !high {
        st.last_expansion = None;
    }

    let shortfall = effective_min(cfg).saturating_sub(b.managed_total);
    if shortfall >= MIN_FILE {
        return expand(cfg, b, shortfall, Reason::Baseline);
    }
    if high {
        let filling = b.managed_total > 0 && b.managed_used.saturating_mul(100) >= b.managed_total.saturating_mul(SWAP_FILLING_PERCENT);
        let since = st.last_expansion.map(|t| r.now.saturating_duration_since(t));
        return match since {
            Some(since) if !filling && since < cfg.check_interval => {
                Decision::Hold { why: Hold::Cooldown { next_in_ms: (cfg.check_interval - since).as_millis() as u64 } }
            }
            _ => expand(cfg, b, cfg.increment, if filling { Reason::SwapFilling } else { Reason::MemoryHigh }),
        };
    }
    if let Some(since) = st.calm_since {
        match check_shrink(cfg, b, r) {
            Err(Hold::Steady | Hold::AtMin { .. }) => {}
            _ if r.now.saturating_duration_since(since) < cfg.calm_period => {
                let calm = r.now.saturating_duration_since(since);
                return Decision::Hold { why: Hold::Calming { shrink_in_ms: (cfg.calm_period - calm).as_millis() as u64 } };
            }
            Err(why) => return Decision::Hold { why },
            Ok(()) => return Decision::Shrink,
        }
    }
    Decision::Hold { why: Hold::Steady }
}

fn expand(cfg: &SwapConfig, b: &Books, want: u64, reason: Reason) -> Decision {
    match check_expand(cfg, b, want) {
        Ok(size) => Decision::Expand { size, reason },
        Err(why) => Decision::Hold { why },
    }
}

/// How long to wait before the next look at memory: `check_interval` far from the threshold,
/// down to 20 ms right below it, 100 ms above it.
pub fn poll_interval(cfg: &SwapConfig, used_percent: f64) -> Duration {
    let gap = f64::from(cfg.memory_threshold) - used_percent;
    if gap <= 0.0 {
        return PRESSURE_POLL.min(cfg.check_interval);
    }
    if gap > FAR_GAP {
        return cfg.check_interval;
    }
    Duration::from_secs_f64(gap / ASSUMED_GROWTH_PERCENT_PER_S / 2.0).clamp(FASTEST_POLL, cfg.check_interval.max(FASTEST_POLL))
}

#[cfg(test)]
mod tests;
