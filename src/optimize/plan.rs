//! The plan: Dask and Ollama sized to the hardware profile, with every value the config pins
//! taken as pinned, and the env files that carry it to the services' units. Pure: the command
//! and the task read the profile and the files, and write what this returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::profile::Profile;
use super::tier::{recommended, tier, Recommended, Tier};
use crate::config::{human_size, OptimizeConfig};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The least memory limit the plan gives a worker where the workers' memory has room for it.
const MIN_WORKER_MEMORY: u64 = 256 * MIB;

/// One computed value, where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value<T> {
    pub value: T,
    /// "auto" or "pinned" (by the config file).
    pub source: String,
    pub why: String,
}

fn pick<T: Copy>(pinned: Option<T>, auto: T, why: String) -> Value<T> {
    match pinned {
        Some(v) => Value { value: v, source: "pinned".into(), why: "set in [optimize]".into() },
        None => Value { value: auto, source: "auto".into(), why },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub tier: Tier,
    pub dask_workers: Value<u32>,
    pub dask_threads_per_worker: Value<u32>,
    pub dask_memory_limit_bytes: Value<u64>,
    /// OMP_NUM_THREADS and MKL_NUM_THREADS for each worker: its own threads, so the workers'
    /// numeric libraries do not each spawn one thread per core.
    pub omp_num_threads: u32,
    pub ollama_num_parallel: Value<u32>,
    pub ollama_max_loaded_models: Value<u32>,
    /// A recommendation only: `num_gpu` is a per-model option (Modelfile or request), with no
    /// environment variable to set it; never written to a file.
    pub ollama_gpu_layers: Value<u32>,
}

/// The plan for this profile. Auto values:
/// - threads per worker: 2 from 4 logical cores up (the seed's intermediate and advanced
///   tiers), else 1; workers: logical cores / threads (every core used once), at least 1, and
///   no more than fit 256 MiB each in 80 % of the workers' memory;
/// - memory limit per worker: 80 % of the memory the workers may use (the seed's rule; that
///   memory is the worker unit's `MemoryMax=`/`MemoryHigh=`/cgroup, the container's limit or
///   the host's RAM: `Profile::memory.dask_workers`) / workers, in whole MiB, at least 256 MiB
///   where that fits; never more in all than that memory (workers × limit ≤ it, pinned
///   workers included; a pinned limit is the user's);
/// - OLLAMA_NUM_PARALLEL: 2 with 16 GiB or more of effective memory, else 1;
/// - OLLAMA_MAX_LOADED_MODELS: the seed's table for the tier (1, 2, 3; 1 below the minimum);
/// - GPU layers: 0 without a GPU whose memory is known; all (999) from 24 GiB of GPU memory;
///   else 4 per GiB (a 7B model in 4 bits has about 32 layers in 4–5 GiB).
pub fn plan(p: &Profile, cfg: &OptimizeConfig) -> Plan {
    let cores = p.cpu.logical_cores.max(1);
    let mem = p.memory.effective_bytes;
    let (tier, _) = tier(p);
    let auto_threads = if cores >= 4 { 2 } else { 1 };
    let threads = pick(cfg.dask_threads_per_worker, auto_threads, format!("{auto_threads} per worker with {cores} logical cores"));
    let budget = &p.memory.dask_workers;
    let usable = budget.bytes / 10 * 8;
    let by_cores = (cores / threads.value).max(1);
    let fit = u32::try_from(usable / MIN_WORKER_MEMORY).unwrap_or(u32::MAX).max(1);
    let workers_why = if fit < by_cores {
        format!(
            "{cores} logical cores / {} threads, but {fit} fit {} each in 80% of {} ({})",
            threads.value,
            human_size(MIN_WORKER_MEMORY),
            human_size(budget.bytes),
            budget.source
        )
    } else {
        format!("{cores} logical cores / {} threads", threads.value)
    };
    let workers = pick(cfg.dask_workers, by_cores.min(fit), workers_why);
    let n = u64::from(workers.value.max(1));
    // The workers are as many as fit 256 MiB each, so the share is below that only when the
    // limit leaves no other way (one worker in a small unit, or pinned workers); never 0 (Dask
    // reads 0 as "no limit").
    let auto_limit = (usable / n / MIB * MIB).max(MIB);
    let memory_limit = pick(
        cfg.dask_memory_limit,
        auto_limit,
        format!("80% of {} ({}) / {} workers", human_size(budget.bytes), budget.source, workers.value),
    );
    let auto_parallel = if mem >= 16 * GIB { 2 } else { 1 };
    let parallel = pick(cfg.ollama_num_parallel, auto_parallel, format!("{} of memory", human_size(mem)));
    let auto_models = recommended(tier).map_or(1, |r| r.ollama_max_loaded_models);
    let models = pick(cfg.ollama_max_loaded_models, auto_models, format!("the recommended table for the {tier:?} tier").to_lowercase());
    let vram = p.gpus.iter().filter_map(|g| g.vram_bytes).max();
    let (auto_layers, layers_why) = match vram {
        None => (0, "no GPU with known memory: CPU only".to_string()),
        Some(v) if v >= 24 * GIB => (999, format!("{} of GPU memory: every layer", human_size(v))),
        Some(v) => (u32::try_from(v / GIB * 4).unwrap_or(999).min(999), format!("4 layers per GiB of {} GPU memory", human_size(v))),
    };
    let layers = pick(cfg.ollama_gpu_layers, auto_layers, layers_why);
    Plan {
        tier,
        omp_num_threads: threads.value,
        dask_workers: workers,
        dask_threads_per_worker: threads,
        dask_memory_limit_bytes: memory_limit,
        ollama_num_parallel: parallel,
        ollama_max_loaded_models: models,
        ollama_gpu_layers: layers,
    }
}

/// One env file: its name in `env_dir`, the unit that reads it, and its variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    pub name: String,
    /// The unit that reads it (`[optimize] dask_worker_unit`, `ollama_unit`); none: nothing
    /// is restarted when it changes.
    pub unit: Option<String>,
    pub vars: BTreeMap<String, String>,
}

