//! `cluster-ai status [--json]`: asks the running daemon over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::config::{human_size, Config, SocketSetting};
use crate::control::{request, Request, StatusReply};
use crate::daemon::client_socket_path;
use crate::emergency::EmergencyReport;
use crate::sys::paths::DEFAULT_CONFIG;

pub fn main(args: StatusArgs) -> ExitCode {
    match status(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("cluster-ai status: {e:#}");
            // LSB status actions: 3 "not running", 4 "unknown".
            ExitCode::from(code)
        }
    }
}

fn status(args: StatusArgs) -> Result<(), (u8, anyhow::Error)> {
    let unknown = |e: anyhow::Error| (super::exit::UNKNOWN, e);
    let socket = match args.socket {
        Some(s) => s,
        None => {
            let config = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            let setting = Config::load(&config).map_or(SocketSetting::Auto, |c| c.control_socket);
            client_socket_path(&setting).map_err(|e| unknown(anyhow::Error::msg(e)))?
        }
    };
    let value = request(&socket, &Request::Status).map_err(|e| (e.exit_code(), e.into()))?;
    let (json, reply) = (args.json, value);
    show(json, reply).map_err(unknown)
}

fn show(json: bool, value: serde_json::Value) -> anyhow::Result<()> {
    let args = ShowArgs { json };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let reply: StatusReply = serde_json::from_value(value)?;
    print!("{}", render(&reply));
    Ok(())
}

struct ShowArgs {
    json: bool,
}

