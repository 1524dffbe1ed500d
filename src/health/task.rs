//! The health task. Units are followed by one small tokio task each (a D-Bus signal stream),
//! probes and restarts run as tasks of their own and report back on a channel, so the loop
//! never waits on a peer. Regular probes ride one timerfd tick (all services on a 10 s interval
//! cost one wakeup per 10 s); while something is wrong the service is probed every second and
//! the backoff's deadlines wake the loop exactly when due.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, watch};

use super::act::{act, workers};
use super::follow::{follow, follow_container};
use super::policy::{Policy, UnitState};
use super::probe;
use super::service::{report, state_of, Ctx, Msg, Svc};
pub use super::service::{FAST_FOR, FAST_PROBE};
use super::HealthReport;
use crate::alerts::task::AlertSender;
use crate::config::{Config, Probe, ServiceConfig};
use crate::runtime::TaskCtx;
use crate::sys::systemd::{unit_file_exists, ServiceManager};

/// The task beats at least this often (its tick is never longer).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// The longest gap between two tries to reach systemd while it does not answer: a unit that
/// fails once systemd is back waits at most this long (and a tick) for its restart, and a host
/// without a system bus pays one try a minute.
pub const RECONNECT_MAX: Duration = Duration::from_secs(60);
pub type HealthReceiver = watch::Receiver<Arc<HealthReport>>;

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
        let mut ticker = os.clock.ticker(tick);
        let now = Instant::now();
        let mut svcs: Vec<Svc> = h.services.iter().map(|s| Svc::new(s.clone(), Policy::new(h, s), now)).collect();
        let mut systemd_text = "not needed".to_string();
        let mut systemd: Option<Arc<dyn ServiceManager>> = None;
        let needs_systemd = h.enabled && svcs.iter().any(|s| s.cfg.unit.is_some());
        if h.enabled {
            if needs_systemd {
                match heartbeat.during(services.connect()).await {
                    Ok(()) => {
                        systemd_text = "connected".into();
                        systemd = Some(services.clone());
                    }
                    Err(e) => {
                        tracing::warn!("health: {e}; units are judged by their unit files and probes, and nothing can be restarted until systemd answers (asked again in {}, then less often, at most every {})", crate::config::format_duration(tick), crate::config::format_duration(RECONNECT_MAX));
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
        // Every probe's result is stored (`health` and /metrics read it when asked), but the
        // readers that wait for a change (the STATUS= line) are woken only when more than the
        // last probes changed: a routine passing probe wakes nothing but this task.
        let publish = |svcs: &[Svc], systemd_text: &str| {
            let new = report(h.enabled, systemd_text, svcs);
            state.send_if_modified(|old| {
                let news = !old.same_but_probes(&new);
                *old = Arc::new(new);
                news
            });
        };
        publish(&svcs, &systemd_text);
        let ctx = Ctx { generation, systemd: &systemd, tx: &tx, alerts: &alerts, dry_run };
        // While systemd is unreachable it is asked again at a tick, then at gaps that double
        // up to RECONNECT_MAX: on a host without a system bus each try costs a blocking
        // thread's wakeup and the runtime's, which every 10 s was most of the idle daemon's
        // wakeups (bench/footprint.sh with none probed: 0.383 wakeups a second, 0.233 since).
        let mut reconnect_gap = tick;
        let mut reconnect_at = now + tick;
        loop {
            let now = Instant::now();
            // Whether this wakeup changed what the report shows: a wakeup that only starts
            // probes (the tick, a due fast probe) builds and publishes nothing.
            let mut changed = false;
            if h.enabled {
                for (i, s) in svcs.iter_mut().enumerate() {
                    for e in s.machine.tick(now) {
                        changed = true;
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
                _ = ticker.tick() => {
                    heartbeat.beat();
                    if h.enabled {
                        probe_due(&mut svcs, generation, &tx, tick / 2);
                    }
                    // systemd unreachable when this generation began (the bus restarting, no
                    // descriptor left): asked again at the ticks `reconnect_at` says (a
                    // tick, then doubling gaps up to RECONNECT_MAX), and once it answers, the
                    // generation starts over with it (units followed, restarts possible again)
                    // rather than waiting for a reload.
                    if needs_systemd && systemd.is_none() && Instant::now() + tick / 2 >= reconnect_at {
                        if heartbeat.during(services.connect()).await.is_ok() {
                            tracing::info!("health: systemd answers again; following the units and restarting what fails");
                            helpers.cancel();
                            break;
                        }
                        reconnect_gap = (reconnect_gap * 2).min(RECONNECT_MAX);
                        reconnect_at = Instant::now() + reconnect_gap;
                    }
                }
                _ = sleep_until(wake) => {
                    probe_due(&mut svcs, generation, &tx, Duration::ZERO);
                }
                Some((g, msg)) = rx.recv() => {
                    if g != generation {
                        continue;
                    }
                    changed = true;
                    handle(&mut svcs, msg, &ctx);
                    // What else has arrived meanwhile (probes started on one tick end together)
                    // is handled in this same wakeup, and published once.
                    while let Ok((g, msg)) = rx.try_recv() {
                        if g == generation {
                            handle(&mut svcs, msg, &ctx);
                        }
                    }
                    probe_due(&mut svcs, generation, &tx, Duration::ZERO);
                }
            }
            for s in svcs.iter_mut() {
                let st = state_of(s);
                if st != s.state {
                    s.state = st;
                    s.since_unix_ms = crate::sys::unix_ms();
                    changed = true;
                }
            }
            if changed {
                publish(&svcs, &systemd_text);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
            // Said when it changes: it is looked at again at each daemon-reload.
            let was = s.installed.replace(installed);
            let unit = s.cfg.unit.as_deref().unwrap_or("unit");
            if !installed && was != Some(false) {
                tracing::info!(service = %s.cfg.name, "health: {} is not installed here (no {unit}): not checked", s.cfg.name);
            } else if installed && was == Some(false) {
                tracing::info!(service = %s.cfg.name, "health: {} is installed now ({unit}, after a daemon-reload): checked from now on", s.cfg.name);
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
            if r.unknown && !s.unprobed {
                tracing::warn!(service = %s.cfg.name, "health: cannot probe {}: {}; not counted against it, tried again every second", s.cfg.name, r.detail);
            } else if !r.unknown && s.unprobed {
                tracing::info!(service = %s.cfg.name, "health: probing {} again", s.cfg.name);
            } else if !r.ok {
                tracing::debug!(service = %s.cfg.name, "health: {} probe failed: {}", s.cfg.name, r.detail);
            }
            s.unprobed = r.unknown;
            (i, s.probed(r, now))
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
        if !r.unknown {
            svc.machine.probe(r.ok, &r.detail, now);
        }
        if let Some(w) = w {
            workers(&mut svc, w, &None);
        }
        svc.last_probe = Some(r);
    }
    svc.state = state_of(&svc);
    (i, svc)
}
