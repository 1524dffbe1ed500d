//! The health task. Units are followed by one small tokio task each (a D-Bus signal stream),
//! probes and restarts run as tasks of their own and report back on a channel, so the loop
//! never waits on a peer. Regular probes ride one timerfd tick (all services on a 30 s interval
//! cost one wakeup per 30 s); while something is wrong the service is probed every second and
//! the backoff's deadlines wake the loop exactly when due.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::policy::{Event, Machine, Policy, UnitState};
use super::probe::{self, ProbeResult};
use super::{HealthReport, ServiceReport, WorkersReport};
use crate::alerts::task::{raise, AlertSender};
use crate::alerts::Alert;
use crate::config::{format_duration, Config, Probe, ServiceConfig};
use crate::runtime::TaskCtx;
use crate::sys::systemd::{unit_file_exists, ServiceManager};

/// The task beats at least this often (its tick is never longer).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// How often a service is probed while something is wrong with it (or it just restarted)...
pub const FAST_PROBE: Duration = Duration::from_secs(1);
/// ...for this long after the last such event; a service that stays down is then probed at
/// its interval again, so a node with a service that is simply off stays idle.
pub const FAST_FOR: Duration = Duration::from_secs(30);

pub type HealthReceiver = watch::Receiver<Arc<HealthReport>>;

/// What the helper tasks report back; each carries the config generation it was started under.
enum Msg {
    Installed(usize, bool),
    /// The unit has a `Restart=` of its own.
    RestartsItself(usize, bool),
    Unit(usize, Result<UnitState, String>),
    Probe(usize, ProbeResult),
    Workers(usize, Result<BTreeMap<String, String>, String>),
    Restarted(usize, Result<(), String>),
    /// Docker said something happened to the service's container (it died, stopped, started,
    /// changed health): probe it now.
    ContainerEvent(usize, String),
}

/// What carrying out a decision needs besides the service.
struct Ctx<'a> {
    generation: u64,
    systemd: &'a Option<Arc<dyn ServiceManager>>,
    tx: &'a mpsc::Sender<(u64, Msg)>,
    alerts: &'a Option<AlertSender>,
    dry_run: bool,
}

struct Svc {
    cfg: ServiceConfig,
    /// A flapping alert is firing (resolved when the service is healthy again).
    flapping: bool,
    machine: Machine,
    /// `None` until systemd (or the unit files) said.
    installed: Option<bool>,
    state: &'static str,
    since_unix_ms: u64,
    last_probe: Option<ProbeResult>,
    next_probe: Instant,
    /// Probing every second until then (something went wrong, or the unit just started).
    fast_until: Option<Instant>,
    probing: bool,
    workers: Option<Workers>,
}

struct Workers {
    min: u32,
    /// Whether the scheduler has been asked yet.
    read: bool,
    /// Every worker seen while the count was at or over the minimum: address → name.
    known: BTreeMap<String, String>,
    now: BTreeMap<String, String>,
    short: bool,
    error: Option<String>,
}

impl Svc {
    /// A service without a unit whose probe is a container: restarted through Docker.
    fn container(&self) -> Option<(String, std::path::PathBuf)> {
        match &self.cfg.probe {
            Some(Probe::Container { name, socket }) if self.cfg.unit.is_none() => Some((name.clone(), socket.clone())),
            _ => None,
        }
    }

    /// When the next fast probe is to start: only while fast probing lasts and a probe could
    /// start (installed, the unit up, none in flight), so the loop never wakes for nothing.
    fn fast_probe_at(&self, now: Instant) -> Option<Instant> {
        let fast = self.fast_until.is_some_and(|t| t > now);
        let unit_up = matches!(self.machine.unit, UnitState::Active | UnitState::Unknown);
        (fast && !self.probing && unit_up && self.installed == Some(true) && self.cfg.probe.is_some()).then_some(self.next_probe)
    }

    /// What a restart restarts, for the log: "ollama.service", "container open-webui", "".
    fn restart_target(&self) -> String {
        self.cfg.unit.clone().or_else(|| self.container().map(|(n, _)| format!("container {n}"))).unwrap_or_default()
    }

