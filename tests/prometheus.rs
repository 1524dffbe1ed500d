//! The fleet view against the real things: `/metrics` read by promtool's parser and checked
//! against the daemon's own status; the packaged rules checked and unit-tested by promtool; a
//! real Prometheus (Debian's `prometheus`) scraping two daemons, a rule firing into a real
//! Alertmanager, and `cluster-ai cluster status` reading both nodes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon;
use peers::{free_port, http, wait_until, Alertmanager, Proc, Stub};

const T: Duration = Duration::from_secs(60);

fn need(tool: &str) {
    common::require_tool(tool, "Debian's prometheus package");
}

/// An HTTP service whose `/health` answers 200 `ok`, or 500 when `healthy` is false.
fn service(healthy: bool) -> String {
    Stub::health(Arc::new(Mutex::new(!healthy))).addr
}

fn node_config(node: &str, metrics_port: u16, web: &str) -> String {
    format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[[health.service]]\nname = \"web\"\nprobe = \"http://{web}/health\"\n\
         expect_body = \"ok\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfail_after = 1\npass_after = 1\n[alerts]\nnode = \"{node}\"\n"
    )
}

/// The samples of a classic-format exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

fn packaging() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/prometheus"))
}

#[test]
fn metrics_pass_promtool_and_agree_with_the_daemons_state() {
    need("promtool");
    let port = free_port();
    let web = service(true);
    let d = daemon().config(&node_config("m1", port, &web)).spawn();
    let addr = format!("127.0.0.1:{port}");
    let text = wait_until("service_up 1 in /metrics", T, || {
        http(&addr, "GET", "/metrics", "")
            .filter(|(s, b)| *s == 200 && b.contains("cluster_ai_service_up{service=\"web\"} 1\n"))
            .map(|(_, b)| b)
    });
    // promtool reads it with Prometheus's own parser and lints the names.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The values are the daemon's own.
    let m = samples(&text);
    let status = d.status_json();
    assert_eq!(m["cluster_ai_memory_total_bytes"], status["snapshot"]["memory_total_bytes"].as_f64().unwrap());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(m[&format!("cluster_ai_build_info{{version=\"{version}\",node=\"m1\"}}")], 1.0, "{text}");
    let tasks = status["tasks"].as_array().unwrap();
    for t in tasks {
        let name = t["name"].as_str().unwrap();
        assert_eq!(m[&format!("cluster_ai_task_up{{task=\"{name}\"}}")], 1.0, "{name}: {text}");
    }
    assert_eq!(m.keys().filter(|k| k.starts_with("cluster_ai_task_up{")).count(), tasks.len());
    assert!(m["cluster_ai_service_probe_duration_seconds{service=\"web\"}"] > 0.0);
    // Raw counters and timestamps, not rates and ages; the daemon's own process_* metrics.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for t in tasks {
        let beat = m[&format!("cluster_ai_task_last_heartbeat_timestamp_seconds{{task=\"{}\"}}", t["name"].as_str().unwrap())];
        assert!(beat > now - 120.0 && beat <= now + 1.0, "{beat} vs {now}: {text}");
    }
    assert!(m["cluster_ai_cpu_seconds_total{mode=\"busy\"}"] > 0.0 && m["cluster_ai_cpu_seconds_total{mode=\"idle\"}"] > 0.0);
    assert!(m["process_resident_memory_bytes"] > 0.0 && m["process_open_fds"] >= 3.0 && m["process_cpu_seconds_total"] >= 0.0);
    let started = m["process_start_time_seconds"];
    assert!(started > now - 120.0 && started <= now, "{started} vs {now}");
    assert!(m["process_max_fds"] >= m["process_open_fds"]);
    assert_eq!(m["cluster_ai_swap_expand_duration_seconds_bucket{le=\"+Inf\"}"], m["cluster_ai_swap_expand_duration_seconds_count"]);

    // The swap task's counters: one file added through the daemon shows in them.
    if common::require_root("the swap part of the metrics test (it adds a real swap file)") {
        assert_eq!(m["cluster_ai_swap_expansions_total"], 0.0);
        let out = d.swap(&["expand", "64M"]);
        assert!(out.status.success(), "swap expand: {}", String::from_utf8_lossy(&out.stderr));
        let m = wait_until("the expansion in /metrics", T, || {
            let m = samples(&http(&addr, "GET", "/metrics", "")?.1);
            (m["cluster_ai_swap_expansions_total"] == 1.0).then_some(m)
        });
        assert_eq!(m["cluster_ai_swap_managed_files"], 1.0);
        assert_eq!(m["cluster_ai_swap_managed_bytes"], (64u64 << 20) as f64);
        assert_eq!(m["cluster_ai_swap_expand_duration_seconds_count"], 1.0);
        assert!(m["cluster_ai_swap_expand_duration_seconds_sum"] > 0.0);
    }

    // Every metric the packaged rules and dashboard use is one the daemon serves.
    for file in ["cluster-ai-rules.yml", "grafana-dashboard.json"] {
        let used = std::fs::read_to_string(packaging().join(file)).unwrap();
        let mut names: Vec<&str> = used
            .match_indices("cluster_ai_")
            .map(|(i, _)| {
                let rest = &used[i..];
                &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
            })
            .collect();
        names.dedup();
        assert!(!names.is_empty());
        for n in names {
            let base = n.trim_end_matches("_bucket");
            assert!(text.contains(&format!("# TYPE {base} ")), "{file} uses {n}, which /metrics does not serve");
        }
    }

    // OpenMetrics for a scraper that asks for it; nothing but /metrics.
    let raw =
        raw_get(&addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n");
    assert!(raw.contains("content-type: application/openmetrics-text") && raw.ends_with("# EOF\n"), "{raw}");
    assert!(raw.contains("# TYPE cluster_ai_swap_expansions counter\ncluster_ai_swap_expansions_total "), "{raw}");
    assert!(raw.contains("# TYPE cluster_ai_memory_total_bytes gauge\n# UNIT cluster_ai_memory_total_bytes bytes\n"), "{raw}");
    assert_eq!(http(&addr, "GET", "/", "").unwrap().0, 404);
}