pub fn env_files(plan: &Plan, cfg: &OptimizeConfig) -> Vec<EnvFile> {
    let vars = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    vec![
        EnvFile {
            name: "dask-worker.env".into(),
            unit: cfg.dask_worker_unit.clone(),
            vars: vars(&[
                ("DASK_NWORKERS", plan.dask_workers.value.to_string()),
                ("DASK_NTHREADS", plan.dask_threads_per_worker.value.to_string()),
                // Dask reads plain byte counts; "MiB"-style suffixes would be read as decimal.
                ("DASK_MEMORY_LIMIT", plan.dask_memory_limit_bytes.value.to_string()),
                ("OMP_NUM_THREADS", plan.omp_num_threads.to_string()),
                ("MKL_NUM_THREADS", plan.omp_num_threads.to_string()),
            ]),
        },
        EnvFile {
            name: "ollama.env".into(),
            unit: cfg.ollama_unit.clone(),
            vars: vars(&[
                ("OLLAMA_NUM_PARALLEL", plan.ollama_num_parallel.value.to_string()),
                ("OLLAMA_MAX_LOADED_MODELS", plan.ollama_max_loaded_models.value.to_string()),
            ]),
        },
    ]
}

/// How the file's first line starts: the line is ours, replaced at each write.
const HEADER: &str = "# Written by `cluster-ai optimize`";

/// The file's text: a header saying who wrote it, the plan's `KEY=value` lines in key order (so
/// the same plan always gives the same bytes, and "changed" means changed), then every other
/// line of `current` as it was. A variable the plan does not own (a password the unit needs,
/// put there by hand) is the user's: never removed, rewritten, logged or shown.
pub fn render(file: &EnvFile, current: Option<&str>) -> String {
    let mut out = format!(
        "{HEADER} for {}: it sets the variables above the first blank line (pin them in [optimize]); other lines are kept.\n",
        file.unit.as_deref().unwrap_or(&file.name)
    );
    for (k, v) in &file.vars {
        out += &format!("{k}={v}\n");
    }
    let kept: Vec<&str> = current.unwrap_or_default().lines().filter(|l| !owned_line(l, file)).collect();
    if !kept.is_empty() {
        out += "\n";
        for line in kept {
            out += line;
            out += "\n";
        }
    }
    out
}

/// A line this file's writer replaces: a blank one, its header, or one that sets a variable
/// of the plan.
fn owned_line(line: &str, file: &EnvFile) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with(HEADER) || (!is_comment(t) && t.split_once('=').is_some_and(|(k, _)| file.vars.contains_key(k.trim())))
}

fn is_comment(trimmed: &str) -> bool {
    trimmed.starts_with('#') || trimmed.starts_with(';')
}

/// `KEY=value` lines of an env file as systemd reads them (comments and blanks skipped,
/// surrounding quotes removed).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_comment(l))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect()
}

/// One of the plan's variables whose value changes (`from` None: new). Only the plan's own
/// variables ever appear here: their values are the plan's numbers, safe to log and show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub from: Option<String>,
    pub to: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.from.as_deref().unwrap_or("(unset)"), self.to)
    }
}

/// What writing `file` would change against the text in place (`None`: no file yet), for the
/// plan's variables only: the other lines are kept (see [`render`]), so they never change.
pub fn diff(current: Option<&str>, file: &EnvFile) -> Vec<Change> {
    let now = current.map(parse).unwrap_or_default();
    file.vars
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, v)| Change { key: k.clone(), from: now.get(k).cloned(), to: v.clone() })
        .collect()
}

impl Plan {
    /// The plan's settings in the shape `check` reports them (so the two never disagree).
    pub fn recommended(&self) -> Recommended {
        let p = self;
        Recommended {
            dask_workers: p.dask_workers.value,
            dask_threads_per_worker: p.dask_threads_per_worker.value,
            dask_memory_limit_bytes: p.dask_memory_limit_bytes.value,
            ollama_gpu_layers: p.ollama_gpu_layers.value,
            ollama_max_loaded_models: p.ollama_max_loaded_models.value,
        }
    }
}

#[cfg(test)]
mod tests;
