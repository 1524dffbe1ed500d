//! `cluster-ai health [--json]` (the seed's health_check.sh): every service, its state and since
//! when, the last probe's result and latency, restarts and backoff, open incidents. From the
//! running daemon; without one, one look at each service from here. Exit
//! [`exit::UNHEALTHY`] when any installed service is unhealthy (or a scheduler has fewer workers
//! than its minimum), [`exit::NOTHING_WATCHED`] when nothing could be looked at (no service
//! installed here, no systemd bus), so it serves cron and scripts too.

use std::process::ExitCode;

use super::exit;
use crate::cli::StatusArgs;
use crate::control::{request, ClientError, Request};
use crate::health::{HealthReport, ServiceReport, ServiceState};

pub fn main(args: StatusArgs) -> ExitCode {
    let (config, socket) = match super::config_and_socket("health", &args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (report, from) = match request(&socket, &Request::Health) {
        Ok(v) => match serde_json::from_value::<HealthReport>(v) {
            Ok(r) => (r, "the daemon"),
            Err(e) => {
                eprintln!("cluster-ai health: the daemon's answer is not understood: {e}");
                return ExitCode::from(exit::UNKNOWN);
            }
        },
        Err(ClientError::NotRunning(_)) => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cluster-ai health: {e}");
                    return ExitCode::FAILURE;
                }
            };
            (
                rt.block_on(async { crate::health::task::check_once(&config, crate::sys::systemd::SystemBus::shared()).await }),
                "one look (no daemon is running)",
            )
        }
        Err(e) => {
            eprintln!("cluster-ai health: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", render(&report, from));
    }
    if !report.down().is_empty() {
        ExitCode::from(exit::UNHEALTHY)
    } else if report.enabled && report.watched() == 0 {
        // "unknown" is not "ok": cron and scripts must not read a machine where nothing could
        // be looked at as healthy.
        ExitCode::from(exit::NOTHING_WATCHED)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn render(r: &HealthReport, from: &str) -> String {
    let mut out = format!("{} — from {from}\n", r.summary());
    if !r.enabled {
        return out;
    }
    if r.systemd != "connected" && r.systemd != "not needed" {
        out += &format!("systemd: {}\n", r.systemd);
    }
    let now = crate::sys::unix_ms();
    for s in &r.services {
        out += &line(s, now);
    }
    out
}

fn line(s: &ServiceReport, now: u64) -> String {
    let unit = match &s.unit {
        Some(u) => format!("{u} ({})", s.unit_state),
        None => "no unit".into(),
    };
    let mut out = format!("{:<16} {:<13} {unit}", s.name, s.state);
    if s.state != ServiceState::NotInstalled {
        let ago = crate::config::format_duration(std::time::Duration::from_millis(now.saturating_sub(s.since_unix_ms) / 1000 * 1000));
        out += &format!(", for {ago}");
    }
    out.push('\n');
    if s.state == ServiceState::NotInstalled {
        return out;
    }
    if let Some(p) = &s.last_probe {
        let verdict = if p.ok { "ok" } else { "failed" };
        out += &format!("{:<16} probe {} {verdict}: {} ({:.1} ms)\n", "", s.probe.as_deref().unwrap_or(""), p.detail, p.latency_ms);
    }
    if let Some(reason) = &s.reason {
        out += &format!("{:<16} why: {reason}\n", "");
    }
    if s.restarts > 0 || s.held_until_unix_ms.is_some() {
        let mut r = format!("{:<16} restarts: {}", "", s.restarts);
        if s.backoff_seconds > 0.0 {
            r += &format!(", next one waits {:.0} s", s.backoff_seconds);
        }
        if let Some(until) = s.held_until_unix_ms {
            r += &format!(", flapping: held for {} s more", until.saturating_sub(now) / 1000);
        }
        out += &r;
        out.push('\n');
    }
    if let Some(w) = &s.workers {
        let mut l = format!("{:<16} workers {} (min {})", "", w.count, w.min);
        if !w.names.is_empty() {
            l += &format!(": {}", w.names.join(", "));
        }
        if !w.left.is_empty() {
            l += &format!("; left: {}", w.left.join(", "));
        }
        if let Some(e) = &w.error {
            l += &format!("; cannot read them: {e}");
        }
        out += &l;
        out.push('\n');
    }
    out
}