fn raw_get(addr: &str, request: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_packaged_rules_pass_promtool_and_their_unit_tests() {
    need("promtool");
    let dir = packaging();
    let run = |args: &[&str]| {
        let out = Command::new("promtool").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["check", "rules", "cluster-ai-rules.yml"]).contains("SUCCESS: 8 rules found"));
    run(&["test", "rules", "cluster-ai-rules.test.yml"]);
    run(&["check", "config", "prometheus.yml"]);
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

/// A real Prometheus on a free port, scraping `targets` every second, with the packaged rules
/// (their `for:` shortened to none) and `alertmanager`.
struct Prometheus {
    _proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[String], alertmanager: u16) -> Prometheus {
        let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
        let jobs = format!("  - job_name: cluster-ai\n    static_configs:\n      - targets: [{targets}]\n");
        Prometheus::start_with(&jobs, Some(alertmanager), tempfile::tempdir().unwrap())
    }

    /// Prometheus with `scrape_configs` (YAML list items, indented two spaces) in `dir`, which
    /// may hold files the jobs name.
    fn start_with(scrape_configs: &str, alertmanager: Option<u16>, dir: tempfile::TempDir) -> Prometheus {
        need("prometheus");
        let rules = std::fs::read_to_string(packaging().join("cluster-ai-rules.yml")).unwrap();
        let rules: String = rules.lines().map(|l| if l.trim_start().starts_with("for: ") { "" } else { l }).collect::<Vec<_>>().join("\n");
        std::fs::write(dir.path().join("cluster-ai-rules.yml"), rules).unwrap();
        let alerting = alertmanager
            .map(|am| format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{am}\"]\n"))
            .unwrap_or_default();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [cluster-ai-rules.yml]\n{alerting}\
                 scrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            Command::new("prometheus")
                .current_dir(dir.path())
                .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()),
        );
        wait_until("Prometheus ready", T, || http(&format!("127.0.0.1:{port}"), "GET", "/-/ready", "").filter(|(s, _)| *s == 200));
        Prometheus { _proc: proc, port, _dir: dir }
    }

    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", cluster_ai::sys::http::percent_encode(promql));
        let (_, body) = http(&format!("127.0.0.1:{}", self.port), "GET", &path, "").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn cluster_status(prometheus: u16, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["cluster", "status", "--prometheus", &format!("http://127.0.0.1:{prometheus}")]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_real_prometheus_scrapes_two_nodes_fires_a_rule_into_alertmanager_and_cluster_status_reads_both() {
    let am = Alertmanager::start();
    let (p1, p2) = (free_port(), free_port());
    let mut d1 = daemon().config(&node_config("m1", p1, &service(true))).spawn();
    let _d2 = daemon().config(&node_config("m2", p2, &service(false))).spawn();
    let prom = Prometheus::start(&[format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}")], am.port);

    // Both scraped; m2's service down fires the packaged rule, which reaches Alertmanager.
    wait_until("both nodes scraped", T, || (prom.query("cluster_ai_build_info").len() == 2).then_some(()));
    let firing = wait_until("ClusterAiServiceDown firing in Prometheus", T, || {
        prom.query("ALERTS{alertname=\"ClusterAiServiceDown\",alertstate=\"firing\"}").into_iter().next()
    });
    assert_eq!(firing["metric"]["node"], "m2", "{firing}");
    assert_eq!(firing["metric"]["service"], "web", "{firing}");
    let in_am = wait_until("the rule's alert in Alertmanager", T, || {
        am.alerts().into_iter().find(|a| a["labels"]["alertname"] == "ClusterAiServiceDown" && a["labels"]["node"] == "m2")
    });
    assert_eq!(in_am["annotations"]["summary"], "m2: web is down", "{in_am}");

    // `cluster status` reads both back through Prometheus.
    let (code, out) = cluster_status(prom.port, true);
    assert_eq!(code, Some(5), "m2 has a service down: {out}");
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let by = |name: &str| nodes.iter().find(|n| n["node"] == name).cloned().unwrap_or_else(|| panic!("no {name}: {out}"));
    let (n1, n2) = (by("m1"), by("m2"));
    assert_eq!((n1["up"].as_bool(), n1["services_down"].as_array().unwrap().len()), (Some(true), 0), "{out}");
    assert_eq!(n2["services_down"], serde_json::json!(["web"]), "{out}");
    assert!(n2["alerts_firing"].as_array().unwrap().contains(&serde_json::json!("ClusterAiServiceDown(web)")), "{out}");
    assert!(n1["memory_used_ratio"].as_f64().unwrap() > 0.0 && n1["last_seen_unix"].as_f64().is_some(), "{out}");
    let (_, table) = cluster_status(prom.port, false);
    assert!(
        table.starts_with("NODE") && table.contains("m1") && table.contains("m2") && table.contains("ClusterAiServiceDown(web)"),
        "{table}"
    );

    // A node whose daemon stops is down, and was last seen a moment ago.
    d1.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d1.wait_exit(T), Some(0));
    let n1 = wait_until("m1 down in cluster status", T, || {
        let (_, out) = cluster_status(prom.port, true);
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        nodes.into_iter().find(|n| n["instance"] == format!("127.0.0.1:{p1}") && n["up"] == false)
    });
    assert!(n1["last_seen_unix"].as_f64().is_some(), "{n1}");
    // Nothing answers at the address: a clear error, exit 69 (EX_UNAVAILABLE).
    let (code, out) = cluster_status(free_port(), false);
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("cannot connect"), "{out}");
}

