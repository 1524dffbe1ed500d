//! The health task against real peers on this machine: a real Dask scheduler and workers
//! (killed, hung with SIGSTOP, a worker leaving), a real dockerd (stopped, started again), and
//! a fake Open WebUI that answers, fails with 500, or hangs. `cluster-ai health` from the daemon
//! and, with no daemon, from one look of its own. Restarts through systemd are proven under real
//! systemd in the container (tests/e2e).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{daemon, require_root};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peers::{dask_venv, wait_until, Dockerd, Proc, Scheduler};

const T: Duration = Duration::from_secs(30);

fn health(socket: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Command::new(common::BIN).args(["health", "--json", "--socket"]).arg(socket).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

fn service<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

fn worker(venv: &std::path::Path, port: u16, name: &str) -> Proc {
    Proc::spawn(Scheduler::worker_command(venv, port, 1).args(["--name", name]))
}

#[test]
fn a_real_dask_scheduler_hung_or_killed_is_unhealthy_and_a_worker_that_left_is_named() {
    let Some(venv) = dask_venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut scheduler = Scheduler::start(&venv, false, &tmp.path().join("scheduler.log"));
    let mut w1 = worker(&venv, scheduler.port, "w1");
    let mut w2 = worker(&venv, scheduler.port, "w2");
    wait_until("two workers", Duration::from_secs(60), || (scheduler.workers() == Some(2)).then_some(()));
    let d = daemon()
        .config(&format!(
            "[[health.service]]\nname = \"dask-scheduler\"\nprobe = \"{0}/health\"\nexpect_body = \"ok\"\ninterval = \"1s\"\n\
             timeout = \"500ms\"\nfail_after = 2\npass_after = 1\nmin_workers = 2\n\
             [[health.service]]\nname = \"worker-here\"\nprobe = \"{0}/health\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             fail_after = 2\npass_after = 1\nlocal_worker = true\n",
            scheduler.url()
        ))
        .spawn();
    let ok = wait_until("healthy with two workers", T, || {
        let (code, v) = health(&d.socket());
        (code == 0 && service(&v, "dask-scheduler")["workers"]["count"] == 2).then_some(v)
    });
    let s = service(&ok, "dask-scheduler");
    assert_eq!(s["state"], "healthy", "{ok}");
    assert_eq!(s["last_probe"]["ok"], true);
    assert_eq!(s["workers"]["names"], serde_json::json!(["w1", "w2"]));

    // A worker leaves: named, and `health` exits 1.
    w2.stop();
    let v = wait_until("the worker alert", T, || {
        let (code, v) = health(&d.socket());
        (code == 5 && service(&v, "dask-scheduler")["workers"]["count"] == 1).then_some(v)
    });
    assert_eq!(service(&v, "dask-scheduler")["workers"]["left"], serde_json::json!(["w2"]), "{v}");
    assert!(d.log_text().contains("dask-scheduler has 1 worker(s), fewer than 2; left: w2"), "{}", d.log_text());
    let text = String::from_utf8(Command::new(common::BIN).args(["health", "--socket"]).arg(d.socket()).output().unwrap().stdout).unwrap();
    assert!(text.starts_with("health: 1 ok, down: dask-scheduler workers 1/2"), "{text}");
    assert!(text.contains("left: w2"), "{text}");

    // This node's own worker: there while w1 (on 127.0.0.1, one of this machine's addresses)
    // is among the scheduler's workers; gone with it.
    assert_eq!(service(&v, "worker-here")["state"], "healthy", "{v}");
    w1.stop();
    d.wait_log("health: worker-here is down: not answering: no worker of this node among the scheduler's 0 worker(s)", T);

    // Hung: the process lives (SIGSTOP) but never answers.
    let pid = Pid::from_raw(scheduler.proc.0.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let log = d.wait_log("health: dask-scheduler is down: not answering: no answer within 500ms", T);
    let (code, v) = health(&d.socket());
    assert_eq!((code, service(&v, "dask-scheduler")["state"].as_str()), (5, Some("unhealthy")), "{v}\n{log}");
    kill(pid, Signal::SIGCONT).unwrap();
    d.wait_log("health: dask-scheduler is healthy again after", T);
    let status = String::from_utf8(d.status(&[]).stdout).unwrap();
    assert!(status.contains("health: ") && status.contains("cluster-ai health shows each"), "{status}");

    // Killed: refused connections.
    scheduler.proc.stop();
    d.wait_log("not answering: cannot connect", T);
    // No unit: nothing to restart, and nothing tried.
    assert!(!d.log_text().contains("restarting"), "{}", d.log_text());
}

#[test]
fn a_stopped_dockerd_is_unhealthy_and_its_recovery_is_seen() {
    if !require_root("the Docker health test (it runs dockerd)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(tmp.path());
    let socket = docker.socket.clone();
    let d = daemon()
        .config(&format!(
            "[[health.service]]\nname = \"docker\"\nprobe = \"docker:{}\"\ninterval = \"1s\"\ntimeout = \"1s\"\nfail_after = 2\npass_after = 1\n",
            socket.display()
        ))
        .spawn();
    wait_until("docker healthy", T, || (health(&d.socket()).0 == 0).then_some(()));
    let (_, v) = health(&d.socket());
    assert_eq!(service(&v, "docker")["last_probe"]["detail"], "OK", "{v}");
    drop(docker);
    d.wait_log("health: docker is down", T);
    assert_eq!(health(&d.socket()).0, 5, "unhealthy (exit 5)");
    let docker = Dockerd::start(tmp.path());
    d.wait_log("health: docker is healthy again after", T);
    assert_eq!(health(&d.socket()).0, 0);
    drop(d);
    drop(docker);
}

/// A fake Open WebUI: `GET /health` → `{"status":true}`; `mode` 1 answers 500, 2 never answers.
fn open_webui(mode: Arc<Mutex<u8>>) -> String {
    peers::Stub::start(move |_, _| match *mode.lock().unwrap() {
        0 => peers::Answer::ok("{\"status\":true}"),
        1 => peers::Answer::Http(500, "oops!".into()),
        _ => peers::Answer::Hang,
    })
    .addr
}

#[test]
fn an_http_service_that_fails_or_hangs_is_down_and_one_look_works_without_a_daemon() {
    let mode = Arc::new(Mutex::new(0u8));
    let addr = open_webui(mode.clone());
    let cfg = format!(
        "[[health.service]]\nname = \"open-webui\"\nprobe = \"http://{addr}/health\"\nexpect_body = '\"status\":true'\ninterval = \"1s\"\n\
         timeout = \"300ms\"\nfail_after = 2\npass_after = 2\n\
         [[health.service]]\nname = \"not-here\"\nunit = \"cluster-ai-test-no-such-unit.service\"\n"
    );
    let b = daemon();
    let cfg_path = b.dir().join("oneshot.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // One look, no daemon (a socket path where nothing listens), with a config file.
    let look = |config: &std::path::Path, expect: i32| {
        let out = Command::new(common::BIN)
            .args(["health", "--config"])
            .arg(config)
            .args(["--socket"])
            .arg(b.dir().join("nothing.sock"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(expect), "{text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let one = |expect: i32| look(&cfg_path, expect);
    let text = one(0);
    assert!(text.starts_with("health: all 1 ok (1 not installed) — from one look (no daemon is running)"), "{text}");
    // Only the missing unit: nothing could be looked at, which is not "ok".
    let only_missing = b.dir().join("only-missing.toml");
    std::fs::write(&only_missing, "[[health.service]]\nname = \"not-here\"\nunit = \"cluster-ai-test-no-such-unit.service\"\n").unwrap();
    let nothing = look(&only_missing, 7);
    assert!(nothing.starts_with("health: nothing watched (1 service(s) configured, none installed"), "{nothing}");
    assert!(text.contains("not-here") && text.contains("not installed"), "{text}");
    *mode.lock().unwrap() = 1;
    let text = one(5);
    assert!(text.contains("status 500 (expected 200): oops!"), "{text}");
    *mode.lock().unwrap() = 0;

    let d = b.config(&cfg).spawn();
    wait_until("open-webui healthy", T, || (health(&d.socket()).0 == 0).then_some(()));
    *mode.lock().unwrap() = 1;
    d.wait_log("health: open-webui is down: not answering: status 500 (expected 200): oops!", T);
    *mode.lock().unwrap() = 0;
    d.wait_log("health: open-webui is healthy again", T);
    *mode.lock().unwrap() = 2;
    d.wait_log("health: open-webui is down: not answering: no answer within 300ms", T);
    let (code, v) = health(&d.socket());
    assert_eq!(code, 5, "unhealthy");
    assert_eq!(service(&v, "not-here")["state"], "not installed", "{v}");
    assert_eq!(service(&v, "not-here")["last_probe"], serde_json::Value::Null, "never probed");
    *mode.lock().unwrap() = 0;
    let log = wait_until("the second recovery", T, || {
        let log = d.log_text();
        (log.matches("health: open-webui is healthy again").count() == 2).then_some(log)
    });
    // Exactly one incident opened per episode: down twice, up twice.
    assert_eq!(log.matches("health: open-webui is down").count(), 2, "{log}");
    assert_eq!(log.matches("health: open-webui is healthy again").count(), 2, "{log}");
}

#[test]
fn a_container_that_dies_is_restarted_through_the_docker_api() {
    if !require_root("the container health test (it runs dockerd)") {
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(busybox.exists(), "this test needs a static /bin/busybox for its image (Debian's busybox-static; .ci/run installs it)");
    let tmp = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(tmp.path());
    // An image made offline: FROM scratch with a static busybox that sleeps.
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(busybox, ctx.join("busybox")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY busybox /busybox\nCMD [\"/busybox\", \"sleep\", \"3600\"]\n").unwrap();
    let built = docker.cli(&["build", "-q", "-t", "cluster-ai-test-sleeper", ctx.to_str().unwrap()]);
    assert!(built.status.success(), "docker build: {}", String::from_utf8_lossy(&built.stderr));
    let run = docker.cli(&["run", "-d", "--name", "sleeper", "--network", "none", "cluster-ai-test-sleeper"]);
    assert!(run.status.success(), "docker run: {}", String::from_utf8_lossy(&run.stderr));
    let started =
        |d: &Dockerd| String::from_utf8(d.cli(&["inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", "sleeper"]).stdout).unwrap();
    let before = started(&docker);
    assert!(before.starts_with("true "), "{before}");
    let d = daemon()
        .config(&format!(
            // A long interval: the death is seen through Docker's event stream, not a probe.
            "[[health.service]]\nname = \"sleeper\"\nprobe = \"container:sleeper\"\ndocker_socket = \"{}\"\ninterval = \"5m\"\ntimeout = \"1s\"\nfail_after = 2\npass_after = 1\n",
            docker.socket.display()
        ))
        .spawn();
    let deadline = std::time::Instant::now() + T;
    while health(&d.socket()).0 != 0 {
        assert!(std::time::Instant::now() < deadline, "not healthy: {}\n{}", health(&d.socket()).1, d.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, v) = health(&d.socket());
    assert_eq!(service(&v, "sleeper")["last_probe"]["detail"], "running", "{v}");
    let killed = docker.cli(&["kill", "sleeper"]);
    assert!(killed.status.success());
    d.wait_log("health: sleeper is down: not answering: container sleeper is exited", T);
    d.wait_log("health: restarted container sleeper", T);
    d.wait_log("health: sleeper is healthy again", T);
    let after = started(&docker);
    assert!(after.starts_with("true ") && after != before, "not running again: {before} -> {after}");
    // A container that does not exist is down, not "not installed" (the socket is there).
    drop(d);
    let rm = docker.cli(&["rm", "-f", "sleeper"]);
    assert!(rm.status.success());
    drop(docker);
}
