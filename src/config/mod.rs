//! The configuration file: a raw serde layer that keeps every value's position, validated into
//! a [`Config`] with no `Option`s. Every error names `PATH:LINE:COL: key: what is wrong`.

mod alerts;
mod health;
mod units;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use alerts::{AlertsConfig, SmtpSecurity};
pub use health::{HealthConfig, Probe, RestartPolicy, ServiceConfig};
pub use units::{format_duration, format_size, human_size, parse_duration, parse_size};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: LogLevel,
    pub sample_interval: Duration,
    pub control_socket: SocketSetting,
    pub swap: SwapConfig,
    pub kernel: KernelConfig,
    pub optimize: OptimizeConfig,
    pub emergency: EmergencyConfig,
    pub health: HealthConfig,
    pub alerts: AlertsConfig,
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (`None`: not served). Loopback by default: the numbers say
    /// what runs on this node and how full it is.
    pub listen: Option<std::net::SocketAddr>,
}

/// The port `/metrics` is served on by default (127.0.0.1 only).
pub const METRICS_PORT: u16 = 9464;

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], METRICS_PORT))) }
    }
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

/// What `cluster-ai optimize` computes for this hardware; each value is `None` ("auto": from
/// the hardware profile) or pinned by the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeConfig {
    /// Write the env files (and, once built, restart the units whose file changed) without
    /// being asked; off: only `cluster-ai optimize` writes them.
    pub apply: bool,
    /// Where the env files go, one per service: `dask-worker.env`, `ollama.env`.
    pub env_dir: PathBuf,
    pub dask_workers: Option<u32>,
    pub dask_threads_per_worker: Option<u32>,
    pub dask_memory_limit: Option<u64>,
    pub ollama_num_parallel: Option<u32>,
    pub ollama_max_loaded_models: Option<u32>,
    pub ollama_gpu_layers: Option<u32>,
    /// The units that read `dask-worker.env` and `ollama.env`: restarted (with `apply`) when
    /// their file changes; the Dask one also brings retired workers back. `None`: not managed.
    pub dask_worker_unit: Option<String>,
    pub ollama_unit: Option<String>,
}

impl OptimizeConfig {
    fn entries(&self) -> Vec<(&'static str, String)> {
        let auto = |v: Option<u32>| v.map_or("auto".to_string(), |n| n.to_string());
        vec![
            ("optimize.apply", self.apply.to_string()),
            ("optimize.env_dir", self.env_dir.display().to_string()),
            ("optimize.dask_workers", auto(self.dask_workers)),
            ("optimize.dask_threads_per_worker", auto(self.dask_threads_per_worker)),
            ("optimize.dask_memory_limit", self.dask_memory_limit.map_or("auto".to_string(), format_size)),
            ("optimize.ollama_num_parallel", auto(self.ollama_num_parallel)),
            ("optimize.ollama_max_loaded_models", auto(self.ollama_max_loaded_models)),
            ("optimize.ollama_gpu_layers", auto(self.ollama_gpu_layers)),
            ("optimize.dask_worker_unit", self.dask_worker_unit.clone().unwrap_or_default()),
            ("optimize.ollama_unit", self.ollama_unit.clone().unwrap_or_default()),
        ]
    }
}

