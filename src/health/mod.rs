//! The health task: follows each configured service's systemd unit as systemd announces its
//! state (D-Bus `PropertiesChanged`, no polling), probes what a unit's state cannot show (a
//! process alive but hung), restarts through systemd with a backoff and a flap guard
//! ([`policy`]), and publishes a [`HealthReport`] for `cluster-ai health` and `status`.

mod act;
mod follow;
pub mod policy;
pub mod probe;
mod service;
pub mod task;

use serde::{Deserialize, Serialize};

pub use probe::ProbeResult;

/// What `cluster-ai health` shows and `{"command":"health"}` returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub enabled: bool,
    /// "connected", or why systemd cannot be asked (units are then not followed or restarted).
    pub systemd: String,
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    pub unit: Option<String>,
    /// The probe, as configured ("http://127.0.0.1:8787/health").
    pub probe: Option<String>,
    pub state: ServiceState,
    /// The unit's state as systemd reports it ("active", "failed", "auto-restart", …).
    pub unit_state: String,
    /// Since when `state` holds.
    pub since_unix_ms: u64,
    pub last_probe: Option<ProbeResult>,
    /// Why it is unhealthy (the open incident).
    pub reason: Option<String>,
    pub restarts: u64,
    /// The wait before the next restart, while an incident is open.
    pub backoff_seconds: f64,
    /// Restarts are held off until then (the flap guard).
    pub held_until_unix_ms: Option<u64>,
    /// A Dask scheduler's workers, when `min_workers` is set.
    pub workers: Option<WorkersReport>,
}

/// A watched service's state, as `cluster-ai health`, `status --json` and the metrics say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    /// Its unit and probe say it works.
    #[serde(rename = "healthy")]
    Healthy,
    /// An incident is open: its unit failed or its probe did not answer `fail_after` times.
    #[serde(rename = "unhealthy")]
    Unhealthy,
    /// Not known yet: no probe has answered and its unit has not been seen active.
    #[serde(rename = "starting")]
    Starting,
    /// Neither its unit nor its container exists on this node: not watched.
    #[serde(rename = "not installed")]
    NotInstalled,
}

