use super::*;

fn problems(text: &str) -> Vec<String> {
    Config::parse(text).unwrap_err().iter().map(|p| p.to_string()).collect()
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
    assert_eq!(Config::parse("# only a comment\n[swap]\n").unwrap(), Config::default());
}

#[test]
fn every_key_is_read() {
    let c = Config::parse(
        r#"
log_level = "debug"
sample_interval = "2s"
control_socket = "/tmp/x.sock"
[swap]
dir = "/srv/swap"
min_size = "512M"
max_size = "4GiB"
increment = "256M"
memory_threshold = 70
check_interval = "10s"
"#,
    )
    .unwrap();
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.sample_interval, Duration::from_secs(2));
    assert_eq!(c.control_socket, SocketSetting::Path("/tmp/x.sock".into()));
    assert_eq!(c.swap.dir, PathBuf::from("/srv/swap"));
    assert_eq!((c.swap.min_size, c.swap.max_size, c.swap.increment), (512 << 20, 4 << 30, 256 << 20));
    assert_eq!(c.swap.memory_threshold, 70);
    assert_eq!(c.swap.check_interval, Duration::from_secs(10));
}

#[test]
fn syntax_error_has_line_and_column() {
    // One line per problem, however the parser words it.
    assert_eq!(problems("log_level = \"info\"\nsample_interval = \n"), ["2:19: sample_interval: invalid string; expected `\"`, `'`"]);
}