/// The daemon's own ClusterAiServiceDown (pushed through [alerts] alertmanager) and the packaged
/// rule's (fired by Prometheus, with instance and job labels besides) for one incident are one
/// group under the packaged Alertmanager route: one notification, not two.
#[test]
fn the_daemons_alert_and_the_rules_alert_for_one_incident_are_one_group() {
    let route = std::fs::read_to_string(packaging().join("alertmanager.yml")).unwrap();
    let am = Alertmanager::start_with(&route);
    let mut pushed = cluster_ai::alerts::Alert::firing(
        cluster_ai::alerts::AlertKey::ServiceDown("ollama".into()),
        cluster_ai::alerts::Severity::Critical,
        "ollama is down: its unit failed",
    )
    .label("service", "ollama");
    pushed.node = "gpu-1".into();
    let daemon_body = cluster_ai::alerts::channel::alertmanager_body(&pushed);
    let rule_body = serde_json::json!([{
        "labels": {"alertname": "ClusterAiServiceDown", "node": "gpu-1", "service": "ollama", "severity": "critical",
                   "instance": "10.0.0.5:9464", "job": "cluster-ai"},
        "annotations": {"summary": "gpu-1: ollama is down"},
    }]);
    // Another node's incident: a group of its own.
    let other = serde_json::json!([{"labels": {"alertname": "ClusterAiServiceDown", "node": "gpu-2", "service": "ollama", "severity": "critical"}}]);
    let addr = format!("127.0.0.1:{}", am.port);
    for body in [daemon_body, rule_body, other] {
        let (status, text) = http(&addr, "POST", "/api/v2/alerts", &body.to_string()).unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let groups = wait_until("three alerts in Alertmanager", T, || {
        let g = am.groups();
        (g.iter().map(|g| g["alerts"].as_array().map_or(0, Vec::len)).sum::<usize>() == 3).then_some(g)
    });
    let sizes: BTreeMap<String, usize> =
        groups.iter().map(|g| (g["labels"]["node"].as_str().unwrap_or("").to_string(), g["alerts"].as_array().unwrap().len())).collect();
    assert_eq!(sizes, BTreeMap::from([("gpu-1".to_string(), 2), ("gpu-2".to_string(), 1)]), "{groups:?}");
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with the openssl CLI:
/// (CA certificate, server certificate, server key) in `dir`.
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    common::require_tool("openssl", "Debian's openssl package");
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];
    openssl(&[&["req", "-x509"], &ec[..], &["-subj", "/CN=cluster-ai test CA", "-keyout", "ca.key", "-out", "ca.crt"]].concat());
    openssl(
        &[
            &["req", "-x509", "-CA", "ca.crt", "-CAkey", "ca.key"],
            &ec[..],
            &["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
            &["-keyout", "server.key", "-out", "server.crt"],
        ]
        .concat(),
    );
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

/// One GET /metrics over TLS (trusting `ca`), with basic auth when given: the status line's
/// code and the whole answer.
fn https_get(addr: &str, ca: &Path, auth: Option<(&str, &str)>) -> (u16, String) {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    use std::io::Read;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr).unwrap());
    let header = auth
        .map(|(u, p)| format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))))
        .unwrap_or_default();
    tls.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{header}Connection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    // The server closes without close_notify's wait: what arrived is the answer.
    let _ = tls.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {out:?}"));
    (code, out)
}

