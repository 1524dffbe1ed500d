//! Carrying out the policy's decisions: log lines, alerts raised and resolved, restarts
//! started on a task of their own; and the Dask scheduler's workers, read along with its probe.

use std::collections::BTreeMap;
use tokio::time::Instant;

use super::policy::Event;
use super::probe;
use super::service::{Ctx, Msg, Svc};
use crate::alerts::task::{raise, AlertSender};
use crate::alerts::{Alert, AlertKey, Severity};
use crate::config::format_duration;

pub(super) fn workers(s: &mut Svc, w: Result<BTreeMap<String, String>, String>, alerts: &Option<AlertSender>) {
    let name = s.cfg.name.clone();
    let Some(ws) = s.workers.as_mut() else { return };
    match w {
        Err(e) => {
            if ws.error.is_none() {
                tracing::warn!(service = %name, "health: {name}: cannot read its workers: {e}");
            }
            ws.error = Some(e);
        }
        Ok(now) => {
            ws.read = true;
            ws.error = None;
            let short = now.len() < ws.min as usize;
            if short && !ws.short {
                let left: Vec<&str> = ws.known.iter().filter(|(a, _)| !now.contains_key(*a)).map(|(_, n)| n.as_str()).collect();
                let left = names_left(&left);
                let text = format!("{name} has {} worker(s), fewer than {}{left}", now.len(), ws.min);
                tracing::warn!(service = %name, workers = now.len(), min = ws.min, "health: {text}");
                raise(alerts, Alert::firing(AlertKey::WorkersLow(name.to_string()), Severity::Warning, text).label("service", &name));
            } else if !short && ws.short {
                let text = format!("{name} has {} worker(s) again", now.len());
                tracing::info!(service = %name, workers = now.len(), "health: {text}");
                raise(alerts, Alert::resolved(AlertKey::WorkersLow(name.to_string()), Severity::Warning, text, 0).label("service", &name));
            }
            if !short {
                ws.known.clone_from(&now);
            }
            ws.short = short;
            ws.now = now;
        }
    }
}

/// "; left: a, b, c and 24,997 more": the workers that left, as the scheduler named them, at most
/// [`NAMES_LISTED`] of them, each escaped and cut (a log line and an alert stay short whatever
/// the scheduler says).
fn names_left(left: &[&str]) -> String {
    if left.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = left.iter().take(NAMES_LISTED).map(|n| crate::sys::one_line(n, 80)).collect();
    let more = left.len().saturating_sub(NAMES_LISTED);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("; left: {}{more}", shown.join(", "))
}

const NAMES_LISTED: usize = 10;

/// Carries out one decision of the policy: logs it, raises or resolves its alert, and, for a
/// restart, starts it.
pub(super) fn act(i: usize, s: &mut Svc, e: Event, ctx: &Ctx<'_>) {
    let name = s.cfg.name.clone();
    let container = s.container();
    let unit = s.restart_target();
    let alert = |a: Alert| {
        let a = a.label("service", &name);
        raise(ctx.alerts, if unit.is_empty() { a } else { a.label("unit", &unit) });
    };
    match e {
        Event::Down { reason } => {
            tracing::warn!(service = %name, reason = %reason, "health: {name} is down: {reason}");
            alert(Alert::firing(AlertKey::ServiceDown(name.to_string()), Severity::Critical, format!("{name} is down: {reason}")));
        }
        Event::Up { after } => {
            let text = format!("{name} is healthy again after {}", format_duration(after));
            tracing::info!(service = %name, down_seconds = after.as_secs_f64(), "health: {text}");
            alert(Alert::resolved(AlertKey::ServiceDown(name.to_string()), Severity::Critical, text.clone(), 0));
            if std::mem::take(&mut s.flapping) {
                alert(Alert::resolved(AlertKey::Flapping(name.to_string()), Severity::Critical, text, 0));
            }
        }
        Event::Flapping { restarts, window, hold } => {
            let text = format!(
                "{name} is flapping: {restarts} restarts within {}; not restarted for {}, then tried again",
                format_duration(window),
                format_duration(hold)
            );
            tracing::error!(service = %name, restarts, "health: {text}");
            s.flapping = true;
            alert(Alert::firing(AlertKey::Flapping(name.to_string()), Severity::Critical, text));
        }
        Event::FlappingIncidents { incidents, window, quiet_for } => {
            let text = format!(
                "{name} is flapping: {incidents} incidents within {}; each further one is held until it has been healthy for {}",
                format_duration(window),
                format_duration(quiet_for)
            );
            tracing::error!(service = %name, incidents, "health: {text}");
            s.flapping = true;
            alert(Alert::firing(AlertKey::Flapping(name.to_string()), Severity::Critical, text));
        }
        Event::Steady { after } => {
            let text = format!("{name} is steady again (flapping for {})", format_duration(after));
            tracing::info!(service = %name, "health: {text}");
            s.flapping = false;
            alert(Alert::resolved(AlertKey::Flapping(name.to_string()), Severity::Critical, text, 0));
        }
        Event::HoldOver => tracing::info!(service = %name, "health: {name}: the flap hold is over; restarting it again when needed"),
        Event::Restart { attempt, reason } => {
            if ctx.dry_run {
                tracing::info!(service = %name, unit = %unit, attempt, "health: would restart {unit} (attempt {attempt}): {reason}");
                // Nothing runs: the restart is over as soon as it is decided.
                s.machine.restart_finished(Instant::now());
                return;
            }
            tracing::warn!(service = %name, unit = %unit, attempt, "health: restarting {unit} (attempt {attempt}): {reason}");
            let (systemd, tx, generation) = (ctx.systemd.clone(), ctx.tx.clone(), ctx.generation);
            tokio::spawn(async move {
                let r = match (container, systemd) {
                    (Some((name, socket)), _) => probe::restart_container(&socket, &name).await,
                    (None, Some(sd)) => sd.restart(&unit).await.map_err(|e| e.to_string()),
                    (None, None) => Err("systemd cannot be reached".to_string()),
                };
                let _ = tx.send((generation, Msg::Restarted(i, r))).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_peers_name_reaches_a_log_line_short_and_on_one_line() {
        assert_eq!(names_left(&[]), "");
        assert_eq!(names_left(&["w1", "w2"]), "; left: w1, w2");
        let many: Vec<String> = (0..25_000).map(|i| format!("worker-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = names_left(&many);
        assert!(text.ends_with("worker-9 and 24990 more") && text.len() < 200, "{text}");
        assert_eq!(names_left(&["evil\nINFO forged"]), "; left: evil\\nINFO forged");
    }
}