#[test]
fn unknown_keys_are_refused_where_they_stand() {
    let p = problems("log_level = \"info\"\n[swap]\n  min_size = \"1G\"\n  maxsize = \"2G\"\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p, ["4:3: swap.maxsize: unknown key `maxsize`; did you mean `max_size`?"]);
    let p = problems("[swapp]\ndir = \"/x\"\n");
    assert_eq!(p, ["1:2: swapp: unknown key `swapp`; did you mean `swap`?"]);
    let p = problems("[swap]\ncolour = \"blue\"\n");
    assert!(p[0].starts_with("2:1: swap.colour: unknown key `colour`; the keys here are dir, min_size, max_size"), "{p:?}");
}

#[test]
fn wrong_types_are_said_in_words_a_user_knows_and_all_reported() {
    assert_eq!(
        problems("sample_interval = 5\n[swap]\nmemory_threshold = \"eighty\"\nmin_size = true\n[kernel]\ntune = \"yes\"\n"),
        [
            "1:19: sample_interval: expected a duration such as \"30s\" or \"5m\" (with its unit), found the number 5",
            "3:20: swap.memory_threshold: \"eighty\" is not a percentage from 1 to 99, such as 80 or \"80%\"",
            "4:12: swap.min_size: expected a size such as \"2G\", \"1.5G\", \"512M\" or a number of bytes, found true",
            "6:8: kernel.tune: expected true or false, found the text \"yes\"",
        ]
    );
}

#[test]
fn sizes_in_plain_bytes_or_decimals_and_percentages_with_or_without_the_sign() {
    let c =
        Config::parse("[swap]\nmin_size = 100000000\nmax_size = \"1.5G\"\nmemory_threshold = \"75%\"\nshrink_threshold = 50\n").unwrap();
    assert_eq!((c.swap.min_size, c.swap.max_size), (100_000_000, 3 << 29));
    assert_eq!((c.swap.memory_threshold, c.swap.shrink_threshold), (75, 50));
    assert_eq!(
        problems("[swap]\nmin_size = -5\n"),
        ["2:12: swap.min_size: -5 is negative; expected a size such as \"2G\", \"1.5G\", \"512M\" or a number of bytes"]
    );
    assert_eq!(
        problems("[swap]\ndisk_reserve = 10\n"),
        ["2:16: swap.disk_reserve: 10 would be 10 bytes; write \"10%\" for a percentage of the filesystem, or a size such as \"20G\""]
    );
    assert_eq!(Config::parse("[swap]\ndisk_reserve = 21474836480\n").unwrap().swap.disk_reserve, DiskReserve::Bytes(20 << 30));
}

#[test]
fn every_key_the_file_accepts_is_in_entries() {
    // The parser accepts exactly the keys of `keys()`: each one, set to its default, is read;
    // a name one letter off is refused.
    for k in keys().filter(|k| k.table != "health.service") {
        let doc =
            if k.table.is_empty() { format!("{} = {}\n", k.key, k.default) } else { format!("[{}]\n{} = {}\n", k.table, k.key, k.default) };
        assert_eq!(Config::parse(&doc), Ok(Config::default()), "{}", k.name());
        let typo = doc.replace(&format!("{} =", k.key), &format!("{}x =", k.key));
        assert!(problems(&typo)[0].contains(&format!("unknown key `{}x`; did you mean `{}`?", k.key, k.key)), "{typo}");
    }
    let mut listed: Vec<String> = Config::default().entries().into_iter().map(|(k, _)| k.to_string()).collect();
    let mut documented: Vec<String> =
        keys().filter(|k| k.table != "health.service" && k.name() != "health.remove_services").map(KeyDoc::name).collect();
    documented.push("health.service".into());
    listed.sort();
    documented.sort();
    assert_eq!(listed, documented);
}

#[test]
fn every_documented_default_is_valid_and_is_the_default() {
    // An entry that sets every key of a service to its documented default is the built-in
    // shape of a service (the seed's numbers).
    let mut entry = String::from("[[health.service]]\nname = \"x\"\nunit = \"x.service\"\n");
    for k in keys().filter(|k| k.table == "health.service" && !["name", "unit"].contains(&k.key)) {
        assert!(!k.default.is_empty(), "{}", k.name());
        entry.push_str(&format!("{} = {}\n", k.key, k.default));
    }
    let s = &Config::parse(&entry).unwrap().health.services[0];
    let seed = &Config::default().health.services[0];
    assert_eq!(
        (s.interval, s.timeout, s.fail_after, s.pass_after, s.restart),
        (seed.interval, seed.timeout, seed.fail_after, seed.pass_after, seed.restart)
    );
    assert_eq!((s.probe.clone(), s.min_workers, s.local_worker), (None, None, false));
    assert!(keys().all(|k| !k.doc.is_empty() && !k.doc.contains('\n')), "one line of doc each");
}

#[test]
fn every_problem_is_reported_at_once_unknown_keys_too() {
    let p = problems("bogus = 1\n[swap]\nmaxsize = \"2G\"\nmin_size = \"x\"\n[emergency]\ncolour = 1\nact = 3\n");
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p[0].starts_with("1:1: bogus: unknown key `bogus`"), "{p:?}");
    assert!(p[1].starts_with("3:1: swap.maxsize: unknown key `maxsize`; did you mean `max_size`?"), "{p:?}");
    assert!(p[2].starts_with("4:12: swap.min_size:"), "{p:?}");
    assert!(p[3].starts_with("6:1: emergency.colour: unknown key"), "{p:?}");
    assert!(p[4].starts_with("7:7: emergency.act: expected true or false"), "{p:?}");
}

/// A main file and drop-ins in a tempdir: `(dir, main path)`.
fn files(main: &str, drop_ins: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, main).unwrap();
    if !drop_ins.is_empty() {
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
    }
    for (name, text) in drop_ins {
        std::fs::write(dir.path().join("config.d").join(name), text).unwrap();
    }
    (dir, path)
}

