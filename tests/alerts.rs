//! Alerts against the real things: a real Prometheus Alertmanager (Debian's
//! prometheus-alertmanager) receives an incident and sees it resolved, read back through its
//! API; a webhook sink that is down while the alert is raised, and across a daemon restart,
//! receives it once it is up; `cluster-ai alert test` reports each channel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon;
use peers::{free_port, wait_until, Alertmanager, Answer, Proc, Stub};

const T: Duration = Duration::from_secs(40);

/// A webhook sink on `port` (chosen before the sink starts: a test can point a daemon at it
/// while it is still down).
fn sink(port: u16) -> Stub {
    Stub::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), |_, _| Answer::ok("ok"))
}

fn web_config(addr: &str, alerts: &str) -> String {
    format!(
        "[[health.service]]\nname = \"web\"\nprobe = \"http://{addr}/health\"\nexpect_body = \"ok\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         fail_after = 2\npass_after = 1\n[alerts]\nnode = \"test-node\"\n{alerts}"
    )
}

#[test]
fn a_real_alertmanager_receives_the_incident_and_sees_it_resolved() {
    let am = Alertmanager::start();
    let failing = Arc::new(Mutex::new(false));
    let addr = Stub::health(failing.clone()).addr;
    let d = daemon().config(&web_config(&addr, &format!("alertmanager = \"http://127.0.0.1:{}\"\n", am.port))).spawn();
    d.wait_log("ready", T);
    *failing.lock().unwrap() = true;
    let firing = wait_until("the alert in Alertmanager", T, || {
        am.alerts().into_iter().find(|a| a["labels"]["alertname"] == "ClusterAiServiceDown" && a["labels"]["service"] == "web")
    });
    assert_eq!(firing["labels"]["node"], "test-node", "{firing}");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["status"]["state"], "active");
    assert!(firing["annotations"]["summary"].as_str().unwrap().starts_with("web is down: not answering: status 500"), "{firing}");
    *failing.lock().unwrap() = false;
    wait_until("the alert resolved in Alertmanager", T, || {
        (!am.alerts().iter().any(|a| a["labels"]["alertname"] == "ClusterAiServiceDown")).then_some(())
    });
    let log = d.wait_log("alerts: sent to alertmanager", T);
    assert!(log.contains("RESOLVED web is healthy again"), "{log}");
    let status = String::from_utf8(d.status(&[]).stdout).unwrap();
    assert!(status.contains("alerts:   alertmanager 2 sent; 0 firing"), "{status}");
}