impl ServiceState {
    /// The text on the wire and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Healthy => "healthy",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Starting => "starting",
            ServiceState::NotInstalled => "not installed",
        }
    }

    /// Looked at and found one way or the other.
    pub fn known(self) -> bool {
        matches!(self, ServiceState::Healthy | ServiceState::Unhealthy)
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkersReport {
    pub count: usize,
    pub min: u32,
    /// At most 100, sorted; `count` says how many there are.
    pub names: Vec<String>,
    /// Workers seen before that are gone now (while the count is below `min`).
    pub left: Vec<String>,
    pub error: Option<String>,
}

impl HealthReport {
    /// Services that are installed and not healthy.
    pub fn down(&self) -> Vec<&ServiceReport> {
        self.services
            .iter()
            .filter(|s| s.state == ServiceState::Unhealthy || s.workers.as_ref().is_some_and(WorkersReport::short))
            .collect()
    }

    /// One line for `status` and the unit's STATUS=: "health: 3 ok, down: ollama" or "health:
    /// all 2 ok (2 not installed)".
    /// Services whose state is known: looked at and found healthy or unhealthy.
    pub fn watched(&self) -> usize {
        self.services.iter().filter(|s| s.state.known()).count()
    }

    pub fn summary(&self) -> String {
        if !self.enabled {
            return "health: off".into();
        }
        if self.watched() == 0 && self.down().is_empty() {
            let why = if self.systemd != "connected" && self.systemd != "not needed" {
                format!("; systemd: {}", self.systemd)
            } else {
                String::new()
            };
            return format!(
                "health: nothing watched ({} service(s) configured, none installed or looked at yet{why})",
                self.services.len()
            );
        }
        let installed = self.services.iter().filter(|s| s.state != ServiceState::NotInstalled).count();
        let absent = self.services.len() - installed;
        let absent = if absent > 0 { format!(" ({absent} not installed)") } else { String::new() };
        let down: Vec<String> = self
            .down()
            .iter()
            .map(|s| match &s.workers {
                Some(w) if w.short() && s.state != ServiceState::Unhealthy => format!("{} workers {}/{}", s.name, w.count, w.min),
                _ => s.name.clone(),
            })
            .collect();
        if down.is_empty() {
            format!("health: all {installed} ok{absent}")
        } else {
            format!("health: {} ok, down: {}{absent}", installed.saturating_sub(down.len()), down.join(", "))
        }
    }
}

impl HealthReport {
    /// Whether `other` says the same but for the services' last probes (their results,
    /// latencies and times): what the readers that wait for a change (the unit's STATUS=)
    /// need not be woken for.
    pub fn same_but_probes(&self, other: &HealthReport) -> bool {
        self.enabled == other.enabled
            && self.systemd == other.systemd
            && self.services.len() == other.services.len()
            && self.services.iter().zip(&other.services).all(|(a, b)| a.same_but_probe(b))
    }
}

impl ServiceReport {
    fn same_but_probe(&self, other: &ServiceReport) -> bool {
        // Every field named, so a new one is compared (or left out) on purpose.
        let ServiceReport {
            name,
            unit,
            probe,
            state,
            unit_state,
            since_unix_ms,
            last_probe: _,
            reason,
            restarts,
            backoff_seconds,
            held_until_unix_ms,
            workers,
        } = self;
        *name == other.name
            && *unit == other.unit
            && *probe == other.probe
            && *state == other.state
            && *unit_state == other.unit_state
            && *since_unix_ms == other.since_unix_ms
            && *reason == other.reason
            && *restarts == other.restarts
            && *backoff_seconds == other.backoff_seconds
            && *held_until_unix_ms == other.held_until_unix_ms
            && *workers == other.workers
    }
}

impl WorkersReport {
    pub fn short(&self) -> bool {
        self.error.is_none() && self.count < self.min as usize
    }
}

#[cfg(test)]
mod state_tests {
    use super::ServiceState;

    /// Scripts read `status --json` and `health --json`: the typed states keep their text.
    #[test]
    fn service_states_keep_their_text_on_the_wire() {
        for (s, text) in [
            (ServiceState::Healthy, "healthy"),
            (ServiceState::Unhealthy, "unhealthy"),
            (ServiceState::Starting, "starting"),
            (ServiceState::NotInstalled, "not installed"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), text);
            assert_eq!(s.to_string(), text);
            assert_eq!(serde_json::from_value::<ServiceState>(text.into()).unwrap(), s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(state: ServiceState, latency_ms: f64) -> ServiceReport {
        ServiceReport {
            name: "ollama".into(),
            unit: Some("ollama.service".into()),
            probe: Some("http://127.0.0.1:11434/api/version".into()),
            state,
            unit_state: "active".into(),
            since_unix_ms: 1,
            last_probe: Some(ProbeResult { ok: true, detail: "200 {}".into(), latency_ms, at_unix_ms: latency_ms as u64, unknown: false }),
            reason: None,
            restarts: 0,
            backoff_seconds: 0.0,
            held_until_unix_ms: None,
            workers: None,
        }
    }

    fn report(s: ServiceReport) -> HealthReport {
        HealthReport { enabled: true, systemd: "connected".into(), services: vec![s] }
    }

    #[test]
    fn a_new_probe_result_alone_is_no_news_a_new_state_is() {
        let before = report(service(ServiceState::Healthy, 1.0));
        assert!(before.same_but_probes(&report(service(ServiceState::Healthy, 2.0))));
        assert!(!before.same_but_probes(&report(service(ServiceState::Unhealthy, 1.0))));
        let mut restarted = service(ServiceState::Healthy, 1.0);
        restarted.restarts = 1;
        assert!(!before.same_but_probes(&report(restarted)));
        assert!(!before.same_but_probes(&HealthReport { services: Vec::new(), ..before.clone() }));
    }
}
