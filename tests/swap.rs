//! Root tests with real swap files in a tempdir on ext4. Every file a test makes is swapoff'd
//! and deleted when its `Scratch` is dropped, also when the test fails; swap the tests did
//! not make (anything outside their tempdir) is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{daemon, swaps_under, Daemon};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);
const M: u64 = 1 << 20;

/// A tempdir whose swap areas are switched off (and mounts undone) when dropped.
struct Scratch {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    /// Loop devices the test attached (detached after the mounts are gone).
    loops: Vec<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        common::swapoff_under(self.dir.path());
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

impl Scratch {
    fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap(), mounts: Vec::new(), loops: Vec::new() }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn swap_dir(&self) -> PathBuf {
        self.path().join("swap")
    }
    /// A config for this scratch dir: min 64M, max 256M, step 64M, plus `extra` lines in [swap].
    /// Keys in `extra` replace the base ones.
    fn config(&self, extra: &str) -> PathBuf {
        let p = self.path().join("config.toml");
        let base = [("min_size", "\"64M\""), ("max_size", "\"256M\""), ("increment", "\"64M\"")];
        let mut text = format!("[swap]\ndir = \"{}\"\n", self.swap_dir().display());
        for (k, v) in base {
            if !extra.lines().any(|l| l.starts_with(&format!("{k} "))) {
                text += &format!("{k} = {v}\n");
            }
        }
        std::fs::write(&p, format!("{text}{extra}\n")).unwrap();
        p
    }
    /// `cluster-ai swap ARGS` with no daemon on this scratch dir's socket: the direct path.
    fn swap_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.swap_command(args, env).output().unwrap()
    }
    fn swap_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(common::BIN);
        c.arg("swap").args(args).arg("--config").arg(self.path().join("config.toml"));
        c.env("RUNTIME_DIRECTORY", self.path().join("run")).env("STATE_DIRECTORY", self.path().join("state"));
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }
    fn ours(&self) -> Vec<(PathBuf, u64, i32)> {
        swaps_under(&self.swap_dir())
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.swap_dir()) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
    /// No orphan: every file of ours on disk is active, every active one exists, no partials.
    /// The spare (`swap.spare`: made ahead, never enabled under its name) is no orphan; one
    /// being made (its `.partial`, remade a moment after a file was added) is waited for: a
    /// partial that is still there after T is one.
    fn assert_no_orphans(&self) {
        let spare_partial = "cluster-ai-spare.swap.partial".to_string();
        let _ = peers::poll_until(T, || (!self.files().contains(&spare_partial)).then_some(()));
        let active: Vec<String> = self.ours().iter().map(|(p, ..)| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        let mut active_sorted = active.clone();
        active_sorted.sort();
        let files: Vec<String> =
            self.files().into_iter().filter(|f| f.starts_with("cluster-ai-") && f != "cluster-ai-spare.swap").collect();
        assert_eq!(files, active_sorted, "files on disk vs active swap");
        assert!(files.iter().all(|f| !f.ends_with(".partial")), "{files:?}");
    }
    /// A foreign swap file made with util-linux, outside our naming, at priority 5.
    fn foreign_swap(&self, path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        assert!(Command::new("fallocate").args(["-l", "16M"]).arg(path).status().unwrap().success());
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert!(Command::new("mkswap").arg("-q").arg(path).status().unwrap().success());
        assert!(Command::new("swapon").args(["-p", "5"]).arg(path).status().unwrap().success());
    }
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for `f` to hold (tests/common/peers.rs's `wait_until`, for a condition).
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    peers::wait_until(what, timeout, || f().then_some(()));
}

/// Tests that make real memory pressure, or that need memory calm, take turns: one's hog
/// would otherwise decide the other's outcome.
static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn memory_to_myself() -> std::sync::MutexGuard<'static, ()> {
    MEMORY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until the daemon's swap task has looked and decides to hold: whatever it was going
/// to do at start is done. (A wait for a condition, not a fixed sleep.)
fn settled(d: &Daemon) {
    wait_until("the swap task to settle", T, || {
        let out = d.swap(&["status", "--json"]);
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|v| v["running"].is_null() && !v["next_step"].as_str().unwrap_or("add").starts_with("add"))
    });
}

