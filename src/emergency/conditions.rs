//! When the CPU and memory measures act: pure functions of a sampler snapshot, health's latest
//! probes and `[emergency]` (issue 18 §3). On a Dask or Ollama node CPU at 100 % for minutes is
//! the normal working state, and memory at 85 % of a large machine is not harm; the seed's
//! intent is to avoid freezes. So:
//!
//! - CPU: busy ≥ `cpu_threshold` (the seed's 90 %) **and** PSI `cpu some avg10` ≥
//!   `cpu_pressure_threshold` (tasks wait for a CPU) **and** a critical service's probe at least
//!   `critical_probe_slow` slow, a timed-out one included (the service is starved). A probe
//!   that fails fast (connection refused) is a service that is down, not starved: health's
//!   business, not this measure's. Clear when any one of them is past its hysteresis band.
//! - Memory: used ≥ `memory_threshold` **and** (a stall: PSI `memory some avg10` ≥
//!   `memory_pressure_threshold`, **or** too little headroom: `MemAvailable` <
//!   `memory_headroom`).
//!
//! Without PSI (a kernel built without it, or `psi=0`) the pressure condition is not known: it
//! is left out (said in the text), and the others decide. `cpu_pressure_threshold = 0` and
//! `critical_probe_slow = "0s"` leave a CPU condition out; `memory_pressure_threshold = 0`
//! makes every sample a stall: with all three, the measures act on the percentages alone, as
//! before issue 18.

use std::time::Duration;

use crate::config::{human_size, Config, EmergencyConfig, DEFAULT_INTERVAL, DEFAULT_TIMEOUT};
use crate::health::HealthReport;
use crate::optimize::watch::Level;
use crate::sampler::Snapshot;

/// A probe older than twice its service's interval plus its timeout is not evidence of now.
fn fresh_for(interval: Duration, timeout: Duration) -> Duration {
    interval * 2 + timeout
}

/// One critical service's latest probe, as the health task reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSeen {
    pub name: String,
    pub ok: bool,
    pub latency: Duration,
    pub at_unix_ms: u64,
    /// How long ago it ran, and how long it counts.
    pub age: Duration,
    pub fresh_for: Duration,
}

/// Health reports only each service's latest probe; one fast answer between slow ones must not
/// end a starvation (the watch's sustain would start again at every fast probe). So each
/// service's latest slow probe is remembered while it is fresh, and weighed with the latest.
#[derive(Debug, Default)]
pub struct SlowProbes(std::collections::BTreeMap<String, ProbeSeen>);

impl SlowProbes {
    /// `latest` (health's latest probes) and the remembered slow ones still fresh at `now_unix_ms`.
    pub fn weigh(&mut self, mut latest: Vec<ProbeSeen>, slow: Duration, now_unix_ms: u64) -> Vec<ProbeSeen> {
        for p in latest.iter().filter(|p| p.latency >= slow) {
            self.0.insert(p.name.clone(), p.clone());
        }
        self.0.retain(|_, p| {
            p.age = Duration::from_millis(now_unix_ms.saturating_sub(p.at_unix_ms));
            p.age <= p.fresh_for
        });
        for p in self.0.values() {
            if !latest.iter().any(|q| q.name == p.name && q.at_unix_ms == p.at_unix_ms) {
                latest.push(p.clone());
            }
        }
        latest
    }
}

/// Where one sample stands for one measure: the watch's level, the value `status` shows, and
/// which conditions held, in one line ("cpu 97% >= 90%, cpu pressure 41% >= 20%,
/// dask-scheduler probe 2.3s >= 1s").
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub level: Level,
    pub value: Option<f64>,
    /// The seed's percentage condition alone holds (busy or full but maybe not harmed).
    pub percent_over: bool,
    pub held: String,
}