    fn new(cfg: ServiceConfig, policy: Policy, now: Instant) -> Svc {
        let workers = cfg.min_workers.map(|min| Workers {
            min,
            read: false,
            known: BTreeMap::new(),
            now: BTreeMap::new(),
            short: false,
            error: None,
        });
        Svc {
            cfg,
            flapping: false,
            machine: Machine::new(policy),
            installed: None,
            state: "starting",
            since_unix_ms: crate::sys::unix_ms(),
            last_probe: None,
            next_probe: now,
            fast_until: None,
            probing: false,
            workers,
        }
    }
}

pub async fn run(state: watch::Sender<Arc<HealthReport>>, alerts: Option<AlertSender>, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, dry_run, os, .. } = ctx;
    let services = os.services;
    heartbeat.started();
    let (tx, mut rx) = mpsc::channel::<(u64, Msg)>(64);
    let mut generation = 0u64;
    loop {
        generation += 1;
        let cfg = config.borrow_and_update().clone();
        let helpers = cancel.child_token();
        let h = &cfg.health;
        let tick = h.services.iter().map(|s| s.interval).min().unwrap_or(HEARTBEAT_PERIOD).min(HEARTBEAT_PERIOD);
        let mut ticker = os.clock.ticker(tick)?;
        let now = Instant::now();
        let mut svcs: Vec<Svc> = h.services.iter().map(|s| Svc::new(s.clone(), Policy::new(h, s), now)).collect();
        let mut systemd_text = "not needed".to_string();
        let mut systemd: Option<Arc<dyn ServiceManager>> = None;
        if h.enabled {
            if svcs.iter().any(|s| s.cfg.unit.is_some()) {
                match heartbeat.during(services.connect()).await {
                    Ok(()) => {
                        systemd_text = "connected".into();
                        systemd = Some(services.clone());
                    }
                    Err(e) => {
                        tracing::warn!("health: {e}; units are judged by their unit files and probes, and nothing can be restarted");
                        systemd_text = e.to_string();
                    }
                }
            }
            for (i, s) in svcs.iter_mut().enumerate() {
                match (&s.cfg.unit, &systemd) {
                    (Some(unit), Some(sd)) => {
                        tokio::spawn(follow(sd.clone(), unit.clone(), i, generation, tx.clone(), helpers.clone()));
                    }
                    (Some(unit), None) => {
                        s.installed = Some(unit_file_exists(unit));
                        s.machine.policy.no_restarts();
                    }
                    (None, _) => {
                        s.installed = Some(match &s.cfg.probe {
                            Some(Probe::Docker { socket } | Probe::Container { socket, .. }) => socket.exists(),
                            _ => true,
                        })
                    }
                }
                if let Some(Probe::Container { name, socket }) = s.cfg.probe.as_ref().filter(|_| s.installed != Some(false)) {
                    let (name, socket) = (name.clone(), socket.clone());
                    tokio::spawn(follow_container(socket, name, i, generation, tx.clone(), helpers.clone()));
                }
            }
        }
        let publish = |svcs: &[Svc], systemd_text: &str| {
            state.send_replace(Arc::new(report(h.enabled, systemd_text, svcs)));
        };
        publish(&svcs, &systemd_text);
        let ctx = Ctx { generation, systemd: &systemd, tx: &tx, alerts: &alerts, dry_run };
        loop {
            let now = Instant::now();
            if h.enabled {
                for (i, s) in svcs.iter_mut().enumerate() {
                    for e in s.machine.tick(now) {
                        act(i, s, e, &ctx);
                    }
                }
            }
            let wake = svcs.iter().filter_map(|s| s.machine.next_deadline().into_iter().chain(s.fast_probe_at(now)).min()).min();
            tokio::select! {
                _ = cancel.cancelled() => {
                    helpers.cancel();
                    return Ok(());
                }
                changed = config.changed() => {
                    helpers.cancel();
                    if changed.is_err() {
                        return Ok(());
                    }
                    break;
                }
                t = ticker.tick() => {
                    t?;
                    heartbeat.beat();
                    if h.enabled {
                        probe_due(&mut svcs, generation, &tx, tick / 2);
                    }
                }
                _ = sleep_until(wake) => {
                    probe_due(&mut svcs, generation, &tx, Duration::ZERO);
                }
                Some((g, msg)) = rx.recv() => {
                    if g != generation {
                        continue;
                    }
                    handle(&mut svcs, msg, &ctx);
                    probe_due(&mut svcs, generation, &tx, Duration::ZERO);
                }
            }
            for s in svcs.iter_mut() {
                let st = state_of(s);
                if st != s.state {
                    s.state = st;
                    s.since_unix_ms = crate::sys::unix_ms();
                }
            }
            publish(&svcs, &systemd_text);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Follows one unit for as long as the config generation lives.
async fn follow(
    systemd: Arc<dyn ServiceManager>,
    unit: String,
    i: usize,
    generation: u64,
    tx: mpsc::Sender<(u64, Msg)>,
    cancel: CancellationToken,
) {
    let send = |m: Msg| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((generation, m)).await;
        }
    };
    let mut watch = match systemd.unit(&unit).await {
        Ok(Some(w)) => w,
        Ok(None) => return send(Msg::Installed(i, false)).await,
        Err(e) => {
            // Cannot tell: judge by the unit file, and say why the state is unknown.
            send(Msg::Installed(i, unit_file_exists(&unit))).await;
            return send(Msg::Unit(i, Err(e.to_string()))).await;
        }
    };
    send(Msg::Installed(i, true)).await;
    send(Msg::RestartsItself(i, watch.restarts_itself().await)).await;
    let first = watch.state().await.map(|(a, s)| UnitState::from_systemd(&a, &s)).map_err(|e| e.to_string());
    send(Msg::Unit(i, first)).await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = watch.changed() => {
                let end = changed.is_err();
                send(Msg::Unit(i, changed.map(|(a, s)| UnitState::from_systemd(&a, &s)).map_err(|e| e.to_string()))).await;
                if end {
                    return;
                }
            }
        }
    }
}