#[test]
fn a_webhook_that_is_down_gets_every_queued_alert_once_up_also_across_a_daemon_restart() {
    let failing = Arc::new(Mutex::new(true));
    let addr = Stub::health(failing.clone()).addr;
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let cfg = web_config(&addr, &format!("webhook = \"http://127.0.0.1:{port}/hook\"\n"));
    let d = daemon().config(&cfg).env("STATE_DIRECTORY", state.path().to_str().unwrap()).spawn();
    d.wait_log("alerts: webhook did not take service/web", T);
    let queue = state.path().join("alerts-queue.json");
    let read_queue = || std::fs::read(&queue).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    // Written off the runtime right after the failed attempt.
    let kept = wait_until("the queue file with the alert", T, || read_queue().filter(|k| k.as_array().is_some_and(|a| a.len() == 1)));
    assert_eq!(kept[0]["alert"]["key"], "service/web");
    // A clean stop (SIGTERM, as systemctl restart sends): the queue stays, and the next start has
    // no unclean stop to report.
    let mut d = d;
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log_text());

    // The service is well again and the sink is up: the new daemon finds the queued alert and
    // delivers it; nothing new happened, so that is all it sends.
    *failing.lock().unwrap() = false;
    let got = sink(port);
    let d = daemon().config(&cfg).env("STATE_DIRECTORY", state.path().to_str().unwrap()).spawn();
    d.wait_log("1 undelivered alert(s) from before the restart", T);
    let first = wait_until("the queued alert at the sink", T, || got.bodies().first().cloned());
    assert_eq!(first["key"], "service/web", "{first}");
    assert_eq!(first["state"], "firing");
    assert!(first["text"].as_str().unwrap().starts_with("[test-node] CRITICAL web is down: not answering"), "{first}");
    d.wait_log("alerts: sent to webhook", T);
    wait_until("delivered: the queue file empty", T, || read_queue().filter(|k| *k == serde_json::json!([])));
    std::thread::sleep(Duration::from_secs(2));
    let all = got.bodies();
    assert_eq!(all.len(), 1, "nothing else to send: {all:?}");

    // Down and up again with the sink up: one firing, one resolved, in order.
    *failing.lock().unwrap() = true;
    wait_until("the firing alert", T, || (got.bodies().len() == 2).then_some(()));
    *failing.lock().unwrap() = false;
    wait_until("the resolved alert", T, || (got.bodies().len() == 3).then_some(()));
    let states: Vec<String> = got.bodies().iter().map(|a| a["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["firing", "firing", "resolved"]);
    let resolved = got.bodies()[2].clone();
    assert!(resolved["ends_at"].is_string() && resolved["text"].as_str().unwrap().contains("RESOLVED web is healthy again"), "{resolved}");
}

#[test]
fn alert_test_reports_each_channel() {
    let port = free_port();
    let got = sink(port);
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[alerts]\nnode = \"n1\"\nwebhook = \"http://127.0.0.1:{port}\"\nalertmanager = \"http://127.0.0.1:{dead}\"\n"),
    )
    .unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("webhook http://127.0.0.1:{port}: delivered (200)")), "{text}");
    assert!(text.contains(&format!("alertmanager http://127.0.0.1:{dead}: failed: cannot connect")), "{text}");
    let body = got.bodies()[0].clone();
    assert_eq!(body["text"], "[n1] INFO test alert from cluster-ai alert test");
    // No channel: a clear error.
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert channel is configured"));
}

#[test]
fn an_emergency_measure_taken_is_a_notice_at_the_webhook() {
    if !common::require_root("the emergency alert test (the memory measure expands real swap)") {
        return;
    }
    let ollama = peers::OllamaFake::start(&[("big:70b", 40 << 30)]);
    let port = free_port();
    let got = sink(port);
    let b = daemon();
    let swap_dir = b.swap_dir();
    let d = b
        .config(&format!(
            "sample_interval = \"1s\"\n[swap]\ndir = \"{}\"\nmin_size = \"0\"\nmax_size = \"64M\"\nincrement = \"64M\"\n\
             [emergency]\nmemory_threshold = 1\nmemory_pressure_threshold = 0\nmemory_sustain = \"0s\"\nmin_interval = \"1h\"\ndask_scheduler = \"\"\nollama = \"{}\"\n\
             [alerts]\nnode = \"n2\"\nwebhook = \"http://127.0.0.1:{port}\"\n",
            swap_dir.display(),
            ollama.url()
        ))
        .spawn();
    let notice =
        wait_until("the emergency notice", T, || got.bodies().iter().find(|a| a["key"] == "emergency/unload_ollama_model").cloned());
    assert_eq!(notice["state"], "notice", "{notice}");
    assert_eq!(notice["labels"]["measure"], "memory");
    assert!(notice["text"].as_str().unwrap().starts_with("[n2] WARNING emergency (memory"), "{notice}");
    assert!(notice["text"].as_str().unwrap().contains("unloaded Ollama model big:70b, freed 40.0 GiB"), "{notice}");
    drop(d);
}

/// A real SMTP server (aiosmtpd, Debian's python3-aiosmtpd) that files each mail in a maildir.
struct SmtpSink {
    _proc: Proc,
    port: u16,
    maildir: std::path::PathBuf,
}