#[test]
fn drop_ins_apply_in_lexical_order_over_the_main_file_and_tables_merge() {
    let (dir, path) = files(
        "[swap]\nmax_size = \"8G\"\nmin_size = \"1G\"\n",
        &[
            ("20-late.toml", "[swap]\nmax_size = \"12G\"\n"),
            ("10-early.toml", "log_level = \"debug\"\n[swap]\nmax_size = \"4G\"\n"),
            ("30-x.toml.dpkg-old", "this is not read = ="),
            (".hidden.toml", "nor = this"),
            ("README", "nor this"),
        ],
    );
    let loaded = Config::read(&path, true).unwrap();
    let c = &loaded.config;
    assert_eq!((c.swap.max_size, c.swap.min_size, c.log_level), (12 << 30, 1 << 30, LogLevel::Debug));
    let d = dir.path().join("config.d");
    assert_eq!(loaded.files, [path.clone(), d.join("10-early.toml"), d.join("20-late.toml")]);
    assert_eq!(loaded.origins.get("swap.max_size"), Origin::File { path: Some(d.join("20-late.toml")), line: 2 });
    assert_eq!(loaded.origins.get("swap.min_size"), Origin::File { path: Some(path.clone()), line: 3 });
    assert_eq!(loaded.origins.get("swap.dir"), Origin::Default);
    // The main file may be absent: the drop-ins apply over the defaults.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(Config::read(&path, false).unwrap().config.swap.max_size, 12 << 30);
    assert!(matches!(Config::read(&path, true), Err(ConfigError::Read { .. })));
}

#[test]
fn problems_of_every_file_name_their_file_and_cross_file_rules_hold() {
    let (dir, path) = files(
        "[swap]\nmin_size = \"8G\"\nbogus = 1\n",
        &[("10-a.toml", "[swap]\nmax_size = \"4G\"\n"), ("20-b.toml", "log_level = \"loud\"\n[kernel\n")],
    );
    let err = Config::load(&path).unwrap_err().to_string();
    let d = dir.path().join("config.d");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with(&format!("{}:3:1: swap.bogus: unknown key", path.display())), "{err}");
    assert_eq!(
        lines[1],
        format!("{}:2:12: swap.max_size: 4G is below swap.min_size 8G; expected max_size >= min_size", d.join("10-a.toml").display())
    );
    // A file that does not parse is reported and the others are still checked.
    assert!(lines[2].starts_with(&format!("{}:2:", d.join("20-b.toml").display())), "{err}");
}

#[test]
fn services_add_replace_and_remove_across_drop_ins() {
    let (_dir, path) = files(
        "",
        &[
            ("10-db.toml", "[[health.service]]\nname = \"db\"\nprobe = \"tcp://127.0.0.1:5432\"\n"),
            ("20-ollama.toml", "[[health.service]]\nname = \"ollama\"\nunit = \"ollama.service\"\ninterval = \"10s\"\n"),
            ("30-no-webui.toml", "[health]\nremove_services = [\"open-webui\"]\n"),
        ],
    );
    let loaded = Config::read(&path, true).unwrap();
    let names: Vec<&str> = loaded.config.health.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["docker", "dask-scheduler", "ollama", "db"]);
    let ollama = &loaded.config.health.services[2];
    assert_eq!((ollama.interval, ollama.probe.clone()), (Duration::from_secs(10), None), "replaced whole");
    assert_eq!(loaded.origins.get("health.service.docker"), Origin::Default);
    assert!(matches!(loaded.origins.get("health.service.db"), Origin::File { line: 1, .. }));
    // The main file's list replaces the built-in one; a drop-in adds to it.
    let (_dir, path) = files(
        "[[health.service]]\nname = \"api\"\nunit = \"api.service\"\n",
        &[("10.toml", "[[health.service]]\nname = \"db\"\nunit = \"db.service\"\n[health]\nremove_services = [\"docker\"]\n")],
    );
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("10.toml:5:19: health.remove_services: \"docker\" is not among the services so far (api); nothing to remove"),
        "{err}"
    );
    // In the main file, remove_services comes before the file's own entries: it speaks of the
    // built-in list, so it is no error there (and changes nothing, the entries replace it).
    let (_dir, path) = files("[health]\nremove_services = [\"docker\"]\n[[health.service]]\nname = \"api\"\nunit = \"api.service\"\n", &[]);
    let names: Vec<String> = Config::load(&path).unwrap().health.services.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api"]);
    // A name given twice is said to be, not "not among the services".
    let (_dir, path) = files("[health]\nremove_services = [\"docker\", \"docker\"]\n", &[]);
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("\"docker\" is named twice"), "{err}");
}

