//! The swap task's counters for `/metrics`: owned here, published on a watch channel, and
//! encoded by `crate::metrics` (which reads them; swap never names metrics).

use serde::{Deserialize, Serialize};

/// The swap task's part: what it manages now and what it has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapMetrics {
    /// Swap files are managed here (root, a usable swap.dir).
    pub managing: bool,
    pub files: u64,
    pub managed_bytes: u64,
    pub managed_used_bytes: u64,
    /// The spare file kept ready (made, not enabled): disk, not swap; 0 when there is none.
    #[serde(default)]
    pub spare_bytes: u64,
    pub max_size_bytes: u64,
    pub disk_guard_active: bool,
    pub at_max: bool,
    pub expansions: u64,
    pub shrinks: u64,
    pub disk_guard_episodes: u64,
    pub max_size_episodes: u64,
    /// From the decision to grow to the new file being swapped on.
    pub expand_seconds: Histogram,
}

/// Upper bounds of [`SwapMetrics::expand_seconds`]'s buckets (the swap task's reaction is
/// 10–20 ms; a slow disk takes seconds).
pub const EXPAND_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket of [`EXPAND_BUCKETS`] (not cumulative), then above the last.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        if self.counts.len() != EXPAND_BUCKETS.len() + 1 {
            self.counts = vec![0; EXPAND_BUCKETS.len() + 1];
        }
        let i = EXPAND_BUCKETS.iter().position(|b| v <= *b).unwrap_or(EXPAND_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// `(upper bound, cumulative count)`, ending with +Inf.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        EXPAND_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, b)| {
                total += self.counts.get(i).copied().unwrap_or(0);
                (b, total)
            })
            .collect()
    }
}
