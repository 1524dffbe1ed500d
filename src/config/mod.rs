//! The configuration file: a raw serde layer that keeps every value's position, validated into
//! a [`Config`] with no `Option`s. Every error names `PATH:LINE:COL: key: what is wrong`.

mod units;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use units::{format_duration, format_size, human_size, parse_duration, parse_size};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: LogLevel,
    pub sample_interval: Duration,
    pub control_socket: SocketSetting,
    pub swap: SwapConfig,
    pub kernel: KernelConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Where the control socket lives: `auto` follows the runtime directory (see `sys::paths`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSetting {
    Auto,
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SwapConfig {
    pub dir: PathBuf,
    pub min_size: u64,
    pub max_size: u64,
    pub increment: u64,
    /// Percent of memory in use (1 − MemAvailable/MemTotal) at which swap grows.
    pub memory_threshold: u8,
    pub check_interval: Duration,
    /// Free space a new swap file must leave on its filesystem.
    pub disk_reserve: DiskReserve,
    /// Percent of memory in use below which swap may shrink, after `calm_period`.
    pub shrink_threshold: u8,
    pub calm_period: Duration,
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

impl Default for Config {
    /// The seed's values (`../shared/seeds/000_*`), except `swap.dir`: a system service keeps its
    /// files under its state directory rather than in a home directory.
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            sample_interval: Duration::from_secs(5),
            control_socket: SocketSetting::Auto,
            swap: SwapConfig {
                dir: PathBuf::from("/var/lib/cluster-ai/swap"),
                min_size: 2 << 30,
                max_size: 16 << 30,
                increment: 1 << 30,
                memory_threshold: 80,
                check_interval: Duration::from_secs(30),
                disk_reserve: DiskReserve::Percent(10),
                shrink_threshold: 60,
                calm_period: Duration::from_secs(300),
            },
            kernel: KernelConfig { tune: false },
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
    }

    /// Parses and validates config text; on failure, every problem found (not only the first).
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            vec![Problem::at(text, offset, key_at(text, offset), e.message().to_string())]
        })?;
        raw.validate(text)
    }

    /// Every setting as `key = value`, in file order: for logs of what a reload changed.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let s = &self.swap;
        vec![
            ("log_level", self.log_level.as_str().to_string()),
            ("sample_interval", format_duration(self.sample_interval)),
            (
                "control_socket",
                match &self.control_socket {
                    SocketSetting::Auto => "auto".to_string(),
                    SocketSetting::Path(p) => p.display().to_string(),
                },
            ),
            ("swap.dir", s.dir.display().to_string()),
            ("swap.min_size", format_size(s.min_size)),
            ("swap.max_size", format_size(s.max_size)),
            ("swap.increment", format_size(s.increment)),
            ("swap.memory_threshold", s.memory_threshold.to_string()),
            ("swap.check_interval", format_duration(s.check_interval)),
            ("swap.disk_reserve", s.disk_reserve.to_string()),
            ("swap.shrink_threshold", s.shrink_threshold.to_string()),
            ("swap.calm_period", format_duration(s.calm_period)),
            ("kernel.tune", self.kernel.tune.to_string()),
        ]
    }

    /// The settings that differ from `old`, as `key: old -> new`.
    pub fn changes_from(&self, old: &Config) -> Vec<String> {
        old.entries()
            .into_iter()
            .zip(self.entries())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((key, was), (_, now))| format!("{key}: {was} -> {now}"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render(path: &Path, problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{}:{p}", path.display())).collect::<Vec<_>>().join("\n")
}

/// One thing wrong with a config file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}: {}", self.line, self.column, self.key, self.message)
    }
}

impl Problem {
    fn at(text: &str, offset: usize, key: String, message: String) -> Self {
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Problem { line, column, key, message }
    }
}

/// The dotted key at `offset`, from the table header above it and the `key =` on its line.
fn key_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let header = |l: &str| l.trim().trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
    if line.starts_with('[') {
        return header(line);
    }
    let table = text[..line_start].lines().rev().find(|l| l.trim_start().starts_with('[')).map(header).unwrap_or_default();
    let key = line.split_once('=').map_or("", |(k, _)| k.trim().trim_matches('"'));
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(file)".into(),
        (true, false) => key.into(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    log_level: Option<Spanned<String>>,
    sample_interval: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    #[serde(default)]
    swap: RawSwap,
    #[serde(default)]
    kernel: RawKernel,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    tune: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSwap {
    dir: Option<Spanned<String>>,
    min_size: Option<Spanned<String>>,
    max_size: Option<Spanned<String>>,
    increment: Option<Spanned<String>>,
    memory_threshold: Option<Spanned<i64>>,
    check_interval: Option<Spanned<String>>,
    disk_reserve: Option<Spanned<String>>,
    shrink_threshold: Option<Spanned<i64>>,
    calm_period: Option<Spanned<String>>,
}

/// Collects problems while turning raw values into settings.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// The parsed value (or the default, when absent or invalid) and where it was written.
    fn field<R, T>(
        &mut self,
        key: &str,
        raw: Option<Spanned<R>>,
        default: T,
        parse: impl FnOnce(&R) -> Result<T, String>,
    ) -> (T, Option<Range<usize>>) {
        let Some(raw) = raw else {
            return (default, None);
        };
        let span = raw.span();
        match parse(raw.get_ref()) {
            Ok(v) => (v, Some(span)),
            Err(message) => {
                self.report(Some(span), key, message);
                (default, None)
            }
        }
    }

    fn report(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let offset = span.map_or(0, |s| s.start);
        self.problems.push(Problem::at(self.text, offset, key.to_string(), message));
    }
}

