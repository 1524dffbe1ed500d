//! The emergency task's episodes on fakes, with the time passed in (issue 17): sustain,
//! hysteresis and calm, and the conditions of issue 18 §3 (a busy but healthy node is left
//! alone; a starved critical service is acted for; memory acts on a stall or on headroom).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::conditions::test_snapshot as snap;
use super::Emergency;
use crate::config::Config;
use crate::health::probe::ProbeResult;
use crate::health::{HealthReport, ServiceReport};
use crate::runtime::Os;
use crate::swap::task::SwapCommand;
use crate::sys::systemd::fake::FakeServiceManager;
use crate::sys::systemd::CPU_WEIGHT_UNSET;

const UNIT: &str = "dask-scheduler.service";
const GIB: u64 = 1 << 30;

struct Rig {
    e: Emergency,
    systemd: Arc<FakeServiceManager>,
    health: watch::Sender<Arc<HealthReport>>,
    swap: mpsc::Receiver<SwapCommand>,
    t0: Instant,
    /// The wall clock of the rig's time 0 (snapshots and probes carry unix ms).
    unix0: u64,
    /// The rig's time now, in seconds.
    at: u64,
    /// The scheduler's probe, run again at every sample (as health does at its interval).
    probe: Option<(f64, bool)>,
}

fn rig() -> Rig {
    let mut cfg = Config::default();
    cfg.emergency.critical_units = vec![UNIT.into()];
    cfg.emergency.dask_scheduler = None;
    cfg.emergency.ollama = None;
    // The times below are worked out for a 30 s probe interval and a 5 s timeout (how long a
    // slow probe counts), whatever the shipped defaults are.
    for s in cfg.health.services.iter_mut().filter(|s| s.name == "dask-scheduler") {
        (s.interval, s.timeout) = (Duration::from_secs(30), Duration::from_secs(5));
    }
    let systemd = FakeServiceManager::new();
    systemd.add_unit(UNIT, "active", "running");
    let os = Os { services: systemd.clone(), ..Os::fake() };
    let (swap_tx, swap) = mpsc::channel(16);
    let mut e = Emergency::new(&cfg, Some(swap_tx), os, false);
    let (health, rx) = watch::channel(Arc::new(HealthReport::default()));
    e.health = Some(rx);
    Rig { e, systemd, health, swap, t0: Instant::now(), unix0: crate::sys::unix_ms(), at: 0, probe: None }
}

impl Rig {
    /// From now on the scheduler's probes take `ms` (and pass, or not).
    fn probe(&mut self, ms: f64, ok: bool) {
        self.probe = Some((ms, ok));
    }

    fn publish(&self) {
        let Some((ms, ok)) = self.probe else { return };
        let service = ServiceReport {
            name: "dask-scheduler".into(),
            unit: Some(UNIT.into()),
            probe: Some("http://127.0.0.1:8787/health".into()),
            state: crate::health::ServiceState::Healthy,
            unit_state: "active".into(),
            since_unix_ms: 0,
            last_probe: Some(ProbeResult {
                ok,
                detail: "200 ok".into(),
                latency_ms: ms,
                at_unix_ms: self.unix0 + self.at * 1000,
                unknown: false,
            }),
            reason: None,
            restarts: 0,
            backoff_seconds: 0.0,
            held_until_unix_ms: None,
            workers: None,
        };
        self.health.send_replace(Arc::new(HealthReport { enabled: true, systemd: "connected".into(), services: vec![service] }));
    }

    /// Samples every 5 s from `from` to `to` seconds (both included).
    async fn run(&mut self, from: u64, to: u64, s: &crate::sampler::Snapshot) {
        let mut s = s.clone();
        for t in (from..=to).step_by(5) {
            self.at = t;
            s.taken_at_unix_ms = self.unix0 + t * 1000;
            self.publish();
            self.e.observe(&s, self.t0 + Duration::from_secs(t)).await;
        }
    }

    fn weight(&self) -> u64 {
        self.systemd.cpu_weight_of(UNIT).unwrap()
    }

    fn report(&self, t: u64) -> super::EmergencyReport {
        self.e.report(self.t0 + Duration::from_secs(t))
    }
}

