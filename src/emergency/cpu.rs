//! The CPU measure: raise the CPU weight of the critical units (systemd, run time only), retire
//! one Dask worker per step (never below the minimum); when calm, the weights go back and the
//! worker unit is restarted to bring the retired workers back.

use super::*;

impl Emergency {
    pub(super) async fn cpu_act(&mut self, why: &str) {
        // Critical units first, each once per episode (a unit already raised, or one whose
        // weight could not be put back yet, is not raised again): their own weight is kept to
        // be put back. A unit named after a reload is raised though an older one is still owed.
        if !self.cfg.critical_units.is_empty() {
            let weight = self.cfg.critical_cpu_weight;
            let pending: Vec<String> =
                self.cfg.critical_units.iter().filter(|u| !self.saved_weights.iter().any(|w| &w.unit == *u)).cloned().collect();
            for unit in pending {
                if !self.act {
                    self.record("cpu", "raise_cpu_weight", why, format!("set CPUWeight={weight} on {unit}"), None, false);
                    continue;
                }
                let Some(sd) = self.systemd().await else { break };
                let outcome = async {
                    let old = sd.cpu_weight(&unit).await?;
                    sd.set_cpu_weight(&unit, weight).await?;
                    Ok::<u64, crate::sys::systemd::SystemdError>(old)
                }
                .await;
                match outcome {
                    Ok(old) => {
                        self.saved_weights.push(SavedWeight { unit: unit.clone(), old, set: weight });
                        self.record(
                            "cpu",
                            "raise_cpu_weight",
                            why,
                            format!("{unit}: CPUWeight {} -> {weight}", weight_text(old)),
                            None,
                            true,
                        );
                    }
                    Err(e) => self.record("cpu", "raise_cpu_weight", why, format!("{unit}: {e}"), None, false),
                }
            }
        }
        let Some(url) = self.cfg.dask_scheduler.clone() else { return };
        let Ok(scheduler) = Endpoint::parse_url(&url) else { return };
        let n = match peers::dask_worker_count(&scheduler).await {
            Ok(count) => u32::try_from(count).unwrap_or(u32::MAX),
            Err(e) => return self.dask_problem(&url, e),
        };
        self.problem("dask", None);
        if n <= self.cfg.dask_min_workers {
            tracing::info!(
                measure = "cpu",
                workers = n,
                "emergency ({why}): Dask has {n} workers, the minimum ({}); none retired",
                self.cfg.dask_min_workers
            );
            return;
        }
        if !self.act {
            return self.record("cpu", "retire_dask_worker", why, format!("retire one of {n} Dask workers"), None, false);
        }
        match peers::dask_retire_one(&scheduler).await {
            Ok(r) if r.count > 0 => self.retired_workers(why, n, &r, ""),
            Ok(_) => self.record("cpu", "retire_dask_worker", why, "the scheduler retired no worker".into(), None, false),
            // A 5xx or no answer in time is an outcome unknown, not a failure: distributed can
            // answer 500 after retiring (distributed#8370), and retiring a worker that holds
            // data can outlast any deadline (dask-kubernetes#821). What the scheduler did is
            // read back: the workers that are gone were retired by us. A request never sent (no
            // connection: refused, or the daemon's own shortage) retired nothing: a worker
            // gone meanwhile left on its own, and is not ours to bring back.
            Err(e @ PeerError::Http(crate::sys::http::HttpError::Connect(_) | crate::sys::http::HttpError::Local(_))) => {
                self.dask_problem(&url, e)
            }
            Err(e @ (PeerError::Http(_) | PeerError::Status { status: 500..=599, .. })) => match peers::dask_worker_count(&scheduler).await
            {
                Ok(now) if u32::try_from(now).unwrap_or(u32::MAX) < n => {
                    let now = u32::try_from(now).unwrap_or(u32::MAX);
                    self.problem("dask", None);
                    let gone = peers::Retired { count: (n - now) as usize, shown: Vec::new() };
                    self.retired_workers(why, n, &gone, &format!(" (the scheduler answered: {e}; read back: {now} left)"));
                }
                _ => self.dask_problem(&url, e),
            },
            Err(e) => self.dask_problem(&url, e),
        }
    }

