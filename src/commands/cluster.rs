//! `cluster-ai cluster status`: every node as the Prometheus server that scrapes them sees it,
//! read through its HTTP query API (`/api/v1/query`): the seed's central monitor, on the
//! engine the cluster already runs.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::exit;
use crate::cli::ClusterStatusArgs;
use crate::sys::http::{request, Endpoint};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Serialize)]
pub struct Node {
    pub instance: String,
    /// From cluster_ai_build_info (absent while the node is not scraped).
    pub node: Option<String>,
    pub version: Option<String>,
    pub up: bool,
    pub memory_used_ratio: Option<f64>,
    pub swap_used_bytes: Option<f64>,
    pub swap_total_bytes: Option<f64>,
    pub services_down: Vec<String>,
    /// When Prometheus last scraped it successfully (Unix seconds), within the last hour.
    pub last_seen_unix: Option<f64>,
    pub alerts_firing: Vec<String>,
}

pub fn status(args: ClusterStatusArgs) -> ExitCode {
    // A URL that cannot be one is the caller's mistake (2), not Prometheus being away (69).
    if let Err(e) = crate::sys::http::Endpoint::parse_url(&args.prometheus) {
        eprintln!("cluster-ai cluster status: --prometheus: {}", crate::sys::redact::in_text(&e, &args.prometheus));
        return ExitCode::from(exit::USAGE);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster-ai cluster status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let nodes = match rt.block_on(read(&args.prometheus, &args.job)) {
        Ok(n) => n,
        Err(e) => {
            let e = crate::sys::redact::in_text(&e.to_string(), &args.prometheus);
            eprintln!("cluster-ai cluster status: {}: {e}", crate::sys::redact::url(&args.prometheus));
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes).unwrap_or_default());
    } else {
        print!("{}", table(&nodes, crate::sys::unix_ms() as f64 / 1000.0));
    }
    let trouble = nodes.is_empty() || nodes.iter().any(|n| !n.up || !n.services_down.is_empty() || !n.alerts_firing.is_empty());
    if trouble {
        ExitCode::from(exit::UNHEALTHY)
    } else {
        ExitCode::SUCCESS
    }
}

type Labels = BTreeMap<String, String>;

/// One instant query: each result's labels and value.
async fn query(ep: &Endpoint, promql: &str) -> Result<Vec<(Labels, f64)>, String> {
    let path = format!("/api/v1/query?query={}", crate::sys::http::percent_encode(promql));
    let r = request(ep, "GET", &path, None, TIMEOUT).await.map_err(|e| e.to_string())?;
    parse_query(promql, &r.body)
}

/// Prometheus's answer to one query: each result's labels and value (NaN where it has none);
/// for a range (matrix), the time of the newest sample whose value is 1.
fn parse_query(promql: &str, body: &[u8]) -> Result<Vec<(Labels, f64)>, String> {
    let snippet = || crate::sys::http::snippet(body);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not Prometheus's API ({}): {}", crate::sys::json::error_text(&e), snippet()))?;
    if v["status"] != "success" {
        // Prometheus's words, on one line like the snippet.
        let said = |key: &str| v[key].as_str().map(|s| crate::sys::one_line(s, 300));
        return Err(format!("query {promql:?}: {} {}", said("errorType").unwrap_or_default(), said("error").unwrap_or_else(snippet)));
    }
    let results = v["data"]["result"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(results
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                .unwrap_or_default();
            let number = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<f64>().ok());
            let value = match r["values"].as_array() {
                Some(points) => points.iter().rev().find(|p| number(&p[1]) == Some(1.0)).and_then(|p| p[0].as_f64()).unwrap_or(f64::NAN),
                None => number(&r["value"][1]).unwrap_or(f64::NAN),
            };
            (labels, value)
        })
        .collect())
}

