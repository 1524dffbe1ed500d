//! `cluster-ai optimize [--dry-run] [--json]`: the plan for this machine, as a diff against the
//! env files in place; written (atomically) unless `--dry-run`. With `[optimize] apply` on,
//! each unit whose file it wrote is restarted through systemd's D-Bus API; otherwise it says
//! which restart each change needs.

use std::path::Path;

use std::process::ExitCode;

use serde::Serialize;

use super::exit;
use crate::cli::OptimizeArgs;
use crate::config::human_size;
use crate::optimize::apply::{self, FileOutcome};
use crate::optimize::plan::{self, Plan, Value};
use crate::optimize::profile::{gather, Sources};
use crate::sys::display_path;

#[derive(Debug, Serialize)]
struct Outcome {
    dry_run: bool,
    plan: Plan,
    files: Vec<FileOutcome>,
    /// Units whose env file changed: a restart applies it.
    restart_needed: Vec<String>,
    /// With `[optimize] apply`: each restart's outcome ("restarted", "failed: …").
    restarts: Vec<(String, String)>,
}

pub fn main(args: OptimizeArgs) -> ExitCode {
    let config = match super::config_or_exit("optimize", args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut profile = match gather(&config, Path::new("/"), Sources::PLAN) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cluster-ai optimize: cannot read the hardware: {e}");
            return ExitCode::from(exit::IO_ERROR);
        }
    };
    if config.optimize.dask_worker_unit.is_some() {
        // The worker unit's MemoryMax=/MemoryHigh= size the workers; the bus connection is
        // made and dropped inside the runtime (zbus's drop needs it).
        let read = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(async {
                let bus = crate::sys::systemd::SystemBus::shared();
                crate::optimize::task::worker_unit_memory(&*bus, &config).await
            }),
            Err(e) => config.optimize.dask_worker_unit.clone().map(|u| (u, Err(e.to_string()))),
        };
        if let Some((unit, read)) = read {
            crate::optimize::profile::set_worker_unit(&mut profile, Path::new("/"), &unit, read);
        }
    }
    let plan = plan::plan(&profile, &config.optimize);
    let files = apply::env_files(&plan, &config.optimize, !args.dry_run);
    let mut failed = files.iter().any(|f| f.failed());
    let restart_needed = apply::restart_needed(&files);
    let mut restarts = Vec::new();
    if config.optimize.apply && !args.dry_run && !restart_needed.is_empty() {
        restarts = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            // The bus connection is made and dropped inside the runtime: zbus's drop needs it.
            Ok(rt) => rt.block_on(async {
                let bus = crate::sys::systemd::SystemBus::shared();
                crate::optimize::task::restart(&*bus, &restart_needed).await
            }),
            Err(e) => restart_needed.iter().map(|u| (u.clone(), format!("failed: {e}"))).collect(),
        };
        failed |= restarts.iter().any(|(_, o)| o != "restarted");
    }
    let out = Outcome { dry_run: args.dry_run, plan, files, restart_needed, restarts };
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
    let row = |name: &str, shown: String, source: &str, why: &str| format!("  {name:<26} {shown:<12} {source}: {why}\n");
    let value = |name: &str, v: &Value<u32>| row(name, v.value.to_string(), &v.source, &v.why);
    let mut out = format!("plan for this machine, {} tier:\n", p.tier.describe());
    out += &value("dask workers", &p.dask_workers);
    out += &value("dask threads per worker", &p.dask_threads_per_worker);
    let limit = &p.dask_memory_limit_bytes;
    out += &row("dask memory limit", human_size(limit.value), &limit.source, &limit.why);
    out += &row("OMP/MKL_NUM_THREADS", p.omp_num_threads.to_string(), "auto", "the worker's own threads");
    out += &value("OLLAMA_NUM_PARALLEL", &p.ollama_num_parallel);
    out += &value("OLLAMA_MAX_LOADED_MODELS", &p.ollama_max_loaded_models);
    out += &value("ollama GPU layers", &p.ollama_gpu_layers);
    out += "  (GPU layers are Ollama's per-model num_gpu option, with no environment variable: a recommendation, not applied)\n";
    for f in &o.files {
        out += &format!("{}: {}\n", display_path(&f.path), f.outcome);
        for c in &f.changes {
            out += &format!("  {c}\n");
        }
    }
    for (unit, outcome) in &o.restarts {
        out += &format!("{unit}: {outcome}\n");
    }
    if !o.restart_needed.is_empty() && o.restarts.is_empty() {
        let verb = if o.dry_run { "would need" } else { "needs" };
        out += &format!(
            "{} {verb} a restart to apply it (systemctl restart {}; with [optimize] apply on, cluster-ai restarts it)\n",
            o.restart_needed.join(", "),
            o.restart_needed.join(" ")
        );
    }
    out
}