/// `[metrics] web_config_file` in exporter-toolkit's format: a real Prometheus scrapes over
/// TLS with basic auth (up 1); the same target with a wrong password is up 0 with a 401; plain
/// HTTP gets nothing; a changed file is picked up on reload.
#[test]
fn a_real_prometheus_scrapes_over_tls_with_basic_auth_and_a_wrong_password_is_down() {
    need("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = certificates(dir.path());
    // Cost 4 keeps a debug build's bcrypt quick; the cost is the hash's own, whatever it is.
    let hash = |p: &str| bcrypt::hash_with_salt(p, 4, [42; 16]).unwrap().to_string();
    let web = dir.path().join("web-config.yml");
    let write_web = |password: &str| {
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {}\n",
                hash(password)
            ),
        )
        .unwrap()
    };
    write_web("s3cret");
    let port = free_port();
    let d = daemon().config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\nweb_config_file = \"{}\"\n", web.display())).spawn();
    let addr = format!("127.0.0.1:{port}");
    d.wait_log("metrics: serving https://", T);

    // Directly: the right password gets the metrics, a wrong one or none 401 with a challenge,
    // plain HTTP no answer at all.
    let (code, body) = wait_until("an https answer", T, || {
        std::net::TcpStream::connect(&addr).ok()?;
        Some(https_get(&addr, &ca, Some(("prometheus", "s3cret"))))
    });
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("cluster_ai_build_info{") && body.contains("process_resident_memory_bytes "), "{body}");
    for auth in [Some(("prometheus", "wrong")), Some(("nobody", "s3cret")), None] {
        let (code, body) = https_get(&addr, &ca, auth);
        assert_eq!(code, 401, "{auth:?}: {body}");
        assert!(body.to_ascii_lowercase().contains("www-authenticate: basic"), "{body}");
        assert!(!body.contains("cluster_ai_"), "{body}");
    }
    assert!(http(&addr, "GET", "/metrics", "").is_none_or(|(s, _)| s != 200), "plain HTTP must not be answered with metrics");
    // Clients that never finish their TLS handshake hold no slot a scrape needs.
    let stalled: Vec<_> = (0..16).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    assert_eq!(https_get(&addr, &ca, Some(("prometheus", "s3cret"))).0, 200);
    drop(stalled);

    // A real Prometheus: the right password is up, the wrong one down with Prometheus's 401.
    let pdir = tempfile::tempdir().unwrap();
    let tls = format!("    scheme: https\n    tls_config:\n      ca_file: {}\n", ca.display());
    let jobs = format!(
        "  - job_name: cluster-ai\n{tls}    basic_auth:\n      username: prometheus\n      password: s3cret\n\
         \x20   static_configs:\n      - targets: [\"{addr}\"]\n\
         \x20 - job_name: wrong-password\n{tls}    basic_auth:\n      username: prometheus\n      password: wrong\n\
         \x20   static_configs:\n      - targets: [\"{addr}\"]\n"
    );
    let prom = Prometheus::start_with(&jobs, None, pdir);
    let up = |job: &str| prom.query(&format!("up{{job=\"{job}\"}}")).first().and_then(|r| r["value"][1].as_str().map(String::from));
    wait_until("up 1 over TLS with basic auth", T, || (up("cluster-ai").as_deref() == Some("1")).then_some(()));
    wait_until("up 0 with the wrong password", T, || (up("wrong-password").as_deref() == Some("0")).then_some(()));
    let (_, targets) = http(&format!("127.0.0.1:{}", prom.port), "GET", "/api/v1/targets", "").unwrap();
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let wrong = targets["data"]["activeTargets"].as_array().unwrap().iter().find(|t| t["labels"]["job"] == "wrong-password").unwrap();
    assert!(wrong["lastError"].as_str().unwrap().contains("401"), "{wrong}");
    // The series arrive through TLS: the node's memory and the daemon's own process metrics.
    assert_eq!(prom.query("cluster_ai_memory_total_bytes{job=\"cluster-ai\"}").len(), 1);
    assert_eq!(prom.query("process_resident_memory_bytes{job=\"cluster-ai\"}").len(), 1);

    // A changed file is read on reload: the new password works, the old one no longer.
    write_web("n3w");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("the new password after reload", T, || (https_get(&addr, &ca, Some(("prometheus", "n3w"))).0 == 200).then_some(()));
    assert_eq!(https_get(&addr, &ca, Some(("prometheus", "s3cret"))).0, 401);
    // A broken file on reload keeps the last good one (and says so).
    std::fs::write(&web, "tls_server_config:\n  cert_fil: server.crt\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("keeping the web config loaded before", T);
    assert_eq!(https_get(&addr, &ca, Some(("prometheus", "n3w"))).0, 200);
    // `status` says so too, until a reload loads the file.
    let status = String::from_utf8(d.status(&[]).stdout).unwrap();
    let line = status.lines().find(|l| l.starts_with("metrics:")).unwrap_or_default().to_string();
    assert!(line.starts_with(&format!("metrics:  https://{addr}/metrics (basic auth); web config: ")), "{status}");
    assert!(line.contains("cert_fil") && line.contains("serving with the web config loaded before"), "{line}");
    write_web("n3w");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("status without the web config's problem", T, || {
        let status = String::from_utf8(d.status(&[]).stdout).unwrap();
        status.contains(&format!("metrics:  https://{addr}/metrics (basic auth)\n")).then_some(())
    });
    assert_eq!(d.status_json()["metrics"]["problem"], serde_json::Value::Null);
}
