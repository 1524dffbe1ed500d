//! The policy's tests: tables of probes, unit states and made-up times.

use super::*;
use crate::config::Config;

fn machine(restart: RestartPolicy, probe: bool) -> Auto {
    let mut h = Config::default().health;
    h.flap_restarts = 3;
    h.flap_window = Duration::from_secs(60);
    h.flap_hold = Duration::from_secs(300);
    let mut s = h.services[2].clone();
    s.restart = restart;
    s.fail_after = 3;
    if !probe {
        s.probe = None;
    }
    Auto(Machine::new(Policy::new(&h, &s)))
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn restarts(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Restart { .. })).count()
}

/// A machine whose every restart is carried out at once (the task reports each restart's
/// end; here it ends as it is decided).
struct Auto(Machine);

impl std::ops::Deref for Auto {
    type Target = Machine;
    fn deref(&self) -> &Machine {
        &self.0
    }
}

impl std::ops::DerefMut for Auto {
    fn deref_mut(&mut self) -> &mut Machine {
        &mut self.0
    }
}

impl Auto {
    fn finish(&mut self, now: Instant, mut out: Vec<Event>) -> Vec<Event> {
        let mut i = 0;
        while i < out.len() {
            if matches!(out[i], Event::Restart { .. }) {
                let more = self.0.restart_finished(now);
                out.extend(more);
            }
            i += 1;
        }
        out
    }
    fn unit_changed(&mut self, u: UnitState, now: Instant) -> Vec<Event> {
        let e = self.0.unit_changed(u, now);
        self.finish(now, e)
    }
    fn tick(&mut self, now: Instant) -> Vec<Event> {
        let e = self.0.tick(now);
        self.finish(now, e)
    }
    fn probe(&mut self, ok: bool, detail: &str, now: Instant) -> Vec<Event> {
        let e = self.0.probe(ok, detail, now);
        self.finish(now, e)
    }
}

#[test]
fn a_failed_unit_is_restarted_at_once_then_with_a_doubling_backoff() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.unit_changed(UnitState::Active, t0);
    let e = m.unit_changed(UnitState::Failed, t0);
    assert_eq!(e[0], Event::Down { reason: "its unit failed".into() });
    assert_eq!(e[1], Event::Restart { attempt: 1, reason: "its unit failed".into() });
    // It fails again at once: the second restart waits 1 s, the third 2 s more.
    m.unit_changed(UnitState::Activating, t0);
    assert!(m.unit_changed(UnitState::Failed, t0).is_empty(), "within the backoff");
    assert_eq!(m.next_deadline(), Some(secs(t0, 1)));
    assert_eq!(restarts(&m.tick(secs(t0, 1))), 1);
    m.unit_changed(UnitState::Failed, secs(t0, 1));
    assert_eq!(m.next_deadline(), Some(secs(t0, 3)));
    assert!(m.tick(secs(t0, 2)).is_empty());
    assert_eq!(restarts(&m.tick(secs(t0, 3))), 1);
    // Running and answering again: one Up, with the incident's length.
    m.unit_changed(UnitState::Active, secs(t0, 4));
    m.probe(true, "200", secs(t0, 5));
    let e = m.probe(true, "200", secs(t0, 6));
    assert_eq!(e, vec![Event::Up { after: Duration::from_secs(6) }]);
    assert_eq!(m.restarts_total, 3);
}

#[test]
fn a_hung_service_is_restarted_after_fail_after_probes_and_not_while_systemd_restarts_it() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.unit_changed(UnitState::Active, t0);
    assert!(m.probe(false, "timed out after 5s", secs(t0, 30)).is_empty());
    assert!(m.probe(false, "timed out after 5s", secs(t0, 60)).is_empty());
    let e = m.probe(false, "timed out after 5s", secs(t0, 90));
    assert_eq!(e[0], Event::Down { reason: "not answering: timed out after 5s".into() });
    assert!(matches!(e[1], Event::Restart { attempt: 1, .. }));
    // systemd restarting it on its own: left alone, however long it takes.
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.unit_changed(UnitState::Active, t0);
    let e = m.unit_changed(UnitState::AutoRestart, t0);
    assert_eq!(e, vec![Event::Down { reason: "its unit failed; systemd is restarting it".into() }]);
    assert!(m.tick(secs(t0, 100)).is_empty());
    m.unit_changed(UnitState::Activating, secs(t0, 101));
    m.unit_changed(UnitState::Active, secs(t0, 102));
    m.probe(true, "", secs(t0, 103));
    assert!(matches!(m.probe(true, "", secs(t0, 104))[..], [Event::Up { .. }]));
    assert_eq!(m.restarts_total, 0, "never both");
}