/// The critical services' latest probes: the health services whose unit is in
/// `[emergency] critical_units`, or every probed one when that list is empty.
pub fn critical_probes(h: &HealthReport, cfg: &Config, now_unix_ms: u64) -> Vec<ProbeSeen> {
    let critical = &cfg.emergency.critical_units;
    h.services
        .iter()
        .filter(|s| critical.is_empty() || s.unit.as_ref().is_some_and(|u| critical.contains(u)))
        .filter_map(|s| {
            let p = s.last_probe.as_ref()?;
            let svc = cfg.health.services.iter().find(|c| c.name == s.name);
            let fresh = svc.map_or(fresh_for(DEFAULT_INTERVAL, DEFAULT_TIMEOUT), |c| fresh_for(c.interval, c.timeout));
            Some(ProbeSeen {
                name: s.name.clone(),
                ok: p.ok,
                latency: Duration::from_secs_f64((p.latency_ms / 1000.0).clamp(0.0, 1e9)),
                at_unix_ms: p.at_unix_ms,
                age: Duration::from_millis(now_unix_ms.saturating_sub(p.at_unix_ms)),
                fresh_for: fresh,
            })
        })
        .collect()
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn cmp(v: f64, limit: f64) -> &'static str {
    if v >= limit {
        ">="
    } else {
        "<"
    }
}

/// The CPU measure's conditions (see the module's doc).
pub fn cpu(s: &Snapshot, probes: &[ProbeSeen], c: &EmergencyConfig) -> Verdict {
    let hy = f64::from(c.hysteresis);
    let th = f64::from(c.cpu_threshold);
    let Some(busy) = s.cpu_busy_percent else {
        return Verdict {
            level: Level { over: false, clear: false },
            value: None,
            percent_over: false,
            held: "cpu not measured yet".into(),
        };
    };
    let mut held = vec![format!("cpu {busy:.0}% {} {th:.0}%", cmp(busy, th))];
    let pt = f64::from(c.cpu_pressure_threshold);
    let (p_over, p_clear) = match s.pressure.map(|p| p.cpu.some_avg10) {
        Some(p) => {
            held.push(format!("cpu pressure {p:.0}% {} {pt:.0}%", cmp(p, pt)));
            (p >= pt, p < pt - hy)
        }
        None if s.pressure_unreadable => {
            held.push("cpu pressure unreadable this time: held".into());
            (false, false)
        }
        None => {
            held.push("cpu pressure unknown (no PSI): left out".into());
            (true, false)
        }
    };
    let fresh: Vec<&ProbeSeen> = probes.iter().filter(|p| p.age <= p.fresh_for).collect();
    let slow: Vec<&&ProbeSeen> = fresh.iter().filter(|p| p.latency >= c.critical_probe_slow).collect();
    let slow_text = secs(c.critical_probe_slow);
    let off = c.critical_probe_slow.is_zero();
    if off {
        held.push("critical_probe_slow = 0s: probes left out".into());
    } else if fresh.is_empty() {
        held.push("no critical service probed lately ([health] services, [emergency] critical_units)".into());
    } else if slow.is_empty() {
        let each: Vec<String> = fresh.iter().map(|p| format!("{} {}", p.name, secs(p.latency))).collect();
        held.push(format!("no critical service slow ({} < {slow_text})", each.join(", ")));
    } else {
        for p in &slow {
            let how = if p.ok { "probe" } else { "probe failed after" };
            held.push(format!("{} {how} {} >= {slow_text}", p.name, secs(p.latency)));
        }
    }
    let starved = off || !slow.is_empty();
    Verdict {
        level: Level { over: busy >= th && p_over && starved, clear: busy < th - hy || p_clear || !starved },
        value: Some(busy),
        percent_over: busy >= th,
        held: held.join(", "),
    }
}

/// The memory measure's conditions (see the module's doc).
pub fn memory(s: &Snapshot, c: &EmergencyConfig) -> Verdict {
    let hy = f64::from(c.hysteresis);
    let th = f64::from(c.memory_threshold);
    let used = s.memory_used_percent;
    let mut held = vec![format!("memory {used:.0}% {} {th:.0}%", cmp(used, th))];
    let pt = f64::from(c.memory_pressure_threshold);
    let (stall, stall_clear) = match s.pressure.map(|p| p.memory.some_avg10) {
        _ if pt == 0.0 => {
            held.push("memory_pressure_threshold = 0: always a stall".into());
            (true, false)
        }
        Some(p) => {
            held.push(format!("memory pressure {p:.0}% {} {pt:.0}%", cmp(p, pt)));
            (p >= pt, p < pt - hy)
        }
        None if s.pressure_unreadable => {
            held.push("memory pressure unreadable this time: held".into());
            (false, false)
        }
        None => {
            held.push("memory pressure unknown (no PSI): left out".into());
            (false, true)
        }
    };
    let short = s.memory_available_bytes < c.memory_headroom;
    let op = if short { "<" } else { ">=" };
    held.push(format!("available {} {op} {}", human_size(s.memory_available_bytes), human_size(c.memory_headroom)));
    Verdict {
        level: Level { over: used >= th && (stall || short), clear: used < th - hy || (stall_clear && !short) },
        value: Some(used),
        percent_over: used >= th,
        held: held.join(", "),
    }
}

