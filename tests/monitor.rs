//! `cluster-ai monitor` the way a person uses it: in a real terminal (tmux) at 80×24 and
//! 200×50, keys sent, the screen captured and read; and through a pipe, as plain lines and as
//! JSON lines. Against a real daemon whose health task watches two services (one answering,
//! one not), and with no daemon at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{daemon, require_peer, Daemon, BIN};
use peers::free_port;

const T: Duration = Duration::from_secs(20);

/// A tmux server of the test's own (its socket in a tempdir, no user config), one window of a
/// fixed size running `command`, then `EXITED <status>` once it ends. Killed by its pid when
/// dropped.
struct Tmux {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    server: i32,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let shell = format!("{command}; echo EXITED $?; sleep 600");
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "m", "-x", &width.to_string(), "-y", &height.to_string(), &shell])
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux did not start: {}", String::from_utf8_lossy(&out.stderr));
        let mut t = Tmux { _dir: dir, socket, server: 0 };
        t.server = t.tmux(&["display", "-p", "-t", "m", "#{pid}"]).trim().parse().unwrap();
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "m"])
    }

    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = peers::poll_until(T, || {
            last = self.screen();
            pred(&last).then_some(())
        });
        assert!(found.is_some(), "timed out waiting for {what}; the screen:\n{last}");
        last
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "m", keys]);
    }

    /// The pid of the program the window runs (the child of its shell).
    fn program_pid(&self) -> i32 {
        let shell: i32 = self.tmux(&["display", "-p", "-t", "m", "#{pane_pid}"]).trim().parse().unwrap();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children.split_whitespace().next().expect("the monitor runs under the shell").parse().unwrap()
    }

    /// After the program ended: it said status 0 and the terminal is back as it was (the main
    /// screen, the cursor shown).
    fn assert_exited_and_restored(&self) {
        let screen = self.wait_screen("the monitor to exit", |s| s.contains("EXITED"));
        assert!(screen.contains("EXITED 0"), "{screen}");
        assert!(!screen.contains("Memory used"), "the charts are still on the screen:\n{screen}");
        assert_eq!(self.tmux(&["display", "-p", "-t", "m", "#{alternate_on} #{cursor_flag}"]).trim(), "0 1", "terminal not restored");
    }
}

/// True when tmux is here; otherwise the test fails naming it (or, with
/// CLUSTER_AI_SKIP_MISSING_PEERS=1, says it skipped).
fn have_tmux() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("tmux").exists()));
    require_peer("tmux", found, "apt-get install tmux")
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
        if self.server > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.server), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A daemon watching "web" (a listener of the test's: healthy) and "gone" (a port nothing
/// listens on: unhealthy after one probe).
fn daemon_with_services() -> (Daemon, TcpListener) {
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let d = daemon()
        .config(&format!(
            "sample_interval = \"1s\"\n\
             [[health.service]]\nname = \"web\"\nprobe = \"tcp://{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\npass_after = 1\n\
             [[health.service]]\nname = \"gone\"\nprobe = \"tcp://127.0.0.1:{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfail_after = 1\n",
            web.local_addr().unwrap(),
            free_port()
        ))
        .spawn();
    d.wait_log("ready", T);
    (d, web)
}

fn monitor_command(socket: &Path) -> String {
    format!("{BIN} monitor --interval 500ms --socket {}", socket.display())
}

#[test]
fn on_a_terminal_it_draws_charts_and_services_at_80x24_and_200x50_and_leaves_the_terminal_as_it_was() {
    if !have_tmux() {
        return;
    }
    let (d, _web) = daemon_with_services();
    for ((w, h), quit) in [((80, 24), "q"), ((200, 50), "Escape")] {
        let t = Tmux::start(w, h, &monitor_command(&d.socket()));
        let screen = t.wait_screen("both services and a CPU figure", |s| {
            s.contains("healthy") && s.contains("unhealthy") && s.contains(" web ") && s.contains(" gone ") && s.contains("CPU busy ")
        });
        for needle in
            ["Memory used ", "% of ", "Swap ", "managed file", "CPU busy ", "Pressure", "-5m", "now", "100%", "Services", "Recent actions"]
        {
            assert!(screen.contains(needle), "{w}x{h}: no {needle:?} on the screen:\n{screen}");
        }
        assert!(screen.contains(&format!("daemon pid {} up", d.pid())), "{w}x{h}:\n{screen}");
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), h as usize, "{screen}");
        assert!(lines[0].contains("q quits"), "{w}x{h}: the header is cut:\n{screen}");
        // The window: - narrows it to 2 minutes, + widens it back.
        t.keys("-");
        t.wait_screen("the 2 minute window", |s| s.contains("-2m") && s.contains("window 2m"));
        t.keys("+");
        t.wait_screen("the 5 minute window", |s| s.contains("-5m"));
        t.keys(quit);
        t.assert_exited_and_restored();
    }
}

