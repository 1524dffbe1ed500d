//! `cluster-ai optimize` on this machine: the plan, the env files written atomically and only
//! when their content changes, a dry run that writes nothing, pinned values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn optimize(dir: &Path, extra: &str, args: &[&str]) -> Output {
    let cfg = dir.join("config.toml");
    let text = format!("[swap]\ndir = \"{0}/swap\"\n[optimize]\nenv_dir = \"{0}/env\"\n{extra}", dir.display());
    std::fs::write(&cfg, text).unwrap();
    Command::new(common::BIN).arg("optimize").args(args).arg("--config").arg(&cfg).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn outcomes(v: &serde_json::Value) -> Vec<String> {
    v["files"].as_array().unwrap().iter().map(|f| f["outcome"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_plan_is_written_once_and_only_rewritten_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env");

    let dry = json(&optimize(dir.path(), "", &["--dry-run", "--json"]));
    assert_eq!(outcomes(&dry), ["would write", "would write"]);
    assert!(!env.exists(), "a dry run writes nothing");
    assert_eq!(dry["restart_needed"], serde_json::json!(["dask-worker.service", "ollama.service"]));

    let first = json(&optimize(dir.path(), "", &["--json"]));
    assert_eq!(outcomes(&first), ["written", "written"]);
    let cores = std::fs::read_to_string("/proc/cpuinfo").unwrap().lines().filter(|l| l.starts_with("processor")).count() as u64;
    let plan = &first["plan"];
    let (workers, threads) = (plan["dask_workers"]["value"].as_u64().unwrap(), plan["dask_threads_per_worker"]["value"].as_u64().unwrap());
    assert_eq!(workers, (cores / threads).max(1), "every core used once");
    let worker_env = std::fs::read_to_string(env.join("dask-worker.env")).unwrap();
    assert!(
        worker_env.contains(&format!("DASK_NWORKERS={workers}\n")) && worker_env.contains(&format!("DASK_NTHREADS={threads}\n")),
        "{worker_env}"
    );
    let ollama_env = std::fs::read_to_string(env.join("ollama.env")).unwrap();
    assert!(ollama_env.contains("OLLAMA_NUM_PARALLEL=") && !ollama_env.contains("GPU"), "GPU layers are never written: {ollama_env}");
    let mtime = std::fs::metadata(env.join("dask-worker.env")).unwrap().modified().unwrap();

    let again = json(&optimize(dir.path(), "", &["--json"]));
    assert_eq!(outcomes(&again), ["unchanged", "unchanged"]);
    assert_eq!(again["restart_needed"], serde_json::json!([]), "nothing changed: nothing to restart");
    assert_eq!(std::fs::metadata(env.join("dask-worker.env")).unwrap().modified().unwrap(), mtime, "not rewritten");

    // A pinned value changes one file only, and the diff names it.
    let pinned = json(&optimize(dir.path(), "dask_workers = 7\n", &["--json"]));
    assert_eq!(outcomes(&pinned), ["written", "unchanged"]);
    assert_eq!(pinned["plan"]["dask_workers"]["source"], "pinned");
    assert_eq!(pinned["files"][0]["changes"][0]["key"], "DASK_MEMORY_LIMIT", "the per-worker limit follows the worker count");
    assert!(std::fs::read_to_string(env.join("dask-worker.env")).unwrap().contains("DASK_NWORKERS=7\n"));
    assert_eq!(pinned["restart_needed"], serde_json::json!(["dask-worker.service"]));
    let names: Vec<_> = std::fs::read_dir(&env).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");

    let human = String::from_utf8(optimize(dir.path(), "", &["--dry-run"]).stdout).unwrap();
    assert!(human.contains("dask workers") && human.contains("a recommendation, not applied"), "{human}");
}

#[test]
fn bad_pins_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = optimize(dir.path(), "dask_workers = 0\nollama_gpu_layers = \"many\"\n", &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5:16: optimize.dask_workers: 0 is out of range; expected a whole number from 1 to 1024; or \"auto\""), "{err}");
    assert!(
        err.contains("optimize.ollama_gpu_layers: expected a whole number from 0 to 999, found the text \"many\"; or \"auto\""),
        "{err}"
    );
}
