//! The real binary, with a test-owned NOTIFY_SOCKET, real signals and config files in a tempdir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::time::Duration;

use common::{daemon, NotifySocket};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(15);

#[test]
fn notify_sequence_reload_and_stop() {
    let b = daemon().config("sample_interval = \"1s\"\n").env("WATCHDOG_USEC", "1000000");
    let mut notify = NotifySocket::bind(b.dir());
    let mut d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
    let pid = d.pid();

    let ready = notify.wait_for("READY=1", T, |g| g.has("READY=1"));
    // Half of WATCHDOG_USEC: expect pings about every 0.5 s once running.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(3), |g| g.has("WATCHDOG=1"));
    }
    // The first snapshot's summary goes out at once; later ones at most every 10 s.
    let summary = |g: &common::Datagram| g.value("STATUS").is_some_and(|s| s.starts_with("mem "));
    if !notify.seen.iter().any(summary) {
        notify.wait_for("a STATUS= summary", Duration::from_secs(15), summary);
    }
    let status = d.status_json();
    let period = |v: &serde_json::Value| {
        v["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "sampler").unwrap()["period_seconds"].as_f64().unwrap()
    };
    assert_eq!(period(&status), 1.0);
    assert_eq!(status["config"]["source"], "file");

    // A valid edit, then SIGHUP: RELOADING=1 with MONOTONIC_USEC in one datagram, then READY=1.
    d.write_config("sample_interval = \"2s\"\n");
    d.signal(Signal::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", T, |g| g.has("RELOADING=1"));
    let usec: u64 = reloading.value("MONOTONIC_USEC").expect("MONOTONIC_USEC with RELOADING=1").parse().unwrap();
    assert!(usec > 0);
    let reready = notify.wait_for("READY=1 after reload", T, |g| g.has("READY=1"));
    assert_eq!(reready.value("STATUS"), Some("config reloaded"));
    d.wait_log("sample_interval: 1s -> 2s", T);
    // The running sampler took the new interval without a restart.
    assert_eq!(period(&d.status_json()), 2.0);

    d.signal(Signal::SIGTERM);
    let stopping = notify.wait_for("STOPPING=1", T, |g| g.has("STOPPING=1"));
    assert_eq!(d.wait_exit(T), Some(0), "log:\n{}", d.log_text());
    for g in [&ready, &reloading, &reready, &stopping] {
        assert_eq!(g.pid, pid, "{g:?} came from another process");
    }
    assert!(notify.seen.iter().all(|g| g.pid == pid), "every datagram from the daemon's pid");
    assert!(!d.socket().exists(), "the control socket is removed at exit");
    assert!(d.log_text().contains("stopped cleanly"));
}

#[test]
fn broken_reload_keeps_the_running_config_and_says_why() {
    let b = daemon().config("sample_interval = \"1s\"\n");
    let mut notify = NotifySocket::bind(b.dir());
    let d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
    notify.wait_for("READY=1", T, |g| g.has("READY=1"));

    std::fs::write(&d.config, "sample_interval = \"1s\"\n[swap]\nmax_size = \"1X\"\n").unwrap();
    d.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", T, |g| g.has("RELOADING=1"));
    let after = notify.wait_for("READY=1 after a failed reload", T, |g| g.has("READY=1"));
    let expected = format!("{}:3:12: swap.max_size: unknown size unit", d.config.display());
    let status_text = after.value("STATUS").unwrap();
    assert!(status_text.starts_with("reload failed: ") && status_text.contains(&expected), "{status_text}");
    let log = d.wait_log("reload failed; keeping the running config", T);
    assert!(log.contains(&expected) && log.contains("ERROR"), "{log}");

    let status = d.status_json();
    assert!(status["config"]["last_reload_error"].as_str().unwrap().contains(&expected));
    let sampler = status["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "sampler").unwrap().clone();
    assert_eq!((sampler["state"].as_str(), sampler["period_seconds"].as_f64()), (Some("running"), Some(1.0)));
    let human = String::from_utf8(d.status(&[]).stdout).unwrap();
    assert!(human.contains("last reload refused"), "{human}");
}

#[test]
fn a_reload_reads_the_drop_ins_and_refuses_an_invalid_one() {
    let b = daemon().config("sample_interval = \"1s\"\n");
    let mut notify = NotifySocket::bind(b.dir());
    let d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
    notify.wait_for("READY=1", T, |g| g.has("READY=1"));
    let drop_ins = d.config.parent().unwrap().join("config.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("50-cm.toml"), "sample_interval = \"2s\"\n").unwrap();
    d.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", T, |g| g.has("RELOADING=1"));
    notify.wait_for("READY=1 after the reload", T, |g| g.has("READY=1"));
    d.wait_log("config reloaded: sample_interval: 1s -> 2s", T);

    let bad = drop_ins.join("60-bad.toml");
    std::fs::write(&bad, "[swap]\nmax_size = \"1X\"\n").unwrap();
    d.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", T, |g| g.has("RELOADING=1"));
    let after = notify.wait_for("READY=1 after a failed reload", T, |g| g.has("READY=1"));
    let expected = format!("{}:2:12: swap.max_size: unknown size unit", bad.display());
    assert!(after.value("STATUS").unwrap().contains(&expected), "{:?}", after.value("STATUS"));
    let log = d.wait_log("reload failed; keeping the running config", T);
    assert!(log.contains(&expected), "{log}");
    let status = d.status_json();
    let sampler = status["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "sampler").unwrap().clone();
    assert_eq!(sampler["period_seconds"].as_f64(), Some(2.0), "the drop-in's valid value stays");
}

#[test]
fn status_reports_the_live_snapshot() {
    let d = daemon().config("sample_interval = \"1s\"\n").spawn();
    d.wait_log("ready", T);
    // The second sample has a CPU figure (the first has no earlier reading to compare with).
    let deadline = std::time::Instant::now() + T;
    let s = loop {
        let s = d.status_json();
        if s["snapshot"]["cpu_busy_percent"].is_number() || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let snap = &s["snapshot"];
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(snap["memory_total_bytes"].as_u64(), Some(total_kb * 1024));
    let used = snap["memory_used_percent"].as_f64().unwrap();
    assert!(used > 0.0 && used < 100.0, "{used}");
    assert!(snap["cpu_busy_percent"].as_f64().is_some_and(|c| (0.0..=100.0).contains(&c)), "{snap}");
    assert!(snap["disk_root"]["total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(snap["disk_swap_dir"]["path"].as_str(), d.dir.path().join("swap").to_str());
    if std::path::Path::new("/proc/pressure/memory").exists() {
        assert!(snap["pressure"]["memory"]["some_avg10"].is_number(), "{snap}");
    }
    assert_eq!(s["pid"].as_u64(), Some(d.pid() as u64));
    let names: Vec<_> = s["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["alerts", "control", "emergency", "health", "metrics", "optimize", "sampler", "swap"]);

    let human = String::from_utf8(d.status(&[]).stdout).unwrap();
    for needle in ["memory:", "swap:", "cpu:", "disk:", "tasks:", "sampler", &format!("pid {}", d.pid())] {
        assert!(human.contains(needle), "{needle:?} missing from:\n{human}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(d.socket()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn status_tells_not_running_from_not_answering_and_from_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let status =
        |socket: &std::path::Path| std::process::Command::new(common::BIN).args(["status", "--socket"]).arg(socket).output().unwrap();
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = status(&dir.path().join("none.sock"));
    assert_eq!(out.status.code(), Some(3), "LSB: not running");
    assert!(err(&out).contains("no cluster-ai daemon is running (nothing answers on") && err(&out).contains("none.sock"), "{}", err(&out));

    // A socket left by a crashed daemon: nobody listens. Still "not running".
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert_eq!(status(&stale).status.code(), Some(3));

    // Something listens but never answers (a hung daemon): "unknown", said so.
    let hung = dir.path().join("hung.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
    let out = status(&hung);
    assert_eq!(out.status.code(), Some(4), "{}", err(&out));
    assert!(err(&out).contains("listens on") && err(&out).contains("did not answer within 5s"), "{}", err(&out));

    // The root daemon's 0600 socket, asked by a user.
    if common::require_root("the root-only socket part of the status test (it runs the client as another user)") {
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&hung, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::BIN)
            .args(["status", "--socket"])
            .arg(&hung)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{}", err(&out));
        assert!(err(&out).contains("is root-only: run this command with sudo"), "{}", err(&out));
    }
}

#[test]
fn a_control_socket_path_that_is_not_a_socket_is_left_alone() {
    let b = daemon();
    let precious = b.dir().join("precious.txt");
    std::fs::write(&precious, "user data\n").unwrap();
    let mut d = b.config(&format!("control_socket = \"{}\"\n", precious.display())).spawn();
    assert_eq!(d.wait_exit(T), Some(1), "{}", d.log_text());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "user data\n", "never deleted");
    assert!(d.log_text().contains("exists and is not a socket; not removing it"), "{}", d.log_text());
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let first = daemon().spawn();
    first.wait_log("ready", T);
    let out = common::bin_without_swap_rights()
        .arg("run")
        .env("RUNTIME_DIRECTORY", first.dir.path().join("run"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another cluster-ai daemon already answers"));
    assert!(first.socket().exists(), "the first daemon's socket is left alone");
}

#[test]
fn missing_default_config_means_defaults_and_one_warning() {
    assert!(
        !std::path::Path::new("/etc/cluster-ai/config.toml").exists(),
        "this test needs /etc/cluster-ai/config.toml to be absent (it checks the built-in defaults)"
    );
    let mut d = daemon().on_defaults().spawn();
    d.wait_log("ready", T);
    assert_eq!(d.status_json()["config"]["source"], "defaults");
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait_exit(T), Some(0));
    assert_eq!(d.log_text().matches("running on built-in defaults").count(), 1, "{}", d.log_text());
}

#[test]
fn bad_explicit_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = std::process::Command::new(common::BIN).arg("run").arg("--config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.toml: cannot read the config file"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "log_level = 3\n").unwrap();
    let out = std::process::Command::new(common::BIN).arg("run").arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:1:13: log_level: expected a level in quotes such as \"info\", found the number 3", bad.display())),
        "{err}"
    );
}

#[test]
fn a_failing_task_is_named_and_the_daemon_exits_nonzero() {
    for (action, needle) in [("error", "injected fault at sampler"), ("panic", "panicked: injected fault at sampler")] {
        common::require_faults();
        let b = daemon().config("sample_interval = \"1s\"\n").env("CLUSTER_AI_FAULT", &format!("sampler:{action}"));
        let mut notify = NotifySocket::bind(b.dir());
        let mut d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
        notify.wait_for("READY=1", T, |g| g.has("READY=1"));
        if action == "panic" && !cfg!(debug_assertions) {
            // Release builds abort on panic (profile.release panic = "abort"): the hook has
            // named the task first, and systemd restarts the daemon.
            assert_eq!(d.wait_exit(T), None, "killed by SIGABRT");
            let log = d.log_text();
            assert!(log.contains("task sampler panicked") && log.contains("task=\"sampler\""), "{log}");
            continue;
        }
        assert_eq!(d.wait_exit(T), Some(1), "{action}: log:\n{}", d.log_text());
        notify.wait_for("STOPPING=1", T, |g| g.has("STOPPING=1"));
        let log = d.log_text();
        assert!(log.contains("task sampler failed") && log.contains("task=\"sampler\"") && log.contains(needle), "{action}: {log}");
    }
}

#[test]
fn a_hung_task_stops_the_watchdog_pings() {
    common::require_faults();
    let b = daemon().config("sample_interval = \"1s\"\n").env("WATCHDOG_USEC", "1000000").env("CLUSTER_AI_FAULT", "sampler:hang");
    let mut notify = NotifySocket::bind(b.dir());
    let d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
    notify.wait_for("READY=1", T, |g| g.has("READY=1"));
    let stuck = notify.wait_for("STATUS naming the stuck task", T, |g| g.value("STATUS").is_some_and(|s| s.contains("stuck: sampler")));
    let seen_before = notify.seen.len();
    // Three watchdog intervals without a single ping.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        notify.recv(left);
    }
    let later = &notify.seen[seen_before..];
    assert!(later.iter().all(|g| !g.has("WATCHDOG=1")), "pinged while stuck: {later:?}");
    assert!(d.log_text().contains("withholding the watchdog ping"), "{stuck:?}");
}

#[test]
fn a_second_signal_forces_exit() {
    // A hung sampler never sees the cancellation, so the first SIGTERM alone would wait out the
    // 10 s stop timeout; the second one must end the daemon at once.
    common::require_faults();
    let mut d = daemon().config("sample_interval = \"1s\"\n").env("CLUSTER_AI_FAULT", "sampler:hang").spawn();
    d.wait_log("ready", T);
    // No systemd here (no NOTIFY_SOCKET): the stuck task is still logged.
    d.wait_log("no heartbeat from sampler", Duration::from_secs(25));
    d.signal(Signal::SIGTERM);
    d.wait_log("stopping", T);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.child.try_wait().unwrap().is_none(), "a hung task holds the first stop");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(d.log_text().contains("second signal: exiting now"), "{}", d.log_text());
}

#[test]
fn a_reload_refuses_a_fifo_a_device_and_a_huge_file_and_stays_responsive() {
    let b = daemon().config("sample_interval = \"1s\"\n");
    let mut notify = NotifySocket::bind(b.dir());
    let d = b.env("NOTIFY_SOCKET", notify.path.to_str().unwrap()).spawn();
    notify.wait_for("READY=1", T, |g| g.has("READY=1"));
    let config = d.config.clone();
    let reload_fails_with = |notify: &mut NotifySocket, why: &str| {
        d.signal(Signal::SIGHUP);
        let after = notify.wait_for("READY=1 after the refused reload", T, |g| g.has("READY=1"));
        let status = after.value("STATUS").unwrap().to_string();
        assert!(status.starts_with("reload failed: ") && status.contains(why), "{status}");
        assert_eq!(d.status_json()["tasks"].as_array().unwrap().len(), 8, "still answering");
    };

    // A FIFO nobody writes to: opening it for reading would block forever.
    std::fs::remove_file(&config).unwrap();
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    reload_fails_with(&mut notify, "it is a FIFO, not a regular file");

    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    reload_fails_with(&mut notify, "it is a device, not a regular file");

    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, format!("sample_interval = \"1s\"\n{}", "# padding\n".repeat(500_000))).unwrap();
    reload_fails_with(&mut notify, "a config file is a few KiB");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "a 5 MB file was not read into memory (peak RSS {rss_kib} KiB)");
}

#[test]
fn out_of_file_descriptors_the_control_socket_backs_off_and_says_so_once() {
    // A service probed every second, answering throughout: the probes the daemon cannot make
    // while its descriptors are taken say nothing of it.
    let web = peers::Stub::start(|_, _| peers::Answer::ok("ok"));
    let config = format!(
        "sample_interval = \"1s\"\n[[health.service]]\nname = \"web\"\nprobe = \"http://{}/health\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
        web.addr
    );
    // Few descriptors: the daemon's own use leaves room for only a handful of clients.
    let d = daemon().config(&config).wrapped(&["prlimit", "--nofile=40:40", "--"]).spawn();
    d.wait_log("ready", T);
    peers::wait_until("web probed twice (healthy)", T, || (web.requests.lock().unwrap().len() >= 2).then_some(()));
    let mut held = Vec::new();
    for _ in 0..100 {
        match std::os::unix::net::UnixStream::connect(d.socket()) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    d.wait_log("out of file descriptors", T);
    // Held for a while: a daemon that retried accept at once would log on every try.
    let cpu_before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let cpu_used = cpu_ticks(d.pid()) - cpu_before;
    d.wait_log("health: cannot probe web", T);
    drop(held);
    // Once the clients are gone it answers again, and says the episode is over.
    let deadline = std::time::Instant::now() + T;
    let log = loop {
        let out = d.status(&["--json"]);
        let log = d.log_text();
        if out.status.success() && log.contains("accepting connections again") {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(log.matches("out of file descriptors").count(), 1, "one warning per episode:\n{log}");
    assert_eq!(log.matches("health: cannot probe web").count(), 1, "one warning per episode:\n{log}");
    d.wait_log("health: probing web again", T);
    let log = d.log_text();
    assert!(!log.contains("web is down") && !log.contains("ERROR task "), "the service judged by probes not made, or a task lost:\n{log}");
    assert!(cpu_used < 100, "no busy loop while out of descriptors ({cpu_used} ticks of CPU in 2 s)");
}

/// A pids cgroup of the test's own, holding the daemon: it may make no thread more than it has
/// (pids.max = pids.current), as under a unit's TasksMax= reached or a node out of tasks. The
/// daemon is moved back to the root cgroup and the group removed when dropped.
struct PidsLimit {
    dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

impl PidsLimit {
    /// The pids controller: cgroup v1's /sys/fs/cgroup/pids, or v2's root when it lists pids.
    fn hold(pid: i32) -> PidsLimit {
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let root = if std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
            std::path::PathBuf::from("/sys/fs/cgroup/pids")
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control")).is_ok_and(|c| c.split_whitespace().any(|w| w == "pids")) {
            v2.to_path_buf()
        } else {
            panic!("this test needs the pids cgroup controller (cgroup v1 /sys/fs/cgroup/pids, or v2 with pids in /sys/fs/cgroup/cgroup.subtree_control)");
        };
        let dir = root.join(format!("cluster-ai-test-{pid}"));
        std::fs::create_dir(&dir).unwrap();
        let limit = PidsLimit { dir, root };
        std::fs::write(limit.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        let now = std::fs::read_to_string(limit.dir.join("pids.current")).unwrap();
        std::fs::write(limit.dir.join("pids.max"), now.trim()).unwrap();
        limit
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for p in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Blocking work (a reload reads its config off the runtime) when the OS refuses the daemon a
/// new thread: tokio's blocking pool panicked ("OS can't spawn worker thread", an abort in a
/// release build) whenever it had no thread, which was a second after any blocking work.
#[test]
fn a_daemon_that_may_make_no_more_threads_still_reloads() {
    if !common::require_root("the thread-limit test (it puts the daemon in a pids cgroup of its own)") {
        return;
    }
    let d = daemon().config("sample_interval = \"1s\"\n").spawn();
    d.wait_log("ready", T);
    // Past the start-up's blocking work, and past the second tokio's pool once kept idle threads.
    std::thread::sleep(Duration::from_secs(3));
    let limit = PidsLimit::hold(d.pid());
    d.write_config("sample_interval = \"2s\"\n");
    d.signal(Signal::SIGHUP);
    d.wait_log("config reloaded", T);
    assert_eq!(d.status_json()["tasks"].as_array().unwrap().len(), 8, "still answering");
    drop(limit);
}

/// /metrics on a port another process holds at start: said once, tried again at each heartbeat
/// (30 s), and served once the port is free, without a reload.
#[test]
fn a_metrics_port_taken_at_start_is_served_once_it_is_free() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let d = daemon().config(&format!("sample_interval = \"1s\"\n[metrics]\nlisten = \"{addr}\"\n")).spawn();
    d.wait_log("metrics: cannot listen on", T);
    drop(holder);
    let log = d.wait_log(&format!("metrics: serving http://{addr}/metrics"), Duration::from_secs(45));
    assert_eq!(log.matches("metrics: cannot listen on").count(), 1, "said once:\n{log}");
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn the_optimize_task_plans_at_start_and_on_reload_and_writes_env_files_only_with_apply() {
    let b = daemon();
    let env = b.dir().join("env");
    let cfg = |extra: &str| format!("sample_interval = \"1s\"\n[optimize]\nenv_dir = \"{}\"\n{extra}", env.display());
    // No system bus here: the restarts are tried and fail, and say so.
    let nobus = format!("unix:path={}", b.dir().join("no-bus").display());
    let d = b.config(&cfg("")).env("DBUS_SYSTEM_BUS_ADDRESS", &nobus).spawn();
    d.wait_log("optimize (start)", T);
    let log = d.wait_log("[optimize] apply is off", T);
    assert!(!env.exists(), "apply off: nothing written\n{log}");
    let status = d.status_json();
    assert_eq!(status["optimize"]["reason"], "start");
    assert_eq!(status["optimize"]["apply"], false);
    assert_eq!(status["optimize"]["files"][0]["outcome"], "would write");

    d.write_config(&cfg("apply = true\n"));
    d.signal(Signal::SIGHUP);
    d.wait_log("optimize: wrote", T);
    let worker_env = std::fs::read_to_string(env.join("dask-worker.env")).unwrap();
    assert!(worker_env.contains("DASK_NWORKERS="), "{worker_env}");
    let log = d.wait_log("cannot restart dask-worker.service, ollama.service: cannot reach systemd", T);
    assert!(log.contains("optimize (config reloaded)"), "{log}");

    // A pinned worker count: only the Dask file changes, and only its unit needs a restart.
    d.write_config(&cfg("apply = true\ndask_workers = 5\n"));
    d.signal(Signal::SIGHUP);
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(env.join("dask-worker.env")).unwrap().contains("DASK_NWORKERS=5\n") {
        assert!(std::time::Instant::now() < deadline, "not rewritten:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply = std::process::Command::new("python3")
        .arg("-c")
        .arg("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{\"command\":\"optimize\"}\\n'); print(s.makefile().readline())")
        .arg(d.socket())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&reply.stdout).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    assert_eq!(v["plan"]["dask_workers"]["value"], 5);
    assert_eq!(v["restart_needed"], serde_json::json!(["dask-worker.service"]));
    let human = String::from_utf8(d.status(&[]).stdout).unwrap();
    assert!(human.contains("optimize: Dask 5 x") && human.contains("dask-worker.service failed: cannot reach systemd"), "{human}");
}

#[test]
fn a_cpu_coming_or_going_makes_the_optimize_task_plan_again_once_per_burst() {
    // The kernel's own uevent, synthesised through sysfs (it changes nothing: no CPU goes
    // online), as a hot-plugged GPU or CPU would send it.
    if !common::require_root("synthesising a kernel uevent (writing /sys/devices/system/cpu/cpu0/uevent)") {
        return;
    }
    let b = daemon();
    let env = b.dir().join("env");
    let d = b.config(&format!("[optimize]\nenv_dir = \"{}\"\n", env.display())).spawn();
    d.wait_log("optimize (start)", T);
    for _ in 0..3 {
        std::fs::write("/sys/devices/system/cpu/cpu0/uevent", "online").unwrap();
    }
    let log = d.wait_log("optimize (hardware changed: CPU cpu0 online)", T);
    assert_eq!(d.status_json()["optimize"]["reason"], "hardware changed: CPU cpu0 online", "{log}");
    // Three events within the settle time: one plan.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.log_text().matches("optimize (hardware changed").count(), 1, "{}", d.log_text());
}