/// The emergency measures (`[emergency]`): what the optimize task does when CPU, memory or
/// disk stays over its threshold, and what it is allowed to touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyConfig {
    /// Off: the measures are decided and logged ("would retire …"), nothing is done.
    pub act: bool,
    pub cpu_threshold: u8,
    pub cpu_sustain: Duration,
    pub memory_threshold: u8,
    pub memory_sustain: Duration,
    pub disk_threshold: u8,
    pub disk_sustain: Duration,
    /// Points below a threshold that count as clear (no flapping around the line).
    pub hysteresis: u8,
    /// Clear this long: what can be undone is undone.
    pub calm_period: Duration,
    /// The least time between two actions of one measure.
    pub min_interval: Duration,
    /// The Dask scheduler's HTTP address (its dashboard port); `None`: no Dask measures.
    pub dask_scheduler: Option<String>,
    pub dask_min_workers: u32,
    /// Units whose CPU weight is raised while CPU is over its threshold.
    pub critical_units: Vec<String>,
    pub critical_cpu_weight: u64,
    pub ollama: Option<String>,
    /// Ollama models never unloaded (earlyoom's `--avoid`): "llama3" keeps every tag of it,
    /// "llama3:8b" that tag only.
    pub keep_models: Vec<String>,
    pub drop_page_cache: bool,
    /// `journalctl --vacuum-size` to this; `None`: off.
    pub journal_vacuum_size: Option<u64>,
    pub pip_cache_dirs: Vec<PathBuf>,
    pub docker_prune: bool,
    pub docker_socket: PathBuf,
    pub temp_dirs: Vec<PathBuf>,
    pub temp_max_age: Duration,
}

impl EmergencyConfig {
    fn entries(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let list = |v: Vec<String>| format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "));
        let paths = |v: &[PathBuf]| list(v.iter().map(|p| p.display().to_string()).collect());
        vec![
            ("emergency.act", self.act.to_string()),
            ("emergency.cpu_threshold", self.cpu_threshold.to_string()),
            ("emergency.cpu_sustain", format_duration(self.cpu_sustain)),
            ("emergency.memory_threshold", self.memory_threshold.to_string()),
            ("emergency.memory_sustain", format_duration(self.memory_sustain)),
            ("emergency.disk_threshold", self.disk_threshold.to_string()),
            ("emergency.disk_sustain", format_duration(self.disk_sustain)),
            ("emergency.hysteresis", self.hysteresis.to_string()),
            ("emergency.calm_period", format_duration(self.calm_period)),
            ("emergency.min_interval", format_duration(self.min_interval)),
            ("emergency.dask_scheduler", opt(&self.dask_scheduler)),
            ("emergency.dask_min_workers", self.dask_min_workers.to_string()),
            ("emergency.critical_units", list(self.critical_units.clone())),
            ("emergency.critical_cpu_weight", self.critical_cpu_weight.to_string()),
            ("emergency.ollama", opt(&self.ollama)),
            ("emergency.keep_models", list(self.keep_models.clone())),
            ("emergency.drop_page_cache", self.drop_page_cache.to_string()),
            ("emergency.journal_vacuum_size", self.journal_vacuum_size.map_or("off".into(), format_size)),
            ("emergency.pip_cache_dirs", paths(&self.pip_cache_dirs)),
            ("emergency.docker_prune", self.docker_prune.to_string()),
            ("emergency.docker_socket", self.docker_socket.display().to_string()),
            ("emergency.temp_dirs", paths(&self.temp_dirs)),
            ("emergency.temp_max_age", format_duration(self.temp_max_age)),
        ]
    }
}

/// A config file is a few KiB; anything near this is a mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl SwapConfig {
    fn entries(&self) -> Vec<(&'static str, String)> {
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
        ]
    }
}

