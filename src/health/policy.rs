//! One service's health and restart decisions, as a pure state machine over explicit times:
//! failed and passed probes in a row, the unit's state as systemd reports it, incidents that
//! open and close once, restarts with a doubling backoff, and the flap guard that holds off
//! restarting (once, with one event) and then tries again. The task feeds it and carries out
//! what it returns; unit tests drive it with made-up times.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HealthConfig, RestartPolicy, ServiceConfig};

/// A unit's state from its `ActiveState` and `SubState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    /// No unit, or not heard from systemd yet.
    Unknown,
    Active,
    Activating,
    /// systemd's own `Restart=` is about to start it again: left to systemd.
    AutoRestart,
    Deactivating,
    Inactive,
    Failed,
}

impl UnitState {
    pub fn from_systemd(active: &str, sub: &str) -> UnitState {
        match (active, sub) {
            (_, "auto-restart") => UnitState::AutoRestart,
            ("active" | "reloading", _) => UnitState::Active,
            ("activating", _) => UnitState::Activating,
            ("deactivating", _) => UnitState::Deactivating,
            ("inactive", _) => UnitState::Inactive,
            ("failed", _) => UnitState::Failed,
            _ => UnitState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Unknown => "unknown",
            UnitState::Active => "active",
            UnitState::Activating => "activating",
            UnitState::AutoRestart => "auto-restart",
            UnitState::Deactivating => "deactivating",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
        }
    }

    /// systemd is starting or stopping it: not a moment to restart it ourselves.
    fn in_transition(self) -> bool {
        matches!(self, UnitState::Activating | UnitState::AutoRestart | UnitState::Deactivating)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An incident opened: the service is down or not answering.
    Down { reason: String },
    /// The incident closed after this long.
    Up { after: Duration },
    /// Restart the unit now.
    Restart { attempt: u32, reason: String },
    /// More than `flap_restarts` restarts within `flap_window`: not restarted until `hold` has
    /// passed.
    Flapping { restarts: usize, window: Duration, hold: Duration },
    /// The hold is over: restarts are tried again.
    HoldOver,
    /// More than `flap_restarts` incidents within `flap_window`, whoever ended each (a
    /// restart, the service itself): one event instead of a Down/Up pair per incident, which
    /// are held until the service has been healthy for `reset_after` ([`Event::Steady`]).
    FlappingIncidents { incidents: usize, window: Duration, quiet_for: Duration },
    /// Healthy for `reset_after` after flapping: incidents are reported one by one again.
    Steady { after: Duration },
}

#[derive(Debug, Clone)]
pub struct Incident {
    pub since: Instant,
    pub reason: String,
}

/// After a unit with a `Restart=` of its own fails, how long systemd has to say it is
/// restarting it (systemd 252 reports "failed" first, then "auto-restart") before we do.
pub const SYSTEMD_GRACE: Duration = Duration::from_millis(500);
/// A service judged by its unit alone (no probe) is healthy again once its unit has stayed
/// active this long: a unit that dies right after each start is one incident, not many.
pub const UNIT_SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Policy {
    restart: RestartPolicy,
    /// The unit has `Restart=` of its own: a failure is systemd's to handle first.
    pub unit_restarts_itself: bool,
    has_unit: bool,
    has_probe: bool,
    fail_after: u32,
    pass_after: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    flap_restarts: u32,
    flap_window: Duration,
    flap_hold: Duration,
    reset_after: Duration,
}

impl Policy {
    /// For a single look (`cluster-ai health` without the daemon): one failed probe is down,
    /// one passed probe is up.
    /// Without systemd nothing can be restarted: watch and report only.
    pub fn no_restarts(&mut self) {
        self.restart = RestartPolicy::Never;
    }

    pub fn one_look(&mut self) {
        self.fail_after = 1;
        self.pass_after = 1;
    }

