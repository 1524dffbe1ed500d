//! The health task's books on each service (`Svc`: its config, policy machine, probe state,
//! workers), the messages its helper tasks send back, and the report built from the books.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;

use super::policy::{Event, Machine, Policy, UnitState};
use super::probe::ProbeResult;
use super::{HealthReport, ServiceReport, ServiceState, WorkersReport};
use crate::alerts::task::AlertSender;
use crate::config::{Probe, ServiceConfig};
use crate::sys::systemd::ServiceManager;

/// How often a service is probed while something is wrong with it (or it just restarted); a
/// probe confirming a failure starts this long after the failed one *started*, so at once
/// after a timeout...
pub const FAST_PROBE: Duration = Duration::from_secs(1);
/// ...for this long after the last such event; a service that stays down is then probed at
/// its interval again, so a node with a service that is simply off stays idle.
pub const FAST_FOR: Duration = Duration::from_secs(30);

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
    /// The last probe could not be made ([`ProbeResult::unknown`]): said once, until one is.
    pub(super) unprobed: bool,
    pub(super) workers: Option<Workers>,
    /// The probe as the report shows it (a URL's secrets cut), made once: formatting it for
    /// every report was a seventh of a probe cycle's instructions (callgrind).
    pub(super) shown_probe: Option<String>,
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

    /// A probe's result: the policy's decisions, and when the next probe is due. A failed probe
    /// is confirmed by the next one, started [`FAST_PROBE`] after the failed one started rather
    /// than an `interval` later: at once after a timeout (a hang is restarted `interval`/2 plus
    /// `fail_after` times `timeout` after it starts, on average, the service silent for
    /// `fail_after` times `timeout` in a row), a second after a refused connection (a blip of
    /// under a second is not confirmed). Once the incident is open, the recovery is watched
    /// [`FAST_PROBE`] after each probe ends; a service that fails once and then answers is back
    /// on its `interval` as soon as `pass_after` probes passed.
    ///
    /// A probe that could not be made for want of the daemon's own resources
    /// ([`ProbeResult::unknown`]: every file descriptor taken) judges nothing: the service's
    /// state, its count of failures and its last probe stay as they were, and the next probe is
    /// tried [`FAST_PROBE`] later (a hang is still caught soon once probes can be made again).
    pub(super) fn probed(&mut self, r: ProbeResult, now: Instant) -> Vec<Event> {
        self.probing = false;
        if r.unknown {
            self.next_probe = now + FAST_PROBE;
            // Fast probing lasts at least past that probe, so the loop wakes for it.
            let past = now + FAST_PROBE * 2;
            self.fast_until = Some(self.fast_until.map_or(past, |t| t.max(past)));
            return Vec::new();
        }
        let events = self.machine.probe(r.ok, &r.detail, now);
        let opened = events.iter().any(|e| matches!(e, Event::Down { .. }));
        if (!r.ok && self.machine.fails == 1) || opened {
            self.fast_until = Some(now + FAST_FOR);
        }
        // Fast while it matters: confirming a failure, waiting for a recovery to settle.
        let m = &self.machine;
        let unsettled = m.fails > 0 || m.incident.is_some() || m.passes < self.cfg.pass_after;
        let fast = unsettled && self.fast_until.is_some_and(|t| now < t);
        // Confirming a failure (no incident open yet): FAST_PROBE after the failed probe
        // started. Once the incident is open, the recovery is watched FAST_PROBE after each
        // probe ends: a service that fails slowly is not probed back to back.
        let took = Duration::try_from_secs_f64(r.latency_ms / 1000.0).unwrap_or_default();
        let confirming = !r.ok && m.incident.is_none();
        self.next_probe = now
            + match (fast, confirming) {
                (true, true) => FAST_PROBE.saturating_sub(took),
                (true, false) => FAST_PROBE,
                (false, _) => self.cfg.interval,
            };
        self.last_probe = Some(r);
        events
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
        let shown_probe = cfg.probe.as_ref().map(ToString::to_string);
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
            unprobed: false,
            workers,
            shown_probe,
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
                probe: s.shown_probe.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A probe that passed at once, or failed by timing out after `DEFAULT_TIMEOUT`.
    fn result(ok: bool, at: Instant) -> ProbeResult {
        let detail = if ok { "200 ok" } else { "no answer within 3s" };
        let latency_ms = if ok { 0.0 } else { crate::config::DEFAULT_TIMEOUT.as_secs_f64() * 1000.0 };
        ProbeResult { ok, detail: detail.into(), latency_ms, at_unix_ms: at.elapsed().as_millis() as u64, unknown: false }
    }

    /// Ollama's entry on the shipped defaults, its unit active and the service healthy (two
    /// probes passed) at `t0`.
    fn healthy(t0: Instant) -> Svc {
        let h = Config::default().health;
        let cfg = h.services.iter().find(|s| s.name == "ollama").expect("a built-in ollama").clone();
        let mut s = Svc::new(cfg.clone(), Policy::new(&h, &cfg), t0);
        s.machine.unit_changed(UnitState::Active, t0);
        for _ in 0..cfg.pass_after {
            assert!(s.probed(result(true, t0), t0).iter().all(|e| matches!(e, Event::Up { .. })));
        }
        assert!(s.machine.healthy_since.is_some() && s.next_probe == t0 + cfg.interval);
        s
    }

    /// Runs the probe schedule from a healthy `t0` with the service silent from `hang` on: each
    /// probe starts when due, passes at once before the hang and fails after `timeout` from
    /// then. Returns when the restart was decided and the probes' start times.
    fn until_restart(hang: Instant, t0: Instant) -> (Instant, Vec<Instant>) {
        let mut s = healthy(t0);
        let mut starts = Vec::new();
        loop {
            let start = s.next_probe;
            starts.push(start);
            let ok = start < hang;
            let end = if ok { start } else { start + s.cfg.timeout };
            let events = s.probed(result(ok, end), end);
            if events.iter().any(|e| matches!(e, Event::Restart { .. })) {
                return (end, starts);
            }
            assert!(starts.len() < 100, "no restart after 100 probes: {events:?}");
        }
    }

    #[test]
    fn a_timed_out_probe_is_confirmed_at_once_not_an_interval_later() {
        let t0 = Instant::now();
        let d = healthy(t0).cfg;
        let hang = t0 + Duration::from_millis(2500);
        let (restart, starts) = until_restart(hang, t0);
        // The first probe after the hang (at the interval), then one more as soon as the first
        // timed out (more than FAST_PROBE after it started), and the second failure decides.
        let first = t0 + d.interval;
        assert_eq!(starts[starts.len() - 2..], [first, first + d.timeout]);
        assert_eq!(restart, first + d.timeout + d.timeout);
    }

    #[test]
    fn once_the_incident_is_open_a_slow_failing_probe_is_followed_a_second_after_it_ends() {
        let t0 = Instant::now();
        let mut s = healthy(t0);
        let mut t = t0 + s.cfg.interval + s.cfg.timeout;
        for _ in 0..s.cfg.fail_after {
            s.probed(result(false, t), t);
            t = s.next_probe + s.cfg.timeout;
        }
        assert!(s.machine.incident.is_some(), "fail_after timeouts open the incident");
        s.probed(result(false, t), t);
        assert_eq!(s.next_probe, t + FAST_PROBE, "not back to back while it is down");
    }

    #[test]
    fn a_refused_probe_is_confirmed_a_second_after_it_started() {
        let t0 = Instant::now();
        let mut s = healthy(t0);
        let t1 = t0 + s.cfg.interval;
        let refused = ProbeResult { ok: false, detail: "cannot connect: refused".into(), latency_ms: 0.2, at_unix_ms: 0, unknown: false };
        let end = t1 + Duration::from_micros(200);
        assert!(s.probed(refused, end).is_empty(), "one failure opens nothing");
        assert_eq!(s.next_probe, end + FAST_PROBE - Duration::from_micros(200));
        // A latency that is no duration (NaN, negative) is read as none, never a panic.
        let odd = ProbeResult { ok: false, detail: "?".into(), latency_ms: f64::NAN, at_unix_ms: 0, unknown: false };
        let t2 = s.next_probe;
        s.probed(odd, t2);
        assert!(s.next_probe >= t2);
    }

    /// Issue 18 §7: on the shipped defaults, a hang is restarted within 15 s (median) of when it
    /// starts, whatever its phase within the probe interval (sampled every 100 ms across it).
    #[test]
    fn a_hang_is_restarted_within_15_s_median_on_the_defaults() {
        let t0 = Instant::now();
        let interval = healthy(t0).cfg.interval;
        let steps = (interval.as_millis() / 100) as u32;
        let mut took: Vec<Duration> = (0..steps)
            .map(|k| {
                let hang = t0 + Duration::from_millis(1) + Duration::from_millis(100) * k;
                until_restart(hang, t0).0 - hang
            })
            .collect();
        took.sort_unstable();
        let median = took[took.len() / 2];
        assert!(median <= Duration::from_secs(15), "median {median:?}, from {:?} to {:?}", took[0], took[took.len() - 1]);
    }

    #[test]
    fn a_service_slow_once_is_not_restarted_and_is_back_on_its_interval() {
        let t0 = Instant::now();
        let mut s = healthy(t0);
        let (interval, timeout) = (s.cfg.interval, s.cfg.timeout);
        // One probe times out; the confirmation at once passes, and so does the next.
        let t1 = t0 + interval + timeout;
        assert!(s.probed(result(false, t1), t1).is_empty(), "one failure opens nothing");
        assert_eq!(s.next_probe, t1);
        let t2 = t1;
        assert!(s.probed(result(true, t2), t2).is_empty());
        assert!(s.machine.incident.is_none() && s.machine.restarts_total == 0);
        // Watched closely until pass_after probes passed in a row, then on its interval again.
        assert_eq!(s.next_probe, t2 + FAST_PROBE);
        let t3 = t2 + FAST_PROBE;
        assert!(s.probed(result(true, t3), t3).is_empty());
        assert_eq!(s.next_probe, t3 + interval);
        assert_eq!(s.machine.restarts_total, 0);
    }

    /// Probes the daemon could not make (every file descriptor of its own taken) judge nothing:
    /// a healthy service failing them for a minute is neither restarted nor counted as failing,
    /// its last probe is the last real one, and they are tried every second; the first real
    /// failure after them is the first failure.
    #[test]
    fn a_probe_the_daemon_could_not_make_judges_nothing() {
        let t0 = Instant::now();
        let mut s = healthy(t0);
        s.installed = Some(true);
        let last = s.last_probe.clone();
        let shortage = |at: Instant| ProbeResult {
            ok: false,
            detail: "cannot open a connection: Too many open files (os error 24) (this process's own shortage, not the peer's)".into(),
            latency_ms: 0.01,
            at_unix_ms: at.elapsed().as_millis() as u64,
            unknown: true,
        };
        let mut t = t0 + s.cfg.interval;
        for _ in 0..60 {
            assert!(s.probed(shortage(t), t).is_empty());
            assert_eq!(s.next_probe, t + FAST_PROBE);
            assert!(s.fast_probe_at(t) == Some(t + FAST_PROBE), "the loop wakes for the next try");
            t = s.next_probe;
        }
        assert_eq!((s.machine.fails, s.machine.restarts_total), (0, 0));
        assert!(s.machine.incident.is_none() && s.machine.healthy_since.is_some());
        assert_eq!(s.last_probe, last);
        assert!(s.probed(result(false, t), t).is_empty(), "a real failure is the first one");
        assert_eq!(s.machine.fails, 1);
    }
}
