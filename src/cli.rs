//! Command-line definitions only; the work is in `commands/`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit;

#[derive(Debug, Parser)]
#[command(
    name = "cluster-ai",
    version,
    max_term_width = 100,
    about = "Keeps a node of a local AI cluster from running out of memory and from silently losing a service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what the systemd unit starts).
    Run(RunArgs),
    /// Show the live state of the running daemon.
    Status(StatusArgs),
    /// Work with the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Pre-install resource check: hardware, tier, score, recommended settings, warnings.
    /// Exit 0 when the machine meets the minimum, 6 when it does not.
    Check(CheckArgs),
    /// Size Dask and Ollama to this machine: print the plan as a diff against the env files in
    /// place, and write them (to [optimize] env_dir) unless --dry-run.
    Optimize(OptimizeArgs),
    /// Managed swap files: show, add, remove. Asks the running daemon; acts directly (as root)
    /// when none runs.
    Swap(SwapArgs),
    /// The memory measures now: unload Ollama's models, ask the daemon's swap task to expand,
    /// drop the page cache if [emergency] drop_page_cache; prints what each freed.
    FreeMemory(StatusArgs),
    /// Alert channels ([alerts]): `alert test` sends a test alert through each.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// Every service the health task watches: state and since when, the last probe, restarts,
    /// backoff, open incidents. Exit 5 when one is unhealthy, 7 when none could be looked at.
    /// Without a daemon, one look from here.
    Health(StatusArgs),
    /// A live view: charts of the last minutes of memory, swap (managed files stacked), CPU and
    /// pressure, with the services and recent actions beside them, until q, Esc or Ctrl-C (+/-
    /// change the window). From the running daemon; without one, sampled here. Plain lines when
    /// not a terminal, one JSON object per line with --json.
    Monitor(MonitorArgs),
    /// The whole cluster, as the Prometheus server that scrapes every node sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print the shell completion script for SHELL to stdout, for installs without the Debian
    /// package (which ships them): e.g. `cluster-ai completions bash >
    /// ~/.local/share/bash-completion/completions/cluster-ai`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The command line as clap parses it, with each command's exit statuses (from
/// [`exit::TABLE`]) at the end of its `--help`.
pub fn command() -> clap::Command {
    with_exit_help(Cli::command(), "")
}

fn with_exit_help(cmd: clap::Command, path: &str) -> clap::Command {
    let mut text = String::from("Exit status:\n");
    for s in exit::for_command(path) {
        text += &format!("  {:>2}  {}\n", s.code, s.meaning);
    }
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let mut cmd = cmd.after_long_help(text.trim_end().to_string());
    for name in subs {
        let sub_path = if path.is_empty() { name.clone() } else { format!("{path} {name}") };
        cmd = cmd.mut_subcommand(name, |c| with_exit_help(c, &sub_path));
    }
    cmd
}

/// Parses the process's arguments (exiting with usage status 2, or 0 for --help, as clap does).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One line per node the Prometheus server scrapes: up, memory, swap, services down, last
    /// seen, firing alerts. Exit 5 when a node is down, has a service down or an alert firing,
    /// 69 when the Prometheus server cannot be reached.
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    /// The Prometheus server, e.g. http://prometheus.lan:9090.
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// The scrape job of the cluster-ai nodes.
    #[arg(long, value_name = "NAME", default_value = "cluster-ai")]
    pub job: String,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    #[command(subcommand)]
    pub action: SwapAction,
    /// The control socket [default: from the config's control_socket, else the runtime directory].
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Config file [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SwapAction {
    /// Managed files (size, used, priority), foreign swap, totals, disk guard, next step.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add one swap file now (default size: swap.increment), within max_size and disk_reserve.
    Expand {
        /// Size such as 512M or 1G.
        size: Option<String>,
    },
    /// Remove the newest managed file, if min_size stays and its pages fit in memory.
    Shrink,
    /// swapoff and delete every managed file, and restore kernel settings.
    Clean {
        /// Even when memory could not take the swapped-out pages back.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Cheap sources only (well under 100 ms): no NVML, no port probes, no disk write test.
    #[arg(long)]
    pub quick: bool,
    /// Print the report as JSON (schema_version 1, documented in docs/optimize.md).
    #[arg(long)]
    pub json: bool,
    /// Config file, for swap.dir and its sizes [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Show the plan and what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan and the changes as JSON.
    #[arg(long)]
    pub json: bool,
    /// Config file [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file [default: /etc/cluster-ai/config.toml; built-in defaults if it is missing].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log every decision as it would be taken; change nothing on the system.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// The control socket [default: from the config's control_socket, else the runtime directory].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Config file to read control_socket from [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// One JSON object per refresh, one per line (fields in docs/monitor.md), even on a terminal.
    #[arg(long)]
    pub json: bool,
    /// Time between refreshes, e.g. 2s or 500ms (at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_refresh)]
    pub interval: std::time::Duration,
    /// The control socket [default: from the config's control_socket, else the runtime directory].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Config file to read control_socket and swap.dir from [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

fn parse_refresh(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(text)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{text} is shorter than 100ms"));
    }
    Ok(d)
}

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test alert through every configured channel now and report each result. Exit 1
    /// when one failed or none is configured.
    Test(AlertTestArgs),
}

#[derive(Debug, Args)]
pub struct AlertTestArgs {
    /// Config file with the [alerts] table [default: /etc/cluster-ai/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and its drop-ins (config.d/*.toml beside it); every problem is
    /// printed as PATH:LINE:COL: key: problem. Exit 0 or 78. The keys: man:cluster-ai.toml(5).
    Check(ConfigCheckArgs),
    /// Print the effective configuration, one `key = value` a line, each with where it came
    /// from (default, or the file and line). Exit 0, or 78 when the files are invalid.
    Show(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The main file; its drop-ins are config.d/*.toml beside it [default:
    /// /etc/cluster-ai/config.toml].
    pub path: Option<PathBuf>,
    /// The same as PATH, spelled as the other commands take it.
    #[arg(long = "config", value_name = "PATH", conflicts_with = "path")]
    pub config: Option<PathBuf>,
}