/// Waits until the swap task has looked at memory `n` more times: for "nothing more happened"
/// checks, time in which it could have acted, counted in its own looks rather than slept.
fn more_looks(d: &Daemon, n: u64) {
    let looks = || -> u64 {
        let out = d.swap(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().and_then(|v| v["looks"].as_u64()).unwrap_or(0)
    };
    let target = looks() + n;
    wait_until(&format!("{n} more looks by the swap task"), T, || looks() >= target);
}

fn scratch_daemon(s: &Scratch, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let text = std::fs::read_to_string(s.config(extra)).unwrap();
    let mut b = daemon().config(&text);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.spawn()
}

#[test]
fn direct_expand_cap_shrink_clean_leave_foreign_swap_alone() {
    if !common::require_root("real swap files") {
        return;
    }
    let s = Scratch::new();
    s.config("");
    s.foreign_swap(&s.path().join("elsewhere/other.swap"));
    std::fs::create_dir_all(s.swap_dir()).unwrap();
    std::fs::set_permissions(s.swap_dir(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mine = s.swap_dir().join("mine.swap");
    s.foreign_swap(&mine);

    assert!(ok(&s.swap_cmd(&["expand"], &[])).contains("cluster-ai-000001.swap"));
    assert!(ok(&s.swap_cmd(&["expand", "128M"], &[])).contains("cluster-ai-000002.swap"));
    let ours: Vec<_> = s.ours().into_iter().filter(|(p, ..)| p != &mine).collect();
    assert_eq!(ours.len(), 2);
    let by_name = |n: &str| ours.iter().find(|(p, ..)| p.ends_with(n)).unwrap().clone();
    assert_eq!((by_name("cluster-ai-000001.swap").1, by_name("cluster-ai-000001.swap").2), (64 * M - 4096, 50));
    assert_eq!(
        (by_name("cluster-ai-000002.swap").1, by_name("cluster-ai-000002.swap").2),
        (128 * M - 4096, 49),
        "newer files get lower priority"
    );

    let err = refused(&s.swap_cmd(&["expand", "128M"], &[]));
    assert!(err.contains("would pass swap.max_size 256M"), "{err}");

    let status: serde_json::Value = serde_json::from_str(&ok(&s.swap_cmd(&["status", "--json"], &[]))).unwrap();
    assert_eq!(status["managed"].as_array().unwrap().len(), 2);
    assert_eq!(status["managed_total_bytes"].as_u64(), Some(192 * M));
    let foreign: Vec<&str> = status["foreign"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(foreign.contains(&mine.to_str().unwrap()) && foreign.iter().any(|f| f.ends_with("elsewhere/other.swap")), "{foreign:?}");
    let human = ok(&s.swap_cmd(&["status"], &[]));
    assert!(human.contains("mode:      no daemon running") && human.contains("never touched") && human.contains("priority 49"), "{human}");

    assert!(ok(&s.swap_cmd(&["shrink"], &[])).contains("cluster-ai-000002.swap"));
    let err = refused(&s.swap_cmd(&["shrink"], &[]));
    assert!(err.contains("below swap.min_size 64M"), "{err}");

    assert!(ok(&s.swap_cmd(&["clean"], &[])).contains("removed 1 swap file(s)"));
    assert_eq!(s.files(), ["mine.swap"], "clean deletes only our files");
    let left: Vec<PathBuf> = swaps_under(s.path()).into_iter().map(|(p, ..)| p).collect();
    assert_eq!(left.len(), 2, "both foreign swap files still active: {left:?}");
}

#[test]
fn daemon_makes_the_baseline_recovers_and_adopts_after_kill_9() {
    if !common::require_root("real swap files") {
        return;
    }
    let s = Scratch::new();
    s.config("");
    // Left by an earlier crash: an inactive complete file (made, then swapoff'd) and a partial.
    ok(&s.swap_cmd(&["expand"], &[]));
    let first = s.swap_dir().join("cluster-ai-000001.swap");
    assert!(cluster_ai::sys::swap::is_active_swap(&first).unwrap(), "the kernel's ETXTBSY tells an active swap file");
    assert!(Command::new("swapoff").arg(&first).status().unwrap().success());
    assert!(!cluster_ai::sys::swap::is_active_swap(&first).unwrap());
    std::fs::write(s.swap_dir().join("cluster-ai-000009.swap.partial"), b"half").unwrap();

    let mut d = scratch_daemon(&s, "", &[]);
    d.wait_log("ready", T);
    let log = d.wait_log("enabled a complete swap file", T);
    assert!(log.contains("deleted a swap file left unfinished"), "{log}");
    settled(&d);
    assert_eq!(s.ours().len(), 1, "the re-enabled 64M file is the baseline: nothing more");
    s.assert_no_orphans();

    d.signal(Signal::SIGKILL);
    d.wait_exit(T);
    let d2 = scratch_daemon(&s, "", &[]);
    d2.wait_log("adopted an active swap file", T);
    settled(&d2);
    assert_eq!(s.ours().len(), 1);
    let status = d2.status(&[]);
    assert!(status.status.success());
    let swap_status = d2.swap(&["status"]);
    let text = ok(&swap_status);
    assert!(text.contains("mode:      managing") && text.contains("cluster-ai-000001.swap"), "{text}");
    // A clean stop says what stays active and how to remove it.
    let mut d2 = d2;
    d2.signal(Signal::SIGTERM);
    assert_eq!(d2.wait_exit(T), Some(0));
    let log = d2.log_text();
    assert!(
        log.contains("1 swap file(s), 64.0 MiB in all, stay active in") && log.contains("`cluster-ai swap clean` removes them"),
        "{log}"
    );
    assert_eq!(s.ours().len(), 1, "left in place on purpose");
    s.assert_no_orphans();
}

#[test]
fn kill_9_at_each_step_leaves_no_orphan_after_restart() {
    if !common::require_root("real swap files") {
        return;
    }
    common::require_faults();
    for point in ["swap-created", "swap-allocated", "swap-formatted", "swap-renamed", "swap-enabled"] {
        let s = Scratch::new();
        let mut d = scratch_daemon(&s, "", &[("CLUSTER_AI_FAULT", &format!("{point}:kill"))]);
        assert_eq!(d.wait_exit(T), None, "{point}: killed by SIGKILL while making the baseline");
        let d2 = scratch_daemon(&s, "", &[]);
        d2.wait_log("ready", T);
        wait_until(&format!("{point}: baseline after restart"), T, || {
            s.ours().iter().map(|(_, size, _)| size + 4096).sum::<u64>() >= 64 * M
        });
        settled(&d2);
        s.assert_no_orphans();
        assert_eq!(s.ours().len(), 1, "{point}: exactly one baseline file");
    }
    for point in ["swap-before-off", "swap-off"] {
        let s = Scratch::new();
        s.config("");
        ok(&s.swap_cmd(&["expand"], &[]));
        ok(&s.swap_cmd(&["expand"], &[]));
        let out = s.swap_cmd(&["shrink"], &[("CLUSTER_AI_FAULT", &format!("{point}:kill"))]);
        assert_eq!(out.status.code(), None, "{point}: the shrink was killed");
        let d = scratch_daemon(&s, "", &[]);
        d.wait_log("ready", T);
        settled(&d);
        s.assert_no_orphans();
        let total: u64 = s.ours().iter().map(|(_, size, _)| size + 4096).sum();
        assert!(total >= 64 * M, "{point}: no active swap lost ({total})");
    }
}

#[test]
fn real_memory_pressure_adds_a_file() {
    if !common::require_root("real swap files and memory pressure") {
        return;
    }
    let _memory = memory_to_myself();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |k: &str| -> u64 { meminfo.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap() };
    let (total, avail) = (kb("MemTotal:") * 1024, kb("MemAvailable:") * 1024);
    let used_pct = 100.0 * (1.0 - avail as f64 / total as f64);
    let threshold = (used_pct.ceil() as u64 + 3).min(95);
    // Enough to pass the threshold by a few points, never more than a quarter of what is free.
    let hog = ((threshold as f64 - used_pct + 4.0) / 100.0 * total as f64) as u64;
    assert!(hog < avail / 4, "this machine has too little free memory for the pressure test");
    let s = Scratch::new();
    let shrink = threshold.saturating_sub(10).max(1);
    let d = scratch_daemon(
        &s,
        &format!("memory_threshold = {threshold}\nshrink_threshold = {shrink}\nincrement = \"128M\"\nmax_size = \"1G\""),
        &[],
    );
    d.wait_log("ready", T);
    wait_until("the baseline", T, || s.ours().len() == 1);

    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, time\nb = bytearray(b'\\x01') * int(sys.argv[1])\nprint('allocated', flush=True)\ntime.sleep(60)",
            &hog.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for the memory hog");
    let hog_pid = child.id();
    let result = std::panic::catch_unwind(|| {
        wait_until("a second managed file under memory pressure", T, || s.ours().len() >= 2);
        d.wait_log("swap file added: 128.0 MiB (memory above threshold)", T);
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(hog_pid as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    s.assert_no_orphans();
}

#[test]
fn unsafe_swap_dirs_are_refused_with_path_and_reason() {
    if !common::require_root("real swap files and a tmpfs mount") {
        return;
    }
    let mut s = Scratch::new();
    // World-writable.
    std::fs::create_dir_all(s.swap_dir()).unwrap();
    std::fs::set_permissions(s.swap_dir(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    s.config("");
    let err = refused(&s.swap_cmd(&["expand"], &[]));
    assert!(err.contains(&format!("swap.dir {}: is writable by group or others", s.swap_dir().display())), "{err}");
    // A symlink to a good directory.
    std::fs::remove_dir(s.swap_dir()).unwrap();
    std::fs::create_dir(s.path().join("real")).unwrap();
    std::os::unix::fs::symlink(s.path().join("real"), s.swap_dir()).unwrap();
    let err = refused(&s.swap_cmd(&["expand"], &[]));
    assert!(err.contains("is a symbolic link"), "{err}");
    // tmpfs: refused, and a daemon on it keeps running in monitoring mode.
    std::fs::remove_file(s.swap_dir()).unwrap();
    std::fs::create_dir(s.swap_dir()).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=16M,mode=0700", "tmpfs"]).arg(s.swap_dir()).status().unwrap().success());
    s.mounts.push(s.swap_dir());
    let err = refused(&s.swap_cmd(&["expand"], &[]));
    assert!(err.contains("is on tmpfs"), "{err}");
    let d = scratch_daemon(&s, "", &[]);
    d.wait_log("cannot manage swap", T);
    let st: serde_json::Value = serde_json::from_slice(&d.swap(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["mode"]["mode"], "monitoring_only");
    assert!(st["mode"]["why"].as_str().unwrap().contains("tmpfs"), "{st}");
    assert!(d.status(&[]).status.success(), "the daemon stays up");
    assert!(s.ours().is_empty());
}

/// btrfs takes swap files only on one device with the single data profile (btrfs-progs#840);
/// on RAID1 swapon answers EINVAL. The daemon finds it out up front from sysfs, says why with
/// the fix once, monitors only, and makes no file; `check` says the same.
#[test]
fn a_btrfs_raid1_swap_dir_is_found_out_up_front_and_said_once() {
    if !common::require_root("a btrfs RAID1 on two loop devices") {
        return;
    }
    common::require_tool("mkfs.btrfs", "Debian's btrfs-progs");
    let mut s = Scratch::new();
    for name in ["a.img", "b.img"] {
        let img = s.path().join(name);
        std::fs::File::create(&img).unwrap().set_len(300 << 20).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&img).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        s.loops.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    let mkfs = Command::new("mkfs.btrfs").args(["-q", "-f", "-d", "raid1", "-m", "raid1"]).args(&s.loops).output().unwrap();
    assert!(mkfs.status.success(), "mkfs.btrfs: {}", String::from_utf8_lossy(&mkfs.stderr));
    std::fs::create_dir(s.swap_dir()).unwrap();
    assert!(Command::new("mount").arg(&s.loops[0]).arg(s.swap_dir()).status().unwrap().success());
    s.mounts.push(s.swap_dir());
    std::fs::set_permissions(s.swap_dir(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let d = scratch_daemon(&s, "check_interval = \"1s\"", &[]);
    d.wait_log("cannot manage swap", T);
    std::thread::sleep(Duration::from_secs(3));
    let log = d.log_text();
    assert_eq!(log.matches("WARN cannot manage swap").count(), 1, "said once:\n{log}");
    assert!(log.contains("spans 2 devices and its data profile is raid1, not single"), "{log}");
    assert!(log.contains("btrfs balance start -dconvert=single"), "with the fix:\n{log}");
    let st: serde_json::Value = serde_json::from_slice(&d.swap(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["mode"]["mode"], "monitoring_only");
    assert!(st["mode"]["why"].as_str().unwrap().contains("raid1"), "{st}");
    assert!(s.ours().is_empty() && s.files().is_empty(), "no swap file made: {:?}", s.files());
    let check =
        Command::new(common::BIN).args(["check", "--quick", "--json", "--config"]).arg(s.path().join("config.toml")).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["hardware"]["kernel"]["swap_files_supported"], false, "{report}");
    assert!(report["hardware"]["kernel"]["swap_dir_filesystem"].as_str().unwrap().contains("raid1"), "{report}");
    drop(d);
}

#[test]
fn without_cap_sys_admin_the_daemon_monitors_and_says_why() {
    if !common::require_root("dropping CAP_SYS_ADMIN with setpriv") {
        return;
    }
    let s = Scratch::new();
    s.config("check_interval = \"1s\"");
    // The builder's `on_defaults` would drop the capability but use the default paths; here we
    // want our scratch config, so wrap by hand through a tiny script.
    let wrapper = s.path().join("cluster-ai-nocap");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin -- {} \"$@\"\n", common::BIN),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(&wrapper)
        .args(["swap", "expand", "--config"])
        .arg(s.path().join("config.toml"))
        .env("RUNTIME_DIRECTORY", s.path().join("run"))
        .output()
        .unwrap();
    let err = refused(&out);
    assert!(err.contains("cannot manage swap: swapon/swapoff need CAP_SYS_ADMIN (run as root)"), "{err}");
    assert_eq!(err.matches("CAP_SYS_ADMIN").count(), 1, "the reason once, and no daemon log lines: {err}");
    let mut child = Command::new(&wrapper)
        .args(["run", "--config"])
        .arg(s.path().join("config.toml"))
        .env("RUNTIME_DIRECTORY", s.path().join("run"))
        .env("STATE_DIRECTORY", s.path().join("state"))
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(s.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(s.path().join("log")).unwrap_or_default();
    wait_until("the daemon to be ready", T, || log().contains("ready"));
    assert!(log().contains("cannot manage swap: swapon/swapoff need CAP_SYS_ADMIN"), "{}", log());
    assert_eq!(log().matches("cannot manage swap").count(), 1, "said once");
    let looks = || {
        let out = Command::new(common::BIN)
            .args(["swap", "status", "--json", "--socket"])
            .arg(s.path().join("run/control.sock"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().and_then(|v| v["looks"].as_u64()).unwrap_or(0)
    };
    let first = looks();
    wait_until("the monitoring daemon to keep looking", T, || looks() >= first + 2);
    assert!(child.try_wait().unwrap().is_none(), "the daemon stays up");
    assert!(!s.swap_dir().exists(), "nothing created");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn calm_memory_shrinks_the_newest_file_and_keeps_min_size() {
    if !common::require_root("real swap files") {
        return;
    }
    let _memory = memory_to_myself();
    let s = Scratch::new();
    let d = scratch_daemon(&s, "calm_period = \"2s\"\ncheck_interval = \"1s\"", &[]);
    d.wait_log("ready", T);
    wait_until("the baseline", T, || s.ours().len() == 1);
    let out = d.swap(&["expand"]);
    assert!(ok(&out).contains("cluster-ai-000002.swap"));
    assert_eq!(s.ours().len(), 2);
    wait_until("the calm shrink", T, || s.ours().len() == 1);
    d.wait_log("swap file removed (memory calm)", T);
    more_looks(&d, 3);
    assert_eq!(s.ours().len(), 1, "never below min_size");
    assert!(s.ours()[0].0.ends_with("cluster-ai-000001.swap"), "the newest went");
    s.assert_no_orphans();
}

#[test]
fn the_disk_guard_blocks_growth_and_warns_once() {
    if !common::require_root("real swap files") {
        return;
    }
    let s = Scratch::new();
    let d = scratch_daemon(&s, "disk_reserve = \"1000T\"\ncheck_interval = \"1s\"", &[]);
    d.wait_log("ready", T);
    d.wait_log("swap cannot grow: disk guard", T);
    more_looks(&d, 2);
    assert_eq!(d.log_text().matches("swap cannot grow").count(), 1, "once per episode");
    assert!(s.ours().is_empty());
    let out = d.swap(&["status"]);
    let text = ok(&out);
    assert!(text.contains("GUARD:     disk guard: a 64.0 MiB file would leave"), "{text}");
    let out = d.swap(&["expand"]);
    assert!(refused(&out).contains("below disk_reserve 1000.0 TiB"));
}

#[test]
fn dry_run_logs_the_decision_and_changes_nothing() {
    if !common::require_root("a dry run that would otherwise make real swap files") {
        return;
    }
    let s = Scratch::new();
    let text = std::fs::read_to_string(s.config("check_interval = \"1s\"")).unwrap();
    let d = daemon().config(&text).arg("--dry-run").spawn();
    d.wait_log("ready", T);
    d.wait_log("dry run: would add 64.0 MiB (below min_size)", T);
    more_looks(&d, 2);
    assert_eq!(d.log_text().matches("would add 64.0 MiB").count(), 1, "logged once, not at every look");
    assert!(s.ours().is_empty() && s.files().is_empty(), "nothing made");
    let out = d.swap(&["expand"]);
    assert!(refused(&out).contains("dry run: nothing is changed"));
}

#[test]
fn swap_clean_through_the_daemon_pauses_until_a_reload() {
    if !common::require_root("real swap files") {
        return;
    }
    let s = Scratch::new();
    let d = scratch_daemon(&s, "check_interval = \"1s\"", &[]);
    d.wait_log("ready", T);
    wait_until("the baseline", T, || s.ours().len() == 1);
    assert!(ok(&d.swap(&["clean"])).contains("paused until"));
    more_looks(&d, 2);
    assert!(s.ours().is_empty(), "paused: no new baseline after clean");
    assert!(ok(&d.swap(&["status"])).contains("paused after `swap clean`"));
    d.signal(Signal::SIGHUP);
    wait_until("the baseline again after the reload", T, || s.ours().len() == 1);
    assert!(ok(&d.swap(&["status"])).contains("mode:      managing"));
    s.assert_no_orphans();
}

#[test]
fn parallel_direct_commands_take_turns_and_never_pass_max_size() {
    if !common::require_root("real swap files") {
        return;
    }
    let s = Scratch::new();
    s.config("");
    // Ten `swap expand 64M` at once, no daemon: max_size 256M allows four.
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10).map(|_| scope.spawn(|| s.swap_cmd(&["expand", "64M"], &[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let added = outs.iter().filter(|o| o.status.success()).count();
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("would pass swap.max_size 256M") || err.contains("is locked by pid"), "{err}");
    }
    let total: u64 = s.ours().iter().map(|(_, size, _)| size + 4096).sum();
    assert!(total <= 256 * M, "past max_size: {total}");
    assert_eq!(added, 4, "every expand that fits was done, one after the other");
    assert_eq!(total, 256 * M);
    s.assert_no_orphans();
}

#[test]
fn a_direct_command_is_refused_while_another_holds_swap_dir_and_names_it() {
    if !common::require_root("real swap files") {
        return;
    }
    common::require_faults();
    let s = Scratch::new();
    s.config("");
    // A direct expand held mid-way (30 s) holds the lock; a second one waits 10 s, then is refused.
    let slow = std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.swap_cmd(&["expand", "64M"], &[("CLUSTER_AI_FAULT", "swap-allocated:sleep")]));
        wait_until("the slow expand to hold the lock", T, || s.files().iter().any(|f| f.ends_with(".partial")));
        let second = s.swap_cmd(&["expand", "64M"], &[]);
        let err = refused(&second);
        assert!(err.contains("is locked by pid") && err.contains("swap expand 64M"), "{err}");
        slow.join().unwrap()
    });
    ok(&slow);
    assert_eq!(s.ours().len(), 1);
    s.assert_no_orphans();
}

#[test]
fn during_a_long_operation_status_answers_and_a_second_sigterm_exits_at_once_without_a_false_failure() {
    if !common::require_root("real swap files") {
        return;
    }
    common::require_faults();
    let s = Scratch::new();
    let mut d = scratch_daemon(&s, "min_size = \"0\"\n", &[("CLUSTER_AI_FAULT", "swap-allocated:sleep")]);
    d.wait_log("ready", T);
    let socket = d.socket();
    std::thread::scope(|scope| {
        let client = scope.spawn(|| Command::new(common::BIN).args(["swap", "expand", "64M", "--socket"]).arg(&socket).output().unwrap());
        d.wait_log("injected fault at swap-allocated: sleeping", T);
        // Status answers from the books while the expand runs, and says what runs.
        let text = ok(&d.swap(&["status"]));
        assert!(text.contains("running:   swap expand 64.0 MiB"), "{text}");
        let busy = refused(&d.swap(&["shrink"]));
        assert!(busy.contains("busy: swap expand 64.0 MiB"), "{busy}");

        d.signal(Signal::SIGTERM);
        d.wait_log("stopping", T);
        d.signal(Signal::SIGTERM);
        // The injected sleep lasts 30 s: an exit well before that did not wait for it.
        let started = Instant::now();
        assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(1), "{}", d.log_text());
        assert!(started.elapsed() < Duration::from_secs(10));
        let out = client.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("unknown") && !err.contains("failed"), "the client is not told a lie: {err}");
    });
    assert!(d.log_text().contains("second signal: exiting now"));
    // The next start cleans up what the interrupted expand left.
    let d2 = scratch_daemon(&s, "min_size = \"0\"\n", &[]);
    d2.wait_log("ready", T);
    settled(&d2);
    s.assert_no_orphans();
}

#[test]
fn a_daemon_starting_during_a_direct_operation_does_not_touch_its_files() {
    if !common::require_root("real swap files") {
        return;
    }
    common::require_faults();
    let s = Scratch::new();
    s.config("");
    let mut held = s
        .swap_command(&["expand", "64M"], &[("CLUSTER_AI_FAULT", "swap-allocated:sleep")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the direct expand to be mid-way", T, || s.files().iter().any(|f| f.ends_with(".partial")));
    let d = scratch_daemon(&s, "", &[]);
    let log = d.wait_log("cannot manage swap", T);
    assert!(log.contains(&format!("is locked by pid {}", held.id())), "{log}");
    d.wait_log("ready", T);
    assert!(s.files().iter().any(|f| f.ends_with(".partial")), "the other process's file in progress is left alone");
    assert!(s.ours().is_empty(), "no baseline made behind the lock holder's back");
    held.kill().unwrap();
    held.wait().unwrap();
}

/// Issue 19's outcome, short: a 512 MiB VM (bench/burst), cluster-ai on its shipped defaults
/// from idle, a workload filling 1 GiB of incompressible pages at 1000 MiB/s; swapspace is
/// OOM-killed at this rate (bench/README.md). Fails if the workload is OOM-killed. (With
/// `min_size = "0"` the same cell survived 5 of 5 runs once the spare file came in, 16-41 ms
/// from the decision to the swapon, and about half before, when the first file took 2-4 s to
/// make there, bench/README.md; this test stays on the defaults until CI has more runs of it.)
/// Needs qemu-system-x86, busybox-static, swapspace, gcc and e2fsprogs
/// (tests/run-all.sh installs them) and apt-get download for Debian's kernel; no root (TCG, a
/// disk image file).
#[test]
fn a_burst_in_a_small_vm_survives_from_idle_on_defaults() {
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (tests/run-all.sh lists it)"
    );
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/burst/run.sh"))
        .args(["--check", "cluster-ai", "steady", "1000", "1024", "512"])
        .env("BURST_BIN", env!("CARGO_BIN_EXE_cluster-ai"))
        .env("BURST_CALM", "12")
        .output()
        .expect("bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("rc=0 killed=none"), "the burst did not survive:\n{text}");
}
