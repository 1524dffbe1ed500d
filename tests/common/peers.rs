//! The cluster's peers for the emergency tests: a real Dask (from the venv `.ci/run` makes), a
//! real dockerd, a private dbus-daemon with a stand-in for systemd's Manager (the container
//! test uses the real one), and a fake Ollama that follows its documented API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The venv with `distributed` (`.ci/run` makes it); `CLUSTER_AI_DASK_VENV` overrides.
pub fn dask_venv() -> Option<PathBuf> {
    let v = std::env::var_os("CLUSTER_AI_DASK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dask-venv"));
    let install = format!("python3 -m venv {v} && {v}/bin/pip install distributed dask", v = v.display());
    crate::common::require_peer("a real Dask (its venv)", v.join("bin/dask").exists(), &install).then_some(v)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process the test started, stopped by its pid (its whole process group) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        Proc(cmd.process_group(0).stdin(Stdio::null()).spawn().unwrap())
    }

    pub fn stop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    match poll_until(timeout, f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `f` every 50 ms until it returns `Some`; `None` once `timeout` has passed (for a
/// test that asserts something did *not* happen, or says more than "timed out").
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out += &rest[..n];
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A real Dask scheduler on loopback; `api` turns on `distributed.http.scheduler.api`.
pub struct Scheduler {
    pub proc: Proc,
    pub port: u16,
    pub dashboard: u16,
}

impl Scheduler {
    pub fn start(venv: &Path, api: bool, log: &Path) -> Scheduler {
        let (port, dashboard) = (free_port(), free_port());
        let mut cmd = Command::new(venv.join("bin/dask"));
        cmd.args(["scheduler", "--host", "127.0.0.1", "--port", &port.to_string(), "--dashboard-address"])
            .arg(format!("127.0.0.1:{dashboard}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if api {
            cmd.env(
                "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
                r#"["distributed.http.scheduler.api","distributed.http.scheduler.prometheus","distributed.http.scheduler.info","distributed.http.scheduler.json","distributed.http.health","distributed.http.proxy","distributed.http.statics"]"#,
            );
        }
        let s = Scheduler { proc: Proc::spawn(&mut cmd), port, dashboard };
        let addr = s.http_addr();
        wait_until("the Dask scheduler's /health", Duration::from_secs(60), || {
            http(&addr, "GET", "/health", "").filter(|(st, _)| *st == 200)
        });
        s
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.dashboard)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// `dask worker` with `n` worker processes of one thread each.
    pub fn worker_command(venv: &Path, port: u16, n: u32) -> Command {
        let mut cmd = Command::new(venv.join("bin/dask"));
        cmd.args(["worker", &format!("tcp://127.0.0.1:{port}"), "--host", "127.0.0.1", "--nworkers", &n.to_string()])
            .args(["--nthreads", "1", "--memory-limit", "512MiB", "--dashboard-address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Workers as `/json/counts.json` (always on) reports them.
    pub fn workers(&self) -> Option<u64> {
        let (_, body) = http(&self.http_addr(), "GET", "/json/counts.json", "")?;
        serde_json::from_str::<serde_json::Value>(&body).ok()?["workers"].as_u64()
    }
}

/// A private D-Bus bus (`dbus-daemon`) for a stand-in of systemd's Manager.
pub struct Bus {
    pub proc: Proc,
    pub address: String,
}

impl Bus {
    pub fn start(dir: &Path) -> Bus {
        let sock = dir.join("bus");
        let address = format!("unix:path={}", sock.display());
        let Ok(bin) = which("dbus-daemon") else {
            panic!("this test needs dbus-daemon (apt-get install dbus-daemon, as .ci/run does)");
        };
        let proc = Proc::spawn(Command::new(bin).args(["--session", "--nofork", "--nopidfile"]).arg(format!("--address={address}")));
        wait_until("the private bus socket", Duration::from_secs(10), || sock.exists().then_some(()));
        Bus { proc, address }
    }
}

fn which(name: &str) -> Result<PathBuf, ()> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).ok_or(())
}

/// systemd's Manager, as far as cluster-ai uses it, on a private bus: `RestartUnit` of the one
/// unit it knows runs `restart` (stop the old process, start a new one) and then sends
/// `JobRemoved` with "done"; other units are "not found".
pub struct FakeSystemd {
    pub restarts: Arc<Mutex<Vec<String>>>,
}

struct Manager {
    unit: String,
    restart: Arc<Mutex<Box<dyn FnMut() + Send>>>,
    restarts: Arc<Mutex<Vec<String>>>,
    next_job: u32,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn subscribe(&self) {}

    async fn restart_unit(
        &mut self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: zbus::object_server::SignalEmitter<'_>,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedObjectPath> {
        if name != self.unit {
            return Err(zbus::fdo::Error::Failed(format!("Unit {name} not found.")));
        }
        self.next_job += 1;
        let id = self.next_job;
        let job = zbus::zvariant::OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        let restart = self.restart.clone();
        tokio::task::spawn_blocking(move || (restart.lock().unwrap())()).await.unwrap();
        self.restarts.lock().unwrap().push(name.clone());
        Manager::job_removed(&emitter, id, job.clone(), name, "done".into()).await?;
        Ok(job)
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: u32,
        job: zbus::zvariant::OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

impl FakeSystemd {
    pub fn serve(bus: &Bus, unit: &str, restart: impl FnMut() + Send + 'static) -> FakeSystemd {
        let restarts = Arc::new(Mutex::new(Vec::new()));
        let manager =
            Manager { unit: unit.into(), restart: Arc::new(Mutex::new(Box::new(restart))), restarts: restarts.clone(), next_job: 0 };
        let address = bus.address.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str())
                    .unwrap()
                    .name("org.freedesktop.systemd1")
                    .unwrap()
                    .serve_at("/org/freedesktop/systemd1", manager)
                    .unwrap()
                    .build()
                    .await;
                tx.send(conn.as_ref().map(|_| ()).map_err(|e| e.to_string())).unwrap();
                let _conn = conn;
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        FakeSystemd { restarts }
    }
}

/// A fake Ollama on loopback: `GET /api/version`, `GET /api/ps`, `POST /api/generate` with
/// `keep_alive: 0` (unloads; unknown model → 404). `broken` makes every answer a 500.
/// Ollama's documented API as far as the daemon uses it: `/api/ps` lists each loaded model
/// with its `size` and `size_vram` (the part held in GPU memory), and an unload (`keep_alive:
/// 0`) removes it — except for the models in `sticky`, which are acknowledged and stay listed,
/// as ollama#7606 reports Ollama doing.
pub struct OllamaFake {
    pub addr: String,
    /// name, size, size_vram
    pub loaded: Arc<Mutex<Vec<(String, u64, u64)>>>,
    pub unloads: Arc<Mutex<Vec<(String, Instant)>>>,
    pub broken: Arc<Mutex<bool>>,
    pub sticky: Arc<Mutex<Vec<String>>>,
}

impl OllamaFake {
    /// Models held wholly in system RAM.
    pub fn start(models: &[(&str, u64)]) -> OllamaFake {
        let models: Vec<(&str, u64, u64)> = models.iter().map(|(n, s)| (*n, *s, 0)).collect();
        OllamaFake::start_with_vram(&models)
    }

    /// Models as (name, size, size_vram).
    pub fn start_with_vram(models: &[(&str, u64, u64)]) -> OllamaFake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake = OllamaFake {
            addr: listener.local_addr().unwrap().to_string(),
            loaded: Arc::new(Mutex::new(models.iter().map(|(n, s, v)| (n.to_string(), *s, *v)).collect())),
            unloads: Arc::new(Mutex::new(Vec::new())),
            broken: Arc::new(Mutex::new(false)),
            sticky: Arc::new(Mutex::new(Vec::new())),
        };
        let (loaded, unloads, broken, sticky) = (fake.loaded.clone(), fake.unloads.clone(), fake.broken.clone(), fake.sticky.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_ollama(stream, &loaded, &unloads, &broken, &sticky);
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One HTTP/1.1 request from `stream` (5 s to arrive): its request line and its body.
pub fn read_request(stream: &TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((line, body))
}

fn serve_ollama(
    stream: TcpStream,
    loaded: &Mutex<Vec<(String, u64, u64)>>,
    unloads: &Mutex<Vec<(String, Instant)>>,
    broken: &Mutex<bool>,
    sticky: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let (line, body) = read_request(&stream)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, reply) = if *broken.lock().unwrap() {
        (500, r#"{"error":"internal"}"#.to_string())
    } else {
        match (method, path) {
            ("GET", "/") => (200, "Ollama is running".to_string()),
            ("GET", "/api/version") => (200, r#"{"version":"0.33.0"}"#.to_string()),
            ("GET", "/api/ps") => {
                let models: Vec<serde_json::Value> = loaded
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(n, s, v)| serde_json::json!({"name": n, "model": n, "size": s, "digest": "0", "details": {}, "expires_at": "2026-11-23T12:00:00Z", "size_vram": v, "context_length": 4096}))
                    .collect();
                (200, serde_json::json!({ "models": models }).to_string())
            }
            ("POST", "/api/generate") => {
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let model = req["model"].as_str().unwrap_or("").to_string();
                let mut l = loaded.lock().unwrap();
                if req["keep_alive"] != serde_json::json!(0) {
                    (400, r#"{"error":"this fake only unloads"}"#.to_string())
                } else if let Some(i) = l.iter().position(|(n, _, _)| *n == model) {
                    if !sticky.lock().unwrap().contains(&model) {
                        l.remove(i);
                    }
                    unloads.lock().unwrap().push((model.clone(), Instant::now()));
                    (200, serde_json::json!({"model": model, "created_at": "2026-11-23T12:00:00Z", "response": "", "done": true, "done_reason": "unload"}).to_string())
                } else {
                    (404, serde_json::json!({"error": format!("model '{model}' not found")}).to_string())
                }
            }
            _ => (404, "404 page not found".to_string()),
        }
    };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    s.flush()
}

/// A real dockerd with its own data root and socket under `dir`.
pub struct Dockerd {
    pub proc: Proc,
    pub socket: PathBuf,
}

impl Dockerd {
    pub fn start(dir: &Path) -> Dockerd {
        let Ok(bin) = which("dockerd") else {
            panic!("this test needs a real dockerd: apt-get install docker.io (as .ci/run does)");
        };
        let socket = dir.join("docker.sock");
        let proc = Proc::spawn(
            Command::new(bin)
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("--pidfile")
                .arg(dir.join("docker.pid"))
                .arg("-H")
                .arg(format!("unix://{}", socket.display()))
                .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap()),
        );
        let d = Dockerd { proc, socket };
        wait_until("dockerd's /_ping", Duration::from_secs(30), || d.cli(&["version"]).status.success().then_some(()));
        d
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker").arg("-H").arg(format!("unix://{}", self.socket.display())).args(args).output().unwrap()
    }
}

/// A real Prometheus Alertmanager (Debian's prometheus-alertmanager) on a free port.
pub struct Alertmanager {
    _proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        Alertmanager::start_with("route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n")
    }

    /// With `config` as its configuration file.
    pub fn start_with(config: &str) -> Alertmanager {
        crate::common::require_tool("prometheus-alertmanager", "Debian's package");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("am.yml"), config).unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("am.log")).unwrap()),
        );
        wait_until("Alertmanager's API", Duration::from_secs(30), || {
            http(&format!("127.0.0.1:{port}"), "GET", "/api/v2/status", "").filter(|(s, _)| *s == 200)
        });
        Alertmanager { _proc: proc, port, _dir: dir }
    }

    /// Its alert groups (`/api/v2/alerts/groups`), as the route groups them.
    pub fn groups(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(&format!("127.0.0.1:{}", self.port), "GET", "/api/v2/alerts/groups", "").unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    }

    /// The alerts it holds as active (resolved ones are not listed).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(&format!("127.0.0.1:{}", self.port), "GET", "/api/v2/alerts", "").unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    }
}

/// What a [`Stub`] answers one request: a status and a body, or nothing at all (the
/// connection is held open for 30 s, as a hung service holds it).
pub enum Answer {
    Http(u16, String),
    Hang,
}

impl Answer {
    pub fn ok(body: &str) -> Answer {
        Answer::Http(200, body.into())
    }
}

/// A stub HTTP/1.1 service on loopback, each connection on a thread of its own (a hung answer
/// holds up no other): `respond` gets each request's line and body; every request is kept, in
/// order. The tests' one stub: webhooks, probed services, a Dask scheduler's HTTP API.
pub struct Stub {
    pub addr: String,
    pub requests: Requests,
}

/// Each request a stub received: its request line and body.
pub type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

impl Stub {
    pub fn start(respond: impl Fn(&str, &[u8]) -> Answer + Send + Sync + 'static) -> Stub {
        Stub::on(TcpListener::bind("127.0.0.1:0").unwrap(), respond)
    }

    /// On a listener of the caller's (a port chosen before the stub starts).
    pub fn on(listener: TcpListener, respond: impl Fn(&str, &[u8]) -> Answer + Send + Sync + 'static) -> Stub {
        let addr = listener.local_addr().unwrap().to_string();
        let requests: Requests = Arc::default();
        let (seen, respond) = (requests.clone(), Arc::new(respond));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, respond) = (seen.clone(), respond.clone());
                std::thread::spawn(move || {
                    let Ok((line, body)) = read_request(&stream) else { return };
                    let answer = respond(&line, &body);
                    seen.lock().unwrap().push((line, body));
                    let mut s = stream;
                    match answer {
                        Answer::Http(status, body) => {
                            let _ = write!(s, "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        }
                        Answer::Hang => std::thread::sleep(Duration::from_secs(30)),
                    }
                });
            }
        });
        Stub { addr, requests }
    }

    /// A service whose every path answers 200 `ok`, or 500 `fail` while `failing` holds true.
    pub fn health(failing: Arc<Mutex<bool>>) -> Stub {
        Stub::start(move |_, _| if *failing.lock().unwrap() { Answer::Http(500, "fail".into()) } else { Answer::ok("ok") })
    }

    /// A webhook that takes everything (200 `ok`).
    pub fn sink() -> Stub {
        Stub::start(|_, _| Answer::ok("ok"))
    }

    /// The bodies received, as JSON where they parse (else a JSON string).
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|(_, b)| serde_json::from_slice(b).unwrap_or_else(|_| String::from_utf8_lossy(b).into_owned().into())).collect()
    }

    /// The bodies received, as text.
    pub fn texts(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
    }
}
