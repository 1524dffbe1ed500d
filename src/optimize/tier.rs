//! The seed's tiers ("Requisitos Mínimos" and "Recomendações por Hardware"): which tier a
//! machine reaches by cores and memory, and the settings the table recommends for it. Below
//! both the resource checker (`check`) and the optimizer's plan, which read it.

use serde::{Deserialize, Serialize};

use super::profile::Profile;
use crate::config::human_size;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    BelowMinimum,
    Basic,
    Intermediate,
    Advanced,
}

impl Tier {
    pub fn describe(self) -> &'static str {
        match self {
            Tier::BelowMinimum => "below the minimum (2 cores, 4 GB)",
            Tier::Basic => "basic (2-4 cores, 4-8 GB)",
            Tier::Intermediate => "intermediate (4-8 cores, 8-16 GB)",
            Tier::Advanced => "advanced (8+ cores, 16+ GB)",
        }
    }
}

/// Memory thresholds of the seed's tiers, in GiB as the kernel reports MemTotal: a "4 GB"
/// machine shows about 3.8 GiB, so each nominal size counts from 7/8 of it.
const TIER_MEMORY_GIB: [(Tier, f64); 3] = [(Tier::Advanced, 14.0), (Tier::Intermediate, 7.0), (Tier::Basic, 3.5)];
const TIER_CORES: [(Tier, u32); 3] = [(Tier::Advanced, 8), (Tier::Intermediate, 4), (Tier::Basic, 2)];

/// The tier the machine reaches by cores and by (effective) memory, the lower of the two, and
/// what holds it there.
pub fn tier(p: &Profile) -> (Tier, Vec<String>) {
    let cores = p.cpu.logical_cores;
    let mem_gib = p.memory.effective_bytes as f64 / GIB;
    let by_cores = TIER_CORES.iter().find(|(_, c)| cores >= *c).map_or(Tier::BelowMinimum, |(t, _)| *t);
    let by_memory = TIER_MEMORY_GIB.iter().find(|(_, g)| mem_gib >= *g).map_or(Tier::BelowMinimum, |(t, _)| *t);
    let tier = by_cores.min(by_memory);
    let mut reasons = Vec::new();
    if by_cores == Tier::BelowMinimum {
        reasons.push(format!("{cores} logical core(s); the minimum is 2"));
    }
    if by_memory == Tier::BelowMinimum {
        let limited = if p.memory.limit_bytes.is_some() { " (the container's memory limit)" } else { "" };
        reasons.push(format!("{} of memory{limited}; the minimum is 4 GB", human_size(p.memory.effective_bytes)));
    }
    if tier != Tier::BelowMinimum && by_cores != by_memory {
        let by = if by_cores < by_memory {
            format!("{cores} logical cores")
        } else {
            format!("{} of memory", human_size(p.memory.effective_bytes))
        };
        reasons.push(format!("{by} keep it {}", tier.describe()));
    }
    (tier, reasons)
}

/// The settings `check` recommends: the optimizer's own plan for this machine
/// (`cluster-ai optimize`), so the two never disagree; [`recommended`] is the seed's table
/// ("Recomendações por Hardware") the plan takes the loaded-model count from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommended {
    pub dask_workers: u32,
    pub dask_threads_per_worker: u32,
    pub dask_memory_limit_bytes: u64,
    /// Ollama's `num_gpu`: a per-model option (Modelfile or request), not an environment variable.
    pub ollama_gpu_layers: u32,
    pub ollama_max_loaded_models: u32,
}

/// The seed's table for a tier (its GPU layers assume a GPU; the plan decides from the GPU
/// actually found).
pub fn recommended(tier: Tier) -> Option<Recommended> {
    let r = |w, t, mem_mib: u64, layers, models| Recommended {
        dask_workers: w,
        dask_threads_per_worker: t,
        dask_memory_limit_bytes: mem_mib << 20,
        ollama_gpu_layers: layers,
        ollama_max_loaded_models: models,
    };
    match tier {
        Tier::BelowMinimum => None,
        Tier::Basic => Some(r(2, 1, 1536, 10, 1)),
        Tier::Intermediate => Some(r(4, 2, 3072, 20, 2)),
        Tier::Advanced => Some(r(6, 2, 4096, 35, 3)),
    }
}