impl KernelConfig {
    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![("kernel.tune", self.tune.to_string())]
    }
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
            optimize: OptimizeConfig {
                apply: false,
                env_dir: PathBuf::from("/etc/cluster-ai/env"),
                dask_workers: None,
                dask_threads_per_worker: None,
                dask_memory_limit: None,
                ollama_num_parallel: None,
                ollama_max_loaded_models: None,
                ollama_gpu_layers: None,
                dask_worker_unit: Some("dask-worker.service".into()),
                ollama_unit: Some("ollama.service".into()),
            },
            emergency: EmergencyConfig {
                act: true,
                cpu_threshold: 90,
                cpu_sustain: Duration::from_secs(30),
                memory_threshold: 85,
                memory_sustain: Duration::from_secs(10),
                disk_threshold: 90,
                disk_sustain: Duration::from_secs(60),
                hysteresis: 5,
                calm_period: Duration::from_secs(300),
                min_interval: Duration::from_secs(60),
                dask_scheduler: Some("http://127.0.0.1:8787".into()),
                dask_min_workers: 1,
                critical_units: Vec::new(),
                critical_cpu_weight: 1000,
                ollama: Some("http://127.0.0.1:11434".into()),
                keep_models: Vec::new(),
                drop_page_cache: false,
                journal_vacuum_size: None,
                pip_cache_dirs: Vec::new(),
                docker_prune: false,
                docker_socket: PathBuf::from("/var/run/docker.sock"),
                temp_dirs: Vec::new(),
                temp_max_age: Duration::from_secs(7 * 86400),
            },
            health: HealthConfig::default(),
            alerts: AlertsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates `path`: a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO, a
    /// device or a huge file is refused rather than read), in UTF-8.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::sys::fs::read_regular_file(path, MAX_CONFIG_BYTES).map_err(|source| {
            let source = if source.kind() == std::io::ErrorKind::FileTooLarge {
                std::io::Error::new(source.kind(), format!("{source}; a config file is a few KiB"))
            } else {
                source
            };
            ConfigError::Read { path: path.to_path_buf(), source }
        })?;
        let invalid = |problems| ConfigError::Invalid { path: path.to_path_buf(), problems };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let offset = e.valid_up_to();
            let message = format!("byte 0x{:02x} is not UTF-8; save the file as UTF-8", bytes[offset]);
            invalid(vec![Problem::at(valid, offset, key_at(valid, offset), message)])
        })?;
        Self::parse(text).map_err(invalid)
    }

    /// Parses and validates config text; on failure, every problem found (not only the first).
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            vec![Problem::at(text, offset, key_at(text, offset), friendly(e.message()))]
        })?;
        raw.validate(text)
    }

    /// Every setting as `key = value`, in file order: for logs of what a reload changed. A
    /// test checks that it lists every key the file accepts. The values are raw: the URLs of
    /// [`alerts::SECRET_URLS`] are shown only through [`Config::changes_from`].
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("log_level", self.log_level.as_str().to_string()),
            ("sample_interval", format_duration(self.sample_interval)),
            (
                "control_socket",
                match &self.control_socket {
                    SocketSetting::Auto => "auto".to_string(),
                    SocketSetting::Path(p) => p.display().to_string(),
                },
            ),
        ];
        out.extend(self.swap.entries());
        out.extend(self.kernel.entries());
        out.extend(self.optimize.entries());
        out.extend(self.emergency.entries());
        out.extend(self.health.entries());
        out.extend(self.alerts.entries());
        out.push(("metrics.listen", self.metrics.listen.map(|a| a.to_string()).unwrap_or_default()));
        out
    }

    /// The settings that differ from `old`, as `key: old -> new`.
    pub fn changes_from(&self, old: &Config) -> Vec<String> {
        old.entries()
            .into_iter()
            .zip(self.entries())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((key, was), (_, now))| {
                if !alerts::SECRET_URLS.contains(&key) {
                    return format!("{key}: {was} -> {now}");
                }
                let (was, now) = (crate::sys::redact::url(&was), crate::sys::redact::url(&now));
                if was == now {
                    // Only the hidden part (a webhook's token) changed: say so, not what to.
                    format!("{key}: {now} (changed; the rest is not shown)")
                } else {
                    format!("{key}: {was} -> {now}")
                }
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}{}", path.display(), unreadable_fix(source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// The package installs the config 0640 root:root (it may hold the webhook's token), so a user
/// who runs a command without root is told why and what to do.
fn unreadable_fix(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (it is readable by root alone, as it may hold the alert webhook's token: run this with sudo)"
    } else {
        ""
    }
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

/// A problem's key and message are cut (with `…`) at these many characters.
const MAX_KEY_CHARS: usize = 200;
const MAX_MESSAGE_CHARS: usize = 1000;

impl Problem {
    /// One problem at byte `offset`, always on one line.
    fn at(text: &str, offset: usize, key: String, message: String) -> Self {
        let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        let before = text_before(text, offset);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        // One line each, bounded: a key or a value may be as long as the file and hold any
        // character (a quoted key's "\u001b"), and a problem goes to the journal, to `status`
        // and to the terminal of `config check`.
        Problem { line, column, key: crate::sys::one_line(&key, MAX_KEY_CHARS), message: crate::sys::one_line(&message, MAX_MESSAGE_CHARS) }
    }
}

/// The text before byte `offset`, up to the start of the character the offset falls in (an
/// offset inside a multi-byte character, or past the end, still names a place in the text).
fn text_before(text: &str, offset: usize) -> &str {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    &text[..at]
}

/// The dotted key at `offset`, from the table header above it and the `key =` on its line.
fn key_at(text: &str, offset: usize) -> String {
    let before = text_before(text, offset);
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

/// Values are read as TOML values and turned into settings by the checks below, so a wrong
/// type is explained in the same words as a wrong value ("a size such as …, found a number").
type Raw = Option<Spanned<toml::Value>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    log_level: Raw,
    sample_interval: Raw,
    control_socket: Raw,
    #[serde(default)]
    swap: RawSwap,
    #[serde(default)]
    kernel: RawKernel,
    #[serde(default)]
    optimize: RawOptimize,
    #[serde(default)]
    emergency: RawEmergency,
    #[serde(default)]
    health: health::RawHealth,
    #[serde(default)]
    alerts: alerts::RawAlerts,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEmergency {
    act: Raw,
    cpu_threshold: Raw,
    cpu_sustain: Raw,
    memory_threshold: Raw,
    memory_sustain: Raw,
    disk_threshold: Raw,
    disk_sustain: Raw,
    hysteresis: Raw,
    calm_period: Raw,
    min_interval: Raw,
    dask_scheduler: Raw,
    dask_min_workers: Raw,
    critical_units: Raw,
    critical_cpu_weight: Raw,
    ollama: Raw,
    keep_models: Raw,
    drop_page_cache: Raw,
    journal_vacuum_size: Raw,
    pip_cache_dirs: Raw,
    docker_prune: Raw,
    docker_socket: Raw,
    temp_dirs: Raw,
    temp_max_age: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOptimize {
    apply: Raw,
    env_dir: Raw,
    dask_workers: Raw,
    dask_threads_per_worker: Raw,
    dask_memory_limit: Raw,
    ollama_num_parallel: Raw,
    ollama_max_loaded_models: Raw,
    ollama_gpu_layers: Raw,
    dask_worker_unit: Raw,
    ollama_unit: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    tune: Raw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSwap {
    dir: Raw,
    min_size: Raw,
    max_size: Raw,
    increment: Raw,
    memory_threshold: Raw,
    check_interval: Raw,
    disk_reserve: Raw,
    shrink_threshold: Raw,
    calm_period: Raw,
}

/// What a TOML value is, in a user's words.
fn kind(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the text {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn as_text<'v>(v: &'v toml::Value, expected: &str) -> Result<&'v str, String> {
    v.as_str().ok_or_else(|| format!("expected {expected}, found {}", kind(v)))
}

const SIZE: &str = "a size such as \"2G\", \"1.5G\", \"512M\" or a number of bytes";

fn size(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative; expected {SIZE}")),
        toml::Value::String(s) => parse_size(s),
        other => Err(format!("expected {SIZE}, found {}", kind(other))),
    }
}

fn duration_between(min: Duration, max: Duration) -> impl FnOnce(&toml::Value) -> Result<Duration, String> {
    move |v| {
        let s = as_text(v, "a duration such as \"30s\" or \"5m\" (with its unit)")?;
        let d = parse_duration(s)?;
        if d < min || d > max {
            return Err(format!("{s:?} is out of range; expected between {} and {}", format_duration(min), format_duration(max)));
        }
        Ok(d)
    }
}

/// A percentage as a number (`80`) or as text with a sign (`"80%"`), the same for every key.
fn percent_between(min: u8, max: u8) -> impl FnOnce(&toml::Value) -> Result<u8, String> {
    move |v| {
        let expected = format!("a percentage from {min} to {max}, such as {max_eg} or \"{max_eg}%\"", max_eg = max.min(80));
        let n: i64 = match v {
            toml::Value::Integer(n) => *n,
            toml::Value::String(s) => {
                s.trim().strip_suffix('%').and_then(|p| p.trim().parse().ok()).ok_or_else(|| format!("{s:?} is not {expected}"))?
            }
            other => return Err(format!("expected {expected}, found {}", kind(other))),
        };
        u8::try_from(n).ok().filter(|p| (min..=max).contains(p)).ok_or_else(|| format!("{n} is out of range; expected {expected}"))
    }
}

fn absolute_path(v: &toml::Value) -> Result<PathBuf, String> {
    let s = as_text(v, "a path in quotes such as \"/var/lib/cluster-ai/swap\"")?;
    let p = PathBuf::from(s);
    if !p.is_absolute() || p == Path::new("/") {
        return Err(format!("{s:?} is not an absolute path below /; expected e.g. \"/var/lib/cluster-ai/swap\""));
    }
    Ok(p)
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("expected true or false, found {}", kind(v)))
}

/// serde's "unknown field" in our words, with the nearest known key.
fn friendly(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_string() };
    let Some((unknown, rest)) = rest.split_once('`') else { return message.to_string() };
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    // The distance is at least the difference in length: a key far longer than every known
    // one (a line of a megabyte) is no typo, and measuring it would cost seconds.
    let length = unknown.chars().count();
    let reach = |k: &str| 2.max(k.len() / 3);
    let nearest = known
        .iter()
        .filter(|k| length.abs_diff(k.len()) <= reach(k))
        .map(|k| (edit_distance(unknown, k), *k))
        .min()
        .filter(|(d, k)| *d <= reach(k));
    match nearest {
        Some((_, k)) => format!("unknown key `{unknown}`; did you mean `{k}`?"),
        None => format!("unknown key `{unknown}`; the keys here are {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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

impl RawConfig {
    fn validate(self, text: &str) -> Result<Config, Vec<Problem>> {
        let d = Config::default();
        let mut c = Checker { text, problems: Vec::new() };
        let (log_level, _) = c.field("log_level", self.log_level, d.log_level, |v| {
            let s = as_text(v, "a level in quotes such as \"info\"")?;
            Ok(match s {
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
        let (control_socket, _) = c.field("control_socket", self.control_socket, d.control_socket, |v| {
            let s = as_text(v, "\"auto\" or an absolute path")?;
            if s == "auto" {
                Ok(SocketSetting::Auto)
            } else {
                absolute_path(v).map(SocketSetting::Path).map_err(|_| format!("{s:?} is neither \"auto\" nor an absolute path"))
            }
        });
        let swap = self.swap.validate(&mut c, d.swap);
        let kernel = self.kernel.validate(&mut c, d.kernel);
        let optimize = self.optimize.validate(&mut c, d.optimize);
        let emergency = self.emergency.validate(&mut c, d.emergency);
        let health = self.health.validate(&mut c, d.health);
        let alerts = self.alerts.validate(&mut c, d.alerts);
        let (listen, _) = c.field("metrics.listen", self.metrics.listen, d.metrics.listen, |v| {
            let s = as_text(v, "an address such as \"127.0.0.1:9464\", or \"\" for no /metrics")?;
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<std::net::SocketAddr>()
                .map(Some)
                .map_err(|_| format!("{s:?} is not ip:port; expected e.g. \"127.0.0.1:9464\" (or \"0.0.0.0:9464\" for a Prometheus server elsewhere), or \"\""))
        });
        let metrics = MetricsConfig { listen };
        if !c.problems.is_empty() {
            // In file order, as a reader fixes them.
            c.problems.sort_by_key(|p| (p.line, p.column));
            return Err(c.problems);
        }
        Ok(Config { log_level, sample_interval, control_socket, swap, kernel, optimize, emergency, health, alerts, metrics })
    }
}

impl RawKernel {
    fn validate(self, c: &mut Checker<'_>, d: KernelConfig) -> KernelConfig {
        let (tune, _) = c.field("kernel.tune", self.tune, d.tune, boolean);
        KernelConfig { tune }
    }
}

/// `"auto"`, or a value `parse` accepts.
fn auto<T>(parse: impl FnOnce(&toml::Value) -> Result<T, String>) -> impl FnOnce(&toml::Value) -> Result<Option<T>, String> {
    move |v| if v.as_str() == Some("auto") { Ok(None) } else { parse(v).map(Some).map_err(|e| format!("{e}; or \"auto\"")) }
}

/// A whole number from `min` to `max`.
fn count_between(min: i64, max: i64) -> impl FnOnce(&toml::Value) -> Result<u32, String> {
    move |v| match v {
        toml::Value::Integer(n) if (min..=max).contains(n) => Ok(*n as u32),
        toml::Value::Integer(n) => Err(format!("{n} is out of range; expected a whole number from {min} to {max}")),
        other => Err(format!("expected a whole number from {min} to {max}, found {}", kind(other))),
    }
}

impl RawOptimize {
    fn validate(self, c: &mut Checker<'_>, d: OptimizeConfig) -> OptimizeConfig {
        let (apply, _) = c.field("optimize.apply", self.apply, d.apply, boolean);
        let (env_dir, _) = c.field("optimize.env_dir", self.env_dir, d.env_dir, absolute_path);
        let (dask_workers, _) = c.field("optimize.dask_workers", self.dask_workers, d.dask_workers, auto(count_between(1, 1024)));
        let (dask_threads_per_worker, _) = c.field(
            "optimize.dask_threads_per_worker",
            self.dask_threads_per_worker,
            d.dask_threads_per_worker,
            auto(count_between(1, 1024)),
        );
        let (dask_memory_limit, _) = c.field(
            "optimize.dask_memory_limit",
            self.dask_memory_limit,
            d.dask_memory_limit,
            auto(|v| {
                let n = size(v)?;
                if n < 64 << 20 {
                    return Err(format!("{} is too small for a Dask worker; expected at least 64M", human_size(n)));
                }
                Ok(n)
            }),
        );
        let (ollama_num_parallel, _) =
            c.field("optimize.ollama_num_parallel", self.ollama_num_parallel, d.ollama_num_parallel, auto(count_between(1, 64)));
        let (ollama_max_loaded_models, _) = c.field(
            "optimize.ollama_max_loaded_models",
            self.ollama_max_loaded_models,
            d.ollama_max_loaded_models,
            auto(count_between(1, 64)),
        );
        let (ollama_gpu_layers, _) =
            c.field("optimize.ollama_gpu_layers", self.ollama_gpu_layers, d.ollama_gpu_layers, auto(count_between(0, 999)));
        let unit = |v: &toml::Value| {
            let s = as_text(v, "a unit name such as \"ollama.service\", or \"\" for none")?;
            if s.is_empty() {
                Ok(None)
            } else {
                unit_name(s).map(Some)
            }
        };
        let (dask_worker_unit, _) = c.field("optimize.dask_worker_unit", self.dask_worker_unit, d.dask_worker_unit, unit);
        let (ollama_unit, _) = c.field("optimize.ollama_unit", self.ollama_unit, d.ollama_unit, unit);
        OptimizeConfig {
            apply,
            env_dir,
            dask_workers,
            dask_threads_per_worker,
            dask_memory_limit,
            ollama_num_parallel,
            ollama_max_loaded_models,
            ollama_gpu_layers,
            dask_worker_unit,
            ollama_unit,
        }
    }
}

impl RawEmergency {
    fn validate(self, c: &mut Checker<'_>, d: EmergencyConfig) -> EmergencyConfig {
        let secs = Duration::from_secs;
        let (act, _) = c.field("emergency.act", self.act, d.act, boolean);
        let (cpu_threshold, _) = c.field("emergency.cpu_threshold", self.cpu_threshold, d.cpu_threshold, percent_between(1, 100));
        let (cpu_sustain, _) = c.field("emergency.cpu_sustain", self.cpu_sustain, d.cpu_sustain, duration_between(secs(0), secs(3600)));
        let (memory_threshold, _) =
            c.field("emergency.memory_threshold", self.memory_threshold, d.memory_threshold, percent_between(1, 100));
        let (memory_sustain, _) =
            c.field("emergency.memory_sustain", self.memory_sustain, d.memory_sustain, duration_between(secs(0), secs(3600)));
        let (disk_threshold, _) = c.field("emergency.disk_threshold", self.disk_threshold, d.disk_threshold, percent_between(1, 100));
        let (disk_sustain, _) = c.field("emergency.disk_sustain", self.disk_sustain, d.disk_sustain, duration_between(secs(0), secs(3600)));
        let (hysteresis, _) = c.field("emergency.hysteresis", self.hysteresis, d.hysteresis, percent_between(0, 50));
        let (calm_period, _) = c.field("emergency.calm_period", self.calm_period, d.calm_period, duration_between(secs(0), secs(86400)));
        let (min_interval, _) =
            c.field("emergency.min_interval", self.min_interval, d.min_interval, duration_between(secs(1), secs(86400)));
        let (dask_scheduler, _) = c.field("emergency.dask_scheduler", self.dask_scheduler, d.dask_scheduler, http_url);
        let (dask_min_workers, _) =
            c.field("emergency.dask_min_workers", self.dask_min_workers, d.dask_min_workers, count_between(0, 1024));
        let (critical_units, _) = c.field("emergency.critical_units", self.critical_units, d.critical_units, |v| {
            list_of(v, "a list of unit names such as [\"ollama.service\"]", unit_name)
        });
        let (critical_cpu_weight, _) = c.field("emergency.critical_cpu_weight", self.critical_cpu_weight, d.critical_cpu_weight, |v| {
            count_between(1, 10000)(v).map(u64::from)
        });
        let (ollama, _) = c.field("emergency.ollama", self.ollama, d.ollama, http_url);
        let (keep_models, _) = c.field("emergency.keep_models", self.keep_models, d.keep_models, |v| {
            list_of(v, "a list of Ollama model names such as [\"llama3:8b\"]", model_name)
        });
        let (drop_page_cache, _) = c.field("emergency.drop_page_cache", self.drop_page_cache, d.drop_page_cache, boolean);
        let (journal_vacuum_size, _) = c.field("emergency.journal_vacuum_size", self.journal_vacuum_size, d.journal_vacuum_size, |v| {
            if v.as_str() == Some("off") {
                return Ok(None);
            }
            size(v).map(Some).map_err(|e| format!("{e}; or \"off\""))
        });
        let dirs = |v: &toml::Value| {
            list_of(v, "a list of absolute paths such as [\"/root/.cache/pip\"]", |s| absolute_path(&toml::Value::String(s.to_string())))
        };
        let (pip_cache_dirs, _) = c.field("emergency.pip_cache_dirs", self.pip_cache_dirs, d.pip_cache_dirs, dirs);
        let (docker_prune, _) = c.field("emergency.docker_prune", self.docker_prune, d.docker_prune, boolean);
        let (docker_socket, _) = c.field("emergency.docker_socket", self.docker_socket, d.docker_socket, absolute_path);
        let (temp_dirs, _) = c.field("emergency.temp_dirs", self.temp_dirs, d.temp_dirs, dirs);
        let (temp_max_age, _) =
            c.field("emergency.temp_max_age", self.temp_max_age, d.temp_max_age, duration_between(secs(60), secs(3650 * 86400)));
        EmergencyConfig {
            act,
            cpu_threshold,
            cpu_sustain,
            memory_threshold,
            memory_sustain,
            disk_threshold,
            disk_sustain,
            hysteresis,
            calm_period,
            min_interval,
            dask_scheduler,
            dask_min_workers,
            critical_units,
            critical_cpu_weight,
            ollama,
            keep_models,
            drop_page_cache,
            journal_vacuum_size,
            pip_cache_dirs,
            docker_prune,
            docker_socket,
            temp_dirs,
            temp_max_age,
        }
    }
}

/// An `http://host:port` (or `https://`) URL, or `""` for "no such service here".
fn http_url(v: &toml::Value) -> Result<Option<String>, String> {
    let s = as_text(v, "an http:// or https:// URL such as \"http://127.0.0.1:8787\", or \"\" for none")?;
    if s.is_empty() {
        return Ok(None);
    }
    // The error quotes the URL back, and a webhook's URL is its secret: shown redacted.
    crate::sys::http::Endpoint::parse_url(s)
        .map_err(|e| format!("{}; expected e.g. \"http://127.0.0.1:8787\", or \"\" for none", crate::sys::redact::in_text(&e, s)))?;
    Ok(Some(s.trim_end_matches('/').to_string()))
}

/// A systemd unit name with its type, such as `ollama.service`.
fn unit_name(s: &str) -> Result<String, String> {
    let valid = s.len() <= 256
        && s.rsplit_once('.').is_some_and(|(n, t)| !n.is_empty() && ["service", "scope", "slice"].contains(&t))
        && s.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a unit name; expected e.g. \"ollama.service\" (a .service, .scope or .slice)"))
    }
}

fn model_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not an Ollama model name; expected e.g. \"llama3:8b\", or \"llama3\" for every tag"));
    }
    Ok(s.to_string())
}

/// A TOML array of strings, each checked by `item`.
fn list_of<T>(v: &toml::Value, expected: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let toml::Value::Array(items) = v else { return Err(format!("expected {expected}, found {}", kind(v))) };
    items.iter().map(|i| item(as_text(i, expected)?)).collect()
}

impl RawSwap {
    fn validate(self, c: &mut Checker<'_>, d: SwapConfig) -> SwapConfig {
        let (dir, _) = c.field("swap.dir", self.dir, d.dir, absolute_path);
        let (min_size, _) = c.field("swap.min_size", self.min_size, d.min_size, size);
        let (max_size, max_span) = c.field("swap.max_size", self.max_size, d.max_size, size);
        let (increment, inc_span) = c.field("swap.increment", self.increment, d.increment, |v| {
            let n = size(v)?;
            if n < 1 << 20 {
                return Err(format!("{} is too small; expected at least 1M", human_size(n)));
            }
            Ok(n)
        });
        let (memory_threshold, _) = c.field("swap.memory_threshold", self.memory_threshold, d.memory_threshold, percent_between(1, 99));
        let (check_interval, _) = c.field(
            "swap.check_interval",
            self.check_interval,
            d.check_interval,
            duration_between(Duration::from_secs(1), Duration::from_secs(3600)),
        );
        let (disk_reserve, _) = c.field("swap.disk_reserve", self.disk_reserve, d.disk_reserve, |v| match v {
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
        let (shrink_threshold, shrink_span) =
            c.field("swap.shrink_threshold", self.shrink_threshold, d.shrink_threshold, percent_between(1, 98));
        let (calm_period, _) = c.field(
            "swap.calm_period",
            self.calm_period,
            d.calm_period,
            duration_between(Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        );
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
        SwapConfig { dir, min_size, max_size, increment, memory_threshold, check_interval, disk_reserve, shrink_threshold, calm_period }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
