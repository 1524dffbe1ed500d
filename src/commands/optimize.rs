//! `cluster-ai optimize [--dry-run] [--json]`: the plan for this machine, as a diff against the
//! env files in place; written (atomically) unless `--dry-run`. Restarting the units whose file
//! changed is the optimize task's job (through systemd's D-Bus API); this command says which.

use std::path::{Path, PathBuf};

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::OptimizeArgs;
use crate::config::human_size;
use crate::daemon::{load_config, EXIT_CONFIG};
use crate::optimize::apply::{self, FileOutcome};
use crate::optimize::plan::{self, Plan};
use crate::optimize::profile::{gather, Sources};
use crate::sys::display_path;
use crate::sys::paths::DEFAULT_CONFIG;

#[derive(Debug, Serialize)]
struct Outcome {
    dry_run: bool,
    plan: Plan,
    files: Vec<FileOutcome>,
    /// Units whose env file changed: a restart applies it.
    restart_needed: Vec<String>,
}

pub fn main(args: OptimizeArgs) -> ExitCode {
    let path = args.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = match load_config(&path, args.config.is_some()) {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("cluster-ai optimize: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let profile = match gather(&config, Path::new("/"), Sources::PLAN) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cluster-ai optimize: cannot read the hardware: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = plan::plan(&profile, &config.optimize);
    let files = apply::env_files(&plan, &config.optimize.env_dir, !args.dry_run);
    let failed = files.iter().any(|f| f.failed());
    let restart_needed = apply::restart_needed(&files);
    let out = Outcome { dry_run: args.dry_run, plan, files, restart_needed };
    if args.json {
        match serde_json::to_string_pretty(&out) {
            Ok(t) => println!("{t}"),
            Err(e) => eprintln!("cluster-ai optimize: {e}"),
        }
    } else {
        print!("{}", render(&out));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn render(o: &Outcome) -> String {
    let p = &o.plan;
    let line = |name: &str, value: String, v_source: &str, why: &str| format!("  {name:<26} {value:<12} {v_source}: {why}\n");
    let mut out = format!("plan for this machine, {} tier:\n", p.tier.describe());
    out += &line("dask workers", p.dask_workers.value.to_string(), &p.dask_workers.source, &p.dask_workers.why);
    out += &line(
        "dask threads per worker",
        p.dask_threads_per_worker.value.to_string(),
        &p.dask_threads_per_worker.source,
        &p.dask_threads_per_worker.why,
    );
    out += &line(
        "dask memory limit",
        human_size(p.dask_memory_limit_bytes.value),
        &p.dask_memory_limit_bytes.source,
        &p.dask_memory_limit_bytes.why,
    );
    out += &line("OMP/MKL_NUM_THREADS", p.omp_num_threads.to_string(), "auto", "the worker's own threads");
    out += &line("OLLAMA_NUM_PARALLEL", p.ollama_num_parallel.value.to_string(), &p.ollama_num_parallel.source, &p.ollama_num_parallel.why);
    out += &line(
        "OLLAMA_MAX_LOADED_MODELS",
        p.ollama_max_loaded_models.value.to_string(),
        &p.ollama_max_loaded_models.source,
        &p.ollama_max_loaded_models.why,
    );
    out += &line("ollama GPU layers", p.ollama_gpu_layers.value.to_string(), &p.ollama_gpu_layers.source, &p.ollama_gpu_layers.why);
    out += "  (GPU layers are Ollama's per-model num_gpu option, with no environment variable: a recommendation, not applied)\n";
    for f in &o.files {
        out += &format!("{}: {}\n", display_path(&f.path), f.outcome);
        for c in &f.changes {
            out += &format!("  {}: {} -> {}\n", c.key, c.from.as_deref().unwrap_or("(unset)"), c.to.as_deref().unwrap_or("(removed)"));
        }
    }
    if !o.restart_needed.is_empty() {
        let verb = if o.dry_run { "would need" } else { "needs" };
        out +=
            &format!("{} {verb} a restart to apply it (systemctl restart {})\n", o.restart_needed.join(", "), o.restart_needed.join(" "));
    }
    out
}