#[test]
fn a_unit_with_its_own_restart_gets_a_grace_to_say_so_before_we_restart_it() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.policy.unit_restarts_itself = true;
    m.unit_changed(UnitState::Active, t0);
    // systemd 252 says "failed", then "auto-restart" a moment later.
    assert_eq!(restarts(&m.unit_changed(UnitState::Failed, t0)), 0);
    assert_eq!(m.next_deadline(), Some(t0 + SYSTEMD_GRACE));
    m.unit_changed(UnitState::AutoRestart, t0 + Duration::from_millis(5));
    assert!(m.tick(t0 + SYSTEMD_GRACE).is_empty(), "systemd is restarting it");
    // A failure it does not restart (Restart=on-abnormal and a clean exit code): ours after the grace.
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.policy.unit_restarts_itself = true;
    m.unit_changed(UnitState::Active, t0);
    m.unit_changed(UnitState::Failed, t0);
    assert_eq!(restarts(&m.tick(t0 + SYSTEMD_GRACE)), 1);
}

#[test]
fn no_deadline_is_left_in_the_past_while_nothing_can_happen() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true).0;
    m.unit_changed(UnitState::Active, t0);
    m.unit_changed(UnitState::Failed, t0);
    assert!(m.restart_in_flight);
    // The restart job is slow: its backoff passes while it runs; no deadline to wake for.
    assert_eq!(m.next_deadline(), None);
    m.restart_finished(secs(t0, 5));
    // Then someone stops the unit: on-failure does not restart it, nothing to wake for.
    m.unit_changed(UnitState::Inactive, secs(t0, 6));
    assert!(m.incident.is_some());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn no_restart_is_decided_while_one_is_in_flight() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true).0;
    m.unit_changed(UnitState::Active, t0);
    for s in 1..=3 {
        m.probe(false, "no answer", secs(t0, s));
    }
    assert!(m.restart_in_flight, "the hang's restart was decided");
    // systemd is slow to finish it; the probe keeps failing, the backoff passes: nothing more.
    for s in 4..=60 {
        assert_eq!(restarts(&m.probe(false, "no answer", secs(t0, s))), 0);
    }
    assert_eq!(m.restarts_total, 1);
    // Finished, and still hung: counted again from here, three more failures, one restart.
    m.restart_finished(secs(t0, 61));
    assert_eq!(m.fails, 0);
    let n: usize = (62..=64).map(|s| restarts(&m.probe(false, "no answer", secs(t0, s)))).sum();
    assert_eq!(n, 1);
}

#[test]
fn a_stopped_unit_is_restarted_only_with_always_and_never_means_never() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, true);
    m.unit_changed(UnitState::Active, t0);
    assert_eq!(m.unit_changed(UnitState::Inactive, t0), vec![Event::Down { reason: "its unit is stopped".into() }]);
    assert!(m.tick(secs(t0, 600)).is_empty());
    let mut m = machine(RestartPolicy::Always, true);
    m.unit_changed(UnitState::Active, t0);
    assert_eq!(restarts(&m.unit_changed(UnitState::Inactive, t0)), 1);
    let mut m = machine(RestartPolicy::Never, true);
    m.unit_changed(UnitState::Active, t0);
    assert_eq!(restarts(&m.unit_changed(UnitState::Failed, t0)), 0);
}

/// A probe-only service that goes down and up every 5 s (nothing to restart): one
/// flapping event once it passes the limit, no Down/Up pair per incident after that, and
/// one Steady event after reset_after healthy.
#[test]
fn a_service_that_goes_up_and_down_on_its_own_is_flapping_once() {
    let mut h = Config::default().health;
    h.flap_restarts = 3;
    h.flap_window = Duration::from_secs(60);
    h.reset_after = Duration::from_secs(30);
    let mut s = h.services[2].clone();
    s.unit = None;
    s.fail_after = 1;
    s.pass_after = 1;
    let mut m = Machine::new(Policy::new(&h, &s));
    let t0 = Instant::now();
    let mut all = Vec::new();
    for i in 0..12 {
        all.extend(m.probe(i % 2 == 1, "refused", secs(t0, 5 * i)));
    }
    let downs = all.iter().filter(|e| matches!(e, Event::Down { .. })).count();
    let ups = all.iter().filter(|e| matches!(e, Event::Up { .. })).count();
    let flaps: Vec<_> = all.iter().filter(|e| matches!(e, Event::FlappingIncidents { .. })).collect();
    assert_eq!((downs, ups), (3, 3), "the first three incidents one by one: {all:?}");
    assert_eq!(flaps, [&Event::FlappingIncidents { incidents: 4, window: Duration::from_secs(60), quiet_for: Duration::from_secs(30) }]);
    assert!(m.quiet());
    // Healthy from 55 s: steady 30 s later, not before; then incidents count one by one.
    let healthy = m.healthy_since.unwrap();
    assert_eq!(m.next_deadline(), Some(healthy + Duration::from_secs(30)));
    assert!(m.tick(healthy + Duration::from_secs(29)).is_empty());
    assert_eq!(m.tick(healthy + Duration::from_secs(30)), [Event::Steady { after: healthy + Duration::from_secs(30) - secs(t0, 30) }]);
    assert!(!m.quiet());
    let e = m.probe(false, "refused", healthy + Duration::from_secs(31));
    assert!(matches!(e[..], [Event::Down { .. }]), "{e:?}");
}

