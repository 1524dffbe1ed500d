//! The swap policy: readings + the books + config → one decision. Pure: no clock of its own
//! (the caller passes `now`), no I/O, so every rule is tested as a table of cases.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{human_size, SwapConfig};

/// The smallest file worth making; a smaller remainder below `max_size` is left unused.
pub const MIN_FILE: u64 = 1 << 20;
/// The fastest growth of memory use the policy plans for, in bytes per second: 1 GiB/s, the top
/// rate of issue 19's burst benchmark (one thread filling fresh pages), and more than most swap
/// devices can write, so a faster burst outruns the disk, not the poll. When memory is seen
/// falling faster between two looks, the measured rate is used instead.
pub const FASTEST_GROWTH: u64 = 1 << 30;
/// The time making and enabling a file may take under a burst (fallocate, mkswap, swapon; about
/// 10 ms on an idle host, bench/reaction.py, with a wide margin for a loaded disk): the
/// fastest growth over this time is the reserve, the headroom a file is added below.
pub const LEAD_TIME: Duration = Duration::from_millis(250);
/// How far ahead of the low-water mark a spare file is kept ready (fallocated, header written,
/// synced, not enabled), at the planned growth: making the first file from scratch took
/// 1.5–4 s from the decision to the swapon inside issue 19's burst VM (the burst starves the
/// daemon's own allocations and I/O), far more than [`LEAD_TIME`]; with a spare ready the
/// decision costs a rename and a swapon. So a machine whose headroom the fastest growth could
/// take down to the low-water mark within this time keeps one spare.
pub const SPARE_LEAD: Duration = Duration::from_secs(4);
/// Poll interval while headroom is already below the low-water mark (growing or at a limit).
pub const PRESSURE_POLL: Duration = Duration::from_millis(100);
/// The fastest poll, right above the low-water mark.
pub const FASTEST_POLL: Duration = Duration::from_millis(20);

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
    /// The size of the spare file kept ready (not enabled, not managed swap), if there is one.
    pub spare: Option<u64>,
}

impl Books {
    /// Managed swap not yet used, in bytes.
    pub fn managed_free(&self) -> u64 {
        self.managed_total.saturating_sub(self.managed_used)
    }
}

/// What the policy remembers between decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyState {
    /// The previous look: when, and MemAvailable − managed swap used (bytes), to measure how
    /// fast memory is being taken. Adding or removing a file does not change it (a swapoff
    /// moves pages from swap into RAM), so only growth of memory use counts.
    pub last_look: Option<(Instant, i128)>,
    /// The growth planned for (bytes/s): [`FASTEST_GROWTH`], or faster when the last two looks
    /// measured faster. 0 until the first look (read as [`FASTEST_GROWTH`]).
    pub growth: u64,
    /// Since when memory has stayed below `shrink_threshold` (reset by each shrink).
    pub calm_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Less than `min_size` is active.
    Baseline,
    /// Memory use is past `memory_threshold` and the headroom (MemAvailable + free managed
    /// swap) is below what the threshold keeps free, (100 − memory_threshold) % of RAM.
    MemoryHigh,
    /// The headroom is below the reserve: what the fastest growth takes while a file is made.
    Burst,
}

impl Reason {
    /// For the structured log field `reason`.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Baseline => "baseline",
            Reason::MemoryHigh => "memory above threshold",
            Reason::Burst => "headroom below the burst reserve",
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
    /// Calm long enough, but without the newest file the headroom would be below what the next
    /// rise needs (the low-water mark plus one pressure poll of the fastest growth).
    KeepHeadroom { headroom_after: u64, needed: u64 },
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
                    Reason::MemoryHigh => "memory above memory_threshold and free memory + free managed swap below what it keeps",
                    Reason::Burst => "free memory + free managed swap below what a burst takes while a file is made",
                }
            ),
            Decision::Shrink => "remove the newest file (memory calm for calm_period)".into(),
            Decision::Hold { why } => match why {
                Hold::Steady => "nothing to do".into(),
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
                Hold::KeepHeadroom { headroom_after, needed } => format!(
                    "calm, but without the newest file free memory + free managed swap would be {}, below the {} the next rise needs",
                    human_size(*headroom_after),
                    human_size(*needed)
                ),
            },
        }
    }
}

