//! `[optimize]`: what `cluster-ai optimize` sizes to the hardware, and whether it writes the env
//! files by itself.

use std::path::PathBuf;

use super::check::{absolute_path, auto, boolean, count_between, optional_unit, size, Checker};
use super::{format_size, human_size, KeyDoc};

/// `[optimize]`'s keys: name, default, one line of doc.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new("optimize", "apply", "false", "Write the env files (and restart the units whose file changed) without being asked."),
    KeyDoc::new("optimize", "env_dir", r#""/etc/cluster-ai/env""#, "Where the env files go, one per service: dask-worker.env, ollama.env."),
    KeyDoc::new("optimize", "dask_workers", r#""auto""#, "Dask worker processes on this node (1-1024), or \"auto\" from the hardware."),
    KeyDoc::new("optimize", "dask_threads_per_worker", r#""auto""#, "Threads in each Dask worker (1-1024), or \"auto\"."),
    KeyDoc::new(
        "optimize",
        "dask_memory_limit",
        r#""auto""#,
        "Memory limit of each Dask worker (a size, at least 64M), or \"auto\": 80% of memory over the workers.",
    ),
    KeyDoc::new("optimize", "ollama_num_parallel", r#""auto""#, "OLLAMA_NUM_PARALLEL (1-64), or \"auto\"."),
    KeyDoc::new("optimize", "ollama_max_loaded_models", r#""auto""#, "OLLAMA_MAX_LOADED_MODELS (1-64), or \"auto\"."),
    KeyDoc::new(
        "optimize",
        "ollama_gpu_layers",
        r#""auto""#,
        "Ollama's num_gpu recommendation (0-999; 0 = CPU only), shown, never written; or \"auto\".",
    ),
    KeyDoc::new("optimize", "dask_worker_unit", r#""dask-worker.service""#, "The unit that reads dask-worker.env; \"\" = not managed."),
    KeyDoc::new("optimize", "ollama_unit", r#""ollama.service""#, "The unit that reads ollama.env; \"\" = not managed."),
];

/// What `cluster-ai optimize` computes for this hardware; each value is `None` ("auto": from
/// the hardware profile) or pinned by the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeConfig {
    /// Write the env files (and, once built, restart the units whose file changed) without
    /// being asked; off: only `cluster-ai optimize` writes them.
    pub apply: bool,
    /// Where the env files go, one per service: `dask-worker.env`, `ollama.env`.
    pub env_dir: PathBuf,
    pub dask_workers: Option<u32>,
    pub dask_threads_per_worker: Option<u32>,
    pub dask_memory_limit: Option<u64>,
    pub ollama_num_parallel: Option<u32>,
    pub ollama_max_loaded_models: Option<u32>,
    pub ollama_gpu_layers: Option<u32>,
    /// The units that read `dask-worker.env` and `ollama.env`: restarted (with `apply`) when
    /// their file changes; the Dask one also brings retired workers back. `None`: not managed.
    pub dask_worker_unit: Option<String>,
    pub ollama_unit: Option<String>,
}

impl OptimizeConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        let auto = |v: Option<u32>| v.map_or("auto".to_string(), |n| n.to_string());
        vec![
            ("optimize.apply", self.apply.to_string()),
            ("optimize.env_dir", self.env_dir.display().to_string()),
            ("optimize.dask_workers", auto(self.dask_workers)),
            ("optimize.dask_threads_per_worker", auto(self.dask_threads_per_worker)),
            ("optimize.dask_memory_limit", self.dask_memory_limit.map_or("auto".to_string(), format_size)),
            ("optimize.ollama_num_parallel", auto(self.ollama_num_parallel)),
            ("optimize.ollama_max_loaded_models", auto(self.ollama_max_loaded_models)),
            ("optimize.ollama_gpu_layers", auto(self.ollama_gpu_layers)),
            ("optimize.dask_worker_unit", self.dask_worker_unit.clone().unwrap_or_default()),
            ("optimize.ollama_unit", self.ollama_unit.clone().unwrap_or_default()),
        ]
    }

    pub(super) fn validate(c: &mut Checker<'_>) -> OptimizeConfig {
        let (apply, _) = c.field("optimize.apply", boolean);
        let (env_dir, _) = c.field("optimize.env_dir", absolute_path);
        let (dask_workers, _) = c.field("optimize.dask_workers", auto(count_between(1, 1024)));
        let (dask_threads_per_worker, _) = c.field("optimize.dask_threads_per_worker", auto(count_between(1, 1024)));
        let (dask_memory_limit, _) = c.field(
            "optimize.dask_memory_limit",
            auto(|v| {
                let n = size(v)?;
                if n < 64 << 20 {
                    return Err(format!("{} is too small for a Dask worker; expected at least 64M", human_size(n)));
                }
                Ok(n)
            }),
        );
        let (ollama_num_parallel, _) = c.field("optimize.ollama_num_parallel", auto(count_between(1, 64)));
        let (ollama_max_loaded_models, _) = c.field("optimize.ollama_max_loaded_models", auto(count_between(1, 64)));
        let (ollama_gpu_layers, _) = c.field("optimize.ollama_gpu_layers", auto(count_between(0, 999)));
        let (dask_worker_unit, _) = c.field("optimize.dask_worker_unit", optional_unit);
        let (ollama_unit, _) = c.field("optimize.ollama_unit", optional_unit);
        OptimizeConfig {
            apply,
            env_dir,
            dask_workers,
            dask_threads_per_worker,
            dask_memory_limit,
            ollama_num_parallel,
            ollama_max_loaded_models,
            ollama_gpu_layers,
            dask_worker_unit,
            ollama_unit,
        }
    }
}