#[test]
fn an_unreadable_drop_in_names_itself_and_hides_no_other_problem() {
    let (dir, path) = files("", &[("10.toml", "bogus = 1\n"), ("40.toml", "[swap\n")]);
    let fifo = dir.path().join("config.d/20.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(dir.path().join("config.d/25.toml")).unwrap();
    std::fs::write(dir.path().join("config.d/30.toml"), b"log_level = \"\xff\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    let d = |n: &str| dir.path().join("config.d").join(n).display().to_string();
    // Every file's problem, in the order the files apply.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(lines[0].starts_with(&format!("{}:1:1: bogus:", d("10.toml"))), "{err}");
    assert!(lines[1].starts_with(&format!("{}:1:1: (drop-in): cannot read it: it is a FIFO", d("20.toml"))), "{err}");
    assert!(lines[2].starts_with(&format!("{}:1:1: (drop-in): cannot read it:", d("25.toml"))), "{err}");
    assert!(lines[3].starts_with(&format!("{}:1:14: log_level: byte 0xff is not UTF-8", d("30.toml"))), "{err}");
    assert!(lines[4].starts_with(&d("40.toml")), "{err}");
}

#[test]
fn invalid_utf8_has_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, b"log_level = \"info\"\n[swap]\ndir = \"/srv/\xff\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}:3:13: swap.dir: byte 0xff is not UTF-8; save the file as UTF-8", path.display()));
}

#[test]
fn only_a_small_regular_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = Config::load(&fifo).unwrap_err().to_string();
    assert!(err.contains("fifo.toml: cannot read the config file: it is a FIFO, not a regular file"), "{err}");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    let err = Config::load(&big).unwrap_err().to_string();
    assert!(err.contains("a config file is a few KiB"), "{err}");
}

#[test]
fn bad_values_are_all_reported_with_positions() {
    let p = problems(
        "log_level = \"loud\"\nsample_interval = \"0s\"\ncontrol_socket = \"rel/x\"\n[swap]\ndir = \"swap\"\nmin_size = \"2X\"\nincrement = \"1K\"\nmemory_threshold = 100\ncheck_interval = \"2d\"\n",
    );
    assert_eq!(
        p,
        [
            "1:13: log_level: \"loud\" is not a level; expected one of error, warn, info, debug, trace",
            "2:19: sample_interval: \"0s\" is out of range; expected between 1s and 1h",
            "3:18: control_socket: \"rel/x\" is neither \"auto\" nor an absolute path",
            "5:7: swap.dir: \"swap\" is not an absolute path below /; expected e.g. \"/var/lib/cluster-ai/swap\"",
            "6:12: swap.min_size: unknown size unit \"X\" in \"2X\"; expected a size such as 2G, 1.5G, 512M, 1GiB or a number of bytes",
            "7:13: swap.increment: 1.0 KiB is too small; expected at least 1M",
            "8:20: swap.memory_threshold: 100 is out of range; expected a percentage from 1 to 99, such as 80 or \"80%\"",
            "9:18: swap.check_interval: \"2d\" is out of range; expected between 1s and 1h",
        ]
    );
}

#[test]
fn cross_field_rules_point_at_the_later_key() {
    assert_eq!(
        problems("[swap]\nmin_size = \"4G\"\nmax_size = \"2G\"\nincrement = \"3G\"\n"),
        [
            "3:12: swap.max_size: 2G is below swap.min_size 4G; expected max_size >= min_size",
            "4:13: swap.increment: 3G is above swap.max_size 2G; expected increment <= max_size",
        ]
    );
    // Against a default: the message still says which value is the problem.
    assert_eq!(
        problems("[swap]\nmax_size = \"1G\"\n"),
        ["2:12: swap.max_size: 1G is below swap.min_size 2G; expected max_size >= min_size"]
    );
}

