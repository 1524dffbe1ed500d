//! The command line's own behaviour: help wrapped to the terminal's width, NO_COLOR, the
//! completion scripts, and exit statuses that need no daemon, root or peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use cluster_ai::commands::exit;

fn help(columns: &str) -> String {
    let out = Command::new(common::BIN).args(["check", "--help"]).env("COLUMNS", columns).env("LINES", "40").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_is_wrapped_to_the_terminal_width_and_lists_the_exit_statuses() {
    let narrow = help("50");
    let widest = narrow.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 50, "a line of {widest} columns in 50:\n{narrow}");
    let wide = help("100");
    assert!(wide.lines().any(|l| l.chars().count() > 50), "100 columns are used:\n{wide}");
    // A very wide terminal still gets lines a person can read (docs/commands.md: at most 100).
    let widest = help("200").lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 100, "a line of {widest} columns on a 200-column terminal");
    // The exit statuses of `check`, from the same table as the man page.
    for s in exit::for_command("check") {
        assert!(wide.contains(&format!("{:>2}  {}", s.code, &s.meaning[..20])), "{} missing:\n{wide}", s.code);
    }
    assert!(!wide.contains("Prometheus"), "cluster status's codes are not check's:\n{wide}");
}

/// Runs `cluster-ai run` on a missing config inside a pseudo-terminal (util-linux's script(1)),
/// where colour would be on, and returns what it printed.
fn run_on_a_terminal(no_color: Option<&str>) -> String {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("{} run --config /nonexistent/cluster-ai.toml", common::BIN), "/dev/null"]);
    cmd.env_remove("NO_COLOR").env_remove("RUST_LOG").env_remove("JOURNAL_STREAM");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("script(1) from util-linux (Debian: bsdutils) runs the command on a terminal");
    assert_eq!(out.status.code(), Some(i32::from(exit::CONFIG)), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let coloured = run_on_a_terminal(None);
    assert!(coloured.contains("/nonexistent/cluster-ai.toml"), "{coloured}");
    assert!(coloured.contains("\x1b["), "on a terminal the log is coloured: {coloured:?}");
    let plain = run_on_a_terminal(Some("1"));
    assert!(plain.contains("/nonexistent/cluster-ai.toml"), "{plain}");
    assert!(!plain.contains('\x1b'), "NO_COLOR=1: {plain:?}");
}

#[test]
fn completions_for_each_shell_and_a_usage_error_for_an_unknown_one() {
    for (shell, mark) in [("bash", "complete -F _cluster__ai"), ("zsh", "#compdef cluster-ai"), ("fish", "complete -c cluster-ai")] {
        let out = Command::new(common::BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(mark) && text.contains("free-memory"), "{shell}: {text}");
    }
    let out = Command::new(common::BIN).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)));
}

#[test]
fn bash_completes_the_words_after_the_first() {
    // In a real bash: source the script, then ask as a <TAB> after `cluster-ai config ` would.
    let script = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(common::BIN).args(["completions", "bash"]).output().unwrap();
    std::fs::write(script.path(), &out.stdout).unwrap();
    let ask = |words: &str, cword: usize, cur: &str, prev: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _cluster__ai cluster-ai '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.path().display()
        );
        let out = Command::new("bash").args(["--norc", "--noprofile", "-c", &program]).output().unwrap();
        assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let after_config = ask("cluster-ai config ''", 2, "", "config");
    assert!(after_config.lines().any(|l| l == "check") && after_config.lines().any(|l| l == "show"), "{after_config:?}");
    let check_options = ask("cluster-ai check --", 2, "--", "check");
    assert!(check_options.lines().any(|l| l == "--quick"), "{check_options:?}");
}

#[test]
fn a_reader_that_goes_away_ends_a_command_quietly() {
    // `cluster-ai … | head -1` where head has already gone: SIGPIPE ends the command, as it
    // ends cat or grep; never a panic (exit 101).
    use std::os::unix::process::ExitStatusExt;
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    for args in [&["check", "--quick", "--json"][..], &["completions", "zsh"], &["config", "show", "/nonexistent/cluster-ai.toml"]] {
        let out = Command::new(common::BIN)
            .args(args)
            .stdout(std::process::Stdio::from(write.try_clone().unwrap()))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        assert!(out.status.signal() == Some(13) || out.status.code().is_some_and(|c| c != 101), "{args:?}: {:?}", out.status);
    }
}

#[test]
fn cluster_status_with_no_prometheus_at_the_address_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(common::BIN).args(["cluster", "status", "--prometheus", &format!("http://127.0.0.1:{port}")]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(exit::UNAVAILABLE)), "{err}");
    assert!(err.contains(&format!("http://127.0.0.1:{port}")) && err.contains("cannot connect"), "{err}");
    // Not a URL at all: a usage error, said so.
    let out = Command::new(common::BIN).args(["cluster", "status", "--prometheus", "notaurl"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)), "{err}");
    assert!(err.contains("--prometheus") && err.contains("not an http:// or https:// URL"), "{err}");
}

#[test]
fn the_docs_list_each_commands_exit_statuses_as_the_code_returns_them() {
    let root = env!("CARGO_MANIFEST_DIR");
    let commands = std::fs::read_to_string(format!("{root}/docs/commands.md")).unwrap();
    let table = cluster_ai::manual::exit_status_markdown();
    assert!(commands.contains(&table), "docs/commands.md must hold the exit status table as the code has it:\n{table}");
    // README's command table: one row per subcommand, its codes besides 0, 1 and 2.
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme.split("\n## Commands\n").nth(1).expect("README has a Commands section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let line = line.replace("\\|", "/");
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let path: Vec<&str> =
            cells[1].trim_matches('`').split(' ').take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-')).collect();
        let path = path.join(" ");
        let want: Vec<String> = exit::for_command(&path).iter().filter(|s| s.code > exit::USAGE).map(|s| s.code.to_string()).collect();
        let listed: Vec<String> = cells[3].split(", ").filter(|c| !c.is_empty()).map(String::from).collect();
        assert_eq!(listed, want, "README's row for `{path}`: {line}");
        rows += 1;
    }
    let out = Command::new(common::BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let subcommands = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l[2..].starts_with(' '))
        .count();
    assert_eq!(rows, subcommands - 1, "one README row per command (but help):\n{help}");
}
