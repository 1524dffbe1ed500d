//! The configuration: the main file (`/etc/cluster-ai/config.toml`) and its drop-ins
//! (`config.d/*.toml` beside it, in lexical order), merged key by key and validated into a
//! [`Config`] with no `Option`s. Every error names `PATH:LINE:COL: key: what is wrong`, and every
//! problem of every file is reported at once.
//!
//! One file per table (`swap.rs` also holds `[kernel]`); each lists its keys once, in a
//! `KEYS` table of [`KeyDoc`]s (name, default, one line of doc) that parsing, the unknown-key
//! check, [`keys`] (for the man page), `config show` and the documented example's test read.
//! `check.rs` holds the value parsers, `layers.rs` the files and their merge.

mod alerts;
mod check;
mod emergency;
mod health;
mod layers;
mod metrics;
mod optimize;
mod swap;
mod units;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use alerts::{AlertsConfig, SmtpSecurity};
pub use emergency::EmergencyConfig;
pub use health::{HealthConfig, Probe, RestartPolicy, ServiceConfig, DEFAULT_INTERVAL, DEFAULT_TIMEOUT};
pub use layers::{drop_in_dir, drop_in_files, MAX_DROP_INS};
pub use metrics::{MetricsConfig, METRICS_PORT};
pub use optimize::OptimizeConfig;
pub use swap::{DiskReserve, KernelConfig, SwapConfig};
pub use units::{format_duration, format_size, human_size, parse_duration, parse_size};

use check::{as_text, duration_between, Checker};
use layers::{Layer, Merged};

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

/// A config file is a few KiB; anything near this is a mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One key of the file: its table (`""` for the top level, `"health.service"` for a key of a
/// `[[health.service]]` entry), its name, its default as TOML text (`"2G"` with its quotes,
/// `80`, `[]`; empty text: required, no default) and one line of doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    pub table: &'static str,
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

impl KeyDoc {
    pub(crate) const fn new(table: &'static str, key: &'static str, default: &'static str, doc: &'static str) -> KeyDoc {
        KeyDoc { table, key, default, doc }
    }

    /// The dotted name, such as `swap.min_size` or `log_level`.
    pub fn name(&self) -> String {
        if self.table.is_empty() {
            self.key.to_string()
        } else {
            format!("{}.{}", self.table, self.key)
        }
    }
}

/// The top-level keys.
const TOP_KEYS: &[KeyDoc] = &[
    KeyDoc::new("", "log_level", r#""info""#, "error, warn, info, debug or trace; RUST_LOG, when set, overrides it."),
    KeyDoc::new("", "sample_interval", r#""5s""#, "How often CPU, memory, swap, disk and pressure are read (1s to 1h)."),
    KeyDoc::new(
        "",
        "control_socket",
        r#""auto""#,
        "The control socket: \"auto\" (the runtime directory) or an absolute path; read at start.",
    ),
];

/// Every key the configuration accepts, in the order of the documented example
/// (`packaging/config.toml`): the one list of names, defaults and docs. The man page
/// `cluster-ai.toml(5)` is checked against it.
pub fn keys() -> impl Iterator<Item = &'static KeyDoc> {
    [
        TOP_KEYS,
        swap::KEYS,
        swap::KERNEL_KEYS,
        optimize::KEYS,
        emergency::KEYS,
        health::KEYS,
        health::SERVICE_KEYS,
        alerts::KEYS,
        metrics::KEYS,
    ]
    .into_iter()
    .flatten()
}

/// The [`KeyDoc`] of a dotted name.
pub fn find_key(name: &str) -> Option<&'static KeyDoc> {
    keys().find(|k| {
        let (table, key) = name.rsplit_once('.').unwrap_or(("", name));
        k.table == table && k.key == key
    })
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The key's documented default (or, for a service, the built-in list).
    Default,
    /// A file (`None`: text given to [`Config::parse`]) and the 1-based line.
    File { path: Option<PathBuf>, line: usize },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File { path: Some(p), line } => write!(f, "{}:{line}", p.display()),
            Origin::File { path: None, line } => write!(f, "line {line}"),
        }
    }
}

/// The origin of each setting, by dotted key (a service by `health.service.NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(HashMap<String, Origin>);

impl Origins {
    fn set(&mut self, key: &str, origin: Origin) {
        self.0.insert(key.to_string(), origin);
    }

    /// Where `key` came from; [`Origin::Default`] when no file set it.
    pub fn get(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// A configuration read from its files, with where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: Origins,
    /// The files read, main file first (empty: built-in defaults only).
    pub files: Vec<PathBuf>,
}

impl Default for Config {
    /// The documented defaults ([`keys`]) and the seed's four services. `swap.dir` differs from
    /// the seed's (`../shared/seeds/000_*`): a system service keeps its files under its state
    /// directory rather than in a home directory.
    fn default() -> Self {
        let merged = Merged::new(Vec::new());
        let mut c = Checker::new(&merged);
        Config::validate(&mut c)
    }
}

impl Config {
    /// Reads and validates `path` and the drop-ins of [`drop_in_dir`]`(path)`. Each file is a
    /// regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO, a device or a huge file is
    /// refused rather than read), in UTF-8.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::read(path, true).map(|l| l.config)
    }

