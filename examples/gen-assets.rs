//! Writes the man page and the shell completions, generated from the clap definitions, into a
//! directory: `cargo run --release --example gen-assets -- DIR` (packaging/build-deb.sh runs
//! it). An example rather than part of the daemon, so clap_mangen and clap_complete stay out
//! of the installed binary.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/assets".into()));
    std::fs::create_dir_all(dir.join("completions"))?;
    let mut cmd = cluster_ai::cli::Cli::command();
    // cluster-ai.1 (it lists the subcommands), and cluster-ai-SUBCOMMAND.1 for each.
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join("cluster-ai.1"), page)?;
    for sub in cmd.get_subcommands() {
        let name: &'static str = Box::leak(format!("cluster-ai-{}", sub.get_name()).into_boxed_str());
        let mut one = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut one)?;
        std::fs::write(dir.join(format!("{name}.1")), one)?;
    }
    for (shell, name) in [(Shell::Bash, "cluster-ai"), (Shell::Zsh, "_cluster-ai"), (Shell::Fish, "cluster-ai.fish")] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "cluster-ai", &mut out);
        std::fs::write(dir.join("completions").join(name), out)?;
    }
    println!("man pages and completions in {}", dir.display());
    Ok(())
}
