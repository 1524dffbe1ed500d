//! `cluster-ai config check [PATH]`: exit 0 when the file and its drop-ins are valid, 78
//! otherwise. `cluster-ai config show [PATH]`: the effective configuration and where each value
//! came from.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::ConfigCheckArgs;
use crate::config::{Config, ConfigError, Loaded};
use crate::daemon::EXIT_CONFIG;
use crate::sys::paths::DEFAULT_CONFIG;

/// The files of `args`; a missing default main file is no error (the daemon runs on the
/// drop-ins over the built-in defaults), a missing named one is.
fn read(args: ConfigCheckArgs) -> (PathBuf, Result<Loaded, ConfigError>) {
    let chosen = args.path.or(args.config);
    let explicit = chosen.is_some();
    let path = chosen.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let loaded = Config::read(&path, explicit);
    (path, loaded)
}

pub fn main(args: ConfigCheckArgs) -> ExitCode {
    match read(args) {
        (path, Ok(loaded)) => {
            if loaded.files.is_empty() {
                println!("{}: no such file; the daemon would run on built-in defaults", path.display());
            } else if !loaded.files.contains(&path) {
                println!("{}: no such file; the drop-ins below apply over the built-in defaults", path.display());
            }
            // The file the config names that the daemon reads at start and on reload.
            if let Some(web) = &loaded.config.metrics.web_config_file {
                if let Err(e) = crate::metrics::web_config::Web::load(web) {
                    // Named where it was set (a drop-in, maybe), with the line.
                    eprintln!("{}: metrics.web_config_file: {e}", loaded.origins.get("metrics.web_config_file"));
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            // The files alerts read at the first delivery, checked now as they will be then (the
            // password itself is never shown).
            let alerts = &loaded.config.alerts;
            let mut failed = false;
            if let Some(f) = &alerts.smtp_credentials_file {
                if let Err(e) = crate::alerts::email::credentials(f) {
                    eprintln!("{}: {e}", loaded.origins.get("alerts.smtp_credentials_file"));
                    failed = true;
                }
            }
            if let Some(f) = &alerts.ca_file {
                if let Err(e) = crate::sys::http::check_ca_file(f) {
                    eprintln!("{}: alerts.ca_file: {e}", loaded.origins.get("alerts.ca_file"));
                    failed = true;
                }
            }
            if failed {
                return ExitCode::from(EXIT_CONFIG);
            }
            for file in &loaded.files {
                println!("{}: ok", file.display());
            }
            ExitCode::SUCCESS
        }
        (_, Err(e)) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

pub fn show(args: ConfigCheckArgs) -> ExitCode {
    let loaded = match read(args) {
        (_, Ok(loaded)) => loaded,
        (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    print!("{}", render(&loaded));
    ExitCode::SUCCESS
}

/// `key = value  # origin`, a line each in file order; a service a line of its own. URLs that
/// may hold a secret (a webhook's token) are shown redacted.
pub fn render(loaded: &Loaded) -> String {
    let mut out = String::new();
    let files: Vec<String> = loaded.files.iter().map(|f| f.display().to_string()).collect();
    out.push_str(&format!("# files: {}\n", if files.is_empty() { "none (built-in defaults)".to_string() } else { files.join(", ") }));
    let services = loaded.config.service_summaries();
    for (key, value) in loaded.config.entries() {
        if key == "health.service" {
            for (name, summary) in &services {
                let origin = loaded.origins.get(&format!("health.service.{name}"));
                out.push_str(&format!("health.service = {}  # {origin}\n", crate::sys::one_line(summary, 1000)));
            }
            continue;
        }
        let value = crate::sys::one_line(&crate::config::redacted(key, &value), 1000);
        out.push_str(&format!("{key} = {value}  # {}\n", loaded.origins.get(key)));
    }
    out
}
