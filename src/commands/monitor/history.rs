//! The last hour of looks, as the charts need them: one point per new snapshot, each series
//! as `(seconds before now, value)` pairs for a window the user chooses.

use std::collections::VecDeque;

use super::look::Look;

/// Points older than this are dropped: the widest window the keys offer.
pub const KEEP_SECONDS: u64 = 3600;
/// The windows `+` and `-` step through, in seconds; the monitor starts on 5 minutes.
pub const WINDOWS: [u64; 7] = [60, 120, 300, 600, 900, 1800, 3600];
pub const DEFAULT_WINDOW: usize = 2;

#[derive(Debug, Clone, PartialEq)]
struct Point {
    at_unix_ms: u64,
    memory_used_percent: f64,
    cpu_busy_percent: Option<f64>,
    /// Memory, CPU, I/O: `some avg10`, in percent.
    pressure: Option<[f64; 3]>,
    /// Used bytes of each managed file (by file name), then of the other areas together.
    swap: Vec<(String, u64)>,
    swap_other: u64,
    swap_size_bytes: u64,
}

/// A series for the chart: `(seconds relative to now (≤ 0), value)`.
pub type Series = Vec<(f64, f64)>;

#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<Point>,
}

impl History {
    /// Adds the look's snapshot unless it is the one already held (the daemon samples every
    /// `sample_interval`, which may be longer than the refresh); drops points older than an
    /// hour. False when nothing was added.
    pub fn push(&mut self, look: &Look) -> bool {
        let Some(s) = &look.snapshot else { return false };
        if self.points.back().is_some_and(|p| p.at_unix_ms >= s.taken_at_unix_ms) {
            return false;
        }
        let mut swap: Vec<(String, u64)> = look
            .swap_areas
            .iter()
            .filter(|a| a.managed)
            .map(|a| (a.path.file_name().map_or_else(|| a.path.to_string_lossy(), |n| n.to_string_lossy()).into_owned(), a.used_bytes))
            .collect();
        swap.sort();
        self.points.push_back(Point {
            at_unix_ms: s.taken_at_unix_ms,
            memory_used_percent: s.memory_used_percent,
            cpu_busy_percent: s.cpu_busy_percent,
            pressure: s.pressure.map(|p| [p.memory.some_avg10, p.cpu.some_avg10, p.io.some_avg10]),
            swap,
            swap_other: look.swap_areas.iter().filter(|a| !a.managed).map(|a| a.used_bytes).sum(),
            swap_size_bytes: look.swap_areas.iter().map(|a| a.size_bytes).sum(),
        });
        let oldest = s.taken_at_unix_ms.saturating_sub(KEEP_SECONDS * 1000);
        while self.points.front().is_some_and(|p| p.at_unix_ms < oldest) {
            self.points.pop_front();
        }
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    fn within(&self, now_ms: u64, window_s: u64) -> impl Iterator<Item = (f64, &Point)> {
        let from = now_ms.saturating_sub(window_s * 1000);
        self.points.iter().filter(move |p| p.at_unix_ms >= from).map(move |p| ((p.at_unix_ms as f64 - now_ms as f64) / 1000.0, p))
    }

    pub fn memory(&self, now_ms: u64, window_s: u64) -> Series {
        self.within(now_ms, window_s).map(|(x, p)| (x, p.memory_used_percent)).collect()
    }

    pub fn cpu(&self, now_ms: u64, window_s: u64) -> Series {
        self.within(now_ms, window_s).filter_map(|(x, p)| Some((x, p.cpu_busy_percent?))).collect()
    }

    /// `some avg10` of memory, CPU and I/O pressure (PSI), in percent; empty without PSI.
    pub fn pressure(&self, now_ms: u64, window_s: u64) -> [Series; 3] {
        let mut out: [Series; 3] = Default::default();
        for (x, p) in self.within(now_ms, window_s) {
            if let Some(v) = p.pressure {
                for (s, v) in out.iter_mut().zip(v) {
                    s.push((x, v));
                }
            }
        }
        out
    }

    /// Swap in use, stacked: one layer per managed file (by name, oldest first: the names
    /// count up), then "other swap" (areas that are not the daemon's) when there is any. Each
    /// layer's values are the sum of it and the layers under it, so the top line is all swap
    /// in use. Also the largest total swap size in the window (the chart's ceiling), in bytes.
    pub fn swap_stack(&self, now_ms: u64, window_s: u64) -> (Vec<(String, Series)>, u64) {
        let mut names: Vec<&str> = Vec::new();
        let mut ceiling = 0;
        let mut other = false;
        for (_, p) in self.within(now_ms, window_s) {
            for (n, _) in &p.swap {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
            other |= p.swap_other > 0;
            ceiling = ceiling.max(p.swap_size_bytes);
        }
        names.sort_unstable();
        let mut layers: Vec<(String, Series)> = names.iter().map(|n| (n.to_string(), Vec::new())).collect();
        if other {
            layers.push(("other swap".into(), Vec::new()));
        }
        for (x, p) in self.within(now_ms, window_s) {
            let mut sum = 0u64;
            for (i, name) in names.iter().enumerate() {
                sum += p.swap.iter().find(|(n, _)| n == name).map_or(0, |(_, u)| *u);
                layers[i].1.push((x, sum as f64));
            }
            if other {
                sum += p.swap_other;
                if let Some(l) = layers.last_mut() {
                    l.1.push((x, sum as f64));
                }
            }
        }
        (layers, ceiling)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::commands::monitor::look::SwapArea;
    use crate::sampler::Snapshot;

    pub fn look(at_s: u64, mem: f64, swap: &[(&str, bool, u64)]) -> Look {
        Look {
            at_unix_ms: at_s * 1000,
            source: "local",
            daemon: None,
            daemon_error: None,
            daemon_short: None,
            snapshot: Some(Snapshot {
                taken_at_unix_ms: at_s * 1000,
                cpu_busy_percent: Some(mem / 2.0),
                cpu_seconds: None,
                memory_total_bytes: 100,
                memory_available_bytes: 50,
                memory_used_percent: mem,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
                disk_root: None,
                disk_swap_dir: None,
                pressure_unreadable: false,
                pressure: None,
                load_average: [0.0; 3],
            }),
            swap_areas: swap
                .iter()
                .map(|(p, managed, used)| SwapArea { path: p.into(), managed: *managed, size_bytes: 1 << 30, used_bytes: *used })
                .collect(),
            swap_error: None,
            services: None,
            measures: Default::default(),
            recent_actions: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_seen_twice_is_one_point_and_the_window_cuts_the_past() {
        let mut h = History::default();
        assert!(h.push(&look(1000, 10.0, &[])));
        assert!(!h.push(&look(1000, 10.0, &[])), "the daemon's snapshot did not change");
        assert!(h.push(&look(1100, 20.0, &[])));
        assert!(h.push(&look(1200, 30.0, &[])));
        assert_eq!(h.memory(1_200_000, 150), [(-100.0, 20.0), (0.0, 30.0)]);
        assert_eq!(h.cpu(1_200_000, 60), [(0.0, 15.0)]);
        // An hour later the first points are gone.
        assert!(h.push(&look(1000 + KEEP_SECONDS + 150, 40.0, &[])));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn managed_files_stack_in_name_order_with_other_swap_on_top() {
        let mut h = History::default();
        let dir = "/var/lib/cluster-ai/swap/";
        let a = format!("{dir}cluster-ai-000001.swap");
        let b = format!("{dir}cluster-ai-000002.swap");
        // The kernel lists the newer file first (higher priority); the stack does not care.
        h.push(&look(10, 1.0, &[(&b, true, 5), (&a, true, 7), ("/dev/sda2", false, 3)]));
        h.push(&look(12, 1.0, &[(&a, true, 9)]));
        let (layers, ceiling) = h.swap_stack(12_000, 60);
        assert_eq!(ceiling, 3 << 30);
        let names: Vec<&str> = layers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cluster-ai-000001.swap", "cluster-ai-000002.swap", "other swap"]);
        assert_eq!(layers[0].1, [(-2.0, 7.0), (0.0, 9.0)]);
        assert_eq!(layers[1].1, [(-2.0, 12.0), (0.0, 9.0)], "a file gone is 0 in the stack");
        assert_eq!(layers[2].1, [(-2.0, 15.0), (0.0, 9.0)]);
    }
}
