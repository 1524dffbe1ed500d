//! Helpers shared by the integration tests: the real binary started as a child with a
//! test-owned NOTIFY_SOCKET, a runtime directory and a config in a tempdir.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};

pub const BIN: &str = env!("CARGO_BIN_EXE_cluster-ai");

/// A datagram the daemon sent, and the pid the kernel says sent it.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub pid: i32,
    pub text: String,
}

impl Datagram {
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
    pub fn value(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// An AF_UNIX datagram socket with SO_PASSCRED, as systemd's own notify socket.
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
    pub seen: Vec<Datagram>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        setsockopt(&sock, sockopt::PassCred, &true).unwrap();
        Self { sock, path, seen: Vec::new() }
    }

    /// The next datagram, or None after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Datagram> {
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let msg = recvmsg::<UnixAddr>(self.sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
        let pid = msg
            .cmsgs()
            .ok()?
            .find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            })
            .expect("SO_PASSCRED gives every datagram its sender's credentials");
        let len = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        let d = Datagram { pid, text };
        self.seen.push(d.clone());
        Some(d)
    }

    /// Waits for a datagram that satisfies `pred`; panics with everything seen on timeout.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Datagram) -> bool) -> Datagram {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("no {what} within {timeout:?}; datagrams so far: {:#?}", self.seen);
            }
            if let Some(d) = self.recv(left) {
                if pred(&d) {
                    return d;
                }
            }
        }
    }
}

/// The daemon as a child process; killed (by its pid) if the test ends without stopping it.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        swapoff_under(self.dir.path());
    }
}

/// The kernel's swap table, read with the crate's own parser.
fn swap_table() -> Vec<cluster_ai::sys::swap::SwapEntry> {
    let text = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    cluster_ai::sys::swap::parse_swaps(&text).expect("/proc/swaps as the kernel writes it")
}

/// swapoff every swap area whose path lies under `dir` (only what a test made there), and
/// every swap file in `dir` itself, by its path here: a file that a container switched on
/// through a bind mount is listed in /proc/swaps under the container's path (or a path relative
/// to the mount, "/cluster-ai-000001.swap"), which names nothing here, and the kernel refuses to
/// unlink an active swap file, so the tempdir would stay behind with the swap on.
pub fn swapoff_under(dir: &Path) {
    for e in swap_table().into_iter().filter(|e| e.path.starts_with(dir)) {
        let st = Command::new("swapoff").arg(&e.path).status();
        eprintln!("cleanup: swapoff {} -> {st:?}", e.path.display());
    }
    let listed = swap_table().len();
    let files = [dir.to_path_buf(), dir.join("swap")]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()));
    for f in files {
        let is_swap = f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("cluster-ai-") && n.ends_with(".swap"));
        if is_swap && listed > 0 {
            // Fails harmlessly (EINVAL) for a file that is not active swap.
            let _ = Command::new("swapoff").arg(&f).stderr(std::process::Stdio::null()).status();
        }
    }
}

/// Swap areas in /proc/swaps under `dir`: path, usable size in bytes, priority.
pub fn swaps_under(dir: &Path) -> Vec<(PathBuf, u64, i32)> {
    swap_table().into_iter().filter(|e| e.path.starts_with(dir)).map(|e| (e.path, e.size_bytes, e.priority)).collect()
}

/// The binary, as a root caller without CAP_SYS_ADMIN: for tests that run on the built-in
/// defaults, whose swap.dir (/var/lib/cluster-ai/swap) a test must never touch. Without root
/// the capability is missing anyway.
pub fn bin_without_swap_rights() -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]).arg(BIN);
        c
    } else {
        Command::new(BIN)
    }
}

pub struct DaemonBuilder {
    dir: tempfile::TempDir,
    config_text: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    defaults: bool,
    wrapper: Vec<String>,
}