#[test]
fn flapping_holds_off_with_one_event_then_tries_again() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, false);
    let mut all = Vec::new();
    let mut t = t0;
    // It fails again at each restart; the backoff is 1, 2, 4 s; the fourth restart within
    // 60 s is one too many (flap_restarts = 3).
    all.extend(m.unit_changed(UnitState::Failed, t));
    for _ in 0..20 {
        t += Duration::from_secs(1);
        all.extend(m.tick(t));
    }
    assert_eq!(restarts(&all), 3);
    let flaps: Vec<_> = all.iter().filter(|e| matches!(e, Event::Flapping { .. })).collect();
    assert_eq!(flaps, vec![&Event::Flapping { restarts: 3, window: Duration::from_secs(60), hold: Duration::from_secs(300) }]);
    assert!(m.held_until.is_some());
    // After the hold: tried again, never given up for good.
    let e = m.tick(m.held_until.unwrap());
    assert_eq!(e[0], Event::HoldOver);
    assert_eq!(restarts(&e), 1);
}

#[test]
fn a_unit_that_dies_right_after_each_start_is_one_incident_with_a_growing_backoff() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, false);
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut all = m.unit_changed(UnitState::Failed, t0);
    for start in [20, 1020, 3020] {
        all.extend(m.unit_changed(UnitState::Active, ms(start)));
        all.extend(m.unit_changed(UnitState::Failed, ms(start + 200)));
        all.extend(m.tick(ms(start + 1000 - 20)));
        all.extend(m.tick(ms(start + 2000 - 20)));
    }
    assert_eq!(all.iter().filter(|e| matches!(e, Event::Down { .. })).count(), 1, "{all:?}");
    assert!(!all.iter().any(|e| matches!(e, Event::Up { .. })), "never up: {all:?}");
    let attempts: Vec<u32> =
        all.iter().filter_map(|e| if let Event::Restart { attempt, .. } = e { Some(*attempt) } else { None }).collect();
    assert_eq!(attempts, [1, 2, 3], "at once, after 1 s, after 2 s more");
}

#[test]
fn the_backoff_starts_again_after_a_healthy_while() {
    let t0 = Instant::now();
    let mut m = machine(RestartPolicy::OnFailure, false);
    m.unit_changed(UnitState::Failed, t0);
    m.unit_changed(UnitState::Failed, t0);
    m.tick(secs(t0, 1));
    assert_eq!(m.backoff, Duration::from_secs(2));
    m.unit_changed(UnitState::Active, secs(t0, 2));
    assert!(m.incident.is_some(), "a unit-only service is healthy once it has stayed up UNIT_SETTLE");
    assert!(matches!(m.tick(secs(t0, 5))[..], [Event::Up { .. }]));
    m.tick(secs(t0, 5 + 299));
    assert_eq!(m.backoff, Duration::from_secs(2), "not healthy for reset_after yet");
    m.tick(secs(t0, 5 + 300));
    assert_eq!(m.backoff, Duration::ZERO);
    let e = m.unit_changed(UnitState::Failed, secs(t0, 400));
    assert_eq!(restarts(&e), 1, "the first restart of a new episode is at once");
}

#[test]
fn systemd_states_map_as_documented() {
    assert_eq!(UnitState::from_systemd("activating", "auto-restart"), UnitState::AutoRestart);
    assert_eq!(UnitState::from_systemd("activating", "start"), UnitState::Activating);
    assert_eq!(UnitState::from_systemd("active", "running"), UnitState::Active);
    assert_eq!(UnitState::from_systemd("failed", "failed"), UnitState::Failed);
    assert_eq!(UnitState::from_systemd("inactive", "dead"), UnitState::Inactive);
}