pub async fn read(url: &str, job: &str) -> Result<Vec<Node>, String> {
    let ep = Endpoint::parse_url(url)?;
    let job = job.replace('\\', "\\\\").replace('"', "\\\"");
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (l, v) in query(&ep, &format!("up{{job=\"{job}\"}}")).await? {
        let instance = l.get("instance").cloned().unwrap_or_default();
        nodes.insert(instance.clone(), Node { instance, up: v == 1.0, ..Node::default() });
    }
    let sel = format!("{{job=\"{job}\"}}");
    let mut each = |rows: Vec<(Labels, f64)>, f: &mut dyn FnMut(&mut Node, &Labels, f64)| {
        for (l, v) in rows {
            if let Some(n) = l.get("instance").and_then(|i| nodes.get_mut(i)) {
                f(n, &l, v);
            }
        }
    };
    each(query(&ep, &format!("cluster_ai_build_info{sel}")).await?, &mut |n, l, _| {
        n.node = l.get("node").cloned();
        n.version = l.get("version").cloned();
    });
    // The share of memory in use as the daemon computes it (1 - MemAvailable / MemTotal).
    let used = format!("1 - cluster_ai_memory_available_bytes{sel} / cluster_ai_memory_total_bytes{sel}");
    each(query(&ep, &used).await?, &mut |n, _, v| n.memory_used_ratio = Some(v));
    each(query(&ep, &format!("cluster_ai_swap_used_bytes{sel}")).await?, &mut |n, _, v| n.swap_used_bytes = Some(v));
    each(query(&ep, &format!("cluster_ai_swap_total_bytes{sel}")).await?, &mut |n, _, v| n.swap_total_bytes = Some(v));
    each(query(&ep, &format!("cluster_ai_service_up{sel} == 0")).await?, &mut |n, l, _| {
        n.services_down.push(l.get("service").cloned().unwrap_or_default());
    });
    // The last successful scrape within the hour (a node down longer shows no time): the raw
    // samples of `up` over the hour, the newest that is 1.
    each(query(&ep, &format!("up{sel}[1h]")).await?, &mut |n, _, v| n.last_seen_unix = v.is_finite().then_some(v));
    each(query(&ep, "ALERTS{alertstate=\"firing\"}").await?, &mut |n, l, _| {
        let name = l.get("alertname").cloned().unwrap_or_default();
        let what = l.get("service").or(l.get("task")).map(|s| format!("{name}({s})")).unwrap_or(name);
        n.alerts_firing.push(what);
    });
    Ok(nodes.into_values().collect())
}

fn table(nodes: &[Node], now: f64) -> String {
    use crate::config::human_size;
    let mut rows = vec![["NODE", "INSTANCE", "UP", "MEMORY", "SWAP", "DOWN", "LAST SEEN", "ALERTS"].map(String::from).to_vec()];
    // Numbers from Prometheus may be NaN (a ratio of nothing) or infinite, and labels any text
    // the nodes were given: every cell is shown on one line, a number only where it is one.
    let size = |b: Option<f64>| b.filter(|b| b.is_finite() && *b >= 0.0).map(|b| human_size(b as u64));
    let cell = |s: &str| crate::sys::one_line(s, 80);
    for n in nodes {
        let swap = match (size(n.swap_used_bytes), size(n.swap_total_bytes)) {
            (Some(u), Some(t)) => format!("{u}/{t}"),
            _ => "-".into(),
        };
        let ago = n.last_seen_unix.map(|t| now - t);
        rows.push(vec![
            n.node.as_deref().map_or_else(|| "?".into(), cell),
            cell(&n.instance),
            if n.up { "yes" } else { "NO" }.into(),
            // A share outside 0..1 (a peer's nonsense, or a float from a broken division) is no figure.
            n.memory_used_ratio.filter(|m| (0.0..=1.0).contains(m)).map_or("-".into(), |m| format!("{:.0}%", m * 100.0)),
            swap,
            if n.services_down.is_empty() { "-".into() } else { cell(&n.services_down.join(",")) },
            match ago {
                None => "over 1h ago".into(),
                Some(a) if a.is_finite() => format!("{:.0}s ago", a.max(0.0)),
                Some(_) => "-".into(),
            },
            if n.alerts_firing.is_empty() { "-".into() } else { cell(&n.alerts_firing.join(",")) },
        ]);
        // Label values are whatever the scraped nodes and rules said: one line each on a
        // terminal, no escape sequences.
        if let Some(row) = rows.last_mut() {
            for cell in row.iter_mut() {
                *cell = crate::sys::one_line(cell, 200);
            }
        }
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    if nodes.is_empty() {
        out += "no node: Prometheus scrapes no target of this job\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_reach_the_terminal_on_one_line_without_escape_sequences() {
        let n = Node {
            instance: "10.0.0.5:9464".into(),
            node: Some("gpu-1\n\x1b[2Jforged".into()),
            version: None,
            up: true,
            memory_used_ratio: Some(0.5),
            swap_used_bytes: None,
            swap_total_bytes: None,
            services_down: vec!["web\r".into()],
            last_seen_unix: Some(100.0),
            alerts_firing: Vec::new(),
        };
        let t = table(&[n], 110.0);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.contains('\x1b') && t.contains("gpu-1\\n\\u{1b}[2Jforged") && t.contains("web\\r"), "{t}");
    }
}

#[cfg(test)]
mod props;
