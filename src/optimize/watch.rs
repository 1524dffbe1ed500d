//! When an emergency measure acts and when it is undone: one [`Watch`] per condition (CPU,
//! memory, disk), fed every sample. Pure: the caller passes the time, the tests drive it.
//!
//! - Over the threshold for `sustain` (never on one spike) → [`Step::Act`].
//! - Still not clear (clear means below threshold − hysteresis) → act again, at most once per
//!   `min_interval`.
//! - Clear for `calm` → [`Step::Undo`], once; the watch is back to clear.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Act,
    Undo,
}

/// Where one sample stands: over (act, once sustained) or clear (counts toward calm); neither
/// is the hysteresis band. Never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub over: bool,
    pub clear: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub threshold: f64,
    pub hysteresis: f64,
    pub sustain: Duration,
    pub calm: Duration,
    pub min_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Clear,
    Over { since: Instant },
    Active { last_act: Instant, clear_since: Option<Instant> },
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub limits: Limits,
    state: State,
    /// The last value seen, for `status`.
    last: Option<f64>,
}

/// What `status` shows of one watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    pub value: Option<f64>,
    pub threshold: f64,
    /// "clear", "over for 12s (acts after 30s)", "active", "active, clear for 40s (undone after 5m)".
    pub state: String,
}

impl Watch {
    pub fn new(limits: Limits) -> Self {
        Watch { limits, state: State::Clear, last: None }
    }

    /// A reload changes the limits, never the state: an episode in progress goes on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// One sample; `None` (not measured this time) changes nothing.
    pub fn observe(&mut self, value: Option<f64>, now: Instant) -> Step {
        let Some(v) = value else { return Step::Nothing };
        let l = self.limits;
        self.observe_level(Some(v), Level { over: v >= l.threshold, clear: v < l.threshold - l.hysteresis }, now)
    }

    /// One sample whose conditions the caller weighed: `over` when every condition holds,
    /// `clear` when one of them is past its hysteresis band (a measure of several conditions,
    /// e.g. CPU busy and CPU pressure and a starved service). `value` is what `status` shows;
    /// `None` (not measured this time) changes nothing.
    pub fn observe_level(&mut self, value: Option<f64>, level: Level, now: Instant) -> Step {
        let Some(v) = value else { return Step::Nothing };
        self.last = Some(v);
        let l = self.limits;
        let Level { over, clear } = level;
        match self.state {
            State::Clear if over => {
                self.state = State::Over { since: now };
                self.observe_over(now)
            }
            State::Clear => Step::Nothing,
            State::Over { .. } if !over => {
                self.state = State::Clear;
                Step::Nothing
            }
            State::Over { .. } => self.observe_over(now),
            State::Active { last_act, clear_since } => {
                if !clear {
                    if now.saturating_duration_since(last_act) >= l.min_interval && over {
                        self.state = State::Active { last_act: now, clear_since: None };
                        return Step::Act;
                    }
                    self.state = State::Active { last_act, clear_since: None };
                    return Step::Nothing;
                }
                let since = clear_since.unwrap_or(now);
                if now.saturating_duration_since(since) >= l.calm {
                    self.state = State::Clear;
                    return Step::Undo;
                }
                self.state = State::Active { last_act, clear_since: Some(since) };
                Step::Nothing
            }
        }
    }

    fn observe_over(&mut self, now: Instant) -> Step {
        let State::Over { since } = self.state else { return Step::Nothing };
        if now.saturating_duration_since(since) >= self.limits.sustain {
            self.state = State::Active { last_act: now, clear_since: None };
            Step::Act
        } else {
            Step::Nothing
        }
    }

    pub fn report(&self, now: Instant) -> WatchReport {
        let secs = |d: Duration| crate::config::format_duration(Duration::from_secs(d.as_secs()));
        let state = match self.state {
            State::Clear => "clear".to_string(),
            State::Over { since } => {
                format!("over for {} (acts after {})", secs(now.saturating_duration_since(since)), secs(self.limits.sustain))
            }
            State::Active { clear_since: None, .. } => "active".to_string(),
            State::Active { clear_since: Some(c), .. } => {
                format!("active, clear for {} (undone after {})", secs(now.saturating_duration_since(c)), secs(self.limits.calm))
            }
        };
        WatchReport { value: self.last, threshold: self.limits.threshold, state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch::new(Limits {
            threshold: 90.0,
            hysteresis: 5.0,
            sustain: Duration::from_secs(30),
            calm: Duration::from_secs(300),
            min_interval: Duration::from_secs(60),
        })
    }

    /// Feeds `(seconds, value)` samples and returns the steps that were not `Nothing`.
    fn run(w: &mut Watch, samples: &[(u64, f64)]) -> Vec<(u64, Step)> {
        let t0 = Instant::now();
        samples
            .iter()
            .map(|&(s, v)| (s, w.observe(Some(v), t0 + Duration::from_secs(s))))
            .filter(|(_, step)| *step != Step::Nothing)
            .collect()
    }

    #[test]
    fn one_spike_never_acts_a_sustained_one_does() {
        let mut w = watch();
        assert_eq!(run(&mut w, &[(0, 99.0), (5, 50.0), (10, 99.0), (35, 99.0)]), vec![]);
        let mut w = watch();
        assert_eq!(run(&mut w, &[(0, 95.0), (10, 92.0), (29, 99.0), (30, 91.0)]), vec![(30, Step::Act)]);
        assert!(w.active());
    }

    #[test]
    fn acts_again_at_most_once_per_interval_while_over() {
        let mut w = watch();
        let s: Vec<(u64, f64)> = (0..=40).map(|i| (i * 5, 95.0)).collect();
        assert_eq!(run(&mut w, &s), vec![(30, Step::Act), (90, Step::Act), (150, Step::Act)]);
    }

    #[test]
    fn hysteresis_band_neither_acts_nor_counts_as_clear() {
        let mut w = watch();
        // Active at 30 s; then 87% (in the band) for ten minutes: no new action, no undo.
        let mut s = vec![(0, 95.0), (30, 95.0)];
        s.extend((1..=120).map(|i| (30 + i * 5, 87.0)));
        assert_eq!(run(&mut w, &s), vec![(30, Step::Act)]);
        assert!(w.active());
    }

    #[test]
    fn undone_once_after_a_calm_period_that_a_spike_restarts() {
        let mut w = watch();
        let samples = [(0, 95.0), (30, 95.0), (40, 50.0), (200, 50.0), (210, 88.0), (220, 50.0), (519, 50.0), (520, 50.0), (900, 50.0)];
        assert_eq!(run(&mut w, &samples), vec![(30, Step::Act), (520, Step::Undo)]);
        assert!(!w.active());
    }

    #[test]
    fn zero_sustain_acts_on_the_first_sample_and_gaps_change_nothing() {
        let mut w = Watch::new(Limits { sustain: Duration::ZERO, ..watch().limits });
        assert_eq!(w.observe(None, Instant::now()), Step::Nothing);
        assert_eq!(w.observe(Some(90.0), Instant::now()), Step::Act);
        assert_eq!(w.report(Instant::now()).state, "active");
    }
}
