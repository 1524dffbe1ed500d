//! `cluster-ai config check [PATH]`: exit 0 when the file is valid, 78 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::ConfigCheckArgs;
use crate::config::{Config, ConfigError};
use crate::daemon::EXIT_CONFIG;
use crate::sys::paths::DEFAULT_CONFIG;

pub fn main(args: ConfigCheckArgs) -> ExitCode {
    let explicit = args.path.is_some();
    let path = args.path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match Config::load(&path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(ConfigError::Read { source, .. }) if !explicit && source.kind() == std::io::ErrorKind::NotFound => {
            println!("{}: no such file; the daemon would run on built-in defaults", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