#[tokio::test]
async fn a_busy_but_healthy_node_is_left_alone() {
    let mut r = rig();
    r.probe(12.0, true);
    // CPU at 100 % and tasks waiting for it, for ten minutes; the scheduler answers in 12 ms.
    r.run(0, 600, &snap(100.0, Some(60.0), 50.0, 32 * GIB, 0.0)).await;
    assert_eq!(r.weight(), CPU_WEIGHT_UNSET, "the critical unit's weight was changed");
    let rep = r.report(600);
    assert!(rep.counts.is_empty() && rep.recent.is_empty(), "{rep:?}");
    assert_eq!(rep.watches["cpu"].state, "clear");
    assert_eq!(rep.conditions["cpu"], "cpu 100% >= 90%, cpu pressure 60% >= 20%, no critical service slow (dask-scheduler 12ms < 1.0s)");
}

#[tokio::test]
async fn a_starved_critical_service_is_acted_for_after_sustain_and_undone_after_calm() {
    let mut r = rig();
    r.probe(2300.0, true);
    let starved = snap(97.0, Some(41.0), 50.0, 32 * GIB, 0.0);
    // Sustain: 30 s of all three conditions before anything is done.
    r.run(0, 25, &starved).await;
    assert_eq!(r.weight(), CPU_WEIGHT_UNSET, "acted before cpu_sustain");
    assert!(r.report(25).watches["cpu"].state.starts_with("over for 25s"), "{:?}", r.report(25).watches["cpu"]);
    r.run(30, 30, &starved).await;
    assert_eq!(r.weight(), 1000);
    let rep = r.report(30);
    assert_eq!(rep.counts["raise_cpu_weight"], 1);
    let why = &rep.recent[0].why;
    assert_eq!(why, "cpu 97% >= 90%, cpu pressure 41% >= 20%, dask-scheduler probe 2.3s >= 1.0s for 30s");
    // Hysteresis: 87 % is neither over nor clear: the episode goes on, nothing is undone.
    r.run(35, 400, &snap(87.0, Some(41.0), 50.0, 32 * GIB, 0.0)).await;
    assert_eq!((r.weight(), r.report(400).watches["cpu"].state.as_str()), (1000, "active"));
    // The scheduler answers fast again, CPU still busy. Its last slow probe (t = 400 s) counts
    // for two intervals and a timeout (65 s): clear from t = 470 s, undone after calm_period (5 m).
    r.probe(8.0, true);
    let busy = snap(100.0, Some(60.0), 50.0, 32 * GIB, 0.0);
    r.run(405, 465, &busy).await;
    assert_eq!(r.report(465).watches["cpu"].state, "active", "one fast probe ended the starvation");
    r.run(470, 765, &busy).await;
    assert_eq!(r.weight(), 1000, "undone before calm_period");
    r.run(770, 770, &busy).await;
    assert_eq!(r.weight(), CPU_WEIGHT_UNSET, "not undone after calm_period");
    let rep = r.report(770);
    assert_eq!(rep.counts["restore_cpu_weight"], 1);
    assert!(rep.recent.last().unwrap().why.starts_with("cpu clear for 5m: cpu 100% >= 90%"), "{:?}", rep.recent.last());
}

#[tokio::test]
async fn memory_acts_on_a_stall_or_on_headroom_not_on_a_percentage_alone() {
    let mut r = rig();
    // 90 % of 64 GiB used, 6 GiB available, no stall, for a minute: nothing.
    r.run(0, 60, &snap(10.0, Some(0.0), 90.0, 6 * GIB, 0.0)).await;
    assert!(r.swap.try_recv().is_err(), "the swap task was asked to expand on a percentage alone");
    assert_eq!(r.report(60).watches["memory"].state, "clear");
    // A stall (PSI memory some 25 %): after memory_sustain (10 s), the swap task expands now.
    r.run(65, 70, &snap(10.0, Some(0.0), 90.0, 6 * GIB, 25.0)).await;
    assert!(r.swap.try_recv().is_err(), "acted before memory_sustain");
    r.run(75, 75, &snap(10.0, Some(0.0), 90.0, 6 * GIB, 25.0)).await;
    assert!(matches!(r.swap.try_recv(), Ok(SwapCommand::Expand { size: None, .. })));
    let why = r.report(75).recent.last().unwrap().why.clone();
    assert_eq!(why, "memory 90% >= 85%, memory pressure 25% >= 10%, available 6.0 GiB >= 1.0 GiB for 10s");
    // Too little headroom on a kernel without PSI is enough too (a new episode after calm).
    let mut r = rig();
    r.run(0, 10, &snap(10.0, None, 97.0, GIB / 2, 0.0)).await;
    assert!(matches!(r.swap.try_recv(), Ok(SwapCommand::Expand { .. })));
}
