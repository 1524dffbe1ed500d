//! The subcommands, one file each: `run` is the daemon itself (`daemon::run`); the others are
//! one-shot clients of its control socket or local actions, and never start it.

pub mod alert;
pub mod check;
pub mod cluster;
pub mod config_check;
pub use crate::exit;
pub mod free_memory;
pub mod health;
pub mod monitor;
pub mod optimize;
pub mod progress;
pub mod run;
pub mod status;
pub mod swap;

/// `cluster-ai completions SHELL`: the completion script, generated from the same clap
/// definitions as the packaged ones, on stdout.
pub fn completions(args: crate::cli::CompletionsArgs) -> std::process::ExitCode {
    let out = completion_script(args.shell);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster-ai completions: cannot write the script: {e}");
            std::process::ExitCode::from(exit::FAILURE)
        }
    }
}

/// The completion script for `shell` (also what the package ships, examples/gen-assets.rs).
/// clap_complete 4.6 spells the bash case labels of a hyphenated binary's subcommands
/// `cluster__subcmd__ai__subcmd__…` while its own loop looks for `cluster__ai__subcmd__…`
/// (clap-rs/clap#6421, open), so nothing after the first word completed: the labels are put
/// right here, and tests/cli.rs completes `cluster-ai config <TAB>` in a real bash.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cluster-ai", &mut out);
    if shell == clap_complete::Shell::Bash {
        return String::from_utf8_lossy(&out).replace("cluster__subcmd__ai", "cluster__ai").into_bytes();
    }
    out
}

/// The config and the daemon's control socket for a command that talks to the daemon
/// (`--socket`, else the config's `control_socket`); on an error, the message printed and the
/// exit status to return.
pub fn config_and_socket(
    command: &str,
    args: &crate::cli::StatusArgs,
) -> Result<(crate::config::Config, std::path::PathBuf), std::process::ExitCode> {
    let config = config_or_exit(command, args.config.as_deref())?;
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => crate::daemon::client_socket_path(&config.control_socket).map_err(|e| {
            eprintln!("cluster-ai {command}: {e}");
            std::process::ExitCode::FAILURE
        })?,
    };
    Ok((config, socket))
}

/// The config a one-shot command runs on (`--config`, or the default file, or the built-in
/// defaults when that is absent); on an invalid one, the error printed and [`exit::CONFIG`].
pub fn config_or_exit(command: &str, explicit: Option<&std::path::Path>) -> Result<crate::config::Config, std::process::ExitCode> {
    let path = explicit.map_or_else(|| std::path::PathBuf::from(crate::sys::paths::DEFAULT_CONFIG), |p| p.to_path_buf());
    crate::daemon::load_config(&path, explicit.is_some()).map(|(c, _)| c).map_err(|e| {
        eprintln!("cluster-ai {command}: {e}");
        std::process::ExitCode::from(exit::CONFIG)
    })
}