    pub fn new(h: &HealthConfig, s: &ServiceConfig) -> Policy {
        Policy {
            restart: s.restart,
            unit_restarts_itself: false,
            // A container is restarted through Docker as a unit is through systemd.
            has_unit: s.unit.is_some() || matches!(s.probe, Some(crate::config::Probe::Container { .. })),
            has_probe: s.probe.is_some(),
            fail_after: s.fail_after,
            pass_after: s.pass_after,
            backoff_initial: h.backoff_initial,
            backoff_max: h.backoff_max,
            flap_restarts: h.flap_restarts,
            flap_window: h.flap_window,
            flap_hold: h.flap_hold,
            reset_after: h.reset_after,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub policy: Policy,
    pub unit: UnitState,
    pub fails: u32,
    pub passes: u32,
    pub incident: Option<Incident>,
    /// Healthy since (no incident, and the probe or the unit said so).
    pub healthy_since: Option<Instant>,
    pub restarts_total: u64,
    /// Restarts of this incident so far.
    attempt: u32,
    /// Restarts within the flap window.
    recent: VecDeque<Instant>,
    /// Incidents opened within the flap window.
    incidents: VecDeque<Instant>,
    /// Flapping by incidents: Down and Up are held until healthy for `reset_after`; since when.
    quiet_since: Option<Instant>,
    /// The wait after the latest restart before the next may come (zero before the first of
    /// an episode, which comes at once).
    pub backoff: Duration,
    pub next_restart: Option<Instant>,
    pub held_until: Option<Instant>,
    /// When the unit last became active.
    active_since: Option<Instant>,
    /// A restart was asked for and has not finished: no other is decided meanwhile.
    pub restart_in_flight: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            policy,
            unit: UnitState::Unknown,
            fails: 0,
            passes: 0,
            incident: None,
            healthy_since: None,
            restarts_total: 0,
            attempt: 0,
            recent: VecDeque::new(),
            incidents: VecDeque::new(),
            quiet_since: None,
            backoff: Duration::ZERO,
            next_restart: None,
            held_until: None,
            active_since: None,
            restart_in_flight: false,
        }
    }

    /// The restart asked for has finished (whatever its result): the probe counts again from
    /// here, and the next restart may be decided once the backoff has passed.
    pub fn restart_finished(&mut self, now: Instant) -> Vec<Event> {
        self.restart_in_flight = false;
        self.fails = 0;
        self.tick(now)
    }

    /// A probe's result.
    pub fn probe(&mut self, ok: bool, detail: &str, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if ok {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            let unit_ok = !self.policy.has_unit || matches!(self.unit, UnitState::Active | UnitState::Unknown);
            if unit_ok && self.passes >= self.policy.pass_after {
                self.close(now, &mut out);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.fails >= self.policy.fail_after {
                self.open(format!("not answering: {detail}"), now, &mut out);
            }
        }
        self.step(now, &mut out);
        out
    }

    /// The unit's new state, from systemd.
    pub fn unit_changed(&mut self, unit: UnitState, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        let was = std::mem::replace(&mut self.unit, unit);
        match unit {
            UnitState::Failed => {
                self.open("its unit failed".into(), now, &mut out);
                if self.policy.unit_restarts_itself && was != UnitState::Failed {
                    let grace = now + SYSTEMD_GRACE;
                    self.next_restart = Some(self.next_restart.map_or(grace, |t| t.max(grace)));
                }
            }
            UnitState::Inactive => self.open("its unit is stopped".into(), now, &mut out),
            UnitState::AutoRestart => self.open("its unit failed; systemd is restarting it".into(), now, &mut out),
            UnitState::Active => {
                // A fresh start: the probe counts again from here.
                if was != UnitState::Active {
                    self.fails = 0;
                    self.active_since = Some(now);
                }
                // Without a probe, healthy once it has stayed up a moment (see `step`); at
                // once when nothing was wrong.
                if !self.policy.has_probe && self.incident.is_none() {
                    self.close(now, &mut out);
                }
            }
            UnitState::Unknown | UnitState::Activating | UnitState::Deactivating => {}
        }
        self.step(now, &mut out);
        out
    }

    /// Time passing: the backoff, the flap hold, the reset of the backoff.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        self.step(now, &mut out);
        out
    }

    /// When `tick` next has something to do (a restart waiting for its backoff, a hold ending).
    pub fn next_deadline(&self) -> Option<Instant> {
        // Only a restart that `step` would decide once its backoff has passed: never one in
        // flight, nor one the policy does not want (a deadline in the past would spin the loop).
        let pending = self.incident.is_some() && !self.restart_in_flight && self.held_until.is_none() && self.wants_restart();
        let restart = self.next_restart.filter(|_| pending);
        [restart, self.held_until, self.settled_at(), self.steady_at()].into_iter().flatten().min()
    }

    /// Flapping by incidents: when the service will have been healthy for `reset_after`.
    fn steady_at(&self) -> Option<Instant> {
        self.quiet_since.and(self.healthy_since).map(|t| t + self.policy.reset_after)
    }