fn ago(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The emergency measures: each watch's state, what was done (counted), the last action and
/// any peer's lasting problem.
pub fn emergency_lines(e: &EmergencyReport) -> String {
    let watches: Vec<String> = e
        .watches
        .iter()
        .map(|(n, w)| format!("{n} {} (>= {:.0}%: {})", w.value.map_or("-".into(), |v| format!("{v:.0}%")), w.threshold, w.state))
        .collect();
    let mut out = format!("measures: {}{}\n", watches.join(", "), if e.act { "" } else { "; act off: decisions logged only" });
    for (measure, held) in &e.conditions {
        out += &format!("          {measure}: {held}\n");
    }
    if e.counts.is_empty() {
        out += "          no action taken\n";
    } else {
        let counts: Vec<String> = e.counts.iter().map(|(a, n)| format!("{a} x{n}")).collect();
        out += &format!("          done: {}\n", counts.join(", "));
    }
    if let Some(a) = e.recent.last() {
        let freed = a.freed_bytes.map(|b| format!(", freed {}", human_size(b))).unwrap_or_default();
        out += &format!("          last: {} ({}{freed})\n", a.detail, a.why);
    }
    for (peer, p) in &e.problems {
        out += &format!("          {peer}: {p}\n");
    }
    if !e.ollama_models.is_empty() {
        use crate::emergency::ollama::Verdict;
        let models: Vec<String> = e
            .ollama_models
            .iter()
            .map(|m| {
                let how = match m.verdict {
                    Verdict::Unload => human_size(m.ram_bytes),
                    Verdict::Kept => "kept".into(),
                    Verdict::InGpuMemory => "in GPU memory".into(),
                    Verdict::NotReleased => "not released by Ollama".into(),
                };
                format!("{} ({how})", m.name)
            })
            .collect();
        out += &format!("          ollama, in unload order: {}\n", models.join(", "));
    }
    out
}

/// "metrics:  https://127.0.0.1:9464/metrics (basic auth)", or why it is not served or not
/// on the current web config.
fn metrics_line(m: &crate::report::MetricsReport) -> String {
    let serving = match &m.url {
        Some(url) => format!("{url}{}", if m.basic_auth { " (basic auth)" } else { "" }),
        None => "not served".into(),
    };
    match &m.problem {
        Some(p) => format!("metrics:  {serving}; web config: {p}\n"),
        None => format!("metrics:  {serving}\n"),
    }
}

/// "alerts: webhook 3 sent, 1 queued (cannot connect: …); 1 firing" or "alerts: no channel".
fn alert_line(a: &crate::alerts::task::AlertsReport) -> String {
    if a.channels.is_empty() {
        return "alerts:   no channel configured ([alerts] webhook, alertmanager, smtp_server)\n".into();
    }
    let channels: Vec<String> = a
        .channels
        .iter()
        .map(|c| {
            let mut t = format!("{} {} sent", c.channel, c.sent);
            if c.queued > 0 {
                t += &format!(", {} queued", c.queued);
            }
            if let Some(e) = &c.last_error {
                t += &format!(" (last failure: {e})");
            }
            t
        })
        .collect();
    let dropped = if a.dropped > 0 { format!("; {} dropped (inbox or queue full)", a.dropped) } else { String::new() };
    let dead = match &a.last_dead_letter {
        Some(last) => format!("; {} refused for good, in {} (last: {last})", a.dead_letters, crate::alerts::dead::FILE_NAME),
        None => String::new(),
    };
    format!("alerts:   {}; {} firing{dropped}{dead}\n", channels.join("; "), a.firing.len())
}

pub fn render(r: &StatusReply) -> String {
    let mut out =
        format!("cluster-ai {} (pid {}), up {}{}\n", r.version, r.pid, ago(r.uptime_seconds), if r.dry_run { ", dry run" } else { "" });
    let c = &r.config;
    if c.source == "file" {
        out += &format!("config:   {} (loaded {} ago)\n", c.path.display(), ago(c.loaded_seconds_ago));
    } else {
        out += &format!("config:   built-in defaults ({} does not exist)\n", c.path.display());
    }
    if let Some(err) = &c.last_reload_error {
        out += &format!("          last reload refused: {}\n", err.lines().next().unwrap_or_default());
    }
    match &r.snapshot {
        None => out += "no sample yet\n",
        Some(s) => {
            out += &format!(
                "memory:   {:.1}% used, {} available of {}\n",
                s.memory_used_percent,
                human_size(s.memory_available_bytes),
                human_size(s.memory_total_bytes)
            );
            out += &format!("swap:     {} used of {}\n", human_size(s.swap_used_bytes), human_size(s.swap_total_bytes));
            let cpu = s.cpu_busy_percent.map_or("-".into(), |c| format!("{c:.1}%"));
            let [l1, l5, l15] = s.load_average;
            out += &format!("cpu:      {cpu} busy, load {l1:.2} {l5:.2} {l15:.2}\n");
            for d in [&s.disk_root, &s.disk_swap_dir].into_iter().flatten() {
                out += &format!("disk:     {} {:.1}% used, {} free\n", d.path.display(), d.used_percent, human_size(d.available_bytes));
            }
            if let Some(p) = &s.pressure {
                let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
                out += &format!(
                    "pressure: memory {:.2}/{} cpu {:.2}/{} io {:.2}/{} (avg10 some/full)\n",
                    p.memory.some_avg10,
                    f(p.memory.full_avg10),
                    p.cpu.some_avg10,
                    f(p.cpu.full_avg10),
                    p.io.some_avg10,
                    f(p.io.full_avg10)
                );
            }
        }
    }
    if let Some(o) = &r.optimize {
        let p = &o.plan;
        out += &format!(
            "optimize: Dask {} x {} threads, {} per worker; Ollama {} parallel, {} models ({}, {})\n",
            p.dask_workers.value,
            p.dask_threads_per_worker.value,
            human_size(p.dask_memory_limit_bytes.value),
            p.ollama_num_parallel.value,
            p.ollama_max_loaded_models.value,
            o.reason,
            if o.apply { "env files kept current" } else { "apply off: `cluster-ai optimize` writes the env files" }
        );
        if !o.restarts.is_empty() {
            let done: Vec<String> = o.restarts.iter().map(|(u, r)| format!("{u} {r}")).collect();
            out += &format!("          {}\n", done.join("; "));
        } else if !o.restart_needed.is_empty() {
            out += &format!("          restart to apply: systemctl restart {}\n", o.restart_needed.join(" "));
        }
    }
    if let Some(e) = &r.emergency {
        out += &emergency_lines(e);
    }
    if let Some(h) = &r.health {
        out += &format!("{} (cluster-ai health shows each)\n", h.summary());
    }
    if let Some(a) = &r.alerts {
        out += &alert_line(a);
    }
    if let Some(m) = &r.metrics {
        out += &metrics_line(m);
    }
    out += "tasks:\n";
    for t in &r.tasks {
        out += &format!("  {:<10} {:<10} heartbeat {} ago\n", t.name, t.state.to_string(), ago(t.last_heartbeat_seconds_ago));
    }
    out
}