impl SmtpSink {
    fn start(dir: &std::path::Path, tls: &[&str]) -> SmtpSink {
        let python = "/usr/bin/python3";
        let ok = Command::new(python).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        assert!(ok, "this test needs Debian's python3-aiosmtpd for {python} (.ci/run installs it)");
        let port = free_port();
        let maildir = dir.join(format!("maildir-{port}"));
        let proc = Proc::spawn(
            Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(tls)
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("smtp-{port}.log"))).unwrap()),
        );
        wait_until("the SMTP server", Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        SmtpSink { _proc: proc, port, maildir }
    }

    fn mails(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        out.sort();
        out
    }
}

/// `openssl` with these space-separated arguments, in `dir`.
fn openssl(dir: &std::path::Path, args: &str) {
    let out = Command::new("openssl").current_dir(dir).args(args.split_whitespace()).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private CA and a certificate it signed for 127.0.0.1: (ca.pem, leaf.pem, leaf.key).
fn private_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    openssl(dir, "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=cluster-ai-test-CA -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign");
    openssl(dir, "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1");
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(dir, "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext");
    (dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key"))
}

#[test]
fn an_https_webhook_is_trusted_through_ca_file_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = private_ca(dir.path());
    // An HTTPS webhook sink (Python's ssl and http.server): each POST body, one per line.
    let port = free_port();
    let bodies = dir.path().join("bodies");
    let _sink = Proc::spawn(Command::new("/usr/bin/python3").arg("-c").arg(HTTPS_SINK).arg(port.to_string()).args([&leaf, &key, &bodies]));
    wait_until("the HTTPS sink", Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    let cfg = dir.path().join("c.toml");
    let hook = format!("https://127.0.0.1:{port}/hook");
    std::fs::write(&cfg, format!("[alerts]\nnode = \"n4\"\nwebhook = \"{hook}\"\n")).unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "a server no known CA vouches for: {text}");
    // The URL's path is shown as "/…" (a webhook's token is its path).
    let shown = format!("https://127.0.0.1:{port}/…");
    assert!(text.contains(&format!("webhook {shown}: failed: TLS: invalid peer certificate: UnknownIssuer")), "{text}");
    assert!(!text.contains(&hook), "{text}");
    assert!(!bodies.exists(), "nothing was sent in the clear");
    std::fs::write(&cfg, format!("[alerts]\nnode = \"n4\"\nwebhook = \"{hook}\"\nca_file = \"{}\"\n", ca.display())).unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && text.contains(&format!("webhook {shown}: delivered (200)")), "{text}");
    let got = std::fs::read_to_string(&bodies).unwrap();
    let body: serde_json::Value = serde_json::from_str(got.lines().next().unwrap()).unwrap();
    assert_eq!(body["text"], "[n4] INFO test alert from cluster-ai alert test");
}

const HTTPS_SINK: &str = r#"
import http.server, ssl, sys
port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

