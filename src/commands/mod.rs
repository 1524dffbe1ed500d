//! One-shot subcommands, one file each. None of them starts the daemon.

pub mod check;
pub mod config_check;
pub mod free_memory;
pub mod monitor;
pub mod optimize;
pub mod run;
pub mod status;
pub mod swap;

/// The config a one-shot command runs on (`--config`, or the default file, or the built-in
/// defaults when that is absent); on an invalid one, the error printed and exit status 78.
pub fn config_or_exit(command: &str, explicit: Option<&std::path::Path>) -> Result<crate::config::Config, std::process::ExitCode> {
    let path = explicit.map_or_else(|| std::path::PathBuf::from(crate::sys::paths::DEFAULT_CONFIG), |p| p.to_path_buf());
    crate::daemon::load_config(&path, explicit.is_some()).map(|(c, _)| c).map_err(|e| {
        eprintln!("cluster-ai {command}: {e}");
        std::process::ExitCode::from(crate::daemon::EXIT_CONFIG)
    })
}
