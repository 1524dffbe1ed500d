//! The documented example config and `cluster-ai config check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use cluster_ai::config::{keys, Config};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml");

/// The example with every setting uncommented: a commented setting is `#key = value` (or
/// `#[[health.service]]`), with no space after the `#`; prose is `# text`.
fn uncommented(text: &str) -> String {
    text.lines().map(|l| if l.starts_with('#') && !l.starts_with("# ") && l != "#" { &l[1..] } else { l }).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_documented_config_is_exactly_the_built_in_defaults() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    // As shipped, every setting is commented out: the file is the defaults.
    assert_eq!(Config::load(Path::new(EXAMPLE)).unwrap(), Config::default());
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with('#') || (l.starts_with('[') && !l.starts_with("[["))),
        "only table headers are left uncommented"
    );
    // Uncommented, every key shown is valid and is its built-in default.
    let open = uncommented(&text);
    assert_eq!(Config::parse(&open).map_err(|p| p.iter().map(|p| p.to_string()).collect::<Vec<_>>()), Ok(Config::default()));
    // Every key of config::keys() is shown, in its table, with its documented default.
    for k in keys().filter(|k| k.table != "health.service") {
        let mut current = "";
        let line = open
            .lines()
            .find(|l| {
                if let Some(t) = l.strip_prefix('[') {
                    current = t.trim_end_matches(']');
                }
                current == k.table && l.starts_with(&format!("{} =", k.key))
            })
            .unwrap_or_else(|| panic!("{} is not in {EXAMPLE}", k.name()));
        assert_eq!(line, format!("{} = {}", k.key, k.default), "{}", k.name());
    }
    // And each key of a service is described.
    for k in keys().filter(|k| k.table == "health.service") {
        assert!(text.contains(k.key), "health.service.{} is not described in {EXAMPLE}", k.key);
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
    // Every problem at once, the unknown key too, in file order.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0], format!("{}:4:12: swap.max_size: 4G is below swap.min_size 8G; expected max_size >= min_size", bad.display()));
    assert!(lines[1].starts_with(&format!("{}:5:1: swap.bogus: unknown key `bogus`; the keys here are dir,", bad.display())), "{err}");
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

    // `--config PATH`, as the other commands take it, is the same as PATH.
    std::fs::write(&bad, "[swap]\nmax_size = \"8G\"\n").unwrap();
    let out = Command::new(common::BIN).args(["config", "check", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

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

#[test]
fn config_check_and_show_read_the_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("config.toml");
    std::fs::write(&main, "[swap]\nmax_size = \"8G\"\n").unwrap();
    let d = dir.path().join("config.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("50-cm.toml"),
        "[swap]\nmax_size = \"12G\"\n[alerts]\nwebhook = \"https://hooks.slack.com/services/T0/B0/s3cret\"\n",
    )
    .unwrap();
    std::fs::write(d.join("60-no-webui.toml"), "[health]\nremove_services = [\"open-webui\"]\n").unwrap();

    let out = Command::new(common::BIN).args(["config", "check"]).arg(&main).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!("{}: ok\n{}: ok\n{}: ok\n", main.display(), d.join("50-cm.toml").display(), d.join("60-no-webui.toml").display())
    );

    let out = Command::new(common::BIN).args(["config", "show"]).arg(&main).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(show.contains(&format!("swap.max_size = 12G  # {}:2\n", d.join("50-cm.toml").display())), "{show}");
    assert!(show.contains("swap.min_size = 2G  # default\n"), "{show}");
    assert!(show.contains("health.service = docker (unit docker.service"), "{show}");
    assert!(!show.contains("open-webui"), "{show}");
    assert!(show.contains("alerts.webhook = https://hooks.slack.com:443/…  #") && !show.contains("s3cret"), "{show}");

    // An invalid drop-in: both commands exit 78 and name it.
    std::fs::write(d.join("70-bad.toml"), "[swap]\nmax_size = \"1G\"\n").unwrap();
    for cmd in ["check", "show"] {
        let out = Command::new(common::BIN).args(["config", cmd]).arg(&main).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err,
            format!(
                "{}:2:12: swap.max_size: 1G is below swap.min_size 2G; expected max_size >= min_size\n",
                d.join("70-bad.toml").display()
            )
        );
    }
}

/// `config check` loads the web config file `[metrics] web_config_file` names, as the daemon
/// would: an error names the config, the web config file and its key.
#[test]
fn config_check_loads_the_metrics_web_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web-config.yml");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[metrics]\nweb_config_file = \"{}\"\n", web.display())).unwrap();
    let check = || Command::new(common::BIN).args(["config", "check"]).arg(&config).output().unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    // Named where it was set: the config's file and line, then the web config file.
    assert!(err.starts_with(&format!("{}:2: metrics.web_config_file: ", config.display())) && err.contains("web-config.yml"), "{err}");
    // Set in a drop-in: the drop-in is named.
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    let drop_in = dir.path().join("config.d/50-metrics.toml");
    std::fs::write(&drop_in, format!("[metrics]\nweb_config_file = \"{}\"\n", web.display())).unwrap();
    std::fs::write(&config, "").unwrap();
    let err = String::from_utf8_lossy(&check().stderr).into_owned();
    assert!(err.starts_with(&format!("{}:2: metrics.web_config_file: ", drop_in.display())), "{err}");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: hunter2\n").unwrap();
    let err = String::from_utf8_lossy(&check().stderr).into_owned();
    assert!(err.contains("basic_auth_users.prometheus") && err.contains("bcrypt"), "{err}");
    std::fs::write(&web, "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n").unwrap();
    let err = String::from_utf8_lossy(&check().stderr).into_owned();
    assert!(err.contains("tls_server_config.cert_file") && err.contains("none.crt"), "{err}");
    std::fs::write(&web, "").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `config check` reads the files alerts read at their first delivery, as they will be read:
/// a missing or world-readable credentials file and a missing CA file are found now, not when
/// the first alert fails.
#[test]
fn config_check_reads_the_alert_credentials_and_ca_files() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("smtp.cred");
    let ca = dir.path().join("ca.pem");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nsmtp_server = \"mail.example:587\"\nsmtp_from = \"a@example.org\"\nsmtp_to = [\"b@example.org\"]\nsmtp_credentials_file = \"{}\"\nca_file = \"{}\"\n",
            creds.display(),
            ca.display()
        ),
    )
    .unwrap();
    let check = || {
        let out = Command::new(common::BIN).args(["config", "check"]).arg(&config).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&format!("{}:5: alerts.smtp_credentials_file {}", config.display(), creds.display())), "{err}");
    assert!(err.contains(&format!("{}:6: alerts.ca_file: {}", config.display(), ca.display())), "{err}");
    std::fs::write(&creds, "mailer:hunter2\n").unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (_, err) = check();
    assert!(err.contains("may be read by others") && err.contains("chmod 600") && !err.contains("hunter2"), "{err}");
}