impl PolicyState {
    /// The growth planned for, in bytes per second.
    pub fn growth(&self) -> u64 {
        self.growth.max(FASTEST_GROWTH)
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

/// Free memory plus free managed swap, in bytes: what memory use can still grow into before
/// the kernel must reclaim hard or kill (MemAvailable, /proc/meminfo; free managed swap,
/// /proc/swaps).
pub fn headroom(r: &Readings, b: &Books) -> u64 {
    r.mem_available.saturating_add(b.managed_free())
}

/// The reserve: what `growth` bytes/s take during [`LEAD_TIME`], in bytes.
pub fn reserve(growth: u64) -> u64 {
    (growth as f64 * LEAD_TIME.as_secs_f64()) as u64
}

/// The low-water mark, in bytes: a file is added when the headroom is below it. The larger of
/// the reserve and what `memory_threshold` keeps free ((100 − memory_threshold) % of RAM): so
/// the threshold is where the rule starts to apply on a large machine, and on a small one the
/// reserve applies below it.
pub fn low_water(cfg: &SwapConfig, r: &Readings, growth: u64) -> u64 {
    let kept = r.mem_total / 100 * (100 - u64::from(cfg.memory_threshold.min(100)));
    kept.max(reserve(growth))
}

/// The swap task's one decision per look: the baseline up to `min_size` first; then one
/// `increment` when the headroom (free memory + free managed swap) is below the low-water mark
/// ([`low_water`]) — never while managed swap still has room above it; then, after
/// `calm_period` below `shrink_threshold`, the newest file goes if its pages fit in memory and
/// the headroom without it stays a pressure poll's growth above the low-water mark.
pub fn decide(cfg: &SwapConfig, r: &Readings, b: &Books, st: &mut PolicyState) -> Decision {
    let used = r.used_percent();
    if used < f64::from(cfg.shrink_threshold) {
        st.calm_since.get_or_insert(r.now);
    } else {
        st.calm_since = None;
    }
    let room = headroom(r, b);
    let free = i128::from(r.mem_available) - i128::from(b.managed_used);
    st.growth = FASTEST_GROWTH;
    if let Some((then, before)) = st.last_look {
        let dt = r.now.saturating_duration_since(then).as_secs_f64();
        if dt >= FASTEST_POLL.as_secs_f64() / 2.0 && before > free {
            st.growth = st.growth.max(((before - free) as f64 / dt).min(u64::MAX as f64) as u64);
        }
    }
    st.last_look = Some((r.now, free));
    let growth = st.growth();

    let shortfall = effective_min(cfg).saturating_sub(b.managed_total);
    if shortfall >= MIN_FILE {
        return expand(cfg, b, shortfall, Reason::Baseline);
    }
    let low = low_water(cfg, r, growth);
    if room < low {
        let reason = if used >= f64::from(cfg.memory_threshold) { Reason::MemoryHigh } else { Reason::Burst };
        // The spare, when one is ready and fits under max_size: it costs no more disk (it is
        // already made), so the disk guard does not stand in its way.
        if let Some(size) = b.spare.filter(|s| *s >= MIN_FILE && *s <= cfg.max_size.saturating_sub(b.managed_total)) {
            return Decision::Expand { size, reason };
        }
        return expand(cfg, b, cfg.increment, reason);
    }
    if let Some(since) = st.calm_since {
        let needed = low.saturating_add((growth as f64 * PRESSURE_POLL.as_secs_f64()) as u64);
        let after = b.newest.map(|(size, _)| room.saturating_sub(size));
        match check_shrink(cfg, b, r) {
            Err(Hold::Steady | Hold::AtMin { .. }) => {}
            _ if r.now.saturating_duration_since(since) < cfg.calm_period => {
                let calm = r.now.saturating_duration_since(since);
                return Decision::Hold { why: Hold::Calming { shrink_in_ms: (cfg.calm_period - calm).as_millis() as u64 } };
            }
            Err(why) => return Decision::Hold { why },
            Ok(()) => {
                return match after {
                    Some(headroom_after) if headroom_after < needed => {
                        Decision::Hold { why: Hold::KeepHeadroom { headroom_after, needed } }
                    }
                    _ => Decision::Shrink,
                }
            }
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

/// What to do with the spare file, after a look whose decision was to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "spare")]
pub enum SpareStep {
    /// Make a spare of `size` bytes (fallocate, header, sync; no swapon).
    Make { size: u64 },
    /// Delete the spare: `why` for the log.
    Remove { why: SpareGone },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpareGone {
    /// `swap.spare = false`.
    Disabled,
    /// It could not be enabled: it would pass `max_size`.
    OverMax,
    /// Memory has been calm for `calm_period` and the headroom is a whole spare above the mark
    /// a spare is kept under.
    Calm,
}

impl SpareGone {
    pub fn describe(self) -> &'static str {
        match self {
            SpareGone::Disabled => "swap.spare is off",
            SpareGone::OverMax => "enabling it would pass max_size",
            SpareGone::Calm => "memory calm, headroom far above what a burst could take before a file is made",
        }
    }
}

/// The headroom below which a spare is kept: the low-water mark plus what the planned growth
/// takes in [`SPARE_LEAD`].
pub fn spare_water(cfg: &SwapConfig, r: &Readings, growth: u64) -> u64 {
    low_water(cfg, r, growth).saturating_add((growth as f64 * SPARE_LEAD.as_secs_f64()) as u64)
}

/// The spare rule, after [`decide`] (which it does not change; `st` as `decide` left it): with
/// `swap.spare` on and the decision a hold, one spare of `increment` (cut to what max_size and
/// the disk guard allow) is made when the headroom is below [`spare_water`]; it goes when it
/// could not be enabled (max_size), or after `calm_period` of calm with the headroom a whole
/// spare above the mark (hysteresis: no make-remove churn at the mark). Nothing at a look that
/// adds or removes a file.
pub fn spare_step(cfg: &SwapConfig, r: &Readings, b: &Books, st: &PolicyState, d: &Decision) -> Option<SpareStep> {
    let remove = |why| Some(SpareStep::Remove { why });
    let Some(size) = b.spare else {
        if !cfg.spare || !matches!(d, Decision::Hold { .. }) || headroom(r, b) >= spare_water(cfg, r, st.growth()) {
            return None;
        }
        return check_expand(cfg, b, cfg.increment).ok().map(|size| SpareStep::Make { size });
    };
    if !cfg.spare {
        return remove(SpareGone::Disabled);
    }
    if !matches!(d, Decision::Hold { .. }) {
        return None;
    }
    if size > cfg.max_size.saturating_sub(b.managed_total) {
        return remove(SpareGone::OverMax);
    }
    let calm = st.calm_since.is_some_and(|since| r.now.saturating_duration_since(since) >= cfg.calm_period);
    if calm && headroom(r, b) >= spare_water(cfg, r, st.growth()).saturating_add(size) {
        return remove(SpareGone::Calm);
    }
    None
}

/// How long to wait before the next look at memory: half the time the planned growth
/// (`st.growth()`, bytes/s) needs to take the headroom down to the low-water mark, within
/// [`FASTEST_POLL`]..`check_interval`; [`PRESSURE_POLL`] once it is there (a file is being
/// added, or a limit holds). So from idle a burst at the fastest growth is seen with at least
/// half its time left, and a large idle machine is looked at seldom (24 GiB free: every 10 s).
pub fn poll_interval(cfg: &SwapConfig, r: &Readings, b: &Books, st: &PolicyState) -> Duration {
    let growth = st.growth();
    let room = headroom(r, b);
    let low = low_water(cfg, r, growth);
    if room <= low {
        return PRESSURE_POLL.min(cfg.check_interval);
    }
    let left = (room - low) as f64 / growth as f64;
    Duration::from_secs_f64(left / 2.0).clamp(FASTEST_POLL, cfg.check_interval.max(FASTEST_POLL))
}

#[cfg(test)]
mod tests;