#[test]
fn negative_and_huge_threshold_do_not_wrap() {
    assert!(problems("[swap]\nmemory_threshold = -1\n")[0].contains("-1 is out of range"));
    assert!(problems("[swap]\nmemory_threshold = 336\n")[0].contains("336 is out of range"));
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(problems("# é\nlog_level = \"é\"\n")[0].split(": ").next(), Some("2:13"));
    let p = problems("[swap] # ☃☃\ndir = \"ü\"\n");
    assert!(p[0].starts_with("2:7: swap.dir"), "{p:?}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[swap]\nmax_size = \"1G\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}:2:12: swap.max_size: 1G is below swap.min_size 2G; expected max_size >= min_size", path.display()));
    let missing = Config::load(&dir.path().join("nope.toml")).unwrap_err().to_string();
    assert!(missing.contains("nope.toml: cannot read the config file"), "{missing}");
    assert!(!missing.contains("sudo"), "{missing}");
    // (Root reads any file: the user's refusal is made here.)
    let denied = ConfigError::Read { path: "/etc/cluster-ai/config.toml".into(), source: std::io::ErrorKind::PermissionDenied.into() };
    assert!(
        denied.to_string().ends_with("readable by root alone, as it may hold the alert webhook's token: run this with sudo)"),
        "{denied}"
    );
}

#[test]
fn changes_are_listed_by_key() {
    let old = Config::default();
    let mut new = old.clone();
    new.sample_interval = Duration::from_secs(1);
    new.swap.max_size = 8 << 30;
    assert_eq!(new.changes_from(&old), ["sample_interval: 5s -> 1s", "swap.max_size: 16G -> 8G"]);
    assert!(old.changes_from(&old).is_empty());
}

#[test]
fn a_reload_never_logs_a_webhook_token_nor_config_check_a_password() {
    let old = Config::parse("[alerts]\nwebhook = \"https://hooks.slack.com/services/T0/B0/oldToken\"\n").unwrap();
    let new = Config::parse("[alerts]\nwebhook = \"https://hooks.slack.com/services/T0/B0/newToken\"\n").unwrap();
    assert_eq!(new.changes_from(&old), ["alerts.webhook: https://hooks.slack.com:443/… (changed; the rest is not shown)"]);
    let moved = Config::parse("[alerts]\nalertmanager = \"http://am.lan:9093/x?token=t0ken\"\n").unwrap();
    assert_eq!(moved.changes_from(&Config::default()), ["alerts.alertmanager:  -> http://am.lan:9093/…"]);
    let e = Config::parse("[alerts]\nalertmanager = \"http://admin:hunter2@am.lan:9093\"\n").unwrap_err();
    let e = e[0].to_string();
    assert!(e.contains("alerts.alertmanager: \"http://am.lan:9093/…\" has user:password@") && !e.contains("hunter2"), "{e}");
    let e = Config::parse("[alerts]\nsmtp_server = \"smtp://user:hunter2@mail.example:587\"\n").unwrap_err();
    let e = e[0].to_string();
    assert!(e.contains("alerts.smtp_server") && e.contains("smtp_credentials_file") && !e.contains("hunter2"), "{e}");
    let e = Config::parse("[alerts]\nsmtp_server = \"user:hunter2@mail.example\"\n").unwrap_err();
    assert!(!e[0].to_string().contains("hunter2"), "{}", e[0]);
    let e = Config::parse("[alerts]\nalertmanager = \"http://am.lan:9093?token=t0ken\"\n").unwrap_err();
    let e = e[0].to_string();
    assert!(e.contains("put a / before the ? or #") && !e.contains("t0ken"), "{e}");
}