/// Docker's event stream is opened again this long after it ended (dockerd stopped or
/// restarted; its own probe says so meanwhile).
const EVENTS_RETRY: Duration = Duration::from_secs(30);

/// Events of one container closer together than this are one probe (a container that dies and
/// is restarted in a loop sends a few a second; a hostile socket, thousands).
const EVENT_DEBOUNCE: Duration = Duration::from_secs(1);
/// Lines read at most per debounce window; the rest wait in the stream.
const EVENT_BURST: usize = 256;

/// What a Docker event says happened ("die", "health_status: unhealthy"), for a log line.
fn event_action(line: &[u8]) -> String {
    let event: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
    let said = |key: &str| event[key].as_str().filter(|a| !a.trim().is_empty());
    let action = said("Action").or(said("status")).unwrap_or("an event");
    crate::sys::one_line(action, 60)
}

/// Follows a container through Docker's event stream (`GET /events`, filtered to that container
/// and the events that change whether it runs or is healthy), so a container that dies is
/// probed at once rather than at its next interval. One idle connection; no polling.
async fn follow_container(
    socket: std::path::PathBuf,
    name: String,
    i: usize,
    generation: u64,
    tx: mpsc::Sender<(u64, Msg)>,
    cancel: CancellationToken,
) {
    let filters = serde_json::json!({
        "type": ["container"],
        "container": [name],
        "event": ["die", "kill", "oom", "stop", "start", "restart", "pause", "unpause", "health_status"],
    });
    let path = format!("/events?filters={}", crate::sys::http::percent_encode(&filters.to_string()));
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            s = crate::sys::http::stream_lines(&socket, &path, Duration::from_secs(5)) => s,
        };
        match opened {
            Ok(mut lines) => loop {
                let line = tokio::select! {
                    _ = cancel.cancelled() => return,
                    l = lines.next_line() => l,
                };
                let Ok(Some(line)) = line else { break };
                let _ = tx.send((generation, Msg::ContainerEvent(i, event_action(&line)))).await;
                // Whatever comes within the next EVENT_DEBOUNCE is one more probe at most: the
                // stream is not read meanwhile (Docker holds the events), then what has arrived
                // is read (at most EVENT_BURST lines) and stands as its last event.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(EVENT_DEBOUNCE) => {}
                }
                let (mut last, mut ended) = (None, false);
                for _ in 0..EVENT_BURST {
                    match tokio::time::timeout(Duration::ZERO, lines.next_line()).await {
                        Ok(Ok(Some(l))) => last = Some(l),
                        Ok(_) => {
                            ended = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Some(l) = last {
                    let _ = tx.send((generation, Msg::ContainerEvent(i, event_action(&l)))).await;
                }
                if ended {
                    break;
                }
            },
            Err(e) => tracing::debug!("health: Docker's events for container {name}: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVENTS_RETRY) => {}
        }
    }
}

/// Starts the probes that are due (within `slack`) and not already running.
fn probe_due(svcs: &mut [Svc], generation: u64, tx: &mpsc::Sender<(u64, Msg)>, slack: Duration) {
    let now = Instant::now();
    for (i, s) in svcs.iter_mut().enumerate() {
        let Some(p) = s.cfg.probe.clone() else { continue };
        let unit_up = matches!(s.machine.unit, UnitState::Active | UnitState::Unknown);
        if s.installed != Some(true) || s.probing || !unit_up || s.next_probe > now + slack {
            continue;
        }
        s.probing = true;
        let (tx, timeout, workers, local) = (tx.clone(), s.cfg.timeout, s.workers.is_some(), s.cfg.local_worker);
        tokio::spawn(async move {
            let (r, w) = probe::run_with_workers(&p, timeout, workers, local).await;
            let _ = tx.send((generation, Msg::Probe(i, r))).await;
            if let Some(w) = w {
                let _ = tx.send((generation, Msg::Workers(i, w))).await;
            }
        });
    }
}

fn handle(svcs: &mut [Svc], msg: Msg, ctx: &Ctx<'_>) {
    let now = Instant::now();
    let (i, events) = match msg {
        Msg::Installed(i, installed) => {
            let s = &mut svcs[i];
            s.installed = Some(installed);
            if !installed {
                tracing::info!(service = %s.cfg.name, "health: {} is not installed here (no {}): not checked", s.cfg.name, s.cfg.unit.as_deref().unwrap_or("unit"));
            }
            (i, Vec::new())
        }
        Msg::RestartsItself(i, yes) => {
            svcs[i].machine.policy.unit_restarts_itself = yes;
            (i, Vec::new())
        }
        Msg::Unit(i, Ok(u)) => {
            let s = &mut svcs[i];
            tracing::debug!(service = %s.cfg.name, unit_state = u.as_str(), "health: {} unit {}", s.cfg.name, u.as_str());
            if u == UnitState::Active && s.machine.unit != UnitState::Active {
                // Just started: see whether it answers, at once and then every second.
                s.next_probe = now;
                s.fast_until = Some(now + FAST_FOR);
            }
            (i, s.machine.unit_changed(u, now))
        }
        Msg::Unit(i, Err(e)) => {
            tracing::warn!(service = %svcs[i].cfg.name, "health: cannot follow {}: {e}", svcs[i].cfg.unit.as_deref().unwrap_or(""));
            (i, svcs[i].machine.unit_changed(UnitState::Unknown, now))
        }
        Msg::Probe(i, r) => {
            let s = &mut svcs[i];
            s.probing = false;
            if !r.ok {
                tracing::debug!(service = %s.cfg.name, "health: {} probe failed: {}", s.cfg.name, r.detail);
            }
            let events = s.machine.probe(r.ok, &r.detail, now);
            let opened = events.iter().any(|e| matches!(e, Event::Down { .. }));
            if (!r.ok && s.machine.fails == 1) || opened {
                s.fast_until = Some(now + FAST_FOR);
            }
            // Fast while it matters: confirming a failure, waiting for a recovery to settle.
            let unsettled = s.machine.fails > 0 || s.machine.incident.is_some() || s.machine.passes < s.cfg.pass_after;
            let fast = unsettled && s.fast_until.is_some_and(|t| now < t);
            s.next_probe = now + if fast { FAST_PROBE } else { s.cfg.interval };
            s.last_probe = Some(r);
            (i, events)
        }
        Msg::Workers(i, w) => {
            workers(&mut svcs[i], w, ctx.alerts);
            (i, Vec::new())
        }
        Msg::ContainerEvent(i, action) => {
            let s = &mut svcs[i];
            tracing::debug!(service = %s.cfg.name, "health: {}: Docker says {action}", s.cfg.name);
            s.next_probe = now;
            s.fast_until = Some(now + FAST_FOR);
            (i, Vec::new())
        }
        Msg::Restarted(i, r) => {
            let s = &mut svcs[i];
            let unit = s.restart_target();
            let unit = unit.as_str();
            match r {
                Ok(()) => tracing::info!(service = %s.cfg.name, unit, "health: restarted {unit}"),
                Err(e) => tracing::error!(service = %s.cfg.name, unit, "health: restart of {unit} failed: {e}"),
            }
            s.next_probe = now;
            s.fast_until = Some(now + FAST_FOR);
            (i, s.machine.restart_finished(now))
        }
    };
    let s = &mut svcs[i];
    for e in events {
        act(i, s, e, ctx);
    }
}

fn workers(s: &mut Svc, w: Result<BTreeMap<String, String>, String>, alerts: &Option<AlertSender>) {
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
                raise(alerts, Alert::firing(format!("workers/{name}"), "warning", text).label("service", &name));
            } else if !short && ws.short {
                let text = format!("{name} has {} worker(s) again", now.len());
                tracing::info!(service = %name, workers = now.len(), "health: {text}");
                raise(alerts, Alert::resolved(format!("workers/{name}"), "warning", text, 0).label("service", &name));
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
fn act(i: usize, s: &mut Svc, e: Event, ctx: &Ctx<'_>) {
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
            alert(Alert::firing(format!("service/{name}"), "critical", format!("{name} is down: {reason}")));
        }
        Event::Up { after } => {
            let text = format!("{name} is healthy again after {}", format_duration(after));
            tracing::info!(service = %name, down_seconds = after.as_secs_f64(), "health: {text}");
            alert(Alert::resolved(format!("service/{name}"), "critical", text.clone(), 0));
            if std::mem::take(&mut s.flapping) {
                alert(Alert::resolved(format!("flapping/{name}"), "critical", text, 0));
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
            alert(Alert::firing(format!("flapping/{name}"), "critical", text));
        }
        Event::FlappingIncidents { incidents, window, quiet_for } => {
            let text = format!(
                "{name} is flapping: {incidents} incidents within {}; each further one is held until it has been healthy for {}",
                format_duration(window),
                format_duration(quiet_for)
            );
            tracing::error!(service = %name, incidents, "health: {text}");
            s.flapping = true;
            alert(Alert::firing(format!("flapping/{name}"), "critical", text));
        }
        Event::Steady { after } => {
            let text = format!("{name} is steady again (flapping for {})", format_duration(after));
            tracing::info!(service = %name, "health: {text}");
            s.flapping = false;
            alert(Alert::resolved(format!("flapping/{name}"), "critical", text, 0));
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

/// Worker names for `status`: sorted, at most [`NAMES_REPORTED`], each escaped and cut (the
/// scheduler names them; `count` says how many there are).
fn listed(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.truncate(NAMES_REPORTED);
    v.iter().map(|n| crate::sys::one_line(n, 80)).collect()
}

const NAMES_REPORTED: usize = 100;

fn state_of(s: &Svc) -> &'static str {
    match s.installed {
        Some(false) => "not installed",
        _ if s.machine.incident.is_some() => "unhealthy",
        _ if s.machine.healthy_since.is_some() => "healthy",
        _ => "starting",
    }
}

fn report(enabled: bool, systemd: &str, svcs: &[Svc]) -> HealthReport {
    let services = svcs
        .iter()
        .map(|s| {
            let m = &s.machine;
            let held_until_unix_ms =
                m.held_until.map(|t| crate::sys::unix_ms() + t.saturating_duration_since(Instant::now()).as_millis() as u64);
            ServiceReport {
                name: s.cfg.name.clone(),
                unit: s.cfg.unit.clone(),
                probe: s.cfg.probe.as_ref().map(ToString::to_string),
                state: state_of(s).into(),
                unit_state: if s.cfg.unit.is_some() { m.unit.as_str().into() } else { "no unit".into() },
                since_unix_ms: s.since_unix_ms,
                last_probe: s.last_probe.clone(),
                reason: m.incident.as_ref().map(|i| i.reason.clone()),
                restarts: m.restarts_total,
                backoff_seconds: if m.incident.is_some() { m.backoff.as_secs_f64() } else { 0.0 },
                held_until_unix_ms,
                workers: s.workers.as_ref().filter(|w| s.installed == Some(true) && (w.read || w.error.is_some())).map(|w| {
                    let shown = if w.short { &w.now } else { &w.known };
                    WorkersReport {
                        count: w.now.len(),
                        min: w.min,
                        names: listed(shown.values().cloned().collect()),
                        left: if w.short {
                            listed(w.known.iter().filter(|(a, _)| !w.now.contains_key(*a)).map(|(_, n)| n.clone()).collect())
                        } else {
                            Vec::new()
                        },
                        error: w.error.clone(),
                    }
                }),
            }
        })
        .collect();
    HealthReport { enabled, systemd: systemd.to_string(), services }
}

/// One look at every service, without the daemon (`cluster-ai health` when none runs): the
/// unit's state from systemd where it can be asked, each installed service's probe once, all
/// at the same time.
pub async fn check_once(cfg: &Config, services: Arc<dyn ServiceManager>) -> HealthReport {
    let h = Arc::new(cfg.health.clone());
    if !h.enabled {
        return HealthReport { enabled: false, systemd: "not needed".into(), services: Vec::new() };
    }
    let (systemd, systemd_text) = if h.services.iter().any(|s| s.unit.is_some()) {
        match services.connect().await {
            Ok(()) => (Some(services), "connected".to_string()),
            Err(e) => (None, e.to_string()),
        }
    } else {
        (None, "not needed".to_string())
    };
    let mut looks = tokio::task::JoinSet::new();
    for (i, s) in h.services.iter().enumerate() {
        looks.spawn(look(i, h.clone(), s.clone(), systemd.clone()));
    }
    let mut svcs: Vec<(usize, Svc)> = looks.join_all().await;
    svcs.sort_by_key(|(i, _)| *i);
    let svcs: Vec<Svc> = svcs.into_iter().map(|(_, s)| s).collect();
    report(true, &systemd_text, &svcs)
}

async fn look(i: usize, h: Arc<crate::config::HealthConfig>, s: ServiceConfig, systemd: Option<Arc<dyn ServiceManager>>) -> (usize, Svc) {
    let now = Instant::now();
    let mut policy = Policy::new(&h, &s);
    // One look decides: the thresholds in a row are for the daemon's watch; it restarts nothing.
    policy.one_look();
    policy.no_restarts();
    let mut svc = Svc::new(s.clone(), policy, now);
    svc.installed = Some(match (&s.unit, &systemd, &s.probe) {
        (Some(unit), Some(sd), _) => match sd.unit(unit).await {
            Ok(Some(w)) => {
                if let Ok((a, sub)) = w.state().await {
                    svc.machine.unit_changed(UnitState::from_systemd(&a, &sub), now);
                }
                true
            }
            Ok(None) => false,
            Err(_) => unit_file_exists(unit),
        },
        (Some(unit), None, _) => unit_file_exists(unit),
        (None, _, Some(Probe::Docker { socket } | Probe::Container { socket, .. })) => socket.exists(),
        (None, _, _) => true,
    });
    let unit_up = matches!(svc.machine.unit, UnitState::Active | UnitState::Unknown);
    if let (Some(true), Some(p), true) = (svc.installed, &s.probe, unit_up) {
        let (r, w) = probe::run_with_workers(p, s.timeout, svc.workers.is_some(), s.local_worker).await;
        svc.machine.probe(r.ok, &r.detail, now);
        if let Some(w) = w {
            workers(&mut svc, w, &None);
        }
        svc.last_probe = Some(r);
    }
    svc.state = state_of(&svc);
    (i, svc)
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
        assert_eq!(event_action(br#"{"Action":"die\nforged","status":"x"}"#), "die\\nforged");
        assert_eq!(event_action(br#"{"status":"health_status: unhealthy"}"#), "health_status: unhealthy");
        assert_eq!(event_action(b"not json"), "an event");
    }

    mod props {
        use proptest::prelude::*;

        use super::super::event_action;
        use crate::testing::{json, text_like};

        const EVENT: &str = r#"{"status":"die","id":"4fa6e0f0c678","from":"ghcr.io/open-webui/open-webui:main","Type":"container","Action":"die","Actor":{"ID":"4fa6e0f0c678","Attributes":{"exitCode":"137","name":"open-webui"}},"scope":"local","time":1717000000,"timeNano":1717000000000000000}"#;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any line of Docker's event stream names what happened in a few words on one line.
            #[test]
            fn any_event_line_is_a_short_action(line in prop_oneof![text_like(EVENT), json(), json().prop_map(|a| format!("{{\"Action\":{a},\"status\":{a}}}"))]) {
                let a = event_action(line.as_bytes());
                prop_assert!(!a.is_empty() && a.chars().count() <= 61 * 10 && !a.contains(char::is_control), "{a:?}");
            }
        }
    }
}