    /// Workers that were retired (by the scheduler's word or read back), counted to bring back
    /// when calm.
    pub(super) fn retired_workers(&mut self, why: &str, n: u32, r: &peers::Retired, how: &str) {
        self.retired = self.retired.saturating_add(u32::try_from(r.count).unwrap_or(u32::MAX));
        let detail = format!("{}{how}", retired_detail(n, r));
        self.record("cpu", "retire_dask_worker", why, detail, None, true);
    }

    pub(super) fn dask_problem(&mut self, url: &str, e: PeerError) {
        // The route being off lasts until the scheduler's config changes; anything else is
        // this CPU episode's and ends with it.
        self.dask_problem_is_episodes = !matches!(e, PeerError::RouteOff);
        let p = match e {
            PeerError::RouteOff => format!("{url}: {e}"),
            e => format!("{url}: {e} (retried at the next step)"),
        };
        self.problem("dask", Some(p));
    }

    /// Puts back what the CPU measure changed; `true` when nothing is left to undo.
    pub(super) async fn cpu_undo(&mut self, why: &str) -> bool {
        let mut left = false;
        if !self.saved_weights.is_empty() {
            let saved = std::mem::take(&mut self.saved_weights);
            if let Some(sd) = self.systemd().await {
                let mut failed = Vec::new();
                let mut results = Vec::new();
                for w in saved {
                    // Put back only while the unit still holds the weight we set: one that
                    // someone else changed since (systemctl set-property, a drop-in) is theirs.
                    let (unit, old) = (&w.unit, w.old);
                    let outcome = match sd.cpu_weight(unit).await {
                        Ok(now) if now != w.set => Ok(Some(now)),
                        Ok(_) => sd.set_cpu_weight(unit, old).await.map(|()| None),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(None) => results.push(("restore_cpu_weight", format!("{unit}: CPUWeight back to {}", weight_text(old)), true)),
                        Ok(Some(now)) => results.push((
                            "keep_cpu_weight",
                            format!(
                                "{unit}: CPUWeight is {}, not the {} cluster-ai set: someone else changed it; left as it is (not put back to {})",
                                weight_text(now),
                                weight_text(w.set),
                                weight_text(old)
                            ),
                            true,
                        )),
                        Err(e) => {
                            results.push(("restore_cpu_weight", format!("{unit}: {e}"), false));
                            failed.push(w);
                        }
                    }
                }
                for (action, detail, ok) in results {
                    self.record("cpu", action, why, detail, None, ok);
                }
                left |= !failed.is_empty();
                self.saved_weights = failed;
            } else {
                self.saved_weights = saved;
                left = true;
            }
        }
        if self.retired > 0 {
            match self.worker_unit.clone() {
                Some(unit) => {
                    let outcome = match self.systemd().await {
                        Some(sd) => sd.restart(&unit).await.map_err(|e| e.to_string()),
                        None => Err("systemd is not reachable".to_string()),
                    };
                    let ok = outcome.is_ok();
                    let detail = match outcome {
                        Ok(()) => format!("restarted {unit} to bring back {} retired Dask worker(s)", self.retired),
                        Err(e) => format!("restart {unit}: {e}"),
                    };
                    self.record("cpu", "restart_dask_workers", why, detail, None, ok);
                    if ok {
                        self.retired = 0;
                    }
                    left |= !ok;
                }
                None => {
                    tracing::warn!(
                        measure = "cpu",
                        "emergency ({why}): {} retired Dask worker(s) stay retired: set [optimize] dask_worker_unit to have them restarted, or restart them yourself",
                        self.retired
                    );
                    self.retired = 0;
                }
            }
        }
        !left
    }
}

/// "retired Dask worker tcp://… (4 -> 3 workers)". The scheduler's count, not ours: it may
/// retire more than it listed a moment ago, or name more than are shown.
pub(super) fn retired_detail(listed: u32, r: &peers::Retired) -> String {
    let left = listed.saturating_sub(u32::try_from(r.count).unwrap_or(u32::MAX));
    if r.shown.is_empty() {
        return format!("retired {} Dask worker(s) ({listed} -> {left} workers)", r.count);
    }
    let more = r.count.saturating_sub(r.shown.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("retired Dask worker {}{more} ({listed} -> {left} workers)", r.shown.join(", "))
}

/// A critical unit's CPU weight before the CPU measure (`old`) and the one it set (`set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedWeight {
    pub unit: String,
    pub old: u64,
    pub set: u64,
}

