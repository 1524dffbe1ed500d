//! The documented example config and `cluster-ai config check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use cluster_ai::config::Config;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml");

#[test]
fn the_documented_config_is_exactly_the_built_in_defaults() {
    let loaded = Config::load(Path::new(EXAMPLE)).unwrap();
    assert_eq!(loaded, Config::default());
    // Every key is written out (not left to its default), so the file documents all of them.
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    for (key, value) in Config::default().entries() {
        if key == "health.service" {
            // An array of tables, one entry per service: compared whole above (loaded == default).
            continue;
        }
        let (table, bare) = key.rsplit_once('.').unwrap_or(("", key));
        // The key's line within its own table (`memory_threshold` is in [swap] and [emergency]).
        let mut current = "";
        let line = text
            .lines()
            .find(|l| {
                if let Some(t) = l.strip_prefix('[') {
                    current = t.trim_end_matches(']');
                }
                current == table && l.starts_with(&format!("{bare} ="))
            })
            .unwrap_or_else(|| panic!("{key} is not in {EXAMPLE}"));
        assert!(line.contains(&value) || line.contains(&format!("\"{value}\"")), "{key}: {line} vs default {value}");
    }
}

#[test]
fn config_check_exit_codes_and_messages() {
    let ok = Command::new(common::BIN).args(["config", "check", EXAMPLE]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with("config.toml: ok\n"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "log_level = \"info\"\n[swap]\nmin_size = \"8G\"\nmax_size = \"4G\"\nbogus = 1\n").unwrap();
    let out = Command::new(common::BIN).args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:5:1: swap.bogus: unknown key `bogus`; the keys here are dir,", bad.display())), "{err}");
    std::fs::write(&bad, "[swap]\nmin_sise = \"1G\"\n").unwrap();
    let out = Command::new(common::BIN).args(["config", "check"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, format!("{}:2:1: swap.min_sise: unknown key `min_sise`; did you mean `min_size`?\n", bad.display()));

    std::fs::write(&bad, "[swap]\nmin_size = \"8G\"\nmax_size = \"4G\"\nmemory_threshold = 0\n").unwrap();
    let out = Command::new(common::BIN).args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().collect();
    let p = bad.display();
    assert_eq!(
        lines,
        [
            format!("{p}:3:12: swap.max_size: 4G is below swap.min_size 8G; expected max_size >= min_size"),
            format!("{p}:4:20: swap.memory_threshold: 0 is out of range; expected a percentage from 1 to 99, such as 80 or \"80%\""),
        ]
    );

    let out = Command::new(common::BIN).args(["config", "check"]).arg(dir.path().join("none.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.toml: cannot read the config file"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[swap]\ndir = \"{}\"\n", dir.path().join("swap").display())).unwrap();
    let out = Command::new(common::BIN).args(["config", "check", "a", "b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(common::BIN).args(["swap", "expand", "1X", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown size unit"));
    assert!(!dir.path().join("swap").exists(), "nothing was done");
}

#[test]
fn every_command_has_help_and_the_binary_a_version() {
    for args in [&["--help"][..], &["run", "--help"], &["status", "--help"], &["health", "--help"], &["config", "check", "--help"]] {
        let out = Command::new(common::BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: cluster-ai"), "{args:?}");
    }
    let out = Command::new(common::BIN).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("cluster-ai {}", env!("CARGO_PKG_VERSION")));
}
