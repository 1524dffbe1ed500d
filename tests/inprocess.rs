//! The whole daemon in this test process, on fakes (`daemon::run_with` with `Deps` from the
//! `fakes` feature): systemd in memory, a recording notifier, signals from the test, swap on
//! the in-memory `SwapOs`. No root, no peer, no unit: each test takes a few seconds. The
//! real-peer and real-systemd tests (tests/health.rs, tests/e2e.rs) prove the seams tell the
//! truth; these prove what the daemon does with what the seams say.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_ai::control::{request, Request};
use cluster_ai::daemon::{run_with, Deps, Options, Sig, Signals};
use cluster_ai::runtime::{Clock, Os};
use cluster_ai::sys::node::fake::FakeNode;
use cluster_ai::sys::notify::{Notice, Notifier};
use cluster_ai::sys::procfs::ProcFs;
use cluster_ai::sys::swap_os::fake::FakeSwapOs;
use cluster_ai::sys::systemd::fake::FakeServiceManager;
use cluster_ai::sys::systemd::SystemdError;

/// What systemd would have heard, in order.
#[derive(Default)]
struct Heard {
    notices: Mutex<Vec<String>>,
    watchdog: Option<Duration>,
}

impl Notifier for Heard {
    fn send(&self, notices: &[Notice]) {
        let mut n = self.notices.lock().unwrap();
        for notice in notices {
            n.push(match notice {
                Notice::Ready => "READY".into(),
                Notice::Reloading => "RELOADING".into(),
                Notice::Stopping => "STOPPING".into(),
                Notice::Watchdog => "WATCHDOG".into(),
                Notice::Status(s) => format!("STATUS={s}"),
            });
        }
    }
    fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }
}

impl Heard {
    fn all(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }
    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|n| *n == what).count()
    }
}

struct Daemon {
    dir: tempfile::TempDir,
    heard: Arc<Heard>,
    systemd: Arc<FakeServiceManager>,
    signal: tokio::sync::mpsc::UnboundedSender<Sig>,
    run: tokio::task::JoinHandle<Result<(), cluster_ai::daemon::DaemonError>>,
}

/// The config every test starts from: the control socket and swap.dir in the tempdir, no
/// metrics listener, optimize not applying, the emergency measures deciding but not acting
/// (the sampler reads this machine's real /proc: its load must not reach real peers), one
/// service followed by its unit only.
fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"control_socket = "{sock}"
[swap]
dir = "{swap}"
min_size = "0"
[optimize]
apply = false
[emergency]
act = false
[metrics]
listen = ""
[health]
[[health.service]]
name = "dask-scheduler"
unit = "dask-scheduler.service"
probe = ""
restart = "on-failure"
{extra}"#,
        sock = dir.join("control.sock").display(),
        swap = dir.join("swap").display(),
    )
}

async fn start(extra: &str, watchdog: Option<Duration>) -> Daemon {
    start_on(extra, watchdog, Clock::Kernel).await
}

/// As [`start`], every task on `clock` (`Clock::tokio()` in a test under paused time).
async fn start_on(extra: &str, watchdog: Option<Duration>, clock: Clock) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // Keys of [health] itself ("health.KEY = …") go under that table, before its services.
    let (health, rest): (Vec<&str>, Vec<&str>) = extra.lines().partition(|l| l.starts_with("health."));
    let health: Vec<&str> = health.iter().map(|l| &l["health.".len()..]).collect();
    let text = config(dir.path(), &(rest.join("\n") + "\n")).replacen("[health]\n", &format!("[health]\n{}\n", health.join("\n")), 1);
    std::fs::write(&path, text).unwrap();
    let systemd = FakeServiceManager::new();
    systemd.add_unit("dask-scheduler.service", "active", "running");
    let heard = Arc::new(Heard { watchdog, ..Heard::default() });
    let (signal, signals) = Signals::channel();
    let deps = Deps {
        notifier: heard.clone(),
        signals,
        os: Os { services: systemd.clone(), node: Arc::new(FakeNode::new("node-a")), clock },
        swap_os: Box::new(FakeSwapOs::new()),
        procfs: ProcFs::default(),
        state_dir: dir.path().join("state"),
        process_wide: false,
    };
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let opts = Options { config_path: path, config_explicit: true, dry_run: false };
    let run = tokio::spawn(run_with(opts, deps, cluster_ai::logging::detached()));
    let d = Daemon { dir, heard, systemd, signal, run };
    wait_for("READY", || d.heard.count("READY") >= 1).await;
    d
}

