//! The daemon: a supervisor that owns sd_notify and signals, and the tasks it runs.

pub mod control;
pub mod marker;
pub mod report;
mod supervisor;

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, SocketSetting};

pub use supervisor::{run, run_with, Deps, Sig, Signals};

/// sysexits.h EX_CONFIG: systemd's `RestartPreventExitStatus=78` keeps a bad config from
/// restarting in a loop.
pub const EXIT_CONFIG: u8 = crate::exit::CONFIG;

#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    /// `--config` was given: a missing file is then an error, not "use the defaults".
    pub config_explicit: bool,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
    #[error("task {task} failed: {reason}")]
    TaskFailed { task: &'static str, reason: String },
    #[error("stopped by a second signal before every task had finished")]
    Forced,
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

/// The config at `path` and its drop-ins (`config.d/*.toml` beside it), or, when the default
/// file is simply absent, the drop-ins over the built-in defaults. Returns whether any file was
/// read.
pub fn load_config(path: &Path, explicit: bool) -> Result<(Config, bool), ConfigError> {
    let loaded = Config::read(path, explicit)?;
    Ok((loaded.config, !loaded.files.is_empty()))
}

/// Where the control socket is, for the daemon and the CLI alike.
pub fn socket_path(setting: &SocketSetting) -> Result<PathBuf, String> {
    match setting {
        SocketSetting::Path(p) => Ok(p.clone()),
        SocketSetting::Auto => Ok(crate::sys::paths::runtime_dir()?.join(crate::sys::paths::SOCKET_NAME)),
    }
}

/// Where a one-shot command looks for the daemon: where it listens; for a user on `auto`
/// whose own runtime directory has no socket, the system daemon's socket, so that a user gets
/// "use sudo" rather than "not running" while the root daemon runs.
pub fn client_socket_path(setting: &SocketSetting) -> Result<PathBuf, String> {
    let own = socket_path(setting)?;
    if *setting == SocketSetting::Auto && !own.exists() && !crate::sys::node::is_root() {
        let system = Path::new(crate::sys::paths::SYSTEM_RUNTIME_DIR).join(crate::sys::paths::SOCKET_NAME);
        if system.exists() {
            return Ok(system);
        }
    }
    Ok(own)
}