/// A daemon whose swap lives in the test's tempdir (`[swap]` added to any config that has none,
/// with min_size 0 so no baseline is made unless the test asks for one).
pub fn daemon() -> DaemonBuilder {
    DaemonBuilder {
        dir: tempfile::tempdir().unwrap(),
        config_text: None,
        env: Vec::new(),
        args: Vec::new(),
        defaults: false,
        wrapper: Vec::new(),
    }
}

impl DaemonBuilder {
    /// No --config: the built-in defaults, run without the right to touch swap.
    pub fn on_defaults(mut self) -> Self {
        self.defaults = true;
        self
    }
    pub fn swap_dir(&self) -> PathBuf {
        self.dir.path().join("swap")
    }
    pub fn config(mut self, text: &str) -> Self {
        self.config_text = Some(text.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Starts the daemon through a wrapper command (e.g. `prlimit --nofile=32:32 --`).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        self
    }

    pub fn spawn(self) -> Daemon {
        let config = self.dir.path().join("config.toml");
        let log = self.dir.path().join("daemon.log");
        let runtime = self.dir.path().join("run");
        let mut cmd = if self.defaults {
            bin_without_swap_rights()
        } else if let Some((first, rest)) = self.wrapper.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        cmd.arg("run");
        if !self.defaults {
            write_config(&config, self.dir.path(), self.config_text.as_deref().unwrap_or_default());
            cmd.arg("--config").arg(&config);
        }
        cmd.args(&self.args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG")
            .env("RUNTIME_DIRECTORY", &runtime)
            .env("STATE_DIRECTORY", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Daemon { child, dir: self.dir, config, log }
    }
}

/// Writes a config whose swap stays in `dir` unless the text has a `[swap]` table of its own,
/// and whose health task watches nothing unless the text says what (the seed's services are
/// this machine's, not the test's: a test never restarts a service it did not start).
fn write_config(path: &Path, dir: &Path, text: &str) {
    let mut text = text.to_string();
    if !text.contains("[swap]") {
        text += &format!("\n[swap]\ndir = \"{}\"\nmin_size = \"0\"\n", dir.join("swap").display());
    }
    if !text.contains("[health") {
        text += "\n[health]\nenabled = false\n";
    }
    if !text.contains("[metrics]") {
        // Many daemons run at once: none takes the default port.
        text += "\n[metrics]\nlisten = \"\"\n";
    }
    std::fs::write(path, text).unwrap();
}

impl Daemon {
    /// Rewrites the config (for a reload), keeping swap in the test's tempdir.
    pub fn write_config(&self, text: &str) {
        write_config(&self.config, self.dir.path(), text);
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/control.sock")
    }
    /// `cluster-ai status ARGS` against this daemon's socket.
    pub fn status(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("status").arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }
    /// `cluster-ai swap ARGS` against this daemon's socket.
    pub fn swap(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("swap").args(args).arg("--socket").arg(self.socket()).output().unwrap()
    }
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.status(&["--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
    /// Waits for exit and returns the exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                panic!("daemon did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Polls the log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("log has no {needle:?} within {timeout:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The one variable that lets a machine without root skip the privileged tests. CI never sets it.
pub const SKIP_PRIVILEGED: &str = "CLUSTER_AI_SKIP_PRIVILEGED";

/// True when the test may go on as root. Without root it fails, saying what is missing,
/// unless `CLUSTER_AI_SKIP_PRIVILEGED=1`, when it says so and returns false.
pub fn require_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var(SKIP_PRIVILEGED).as_deref() == Ok("1") {
        eprintln!("SKIPPED (not root, {SKIP_PRIVILEGED}=1): {what}");
        return false;
    }
    panic!("{what} needs root; run the tests as root, or set {SKIP_PRIVILEGED}=1 to skip them");
}

/// The one variable that lets a machine without a peer (Dask's venv, Prometheus, dockerd, …)
/// skip the tests that need it; separate from [`SKIP_PRIVILEGED`], so a missing peer is never
/// mistaken for missing root. CI never sets it.
pub const SKIP_MISSING_PEERS: &str = "CLUSTER_AI_SKIP_MISSING_PEERS";

/// True when `peer` is here. Without it the test fails, naming the peer and how to install it
/// (`tests/run-all.sh` installs every one), unless `CLUSTER_AI_SKIP_MISSING_PEERS=1`, when it
/// says what it left out and returns false.
pub fn require_peer(peer: &str, present: bool, install: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var(SKIP_MISSING_PEERS).as_deref() == Ok("1") {
        eprintln!("SKIPPED ({SKIP_MISSING_PEERS}=1): no {peer} here ({install})");
        return false;
    }
    panic!("this test needs {peer}: {install} (tests/run-all.sh installs it), or set {SKIP_MISSING_PEERS}=1 to skip it");
}

/// Fails clearly in a build whose binary ignores `CLUSTER_AI_FAULT` (a release build without
/// the `fault-injection` feature), instead of passing without the fault.
pub fn require_faults() {
    if !cfg!(any(debug_assertions, feature = "fault-injection")) {
        panic!("this test injects faults: run it in a debug build, or with --features fault-injection");
    }
}

/// The container root: built once (about 45 s) and reused; `CLUSTER_AI_NSPAWN_ROOT` overrides.
pub fn container_root() -> PathBuf {
    let root = std::env::var_os("CLUSTER_AI_NSPAWN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nspawn-root"));
    if !root.join("usr/lib/systemd/systemd").exists() {
        eprintln!("building the container root in {} (about a minute)", root.display());
        let st = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/build-root.sh"))
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "building the container root failed; see the output above");
    }
    root
}

/// Boots the container root under systemd-nspawn with `payload` at /ci and runs /ci/`script`
/// in it (tests/e2e/ns-run.sh), with `swap.dir` a host directory bound in (the container's
/// /var is a volatile overlay, which cannot hold swap). Fails with the console log unless the
/// script succeeds; returns its output and what it left in the swap directory (whatever is
/// still active there is switched off first).
pub fn run_in_container(payload: &Path, script: &str) -> (String, Vec<PathBuf>) {
    let root = container_root();
    let console = payload.join("console.log");
    let swap = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ns-run.sh"))
        .arg(&root)
        .arg(payload)
        .env("NS_SCRIPT", script)
        .env("NS_CONSOLE_LOG", &console)
        .env("NS_EXTRA_ARGS", format!("--bind={}:/var/lib/cluster-ai/swap", swap.path().display()))
        .output()
        .unwrap();
    swapoff_under(swap.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed ({}); console:\n{}", out.status, std::fs::read_to_string(&console).unwrap_or_default());
    let left = std::fs::read_dir(swap.path()).unwrap().flatten().map(|e| e.path()).collect();
    (stdout, left)
}

/// Fails, naming what installs it, unless `tool` is on PATH.
pub fn require_tool(tool: &str, from: &str) {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()));
    assert!(found, "this test needs {tool} ({from}; .ci/run installs it)");
}

/// Builds the fake NVML (tests/fixtures/fake-nvml/fake-nvml.c) with gcc as
/// `DIR/libnvidia-ml.so.1`: with `LD_LIBRARY_PATH=DIR` the binary's own dlopen finds it, and
/// it answers one GPU (its name, memory and the device node it opens set by `FAKE_NVML_*`,
/// see the C file).
pub fn build_fake_nvml(dir: &Path) -> PathBuf {
    build_fake_nvml_with(dir, &[])
}

/// [`build_fake_nvml`] with gcc flags, e.g. `-DFAKE_NVML_OMIT_nvmlDeviceGetName` to leave an
/// entry point out.
pub fn build_fake_nvml_with(dir: &Path, flags: &[&str]) -> PathBuf {
    require_tool("gcc", "Debian's gcc");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-nvml/fake-nvml.c");
    let lib = dir.join("libnvidia-ml.so.1");
    let out = Command::new("gcc")
        .args(["-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"])
        .args(flags)
        .arg("-o")
        .arg(&lib)
        .arg(source)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc failed on {source}: {}", String::from_utf8_lossy(&out.stderr));
    lib
}
