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
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::daemon;
use peers::{free_port, http, wait_until, Alertmanager, Proc};

const T: Duration = Duration::from_secs(60);

fn need(tool: &str) {
    common::require_tool(tool, "Debian's prometheus package");
}

/// An HTTP service whose `/health` answers 200 `ok`, or 500 when `healthy` is false.
fn service(healthy: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = peers::read_request(&s);
            let answer: &[u8] = if healthy {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail"
            };
            let _ = s.write_all(answer);
        }
    });
    addr
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
        need("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(packaging().join("cluster-ai-rules.yml")).unwrap();
        let rules: String = rules.lines().map(|l| if l.trim_start().starts_with("for: ") { "" } else { l }).collect::<Vec<_>>().join("\n");
        std::fs::write(dir.path().join("cluster-ai-rules.yml"), rules).unwrap();
        let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [cluster-ai-rules.yml]\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{alertmanager}\"]\n\
                 scrape_configs:\n  - job_name: cluster-ai\n    static_configs:\n      - targets: [{targets}]\n"
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
    let mut pushed =
        cluster_ai::alerts::Alert::firing("service/ollama", "critical", "ollama is down: its unit failed").label("service", "ollama");
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
