use std::process::ExitCode;

use cluster_ai::cli::{AlertCommand, ClusterCommand, Command, ConfigCommand};
use cluster_ai::commands;

fn main() -> ExitCode {
    let cli = cluster_ai::cli::parse();
    // The daemon and the monitor handle a closed reader themselves; every other command writes
    // its answer and is done, so a reader that went away simply ends it (not exit 101).
    if !matches!(cli.command, Command::Run(_) | Command::Monitor(_)) {
        cluster_ai::sys::process::end_on_broken_pipe();
    }
    match cli.command {
        Command::Run(args) => commands::run::main(args),
        Command::Status(args) => commands::status::main(args),
        Command::Config(ConfigCommand::Check(args)) => commands::config_check::main(args),
        Command::Config(ConfigCommand::Show(args)) => commands::config_check::show(args),
        Command::Swap(args) => commands::swap::main(args),
        Command::Check(args) => commands::check::main(args),
        Command::Optimize(args) => commands::optimize::main(args),
        Command::FreeMemory(args) => commands::free_memory::main(args),
        Command::Monitor(args) => commands::monitor::main(args),
        Command::Health(args) => commands::health::main(args),
        Command::Alert(AlertCommand::Test(args)) => commands::alert::test(args),
        Command::Cluster(ClusterCommand::Status(args)) => commands::cluster::status(args),
        Command::Completions(args) => commands::completions(args),
    }
}