fn duration_between(min: Duration, max: Duration) -> impl FnOnce(&String) -> Result<Duration, String> {
    move |s| {
        let d = parse_duration(s)?;
        if d < min || d > max {
            return Err(format!("{s:?} is out of range; expected between {} and {}", format_duration(min), format_duration(max)));
        }
        Ok(d)
    }
}

fn percent_between(min: u8, max: u8) -> impl FnOnce(&i64) -> Result<u8, String> {
    move |v| {
        u8::try_from(*v)
            .ok()
            .filter(|p| (min..=max).contains(p))
            .ok_or_else(|| format!("{v} is out of range; expected a percentage from {min} to {max}"))
    }
}

fn absolute_path(s: &String) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if !p.is_absolute() || p == Path::new("/") {
        return Err(format!("{s:?} is not an absolute path below /; expected e.g. \"/var/lib/cluster-ai/swap\""));
    }
    Ok(p)
}

impl RawConfig {
    fn validate(self, text: &str) -> Result<Config, Vec<Problem>> {
        let d = Config::default();
        let mut c = Checker { text, problems: Vec::new() };
        let (log_level, _) = c.field("log_level", self.log_level, d.log_level, |s| {
            Ok(match s.as_str() {
                "error" => LogLevel::Error,
                "warn" => LogLevel::Warn,
                "info" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                _ => return Err(format!("{s:?} is not a level; expected one of error, warn, info, debug, trace")),
            })
        });
        let (sample_interval, _) = c.field(
            "sample_interval",
            self.sample_interval,
            d.sample_interval,
            duration_between(Duration::from_secs(1), Duration::from_secs(3600)),
        );
        let (control_socket, _) = c.field("control_socket", self.control_socket, d.control_socket, |s| {
            if s == "auto" {
                Ok(SocketSetting::Auto)
            } else {
                absolute_path(s).map(SocketSetting::Path).map_err(|_| format!("{s:?} is neither \"auto\" nor an absolute path"))
            }
        });

        let r = self.swap;
        let ds = d.swap;
        let (dir, _) = c.field("swap.dir", r.dir, ds.dir, absolute_path);
        let size = |s: &String| parse_size(s);
        let (min_size, _) = c.field("swap.min_size", r.min_size, ds.min_size, size);
        let (max_size, max_span) = c.field("swap.max_size", r.max_size, ds.max_size, size);
        let (increment, inc_span) = c.field("swap.increment", r.increment, ds.increment, |s| {
            let v = parse_size(s)?;
            if v < 1 << 20 {
                return Err(format!("{s:?} is too small; expected at least 1M"));
            }
            Ok(v)
        });
        let (memory_threshold, _) = c.field("swap.memory_threshold", r.memory_threshold, ds.memory_threshold, percent_between(1, 99));
        let (check_interval, _) = c.field(
            "swap.check_interval",
            r.check_interval,
            ds.check_interval,
            duration_between(Duration::from_secs(1), Duration::from_secs(3600)),
        );
        let (disk_reserve, _) = c.field("swap.disk_reserve", r.disk_reserve, ds.disk_reserve, |s| match s.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 90)
                .map(DiskReserve::Percent)
                .ok_or_else(|| format!("{s:?} is not a percentage from 0% to 90%")),
            None => parse_size(s).map(DiskReserve::Bytes).map_err(|e| format!("{e}, or a percentage of the filesystem such as \"10%\"")),
        });
        let (shrink_threshold, shrink_span) =
            c.field("swap.shrink_threshold", r.shrink_threshold, ds.shrink_threshold, percent_between(1, 98));
        let (calm_period, _) = c.field(
            "swap.calm_period",
            r.calm_period,
            ds.calm_period,
            duration_between(Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        );
        let (tune, _) = c.field("kernel.tune", self.kernel.tune, d.kernel.tune, |b| Ok(*b));
        if shrink_threshold >= memory_threshold {
            c.report(
                shrink_span,
                "swap.shrink_threshold",
                format!(
                    "{shrink_threshold} is not below swap.memory_threshold {memory_threshold}; expected shrink_threshold < memory_threshold"
                ),
            );
        }
        if max_size < min_size {
            c.report(
                max_span,
                "swap.max_size",
                format!("{} is below swap.min_size {}; expected max_size >= min_size", format_size(max_size), format_size(min_size)),
            );
        }
        if increment > max_size {
            c.report(
                inc_span,
                "swap.increment",
                format!("{} is above swap.max_size {}; expected increment <= max_size", format_size(increment), format_size(max_size)),
            );
        }

        if !c.problems.is_empty() {
            // In file order, as a reader fixes them.
            c.problems.sort_by_key(|p| (p.line, p.column));
            return Err(c.problems);
        }
        Ok(Config {
            log_level,
            sample_interval,
            control_socket,
            swap: SwapConfig {
                dir,
                min_size,
                max_size,
                increment,
                memory_threshold,
                check_interval,
                disk_reserve,
                shrink_threshold,
                calm_period,
            },
            kernel: KernelConfig { tune },
        })
    }
}

#[cfg(test)]
mod tests;