/// Polls `cond` every 20 ms for up to 20 s (a deadline, not a measurement: a slow machine
/// passes, a daemon that never does it fails with what was heard).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not happen within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Daemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    async fn ask(&self, r: Request) -> serde_json::Value {
        let path = self.socket();
        tokio::task::spawn_blocking(move || request(&path, &r)).await.unwrap().unwrap()
    }

    /// The `health` state of the service `name` ("healthy", "not installed", …).
    async fn state_of(&self, name: &str) -> String {
        let health = self.ask(Request::Health).await;
        let svc = health["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name)).cloned();
        svc.and_then(|s| s["state"].as_str().map(String::from)).unwrap_or_else(|| format!("no {name} in {health}"))
    }

    /// Asks `health` every 20 ms until `name` is (`is`) or is no longer (`!is`) in `state`,
    /// for up to 20 s.
    async fn wait_state(&self, name: &str, state: &str, is: bool) {
        let start = Instant::now();
        loop {
            let now = self.state_of(name).await;
            if (now == state) == is {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name}: {now} after 20 s, waiting for {}{state}",
                if is { "" } else { "not " }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<String> {
        self.signal.send(Sig::Terminate).unwrap();
        let socket = self.socket();
        let r = tokio::time::timeout(Duration::from_secs(20), self.run).await.expect("stops within 20 s").unwrap();
        assert!(r.is_ok(), "a clean stop: {r:?}");
        assert!(!socket.exists(), "the control socket is removed at stop");
        self.heard.all()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_a_failed_unit_is_restarted_through_systemd_and_status_says_so() {
    let d = start("", None).await;
    let st = d.ask(Request::Status).await;
    assert_eq!(st["health"]["systemd"], "connected", "{st}");
    d.systemd.set_state("dask-scheduler.service", "failed", "failed");
    wait_for("a restart of the failed unit", || d.systemd.restarts() == ["dask-scheduler.service"]).await;
    assert_eq!(d.systemd.state_of("dask-scheduler.service").unwrap().0, "active");
    let health = d.ask(Request::Health).await;
    let svc = &health["services"][0];
    assert_eq!(svc["name"], "dask-scheduler", "{health}");
    let heard = d.stop().await;
    assert_eq!(heard.first().map(String::as_str), Some("READY"), "{heard:?}");
    assert!(heard.iter().any(|n| n == "STOPPING"), "{heard:?}");
}

/// A unit that is not there when the daemon starts is "not installed"; once a package installs
/// it and runs `systemctl daemon-reload`, it is followed (failed: restarted), without a reload
/// of cluster-ai; removed the same way, it is "not installed" again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_installed_or_removed_after_the_start_is_seen_at_the_next_daemon_reload() {
    let d = start("[[health.service]]\nname = \"ollama\"\nunit = \"ollama.service\"\nprobe = \"\"\nrestart = \"on-failure\"\n", None).await;
    d.wait_state("ollama", "not installed", true).await;
    // The unit file is there, but systemd has not read it until the daemon-reload.
    d.systemd.add_unit("ollama.service", "failed", "failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.state_of("ollama").await, "not installed");
    assert!(d.systemd.restarts().is_empty(), "{:?}", d.systemd.restarts());
    d.systemd.daemon_reload();
    wait_for("a restart of the unit installed after the start", || d.systemd.restarts() == ["ollama.service"]).await;
    d.wait_state("ollama", "not installed", false).await;
    // The package removed: systemd's signals for the unit just stop; the reload says it.
    d.systemd.remove_unit("ollama.service");
    d.systemd.daemon_reload();
    d.wait_state("ollama", "not installed", true).await;
    // The other service was followed throughout, and reloads do not restart it.
    assert_eq!(d.state_of("dask-scheduler").await, "healthy");
    assert_eq!(d.systemd.restarts(), ["ollama.service"]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_systemd_refuses_is_retried_with_backoff_not_in_a_loop() {
    let d = start("", None).await;
    d.systemd.fail_restarts(
        "dask-scheduler.service",
        Some(SystemdError::JobFailed { unit: "dask-scheduler.service".into(), result: "failed".into() }),
    );
    d.systemd.set_state("dask-scheduler.service", "failed", "failed");
    wait_for("a first restart", || !d.systemd.restarts().is_empty()).await;
    // The policy's backoff: a second attempt is not made at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.systemd.restarts().len(), 1, "no retry within half a second: {:?}", d.systemd.restarts());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_keeps_the_running_one_on_a_bad_one() {
    let d = start("", None).await;
    let path = d.dir.path().join("config.toml");
    std::fs::write(&path, config(d.dir.path(), "interval = \"7s\"\n")).unwrap();
    d.signal.send(Sig::Hangup).unwrap();
    wait_for("RELOADING then READY", || d.heard.count("RELOADING") == 1 && d.heard.count("READY") == 2).await;
    let st = d.ask(Request::Status).await;
    assert_eq!(st["config"]["last_reload_error"], serde_json::Value::Null, "{st}");

    std::fs::write(&path, config(d.dir.path(), "no_such_key = 1\n")).unwrap();
    d.signal.send(Sig::Hangup).unwrap();
    wait_for("the second reload's READY", || d.heard.count("READY") == 3).await;
    let st = d.ask(Request::Status).await;
    let err = st["config"]["last_reload_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("no_such_key"), "the refused reload names the key: {st}");
    // Still running on the good config: the unit is still followed and restarted.
    d.systemd.set_state("dask-scheduler.service", "failed", "failed");
    wait_for("a restart after the refused reload", || d.systemd.restarts().len() == 1).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_go_out_while_every_task_beats() {
    let d = start("", Some(Duration::from_millis(400))).await;
    wait_for("two watchdog pings", || d.heard.count("WATCHDOG") >= 2).await;
    let st = d.ask(Request::Status).await;
    let tasks: Vec<&str> = st["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in ["sampler", "swap", "optimize", "emergency", "alerts", "health", "control", "metrics"] {
        assert!(tasks.contains(&t), "task {t} in status: {tasks:?}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unreachable_is_reported_and_nothing_is_restarted() {
    let d = start("", None).await;
    d.systemd.set_unreachable(Some("no bus here"));
    // A reload makes the health task connect again, and it cannot.
    d.signal.send(Sig::Hangup).unwrap();
    wait_for("the reload", || d.heard.count("READY") == 2).await;
    let mut health = d.ask(Request::Health).await;
    let start = Instant::now();
    while !health["systemd"].as_str().unwrap_or_default().contains("no bus here") {
        assert!(start.elapsed() < Duration::from_secs(20), "health never said systemd is unreachable: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        health = d.ask(Request::Health).await;
    }
    d.systemd.set_state("dask-scheduler.service", "failed", "failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.systemd.restarts().is_empty(), "nothing restarted without systemd: {:?}", d.systemd.restarts());
    d.stop().await;
}

/// systemd unreachable when the health task (re)starts, then back: it is asked again after a
/// tick, then at gaps doubling to a minute, and once it answers a failed unit is restarted,
/// without a reload. On tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn systemd_back_after_being_unreachable_restarts_a_failed_unit_without_a_reload() {
    let d = start_on("", None, Clock::tokio()).await;
    d.systemd.set_unreachable(Some("no bus here"));
    d.signal.send(Sig::Hangup).unwrap();
    wait_for("the reload", || d.heard.count("READY") == 2).await;
    let before = d.systemd.connects();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let health = d.ask(Request::Health).await;
    assert!(health["systemd"].as_str().unwrap_or_default().contains("no bus here"), "{health}");
    assert_eq!(d.systemd.connects(), before + 1, "asked again at the first tick (10 s)");
    // Then less often: at 30 and 70 s, then every minute (gaps doubling to a minute), 12
    // times in 615 s, not at each of its 61 ticks.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let asked = d.systemd.connects() - before;
    assert!((11..=13).contains(&asked), "asked {asked} times in 615 s");
    d.systemd.set_unreachable(None);
    tokio::time::sleep(Duration::from_secs(70)).await;
    let health = d.ask(Request::Health).await;
    assert_eq!(health["systemd"], "connected", "asked again within a minute: {health}");
    d.systemd.set_state("dask-scheduler.service", "failed", "failed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(d.systemd.restarts(), ["dask-scheduler.service"]);
    d.stop().await;
}

/// Writes `bytes` to the control socket and reads the one-line answer (or what was there when
/// the daemon closed the connection).
async fn raw(socket: PathBuf, bytes: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(&bytes);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_protocol_answers_every_request_and_refuses_what_is_not_one() {
    let d = start("", None).await;
    // Every read-only request has its answer; none is an error.
    for r in [Request::Status, Request::Health, Request::Alerts, Request::Emergency] {
        let v = d.ask(r.clone()).await;
        assert!(v.get("error").is_none(), "{r:?}: {v}");
    }
    let st = d.ask(Request::Status).await;
    assert_eq!(st["health"]["services"][0]["name"], "dask-scheduler", "{st}");
    let swap = d.ask(Request::Swap(cluster_ai::swap::task::SwapRequest::Status)).await;
    assert!(swap.get("error").is_none() && swap.is_object(), "{swap}");
    // What is not a request: one line that says so, then the connection closes.
    let answer = raw(d.socket(), b"{\"command\":\"reboot\"}\n".to_vec()).await;
    assert!(answer.starts_with("{\"error\":\"bad request: unknown variant `reboot`"), "{answer}");
    assert_eq!(answer.lines().count(), 1, "{answer}");
    let answer = raw(d.socket(), b"not json\n".to_vec()).await;
    assert!(answer.contains("bad request"), "{answer}");
    // A request line past 4 KiB is cut there: never read whole, refused.
    let mut long = b"{\"command\":\"status\",\"pad\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'x', 64 << 10));
    long.extend(b"\"}\n");
    let answer = raw(d.socket(), long).await;
    assert!(answer.contains("bad request"), "{answer}");
    // And the daemon still answers.
    assert!(d.ask(Request::Status).await.get("error").is_none());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_send_a_request_do_not_lock_out_one_that_does() {
    let d = start("", None).await;
    // Twice as many silent clients as the daemon serves at once.
    let silent: Vec<_> =
        (0..2 * cluster_ai::daemon::control::MAX_CLIENTS).map(|_| std::os::unix::net::UnixStream::connect(d.socket()).unwrap()).collect();
    let st = d.ask(Request::Status).await;
    assert!(st.get("error").is_none(), "answered past {} silent clients: {st}", silent.len());
    drop(silent);
    d.stop().await;
}

/// The restart backoff and the flap guard on tokio's paused clock: a unit whose restarts
/// systemd refuses is tried again after 1 s, 2 s, 4 s, then every backoff_max (8 s here),
/// until its restarts pass flap_restarts within flap_window; then it is held for flap_hold and
/// tried again. Half an hour of the daemon's time, in a tenth of a second: the whole daemon
/// on `Clock::tokio()` (every task's ticker and timer on tokio's clock).
#[tokio::test(start_paused = true)]
async fn restarts_back_off_then_a_flapping_unit_is_held_on_the_paused_clock() {
    let d = start_on(
        "health.backoff_initial = \"1s\"\nhealth.backoff_max = \"8s\"\nhealth.flap_restarts = 5\nhealth.flap_window = \"10m\"\nhealth.flap_hold = \"15m\"\n",
        None,
        Clock::tokio(),
    )
    .await;
    let unit = "dask-scheduler.service";
    d.systemd.fail_restarts(unit, Some(SystemdError::JobFailed { unit: unit.into(), result: "failed".into() }));
    d.systemd.set_state(unit, "failed", "failed");
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let times = d.systemd.restart_times();
    let t0 = times[0];
    let at: Vec<u64> = times.iter().map(|t| t.duration_since(t0).as_secs()).collect();
    // 1, 2, 4, 8 s between the first five; the sixth, due at 23 s, is the sixth within 10 min:
    // flapping, held 15 min (900 s) from then; then tried again at backoff_max, five more in the
    // window, held again (past the half hour).
    assert_eq!(at, [0, 1, 3, 7, 15, 923, 931, 939, 947, 955], "restart times (s)");
    let health = d.ask(Request::Health).await;
    assert!(health["services"][0]["held_until_unix_ms"].is_u64(), "held by the flap guard: {health}");
    let heard = d.stop().await;
    assert!(heard.iter().any(|n| n == "STOPPING"));
}