#[test]
fn a_task_that_fails_is_alerted_and_so_is_the_restart_after_it() {
    common::require_faults();
    let port = free_port();
    let got = sink(port);
    let state = tempfile::tempdir().unwrap();
    let cfg = format!("sample_interval = \"1s\"\n[alerts]\nnode = \"n5\"\nwebhook = \"http://127.0.0.1:{port}/hook\"\n");
    let mut d =
        daemon().config(&cfg).env("STATE_DIRECTORY", state.path().to_str().unwrap()).env("CLUSTER_AI_FAULT", "sampler:error").spawn();
    assert_eq!(d.wait_exit(T), Some(1), "{}", d.log_text());
    let failed = wait_until("the task-failed notice", T, || got.bodies().iter().find(|a| a["key"] == "task/failed").cloned());
    assert_eq!(failed["text"], "[n5] CRITICAL task sampler failed: injected fault at sampler; cluster-ai stops (systemd restarts it)");
    assert!(std::fs::read_to_string(state.path().join("running")).unwrap().contains("reason: task sampler failed"));
    // The restart (as systemd would) says the last run did not stop cleanly, and why.
    let mut d = daemon().config(&cfg).env("STATE_DIRECTORY", state.path().to_str().unwrap()).spawn();
    let again = wait_until("the restart notice", T, || got.bodies().iter().find(|a| a["key"] == "task/unclean-stop").cloned());
    assert_eq!(
        again["text"],
        "[n5] CRITICAL cluster-ai restarted; its last run did not stop cleanly: task sampler failed: injected fault at sampler"
    );
    // A clean stop leaves no marker, and the next start says nothing.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log_text());
    assert!(!state.path().join("running").exists(), "a clean stop removes the marker");
    let d = daemon().config(&cfg).env("STATE_DIRECTORY", state.path().to_str().unwrap()).spawn();
    d.wait_log("ready", T);
    std::thread::sleep(Duration::from_secs(2));
    let all = got.bodies();
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn email_reaches_a_real_smtp_server_plain_and_over_starttls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Plain, as to a relay on this machine: `alert test`, then an incident through the daemon.
    let plain = SmtpSink::start(dir.path(), &[]);
    let cfg = dir.path().join("plain.toml");
    let email = |port: u16, security: &str, extra: &str| {
        format!(
            "[alerts]\nnode = \"n3\"\nsmtp_server = \"127.0.0.1:{port}\"\nsmtp_security = \"{security}\"\nsmtp_from = \"cluster-ai@n3.example\"\n\
             smtp_to = [\"ops@example.org\", \"oncall@example.org\"]\n{extra}"
        )
    };
    std::fs::write(&cfg, email(plain.port, "none", "")).unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success() && text.contains(&format!("email 127.0.0.1:{}: delivered (250", plain.port)), "{text}");
    let mail = wait_until("the test mail", T, || plain.mails().into_iter().next());
    assert!(mail.contains("Subject: [n3] INFO test alert from cluster-ai alert test"), "{mail}");
    assert!(mail.contains("To: ops@example.org, oncall@example.org") && mail.contains("From: cluster-ai@n3.example"), "{mail}");

    let failing = Arc::new(Mutex::new(true));
    let addr = Stub::health(failing.clone()).addr;
    let d = daemon()
        .config(
            &web_config(&addr, "").replace("[alerts]\nnode = \"test-node\"\n", &email(plain.port, "none", "").replace("n3", "test-node")),
        )
        .spawn();
    let down = wait_until("the incident mail", T, || plain.mails().into_iter().find(|m| m.contains("CRITICAL web is down")));
    assert!(down.contains("Subject: [test-node] CRITICAL web is down: not answering: status 500"), "{down}");
    assert!(down.contains("key: service/web") && down.contains("service: web"), "{down}");
    *failing.lock().unwrap() = false;
    wait_until("the resolved mail", T, || plain.mails().into_iter().find(|m| m.contains("RESOLVED web is healthy again")));
    drop(d);

    // STARTTLS required, the server's certificate signed by a private CA the config names.
    let (ca, leaf, key) = private_ca(dir.path());
    let tls = SmtpSink::start(dir.path(), &["--tlscert", leaf.to_str().unwrap(), "--tlskey", key.to_str().unwrap()]);
    // Without the CA the server is not trusted: a clear failure, nothing sent.
    std::fs::write(&cfg, email(tls.port, "starttls", "")).unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("failed:"), "{text}");
    // With it, and with credentials in a root-only file: refused while others may read the file.
    let creds = dir.path().join("smtp-credentials");
    std::fs::write(&creds, "alerts:secret\n").unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(
        &cfg,
        email(tls.port, "starttls", &format!("ca_file = \"{}\"\nsmtp_credentials_file = \"{}\"\n", ca.display(), creds.display())),
    )
    .unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("may be read by others (mode 644") && !text.contains("secret"), "{text}");
    // (aiosmtpd offers no AUTH without an authenticator: send without credentials.)
    std::fs::write(&cfg, email(tls.port, "starttls", &format!("ca_file = \"{}\"\n", ca.display()))).unwrap();
    let out = Command::new(common::BIN).args(["alert", "test", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mail = wait_until("the mail over STARTTLS", T, || tls.mails().into_iter().next());
    assert!(mail.contains("Subject: [n3] INFO test alert"), "{mail}");
}

/// A receiver that refuses one alert's payload for good (HTTP 400) must not block the channel:
/// that alert is sent once, set aside as a dead letter with the answer, and the CRITICAL one
/// behind it goes out; status counts it. (Before: 12 sends of the refused alert in 60 s and the
/// critical one never went.)
#[test]
fn a_payload_refused_for_good_is_set_aside_and_the_rest_go_out() {
    let receiver = Stub::start(|_, body| {
        if String::from_utf8_lossy(body).contains("service/refused") {
            Answer::Http(400, "invalid_blocks: too long\r\n".into())
        } else {
            Answer::ok("ok")
        }
    });
    let hook = receiver.addr.clone();
    let down = |name: &str| {
        format!(
            "[[health.service]]\nname = \"{name}\"\nprobe = \"http://127.0.0.1:{}/health\"\ninterval = \"1s\"\ntimeout = \"1s\"\nfail_after = 1\npass_after = 1\n",
            free_port()
        )
    };
    let d = daemon().config(&format!("{}{}[alerts]\nwebhook = \"http://{hook}/\"\n", down("refused"), down("next"))).spawn();
    wait_until("the critical alert behind the refused one", T, || {
        receiver.texts().iter().any(|b| b.contains("service/next") && b.contains("critical")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    let refused = receiver.texts().iter().filter(|b| b.contains("service/refused")).count();
    assert_eq!(refused, 1, "sent once, not retried");
    let v = d.status_json();
    let a = &v["alerts"];
    assert_eq!((a["channels"][0]["refused"].as_u64(), a["dead_letters"].as_u64()), (Some(1), Some(1)), "{a}");
    assert!(a["last_dead_letter"].as_str().unwrap().contains("answered 400: invalid_blocks: too long"), "{a}");
    let dead: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.dir.path().join("state/alerts-dead-letters.json")).unwrap()).unwrap();
    assert_eq!(dead[0]["alert"]["key"], "service/refused", "{dead}");
    let text = String::from_utf8(d.status(&[]).stdout).unwrap();
    assert!(text.contains("1 refused for good, in alerts-dead-letters.json"), "{text}");
    assert!(d.log_text().contains("webhook refused service/refused for good"), "{}", d.log_text());
}

/// A probe-only service that goes up and down on its own (nothing restarts it) is one
/// "flapping" alert once its incidents pass flap_restarts within flap_window, not a
/// CRITICAL/RESOLVED pair per incident.
#[test]
fn a_service_that_flaps_on_its_own_is_one_flapping_alert() {
    let failing = Arc::new(Mutex::new(false));
    let web = Stub::health(failing.clone()).addr;
    let got = Stub::sink();
    let hook = got.addr.clone();
    let _d = daemon()
        .config(&format!(
            "[health]\nflap_restarts = 2\nflap_window = \"5m\"\nreset_after = \"5m\"\n\
             [[health.service]]\nname = \"web\"\nprobe = \"http://{web}/health\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfail_after = 1\npass_after = 1\n\
             [alerts]\nwebhook = \"http://{hook}/\"\nper_minute = 1000\n"
        ))
        .spawn();
    // Down and up every 1.5 s, six times.
    for i in 0..12 {
        std::thread::sleep(Duration::from_millis(1500));
        *failing.lock().unwrap() = i % 2 == 0;
    }
    wait_until("the flapping alert", T, || got.bodies().iter().any(|a| a["key"] == "flapping/web").then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let alerts = got.bodies();
    let count = |key: &str, state: &str| alerts.iter().filter(|a| a["key"] == key && a["state"] == state).count();
    assert_eq!(count("service/web", "firing"), 2, "the first two incidents one by one: {alerts:?}");
    assert_eq!(count("service/web", "resolved"), 2, "{alerts:?}");
    assert_eq!(count("flapping/web", "firing"), 1, "{alerts:?}");
}
