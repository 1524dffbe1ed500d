//! `[emergency]`: what the optimize task does when CPU, memory or disk stays over its
//! threshold, and what it is allowed to touch.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{absolute_path, boolean, count_between, duration_between, http_url, list_of, percent_between, size, unit_name, Checker};
use super::{format_duration, format_size, KeyDoc};

/// `[emergency]`'s keys: name, default, one line of doc.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new("emergency", "act", "true", "Off: every decision is logged (\"would retire …\"), nothing is done."),
    KeyDoc::new("emergency", "cpu_threshold", "90", "CPU busy (percent 1-100): one of the three conditions of the CPU measures."),
    KeyDoc::new(
        "emergency",
        "cpu_pressure_threshold",
        "20",
        "PSI cpu some avg10 (percent 0-100): the second condition of the CPU measures; 0 = always held.",
    ),
    KeyDoc::new(
        "emergency",
        "critical_probe_slow",
        r#""1s""#,
        "A critical service's probe this slow (or timed out): the third condition of the CPU measures (0s to 1h).",
    ),
    KeyDoc::new("emergency", "cpu_sustain", r#""30s""#, "How long CPU stays over its threshold before a measure (0s to 1h)."),
    KeyDoc::new(
        "emergency",
        "memory_threshold",
        "85",
        "Memory in use (percent 1-100): with a stall or too little headroom, starts the memory measures.",
    ),
    KeyDoc::new(
        "emergency",
        "memory_pressure_threshold",
        "10",
        "PSI memory some avg10 (percent 0-100) that counts as a stall; 0 = always a stall.",
    ),
    KeyDoc::new("emergency", "memory_headroom", r#""1G""#, "MemAvailable below this counts as too little headroom."),
    KeyDoc::new("emergency", "memory_sustain", r#""10s""#, "How long memory stays over its threshold before a measure (0s to 1h)."),
    KeyDoc::new(
        "emergency",
        "disk_threshold",
        "90",
        "Disk use of / and of swap.dir (percent 1-100) that, sustained, starts the disk cleaners.",
    ),
    KeyDoc::new("emergency", "disk_sustain", r#""1m""#, "How long disk use stays over its threshold before a cleaner runs (0s to 1h)."),
    KeyDoc::new("emergency", "hysteresis", "5", "Points below a threshold that count as clear (0-50)."),
    KeyDoc::new("emergency", "calm_period", r#""5m""#, "Clear this long: what can be undone is undone (0s to 1d)."),
    KeyDoc::new("emergency", "min_interval", r#""1m""#, "The least time between two actions of one measure (1s to 1d)."),
    KeyDoc::new(
        "emergency",
        "dask_scheduler",
        r#""http://127.0.0.1:8787""#,
        "The Dask scheduler's HTTP address, for retiring workers; \"\" = no Dask here.",
    ),
    KeyDoc::new("emergency", "dask_min_workers", "1", "Workers never retired below this (0-1024)."),
    KeyDoc::new("emergency", "critical_units", "[]", "Units whose CPUWeight is raised while CPU is over its threshold."),
    KeyDoc::new("emergency", "critical_cpu_weight", "1000", "The CPUWeight given to critical_units (1-10000)."),
    KeyDoc::new("emergency", "ollama", r#""http://127.0.0.1:11434""#, "Ollama's address, for unloading models; \"\" = no Ollama here."),
    KeyDoc::new("emergency", "keep_models", "[]", "Ollama models never unloaded: \"llama3\" keeps every tag, \"llama3:8b\" that tag."),
    KeyDoc::new("emergency", "drop_page_cache", "false", "Memory: also drop the kernel's clean page cache."),
    KeyDoc::new("emergency", "journal_vacuum_size", r#""off""#, "Disk: vacuum journald's archives down to this size; \"off\"."),
    KeyDoc::new("emergency", "pip_cache_dirs", "[]", "Disk: every regular file under these absolute directories is removed."),
    KeyDoc::new("emergency", "docker_prune", "false", "Disk: prune Docker's dangling images and unused build cache."),
    KeyDoc::new("emergency", "docker_socket", r#""/var/run/docker.sock""#, "Docker Engine's API socket."),
    KeyDoc::new(
        "emergency",
        "temp_dirs",
        "[]",
        "Disk: regular files older than temp_max_age under these absolute directories are removed.",
    ),
    KeyDoc::new("emergency", "temp_max_age", r#""7d""#, "The age past which a file of temp_dirs is removed (1m to 3650d)."),
];

/// The emergency measures (`[emergency]`): what the optimize task does when CPU, memory or
/// disk stays over its threshold, and what it is allowed to touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyConfig {
    /// Off: the measures are decided and logged ("would retire …"), nothing is done.
    pub act: bool,
    pub cpu_threshold: u8,
    /// PSI `cpu some avg10`, percent: at or over it, tasks wait for CPU (0: always held).
    pub cpu_pressure_threshold: u8,
    /// A critical service's probe at least this slow (a timed-out one included) is starved.
    pub critical_probe_slow: Duration,
    pub cpu_sustain: Duration,
    pub memory_threshold: u8,
    /// PSI `memory some avg10`, percent: at or over it, the node stalls on memory.
    pub memory_pressure_threshold: u8,
    /// `MemAvailable` below this, in bytes: too little headroom.
    pub memory_headroom: u64,
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
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let list = |v: Vec<String>| format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "));
        let paths = |v: &[PathBuf]| list(v.iter().map(|p| p.display().to_string()).collect());
        vec![
            ("emergency.act", self.act.to_string()),
            ("emergency.cpu_threshold", self.cpu_threshold.to_string()),
            ("emergency.cpu_pressure_threshold", self.cpu_pressure_threshold.to_string()),
            ("emergency.critical_probe_slow", format_duration(self.critical_probe_slow)),
            ("emergency.cpu_sustain", format_duration(self.cpu_sustain)),
            ("emergency.memory_threshold", self.memory_threshold.to_string()),
            ("emergency.memory_pressure_threshold", self.memory_pressure_threshold.to_string()),
            ("emergency.memory_headroom", format_size(self.memory_headroom)),
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

    pub(super) fn validate(c: &mut Checker<'_>) -> EmergencyConfig {
        let secs = Duration::from_secs;
        let dirs = |v: &toml::Value| {
            list_of(v, "a list of absolute paths such as [\"/root/.cache/pip\"]", |s| absolute_path(&toml::Value::String(s.to_string())))
        };
        EmergencyConfig {
            act: c.field("emergency.act", boolean).0,
            cpu_threshold: c.field("emergency.cpu_threshold", percent_between(1, 100)).0,
            cpu_pressure_threshold: c.field("emergency.cpu_pressure_threshold", percent_between(0, 100)).0,
            critical_probe_slow: c.field("emergency.critical_probe_slow", duration_between(secs(0), secs(3600))).0,
            cpu_sustain: c.field("emergency.cpu_sustain", duration_between(secs(0), secs(3600))).0,
            memory_threshold: c.field("emergency.memory_threshold", percent_between(1, 100)).0,
            memory_pressure_threshold: c.field("emergency.memory_pressure_threshold", percent_between(0, 100)).0,
            memory_headroom: c.field("emergency.memory_headroom", size).0,
            memory_sustain: c.field("emergency.memory_sustain", duration_between(secs(0), secs(3600))).0,
            disk_threshold: c.field("emergency.disk_threshold", percent_between(1, 100)).0,
            disk_sustain: c.field("emergency.disk_sustain", duration_between(secs(0), secs(3600))).0,
            hysteresis: c.field("emergency.hysteresis", percent_between(0, 50)).0,
            calm_period: c.field("emergency.calm_period", duration_between(secs(0), secs(86400))).0,
            min_interval: c.field("emergency.min_interval", duration_between(secs(1), secs(86400))).0,
            dask_scheduler: c.field("emergency.dask_scheduler", http_url).0,
            dask_min_workers: c.field("emergency.dask_min_workers", count_between(0, 1024)).0,
            critical_units: c
                .field("emergency.critical_units", |v| list_of(v, "a list of unit names such as [\"ollama.service\"]", unit_name))
                .0,
            critical_cpu_weight: c.field("emergency.critical_cpu_weight", |v| count_between(1, 10000)(v).map(u64::from)).0,
            ollama: c.field("emergency.ollama", http_url).0,
            keep_models: c
                .field("emergency.keep_models", |v| list_of(v, "a list of Ollama model names such as [\"llama3:8b\"]", model_name))
                .0,
            drop_page_cache: c.field("emergency.drop_page_cache", boolean).0,
            journal_vacuum_size: c
                .field("emergency.journal_vacuum_size", |v| {
                    if v.as_str() == Some("off") {
                        return Ok(None);
                    }
                    size(v).map(Some).map_err(|e| format!("{e}; or \"off\""))
                })
                .0,
            pip_cache_dirs: c.field("emergency.pip_cache_dirs", dirs).0,
            docker_prune: c.field("emergency.docker_prune", boolean).0,
            docker_socket: c.field("emergency.docker_socket", absolute_path).0,
            temp_dirs: c.field("emergency.temp_dirs", dirs).0,
            temp_max_age: c.field("emergency.temp_max_age", duration_between(secs(60), secs(3650 * 86400))).0,
        }
    }
}

fn model_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not an Ollama model name; expected e.g. \"llama3:8b\", or \"llama3\" for every tag"));
    }
    Ok(s.to_string())
}