#[test]
fn without_a_daemon_it_says_so_and_charts_what_it_samples_here_and_ctrl_c_or_sigterm_end_it() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let t = Tmux::start(80, 24, &monitor_command(&socket));
    // A CPU figure needs two samples: the monitor samples on its own.
    let screen = t.wait_screen("a local CPU figure", |s| s.contains("CPU busy ") && !s.contains("CPU busy -"));
    assert!(screen.contains("daemon not running: sampled here"), "{screen}");
    assert!(screen.contains("unknown: no cluster-ai daemon is"), "{screen}");
    assert!(screen.contains("Memory used ") && screen.contains("% of "), "{screen}");
    t.keys("C-c");
    t.assert_exited_and_restored();
    drop(t);

    // SIGTERM (systemd-run, a closing ssh session's SIGHUP alike) restores the terminal too.
    let t = Tmux::start(80, 24, &monitor_command(&socket));
    t.wait_screen("the charts", |s| s.contains("Memory used "));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(t.program_pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    t.assert_exited_and_restored();
    drop(t);

    // The terminal goes away (a closed pane, a dropped ssh session): the monitor ends too,
    // rather than spinning on end-of-file.
    let t = Tmux::start(80, 24, &monitor_command(&socket));
    t.wait_screen("the charts", |s| s.contains("Memory used "));
    let pid = nix::unistd::Pid::from_raw(t.program_pid());
    t.tmux(&["kill-session", "-t", "m"]);
    let gone = peers::poll_until(Duration::from_secs(5), || nix::sys::signal::kill(pid, None).is_err().then_some(()));
    if gone.is_none() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("the monitor outlived its terminal");
    }
}

/// Runs the monitor on a pipe until it printed `n` lines, then SIGTERM; its stdout lines and
/// stderr.
fn piped(args: &[&str], socket: &Path, n: usize) -> (Vec<String>, String) {
    let mut m = Command::new(BIN)
        .args(["monitor", "--interval", "200ms", "--socket"])
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut out = std::io::BufReader::new(m.stdout.take().unwrap());
    while lines.len() < n {
        let mut l = String::new();
        assert!(std::io::BufRead::read_line(&mut out, &mut l).unwrap() > 0, "the monitor stopped after {lines:?}");
        lines.push(l);
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = m.wait().unwrap();
    assert!(status.success(), "SIGTERM is a normal end: {status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut m.stderr.take().unwrap(), &mut err).unwrap();
    (lines, err)
}

#[test]
fn json_gives_one_object_per_line_from_the_daemon_or_sampled_here() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, err) = piped(&["--json"], &dir.path().join("nobody.sock"), 3);
    for l in &lines {
        assert!(l.ends_with('\n') && !l.trim_end().contains('\n'), "{l:?}");
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["source"], "local", "{v}");
        assert!(v["daemon_error"].as_str().unwrap().contains("no cluster-ai daemon is running"), "{v}");
        assert!(v["snapshot"]["memory_total_bytes"].as_u64().unwrap() > 0, "{v}");
        assert!(v["swap_areas"].is_array() && v["services"].is_null(), "{v}");
    }
    assert!(lines.iter().any(|l| l.contains("\"cpu_busy_percent\":") && !l.contains("\"cpu_busy_percent\":null")), "{lines:?}");
    assert_eq!(err.matches("no cluster-ai daemon is running").count(), 1, "said once: {err}");

    let (d, _web) = daemon_with_services();
    let (lines, err) = piped(&["--json"], &d.socket(), 2);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!((v["source"].as_str(), v["daemon"]["pid"].as_i64()), (Some("daemon"), Some(d.pid() as i64)), "{v}");
        let names: Vec<&str> = v["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["web", "gone"], "{v}");
        assert!(v["measures"]["memory"].is_string(), "{v}");
    }
    assert!(err.is_empty(), "{err}");
}

#[test]
fn not_on_a_terminal_it_prints_plain_lines_without_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, err) = piped(&[], &dir.path().join("nobody.sock"), 3);
    for l in &lines {
        assert!(!l.contains('\x1b') && !l.contains('\r'), "{l:?}");
        let (secs, rest) = l.split_once(' ').unwrap();
        assert!(secs.parse::<u64>().is_ok(), "{l}");
        assert!(rest.starts_with("cpu=") && rest.contains(" mem=") && rest.trim_end().ends_with(" source=local"), "{l}");
    }
    assert!(err.contains("no cluster-ai daemon is running") && err.contains("sampling this machine here"), "{err}");
}

/// `free-memory` with no daemon, against an "Ollama" that accepts and never answers: the
/// measure waits out its deadline (5 s). On a terminal a line says how long it has been and
/// is gone at the end; on a pipe nothing of it is written.
#[test]
fn a_long_free_memory_shows_progress_on_a_terminal_only() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[emergency]\ndask_scheduler = \"\"\nollama = \"http://{}\"\n", silent.local_addr().unwrap())).unwrap();
    let socket = dir.path().join("nobody.sock");
    let command = format!("{BIN} free-memory --config {} --socket {}", config.display(), socket.display());

    let t = Tmux::start(100, 10, &command);
    let screen = t.wait_screen("the progress line", |s| s.contains("free-memory: unloading Ollama models: 2 s"));
    assert!(screen.contains("no daemon is running"), "{screen}");
    let screen = t.wait_screen("free-memory to end", |s| s.contains("EXITED"));
    assert!(!screen.contains("unloading Ollama models:"), "the progress line stayed:\n{screen}");
    drop(t);

    let out = Command::new(BIN)
        .args(["free-memory", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no daemon is running"), "{err}");
    assert!(!err.contains('\r') && !err.contains('\x1b') && !err.contains("unloading Ollama models"), "{err:?}");
}
