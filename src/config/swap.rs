//! `[swap]` and `[kernel]`: the auto-expanding swap files and the kernel's swap tunables.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{absolute_path, boolean, duration_between, percent_between, size, Checker};
use super::{format_duration, format_size, human_size, KeyDoc};

/// `[swap]`'s keys: name, default, one line of doc. The one list parsing, `config show`,
/// `config::keys()` and the documented example are checked against.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new(
        "swap",
        "dir",
        r#""/var/lib/cluster-ai/swap""#,
        "Where swap files live: an absolute path, a root-owned directory (mode 0700).",
    ),
    KeyDoc::new("swap", "min_size", r#""2G""#, "Swap kept at all times (a size; rounded up to whole MiB)."),
    KeyDoc::new("swap", "max_size", r#""16G""#, "Never more managed swap than this (a size, at least min_size)."),
    KeyDoc::new("swap", "increment", r#""1G""#, "Size of each file added when memory runs high (1M or more, at most max_size)."),
    KeyDoc::new(
        "swap",
        "memory_threshold",
        "80",
        "Memory in use (1 - MemAvailable/MemTotal, percent 1-99) past which swap keeps (100 - this) % of RAM free as RAM + free swap.",
    ),
    KeyDoc::new("swap", "check_interval", r#""30s""#, "Longest time between memory checks far from the threshold (1s to 1h)."),
    KeyDoc::new(
        "swap",
        "disk_reserve",
        r#""10%""#,
        "Free space a new swap file must leave: a percentage of the filesystem (at most 90%) or a size.",
    ),
    KeyDoc::new("swap", "shrink_threshold", "60", "Memory in use (percent, below memory_threshold) under which swap may shrink."),
    KeyDoc::new("swap", "calm_period", r#""5m""#, "How long memory stays under shrink_threshold before the newest file goes (1s to 1d)."),
    KeyDoc::new(
        "swap",
        "spare",
        "true",
        "Keep one file of increment ready (made, not enabled; disk only) while a burst could need it, so adding it is only a swapon.",
    ),
];

/// `[kernel]`'s keys.
pub(super) const KERNEL_KEYS: &[KeyDoc] = &[KeyDoc::new(
    "kernel",
    "tune",
    "false",
    "Set vm.swappiness and vm.vfs_cache_pressure for the swap device's kind (10/50 on SSD, 30/100 on HDD).",
)];

#[derive(Debug, Clone, PartialEq)]
pub struct SwapConfig {
    pub dir: PathBuf,
    pub min_size: u64,
    pub max_size: u64,
    pub increment: u64,
    /// Percent of memory in use (1 − MemAvailable/MemTotal) past which swap grows: managed swap
    /// keeps the headroom (MemAvailable + free managed swap) at (100 − this) % of RAM or more.
    pub memory_threshold: u8,
    pub check_interval: Duration,
    /// Free space a new swap file must leave on its filesystem.
    pub disk_reserve: DiskReserve,
    /// Percent of memory in use below which swap may shrink, after `calm_period`.
    pub shrink_threshold: u8,
    pub calm_period: Duration,
    /// Keep one spare file ready (made, not enabled) while a burst could need it.
    pub spare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskReserve {
    /// Percent of the filesystem's size.
    Percent(u8),
    Bytes(u64),
}

impl DiskReserve {
    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            DiskReserve::Percent(p) => total / 100 * u64::from(p),
            DiskReserve::Bytes(b) => b,
        }
    }
}

impl std::fmt::Display for DiskReserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskReserve::Percent(p) => write!(f, "{p}%"),
            DiskReserve::Bytes(b) => write!(f, "{}", format_size(*b)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Set vm.swappiness and vm.vfs_cache_pressure for the swap device's kind (SSD or HDD).
    pub tune: bool,
}

impl SwapConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("swap.dir", self.dir.display().to_string()),
            ("swap.min_size", format_size(self.min_size)),
            ("swap.max_size", format_size(self.max_size)),
            ("swap.increment", format_size(self.increment)),
            ("swap.memory_threshold", self.memory_threshold.to_string()),
            ("swap.check_interval", format_duration(self.check_interval)),
            ("swap.disk_reserve", self.disk_reserve.to_string()),
            ("swap.shrink_threshold", self.shrink_threshold.to_string()),
            ("swap.calm_period", format_duration(self.calm_period)),
            ("swap.spare", self.spare.to_string()),
        ]
    }

    pub(super) fn validate(c: &mut Checker<'_>) -> SwapConfig {
        let secs = Duration::from_secs;
        let (dir, _) = c.field("swap.dir", absolute_path);
        let (min_size, min_at) = c.field("swap.min_size", size);
        let (max_size, max_at) = c.field("swap.max_size", size);
        let (increment, inc_at) = c.field("swap.increment", |v| {
            let n = size(v)?;
            if n < 1 << 20 {
                return Err(format!("{} is too small; expected at least 1M", human_size(n)));
            }
            Ok(n)
        });
        let (memory_threshold, memory_at) = c.field("swap.memory_threshold", percent_between(1, 99));
        let (check_interval, _) = c.field("swap.check_interval", duration_between(secs(1), secs(3600)));
        let (disk_reserve, _) = c.field("swap.disk_reserve", |v| match v {
            toml::Value::String(s) if s.trim().ends_with('%') => {
                percent_between(0, 90)(v).map(DiskReserve::Percent).map_err(|_| format!("{s:?} is not a percentage from 0% to 90%"))
            }
            // A bare small number is far more likely a percentage without its sign than a
            // reserve of a few bytes.
            toml::Value::Integer(n) if (0..1024).contains(n) => {
                Err(format!("{n} would be {n} bytes; write \"{n}%\" for a percentage of the filesystem, or a size such as \"20G\""))
            }
            _ => size(v).map(DiskReserve::Bytes).map_err(|e| format!("{e}, or a percentage of the filesystem such as \"10%\"")),
        });
        let (shrink_threshold, shrink_at) = c.field("swap.shrink_threshold", percent_between(1, 98));
        let (calm_period, _) = c.field("swap.calm_period", duration_between(secs(1), secs(24 * 3600)));
        let (spare, _) = c.field("swap.spare", boolean);
        if shrink_threshold >= memory_threshold {
            c.report_between(
                (shrink_at, "swap.shrink_threshold"),
                (memory_at, "swap.memory_threshold"),
                format!(
                    "{shrink_threshold} is not below swap.memory_threshold {memory_threshold}; expected shrink_threshold < memory_threshold"
                ),
            );
        }
        if max_size < min_size {
            c.report_between(
                (max_at.clone(), "swap.max_size"),
                (min_at, "swap.min_size"),
                format!("{} is below swap.min_size {}; expected max_size >= min_size", format_size(max_size), format_size(min_size)),
            );
        }
        if increment > max_size {
            c.report_between(
                (inc_at, "swap.increment"),
                (max_at, "swap.max_size"),
                format!("{} is above swap.max_size {}; expected increment <= max_size", format_size(increment), format_size(max_size)),
            );
        }
        SwapConfig {
            dir,
            min_size,
            max_size,
            increment,
            memory_threshold,
            check_interval,
            disk_reserve,
            shrink_threshold,
            calm_period,
            spare,
        }
    }
}

impl KernelConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        vec![("kernel.tune", self.tune.to_string())]
    }

    pub(super) fn validate(c: &mut Checker<'_>) -> KernelConfig {
        let (tune, _) = c.field("kernel.tune", boolean);
        KernelConfig { tune }
    }
}
