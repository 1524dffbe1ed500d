//! The health task's books on each service (`Svc`: its config, policy machine, probe state,
//! workers), the messages its helper tasks send back, and the report built from the books.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::policy::{Machine, Policy, UnitState};
use super::probe::ProbeResult;
use super::{HealthReport, ServiceReport, ServiceState, WorkersReport};
use crate::alerts::task::AlertSender;
use crate::config::{Probe, ServiceConfig};
use crate::sys::systemd::ServiceManager;

/// What the helper tasks report back; each carries the config generation it was started under.
pub(super) enum Msg {
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
pub(super) struct Ctx<'a> {
    pub(super) generation: u64,
    pub(super) systemd: &'a Option<Arc<dyn ServiceManager>>,
    pub(super) tx: &'a mpsc::Sender<(u64, Msg)>,
    pub(super) alerts: &'a Option<AlertSender>,
    pub(super) dry_run: bool,
}

pub(super) struct Svc {
    pub(super) cfg: ServiceConfig,
    /// A flapping alert is firing (resolved when the service is healthy again).
    pub(super) flapping: bool,
    pub(super) machine: Machine,
    /// `None` until systemd (or the unit files) said.
    pub(super) installed: Option<bool>,
    pub(super) state: ServiceState,
    pub(super) since_unix_ms: u64,
    pub(super) last_probe: Option<ProbeResult>,
    pub(super) next_probe: Instant,
    /// Probing every second until then (something went wrong, or the unit just started).
    pub(super) fast_until: Option<Instant>,
    pub(super) probing: bool,
    pub(super) workers: Option<Workers>,
}

pub(super) struct Workers {
    pub(super) min: u32,
    /// Whether the scheduler has been asked yet.
    pub(super) read: bool,
    /// Every worker seen while the count was at or over the minimum: address → name.
    pub(super) known: BTreeMap<String, String>,
    pub(super) now: BTreeMap<String, String>,
    pub(super) short: bool,
    pub(super) error: Option<String>,
}

impl Svc {
    /// A service without a unit whose probe is a container: restarted through Docker.
    pub(super) fn container(&self) -> Option<(String, std::path::PathBuf)> {
        match &self.cfg.probe {
            Some(Probe::Container { name, socket }) if self.cfg.unit.is_none() => Some((name.clone(), socket.clone())),
            _ => None,
        }
    }

    /// When the next fast probe is to start: only while fast probing lasts and a probe could
    /// start (installed, the unit up, none in flight), so the loop never wakes for nothing.
    pub(super) fn fast_probe_at(&self, now: Instant) -> Option<Instant> {
        let fast = self.fast_until.is_some_and(|t| t > now);
        let unit_up = matches!(self.machine.unit, UnitState::Active | UnitState::Unknown);
        (fast && !self.probing && unit_up && self.installed == Some(true) && self.cfg.probe.is_some()).then_some(self.next_probe)
    }

    /// What a restart restarts, for the log: "ollama.service", "container open-webui", "".
    pub(super) fn restart_target(&self) -> String {
        self.cfg.unit.clone().or_else(|| self.container().map(|(n, _)| format!("container {n}"))).unwrap_or_default()
    }

    pub(super) fn new(cfg: ServiceConfig, policy: Policy, now: Instant) -> Svc {
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
            state: ServiceState::Starting,
            since_unix_ms: crate::sys::unix_ms(),
            last_probe: None,
            next_probe: now,
            fast_until: None,
            probing: false,
            workers,
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

pub(super) fn state_of(s: &Svc) -> ServiceState {
    match s.installed {
        Some(false) => ServiceState::NotInstalled,
        _ if s.machine.incident.is_some() => ServiceState::Unhealthy,
        _ if s.machine.healthy_since.is_some() => ServiceState::Healthy,
        _ => ServiceState::Starting,
    }
}

pub(super) fn report(enabled: bool, systemd: &str, svcs: &[Svc]) -> HealthReport {
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
                state: state_of(s),
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