    /// As [`Config::load`], with where each value came from. With `require_main` false, a
    /// missing main file is no error: the drop-ins apply over the built-in defaults.
    pub fn read(path: &Path, require_main: bool) -> Result<Loaded, ConfigError> {
        let mut layers = Vec::new();
        match layers::read_layer(path, true) {
            Ok(l) => layers.push(l),
            Err(ConfigError::Read { source, .. }) if !require_main && source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // A drop-in that cannot be read (a directory, a FIFO, not UTF-8) is one problem among
        // the others: every file is still checked, so one run shows everything to fix.
        let mut unread = Vec::new();
        let mut order: Vec<PathBuf> = layers.iter().filter_map(|l| l.path.clone()).collect();
        for file in drop_in_files(&drop_in_dir(path))? {
            order.push(file.clone());
            match layers::read_layer(&file, false) {
                Ok(l) => layers.push(l),
                Err(ConfigError::Invalid { problems, .. }) => {
                    unread.extend(problems.into_iter().map(|p| Problem { file: Some(file.clone()), ..p }));
                }
                Err(ConfigError::Read { source, .. }) => unread.push(Problem {
                    file: Some(file.clone()),
                    line: 1,
                    column: 1,
                    key: "(drop-in)".into(),
                    message: format!(
                        "cannot read it: {source}{}; a drop-in is a regular *.toml file (rename or remove this one)",
                        unreadable_fix(&source)
                    ),
                }),
            }
        }
        let files: Vec<PathBuf> = layers.iter().filter_map(|l| l.path.clone()).collect();
        let merged = Merged::new(layers);
        let mut c = Checker::new(&merged);
        let config = Config::validate(&mut c);
        if !c.problems.is_empty() || !unread.is_empty() {
            let mut problems = unread;
            problems.extend(c.problems);
            let files = order;
            // File by file, in the order they apply, then in file order, as a reader fixes them.
            let rank = |p: &Problem| files.iter().position(|f| Some(f) == p.file.as_ref()).unwrap_or(0);
            problems.sort_by_key(|p| (rank(p), p.line, p.column));
            return Err(ConfigError::Invalid { path: path.to_path_buf(), problems });
        }
        Ok(Loaded { config, origins: c.origins, files })
    }

    /// Parses and validates config text as a main file; on failure, every problem found (not
    /// only the first).
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let merged = Merged::new(vec![Layer { path: None, text: text.to_string(), main: true }]);
        let mut c = Checker::new(&merged);
        let config = Config::validate(&mut c);
        if c.problems.is_empty() {
            Ok(config)
        } else {
            let mut problems = c.problems;
            problems.sort_by_key(|p| (p.line, p.column));
            Err(problems)
        }
    }

    fn validate(c: &mut Checker<'_>) -> Config {
        let (log_level, _) = c.field("log_level", |v| {
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
        let (sample_interval, _) = c.field("sample_interval", duration_between(Duration::from_secs(1), Duration::from_secs(3600)));
        let (control_socket, _) = c.field("control_socket", |v| {
            let s = as_text(v, "\"auto\" or an absolute path")?;
            if s == "auto" {
                Ok(SocketSetting::Auto)
            } else {
                check::absolute_path(v).map(SocketSetting::Path).map_err(|_| format!("{s:?} is neither \"auto\" nor an absolute path"))
            }
        });
        Config {
            log_level,
            sample_interval,
            control_socket,
            swap: SwapConfig::validate(c),
            kernel: KernelConfig::validate(c),
            optimize: OptimizeConfig::validate(c),
            emergency: EmergencyConfig::validate(c),
            health: HealthConfig::validate(c),
            alerts: AlertsConfig::validate(c),
            metrics: MetricsConfig::validate(c),
        }
    }

    /// Every setting as `key = value`, in file order: for logs of what a reload changed and for
    /// `config show`. A test checks that it lists every key of [`keys`] but the per-file
    /// `health.remove_services` and the keys of a service (`health.service` is one line of all
    /// of them). The values are raw: the URLs of [`SECRET_URLS`] are shown only through
    /// [`Config::changes_from`] and [`redacted`].
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
        out.extend(self.metrics.entries());
        out
    }

    /// One line per service, as in [`Config::entries`]: `(name, summary)`.
    pub fn service_summaries(&self) -> Vec<(String, String)> {
        self.health.services.iter().map(|s| (s.name.clone(), s.summary())).collect()
    }

    /// The settings that differ from `old`, as `key: old -> new`.
    pub fn changes_from(&self, old: &Config) -> Vec<String> {
        old.entries()
            .into_iter()
            .zip(self.entries())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((key, was), (_, now))| {
                if !SECRET_URLS.contains(&key) {
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

pub use alerts::SECRET_URLS;

/// `value` as it may be shown: the URLs of [`SECRET_URLS`] without their secret part.
pub fn redacted(key: &str, value: &str) -> String {
    if SECRET_URLS.contains(&key) && !value.is_empty() {
        crate::sys::redact::url(value)
    } else {
        value.to_string()
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
    problems.iter().map(|p| format!("{}:{p}", p.file.as_deref().unwrap_or(path).display())).collect::<Vec<_>>().join("\n")
}

/// One thing wrong with a config file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in (`None`: the text given to [`Config::parse`], or the one file named by
    /// [`ConfigError::Invalid`]'s path).
    pub file: Option<PathBuf>,
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
    pub(crate) fn at(text: &str, offset: usize, key: String, message: String) -> Self {
        let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        let before = text_before(text, offset);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        // One line each, bounded: a key or a value may be as long as the file and hold any
        // character (a quoted key's "\u001b"), and a problem goes to the journal, to `status`
        // and to the terminal of `config check`.
        Problem {
            file: None,
            line,
            column,
            key: crate::sys::one_line(&key, MAX_KEY_CHARS),
            message: crate::sys::one_line(&message, MAX_MESSAGE_CHARS),
        }
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
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
