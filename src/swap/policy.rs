//! The swap policy: readings + the books + config → one decision. Pure: no clock of its own
//! (the caller passes `now`), no I/O, so every rule is tested as a table of cases.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{format_size, SwapConfig};

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
    /// `max_size` is reached.
    AtMax { max_size: u64 },
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
                format_size(*size),
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
                Hold::AtMax { max_size } => format!("memory high but max_size {} is reached", format_size(*max_size)),
                Hold::DiskGuard { size, available, reserve } => format!(
                    "disk guard: a {} file would leave {} free, below disk_reserve {}",
                    format_size(*size),
                    format_size(available.saturating_sub(*size)),
                    format_size(*reserve)
                ),
                Hold::Calming { shrink_in_ms } => {
                    format!("memory calm; the newest file goes in {}", ms(*shrink_in_ms))
                }
                Hold::ShrinkWouldNotFit { used, available } => format!(
                    "calm, but the newest file's {} in use would not fit in {} available memory",
                    format_size(*used),
                    format_size(*available)
                ),
            },
        }
    }
}

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

    if b.managed_total < cfg.min_size {
        return expand(cfg, b, cfg.min_size - b.managed_total, Reason::Baseline);
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
    if let (Some(since), Some((size, newest_used))) = (st.calm_since, b.newest) {
        if b.managed_total.saturating_sub(size) >= cfg.min_size {
            let calm = r.now.saturating_duration_since(since);
            if calm < cfg.calm_period {
                return Decision::Hold { why: Hold::Calming { shrink_in_ms: (cfg.calm_period - calm).as_millis() as u64 } };
            }
            // Its pages must fit in memory with a tenth of RAM to spare.
            if newest_used.saturating_add(r.mem_total / 10) > r.mem_available {
                return Decision::Hold { why: Hold::ShrinkWouldNotFit { used: newest_used, available: r.mem_available } };
            }
            return Decision::Shrink;
        }
    }
    Decision::Hold { why: Hold::Steady }
}

fn expand(cfg: &SwapConfig, b: &Books, want: u64, reason: Reason) -> Decision {
    let room = cfg.max_size.saturating_sub(b.managed_total);
    // Whole MiB: every size is then a whole number of pages.
    let size = want.min(room) / MIN_FILE * MIN_FILE;
    if size < MIN_FILE {
        return Decision::Hold { why: Hold::AtMax { max_size: cfg.max_size } };
    }
    if let Some((total, available)) = b.disk {
        let reserve = cfg.disk_reserve.bytes(total);
        if available < size.saturating_add(reserve) {
            return Decision::Hold { why: Hold::DiskGuard { size, available, reserve } };
        }
    }
    Decision::Expand { size, reason }
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
