//! Writes the man pages and the shell completions into a directory:
//! `cargo run --release --example gen-assets -- DIR` (packaging/build-deb.sh runs it).
//! cluster-ai(1) and cluster-ai-SUBCOMMAND(1) come from the clap definitions (clap_mangen) with
//! the EXIT STATUS of `commands::exit::TABLE`; cluster-ai.toml(5) from packaging/config.toml
//! (`cluster_ai::manual`). An example rather than part of the daemon, so clap_mangen stays out
//! of the installed binary.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;
use cluster_ai::manual::{config_page, exit_status_section, see_also_section, COMMAND_SECTION};

/// One command page: clap_mangen's sections, then EXIT STATUS and SEE ALSO.
fn page(cmd: clap::Command, path: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).section(COMMAND_SECTION).manual("cluster-ai").render(&mut out)?;
    out.extend_from_slice(exit_status_section(path).as_bytes());
    let name = if path.is_empty() { "cluster-ai".to_string() } else { format!("cluster-ai-{}", path.replace(' ', "-")) };
    out.extend_from_slice(see_also_section(&name).as_bytes());
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/assets".into()));
    std::fs::create_dir_all(dir.join("completions"))?;
    let cmd = cluster_ai::cli::Cli::command();
    // cluster-ai.1 (it lists the subcommands), and cluster-ai-SUBCOMMAND.1 for each.
    std::fs::write(dir.join(format!("cluster-ai.{COMMAND_SECTION}")), page(cmd.clone(), "")?)?;
    for sub in cmd.get_subcommands() {
        let name: &'static str = Box::leak(format!("cluster-ai-{}", sub.get_name()).into_boxed_str());
        std::fs::write(dir.join(format!("{name}.{COMMAND_SECTION}")), page(sub.clone().name(name), sub.get_name())?)?;
    }
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml"))?;
    std::fs::write(dir.join("cluster-ai.toml.5"), config_page(&example, env!("CARGO_PKG_VERSION")))?;
    for (shell, name) in [(Shell::Bash, "cluster-ai"), (Shell::Zsh, "_cluster-ai"), (Shell::Fish, "cluster-ai.fish")] {
        std::fs::write(dir.join("completions").join(name), cluster_ai::commands::completion_script(shell))?;
    }
    println!("man pages and completions in {}", dir.display());
    Ok(())
}