#[test]
fn swap_policy_keys() {
    let c = Config::parse("[swap]\ndisk_reserve = \"5%\"\nshrink_threshold = 50\ncalm_period = \"10m\"\n[kernel]\ntune = true\n").unwrap();
    assert_eq!(c.swap.disk_reserve, DiskReserve::Percent(5));
    assert_eq!((c.swap.shrink_threshold, c.swap.calm_period, c.kernel.tune), (50, Duration::from_secs(600), true));
    let c = Config::parse("[swap]\ndisk_reserve = \"20G\"\n").unwrap();
    assert_eq!(c.swap.disk_reserve, DiskReserve::Bytes(20 << 30));
    assert_eq!(DiskReserve::Percent(10).bytes(1000), 100);
    assert_eq!(
        problems("[swap]\ndisk_reserve = \"95%\"\nshrink_threshold = 85\n"),
        [
            "2:16: swap.disk_reserve: \"95%\" is not a percentage from 0% to 90%",
            "3:20: swap.shrink_threshold: 85 is not below swap.memory_threshold 80; expected shrink_threshold < memory_threshold",
        ]
    );
    assert!(problems("[swap]\ndisk_reserve = \"lots\"\n")[0].contains("or a percentage of the filesystem such as \"10%\""));
}

#[test]
fn every_documented_key_is_read_by_its_table() {
    // A key in a KEYS table that no validate() asks for would be accepted and silently ignored.
    let text = "[[health.service]]\nname = \"x\"\nunit = \"x.service\"\n[health]\nremove_services = []\n";
    let merged = layers::Merged::new(vec![layers::Layer { path: None, text: text.into(), main: true }]);
    let mut c = Checker::new(&merged);
    let _ = Config::validate(&mut c);
    for k in keys().filter(|k| k.key != "name") {
        assert!(c.read.contains(&k.name()), "{} is documented but never read", k.name());
    }
}

#[test]
fn a_probe_url_with_a_secret_is_never_shown_whole() {
    let c =
        Config::parse("[[health.service]]\nname = \"api\"\nunit = \"\"\nprobe = \"http://127.0.0.1:9000/health?api_key=SUPERSECRET\"\n")
            .unwrap();
    let shown = format!("{:?} {:?}", c.service_summaries(), c.entries());
    assert!(!shown.contains("SUPERSECRET"), "{shown}");
    assert!(shown.contains("http://127.0.0.1:9000/…"), "{shown}");
    // A password in a probe URL is refused, and not quoted back in the refusal.
    let e =
        Config::parse("[[health.service]]\nname = \"api\"\nunit = \"\"\nprobe = \"http://svc:pw@127.0.0.1:9000/health\"\n").unwrap_err();
    assert!(e[0].message.contains("user:password@") && !e[0].message.contains("svc:pw"), "{}", e[0]);
    // A plain probe URL is shown whole: its path tells which check it is.
    let c = Config::parse("[[health.service]]\nname = \"api\"\nunit = \"\"\nprobe = \"http://127.0.0.1:9000/health\"\n").unwrap();
    assert!(format!("{:?}", c.service_summaries()).contains("http://127.0.0.1:9000/health 200"));
}

#[test]
fn a_rule_between_keys_points_at_the_file_that_broke_it() {
    // The main file is fine on its own; the drop-in's value breaks the rule: the drop-in is named.
    let (dir, path) = files("[swap]\nmax_size = \"16G\"\n", &[("50.toml", "[swap]\nmin_size = \"20G\"\nmemory_threshold = 50\n")]);
    let err = Config::load(&path).unwrap_err().to_string();
    let d = dir.path().join("config.d/50.toml").display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{d}:2:12: swap.min_size: swap.max_size 16G is below swap.min_size 20G; expected max_size >= min_size"),
            format!("{d}:3:20: swap.memory_threshold: swap.shrink_threshold 60 is not below swap.memory_threshold 50; expected shrink_threshold < memory_threshold"),
        ],
        "{err}"
    );
}