    /// Incidents are held (flapping) rather than reported one by one.
    pub fn quiet(&self) -> bool {
        self.quiet_since.is_some()
    }

    /// When a unit-only service in an incident will have stayed active for `UNIT_SETTLE`.
    fn settled_at(&self) -> Option<Instant> {
        let waiting = !self.policy.has_probe && self.incident.is_some() && self.unit == UnitState::Active;
        self.active_since.filter(|_| waiting).map(|t| t + UNIT_SETTLE)
    }

    fn open(&mut self, reason: String, now: Instant, out: &mut Vec<Event>) {
        self.healthy_since = None;
        self.passes = 0;
        match &mut self.incident {
            Some(i) => i.reason = reason,
            None => {
                self.incident = Some(Incident { since: now, reason: reason.clone() });
                self.attempt = 0;
                let p = &self.policy;
                while self.incidents.front().is_some_and(|t| now.saturating_duration_since(*t) > p.flap_window) {
                    self.incidents.pop_front();
                }
                self.incidents.push_back(now);
                if self.quiet_since.is_some() {
                    return;
                }
                if self.incidents.len() > p.flap_restarts as usize {
                    self.quiet_since = Some(now);
                    out.push(Event::FlappingIncidents { incidents: self.incidents.len(), window: p.flap_window, quiet_for: p.reset_after });
                    return;
                }
                out.push(Event::Down { reason });
            }
        }
    }

    fn close(&mut self, now: Instant, out: &mut Vec<Event>) {
        // The backoff outlives the incident (a service that fails again soon waits for it); it
        // starts again only after `reset_after` healthy.
        if let Some(i) = self.incident.take() {
            if self.quiet_since.is_none() {
                out.push(Event::Up { after: now.saturating_duration_since(i.since) });
            }
        }
        self.healthy_since.get_or_insert(now);
    }

    /// Whether the policy restarts for what is wrong now.
    fn wants_restart(&self) -> bool {
        if !self.policy.has_unit || self.unit.in_transition() {
            return false;
        }
        match (self.policy.restart, self.unit) {
            (RestartPolicy::Never, _) => false,
            (_, UnitState::Failed) => true,
            (RestartPolicy::Always, UnitState::Inactive) => true,
            (_, UnitState::Inactive) => false,
            // Active (or not known) and not answering: hung.
            _ => self.fails >= self.policy.fail_after,
        }
    }

    fn step(&mut self, now: Instant, out: &mut Vec<Event>) {
        if self.settled_at().is_some_and(|t| now >= t) {
            self.close(now, out);
        }
        if let (Some(t), Some(since)) = (self.steady_at(), self.quiet_since) {
            if now >= t {
                self.quiet_since = None;
                self.incidents.clear();
                out.push(Event::Steady { after: now.saturating_duration_since(since) });
            }
        }
        let p = &self.policy;
        if let Some(since) = self.healthy_since {
            if now.saturating_duration_since(since) >= p.reset_after && self.backoff != Duration::ZERO {
                self.backoff = Duration::ZERO;
                self.next_restart = None;
                self.recent.clear();
            }
        }
        if let Some(until) = self.held_until {
            if now < until {
                return;
            }
            self.held_until = None;
            self.recent.clear();
            out.push(Event::HoldOver);
        }
        if self.restart_in_flight || self.incident.is_none() || !self.wants_restart() || self.next_restart.is_some_and(|t| now < t) {
            return;
        }
        while self.recent.front().is_some_and(|t| now.saturating_duration_since(*t) > p.flap_window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= p.flap_restarts as usize {
            out.push(Event::Flapping { restarts: self.recent.len(), window: p.flap_window, hold: p.flap_hold });
            self.held_until = Some(now + p.flap_hold);
            return;
        }
        self.recent.push_back(now);
        self.attempt += 1;
        self.restarts_total += 1;
        self.restart_in_flight = true;
        self.backoff = if self.backoff == Duration::ZERO { p.backoff_initial } else { (self.backoff * 2).min(p.backoff_max) };
        self.next_restart = Some(now + self.backoff);
        let reason = self.incident.as_ref().map(|i| i.reason.clone()).unwrap_or_default();
        out.push(Event::Restart { attempt: self.attempt, reason });
    }
}

#[cfg(test)]
mod tests;