fn weight_text(w: u64) -> String {
    if w == crate::sys::systemd::CPU_WEIGHT_UNSET {
        "unset".into()
    } else {
        w.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::Os;
    use crate::sys::systemd::fake::FakeServiceManager;
    use crate::sys::systemd::CPU_WEIGHT_UNSET;

    /// A CPU episode on two critical units through fake systemd; `someone_else` sets a unit's
    /// weight between the raise and the calm step.
    async fn episode(someone_else: Option<(&str, u64)>) -> (Arc<FakeServiceManager>, EmergencyReport) {
        let fake = FakeServiceManager::new();
        fake.add_unit("dask-worker.service", "active", "running");
        fake.add_unit("ollama.service", "active", "running");
        let mut cfg = Config::default();
        cfg.emergency.dask_scheduler = None;
        cfg.emergency.critical_units = vec!["dask-worker.service".into(), "ollama.service".into()];
        cfg.emergency.critical_cpu_weight = 777;
        let os = Os { services: fake.clone(), ..Os::fake() };
        let mut e = Emergency::new(&cfg, None, os, false);
        e.cpu_act("cpu high").await;
        assert_eq!(fake.cpu_weight_of("dask-worker.service"), Some(777));
        assert_eq!(fake.cpu_weight_of("ollama.service"), Some(777));
        if let Some((unit, weight)) = someone_else {
            fake.set_cpu_weight(unit, weight).await.unwrap();
        }
        assert!(e.cpu_undo("cpu calm").await, "nothing left to undo");
        (fake, e.report(Instant::now()))
    }

    /// A reload names other critical units mid-episode and the old one is gone (its weight
    /// cannot be put back): the new one is still raised at the next step, not blocked behind
    /// the old one's debt.
    #[tokio::test]
    async fn a_unit_gone_after_a_reload_does_not_block_the_next_units_raise() {
        let fake = FakeServiceManager::new();
        fake.add_unit("old.service", "active", "running");
        fake.add_unit("new.service", "active", "running");
        let mut cfg = Config::default();
        cfg.emergency.dask_scheduler = None;
        cfg.emergency.critical_units = vec!["old.service".into()];
        cfg.emergency.critical_cpu_weight = 777;
        let os = Os { services: fake.clone(), ..Os::fake() };
        let mut e = Emergency::new(&cfg, None, os, false);
        e.cpu_act("cpu high").await;
        assert_eq!(fake.cpu_weight_of("old.service"), Some(777));
        e.cfg.critical_units = vec!["new.service".into()];
        fake.remove_unit("old.service");
        assert!(!e.cpu_undo("cpu calm").await, "old.service's weight is still owed");
        e.cpu_act("cpu high").await;
        assert_eq!(fake.cpu_weight_of("new.service"), Some(777), "raised though old.service is owed");
        e.cpu_act("cpu high").await;
        let raises = e.report(Instant::now()).counts.get("raise_cpu_weight").copied();
        assert_eq!(raises, Some(2), "each unit once per episode");
    }

    #[tokio::test]
    async fn a_weight_still_ours_is_put_back() {
        let (fake, r) = episode(None).await;
        assert_eq!(fake.cpu_weight_of("dask-worker.service"), Some(CPU_WEIGHT_UNSET));
        assert_eq!(fake.cpu_weight_of("ollama.service"), Some(CPU_WEIGHT_UNSET));
        assert_eq!(r.counts.get("restore_cpu_weight"), Some(&2));
        assert_eq!(r.counts.get("keep_cpu_weight"), None);
    }

    #[tokio::test]
    async fn a_weight_someone_else_changed_is_left_and_said() {
        let (fake, r) = episode(Some(("ollama.service", 300))).await;
        assert_eq!(fake.cpu_weight_of("ollama.service"), Some(300), "theirs, left");
        assert_eq!(fake.cpu_weight_of("dask-worker.service"), Some(CPU_WEIGHT_UNSET), "ours, put back");
        assert_eq!(r.counts.get("restore_cpu_weight"), Some(&1));
        assert_eq!(r.counts.get("keep_cpu_weight"), Some(&1));
        let kept = r.recent.iter().find(|a| a.action == "keep_cpu_weight").unwrap();
        assert_eq!(
            kept.detail,
            "ollama.service: CPUWeight is 300, not the 777 cluster-ai set: someone else changed it; left as it is (not put back to unset)"
        );
    }
}