/// A snapshot of a 64 GiB machine: CPU busy and its PSI (`None`: no PSI), memory used,
/// available and its PSI; taken at `at_unix_ms`.
#[cfg(test)]
pub(crate) fn test_snapshot(cpu: f64, cpu_psi: Option<f64>, mem_used: f64, available: u64, mem_psi: f64) -> Snapshot {
    #![allow(clippy::unwrap_used)]
    let pressure = |v: f64| crate::sys::procfs::Pressure { some_avg10: v, full_avg10: Some(0.0), some_total_us: None, full_total_us: None };
    let mut s: Snapshot = serde_json::from_value(serde_json::json!({
        "taken_at_unix_ms": crate::sys::unix_ms(), "cpu_busy_percent": cpu, "memory_total_bytes": 64u64 << 30,
        "memory_available_bytes": available, "memory_used_percent": mem_used, "swap_total_bytes": 0,
        "swap_used_bytes": 0, "disk_root": null, "disk_swap_dir": null, "pressure": null, "load_average": [0.0, 0.0, 0.0]
    }))
    .unwrap();
    s.pressure = cpu_psi.map(|p| crate::sampler::PressureSet { memory: pressure(mem_psi), cpu: pressure(p), io: pressure(0.0) });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EmergencyConfig {
        Config::default().emergency
    }

    use super::test_snapshot as snap;

    fn probe(name: &str, ms: u64, ok: bool, age_s: u64) -> ProbeSeen {
        ProbeSeen {
            name: name.into(),
            ok,
            latency: Duration::from_millis(ms),
            at_unix_ms: 1_000_000 - age_s * 1000,
            age: Duration::from_secs(age_s),
            fresh_for: Duration::from_secs(65),
        }
    }

    #[test]
    fn busy_alone_is_not_starved() {
        let c = cfg();
        // A Dask job at 100 %: tasks wait, but the scheduler answers in 15 ms.
        let v = cpu(&snap(100.0, Some(60.0), 50.0, 32 << 30, 0.0), &[probe("dask-scheduler", 15, true, 5)], &c);
        assert_eq!(v.level, Level { over: false, clear: true });
        assert!(v.percent_over);
        assert_eq!(v.held, "cpu 100% >= 90%, cpu pressure 60% >= 20%, no critical service slow (dask-scheduler 15ms < 1.0s)");
        // The scheduler slow, but nobody waits for a CPU: not the CPU's doing.
        let v = cpu(&snap(100.0, Some(2.0), 50.0, 32 << 30, 0.0), &[probe("dask-scheduler", 3000, true, 5)], &c);
        assert_eq!(v.level, Level { over: false, clear: true });
        // No probe at all (health off): never acts, and says why.
        let v = cpu(&snap(100.0, Some(60.0), 50.0, 32 << 30, 0.0), &[], &c);
        assert!(!v.level.over && v.held.contains("no critical service probed lately"), "{}", v.held);
        // A stale slow probe is not evidence of now.
        let v = cpu(&snap(100.0, Some(60.0), 50.0, 32 << 30, 0.0), &[probe("dask-scheduler", 3000, true, 600)], &c);
        assert!(!v.level.over);
    }

    #[test]
    fn one_fast_answer_between_slow_ones_does_not_end_a_starvation() {
        let mut remembered = SlowProbes::default();
        let slow = Duration::from_secs(1);
        let now = 1_000_000;
        let seen = remembered.weigh(vec![probe("dask-scheduler", 3000, false, 2)], slow, now);
        assert_eq!(seen.len(), 1);
        // The next probe answers in 20 ms: the slow one, 4 s old, still counts.
        let fast = ProbeSeen { at_unix_ms: now + 2000, age: Duration::ZERO, ..probe("dask-scheduler", 20, true, 0) };
        let seen = remembered.weigh(vec![fast.clone()], slow, now + 2000);
        assert_eq!(seen.len(), 2);
        let v = cpu(&snap(100.0, Some(50.0), 50.0, 32 << 30, 0.0), &seen, &cfg());
        assert!(v.level.over, "{}", v.held);
        // Past its freshness (65 s here): forgotten.
        let seen = remembered.weigh(vec![fast], slow, now + 70_000);
        assert_eq!(seen.len(), 1);
        assert!(!cpu(&snap(100.0, Some(50.0), 50.0, 32 << 30, 0.0), &seen, &cfg()).level.over);
    }

    #[test]
    fn all_three_hold_starved() {
        let c = cfg();
        let probes = [probe("ollama", 4, true, 1), probe("dask-scheduler", 5000, false, 2)];
        let v = cpu(&snap(97.0, Some(41.0), 50.0, 32 << 30, 0.0), &probes, &c);
        assert_eq!(v.level, Level { over: true, clear: false });
        assert_eq!(v.held, "cpu 97% >= 90%, cpu pressure 41% >= 20%, dask-scheduler probe failed after 5.0s >= 1.0s");
        // In the band (87 %): neither over nor clear.
        let v = cpu(&snap(87.0, Some(41.0), 50.0, 32 << 30, 0.0), &probes, &c);
        assert_eq!(v.level, Level { over: false, clear: false });
        // critical_probe_slow = 0s and cpu_pressure_threshold = 0: utilisation alone.
        let old = EmergencyConfig { critical_probe_slow: Duration::ZERO, cpu_pressure_threshold: 0, ..c.clone() };
        let v = cpu(&snap(97.0, Some(0.0), 50.0, 32 << 30, 0.0), &[], &old);
        assert!(v.level.over, "{}", v.held);
        // Without PSI the pressure is left out, and said so.
        let v = cpu(&snap(97.0, None, 50.0, 32 << 30, 0.0), &probes, &c);
        assert!(v.level.over && v.held.contains("cpu pressure unknown (no PSI): left out"), "{}", v.held);
        // A kernel with PSI whose files could not be read this time (no descriptor left): held,
        // neither acted on as if it had none nor cleared.
        let unreadable = Snapshot { pressure_unreadable: true, ..snap(97.0, None, 50.0, 32 << 30, 0.0) };
        let v = cpu(&unreadable, &probes, &c);
        assert_eq!(v.level, Level { over: false, clear: false }, "{}", v.held);
        assert!(v.held.contains("cpu pressure unreadable this time: held"), "{}", v.held);
        let v = memory(&Snapshot { memory_used_percent: 90.0, memory_available_bytes: 6 << 30, ..unreadable }, &c);
        assert_eq!(v.level, Level { over: false, clear: false }, "{}", v.held);
    }

    #[test]
    fn memory_acts_on_a_stall_or_on_headroom_not_on_a_percentage_alone() {
        let c = cfg();
        // 90 % of 64 GiB: 6.4 GiB free, no stall: nothing to prevent.
        let v = memory(&snap(10.0, Some(0.0), 90.0, 6 << 30, 0.0), &c);
        assert_eq!(v.level, Level { over: false, clear: true });
        assert_eq!(v.held, "memory 90% >= 85%, memory pressure 0% < 10%, available 6.0 GiB >= 1.0 GiB");
        // A stall.
        let v = memory(&snap(10.0, Some(0.0), 90.0, 6 << 30, 25.0), &c);
        assert_eq!(v.level, Level { over: true, clear: false });
        // Too little headroom, no PSI.
        let v = memory(&snap(10.0, None, 90.0, 512 << 20, 0.0), &c);
        assert_eq!(v.level, Level { over: true, clear: false });
        assert!(v.held.ends_with("available 512.0 MiB < 1.0 GiB"), "{}", v.held);
        // memory_pressure_threshold = 0: the percentage alone, as before issue 18.
        let v = memory(&snap(10.0, None, 90.0, 6 << 30, 0.0), &EmergencyConfig { memory_pressure_threshold: 0, ..c.clone() });
        assert_eq!(v.level, Level { over: true, clear: false });
        // A stall below the percentage: the seed's threshold is one condition.
        let v = memory(&snap(10.0, Some(0.0), 50.0, 32 << 30, 80.0), &c);
        assert_eq!(v.level, Level { over: false, clear: true });
    }
}
