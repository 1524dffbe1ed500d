//! `cluster-ai check` on this machine: figures checked against /proc, exit codes, and a real
//! cgroup memory limit that puts the machine below the minimum.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn config(dir: &Path) -> PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(&p, format!("[swap]\ndir = \"{}\"\n", dir.join("swap").display())).unwrap();
    p
}

fn check(args: &[&str], config: &Path) -> Output {
    Command::new(common::BIN).arg("check").args(args).arg("--config").arg(config).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_full_check_reports_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&["--json"], &config(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let processors = cpuinfo.lines().filter(|l| l.starts_with("processor")).count() as u64;
    assert_eq!(v["hardware"]["cpu"]["logical_cores"].as_u64(), Some(processors));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(v["hardware"]["memory"]["total_bytes"].as_u64(), Some(total_kb * 1024));
    let swap_disk = v["hardware"]["disks"].as_array().unwrap().iter().find(|d| d["role"] == "swap_dir").unwrap().clone();
    assert_eq!(swap_disk["path"].as_str(), dir.path().join("swap").to_str());
    assert!(swap_disk["write_mib_per_s"].as_f64().unwrap() > 0.0, "the full check measures the swap disk");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the write test cleaned up after itself (only config.toml)");
    assert!(!dir.path().join("swap").exists(), "check creates nothing");
    assert_eq!(v["hardware"]["kernel"]["psi"].as_bool(), Some(Path::new("/proc/pressure/memory").exists()));
    let nvml = v["hardware"]["nvml"].as_str().unwrap();
    assert!(nvml == "absent" || nvml.starts_with("driver "), "{nvml}");
    let total = v["score"]["total"].as_u64().unwrap();
    let parts: f64 = ["cpu", "memory", "disk", "gpu"].iter().map(|k| v["score"][k].as_f64().unwrap()).sum();
    assert!((total as f64 - parts).abs() <= 1.0, "the total is the sum of its parts: {total} vs {parts}");
    assert_eq!(v["meets_minimum"], true);
    let human = String::from_utf8(check(&[], &config(dir.path())).stdout).unwrap();
    for needle in ["cpu:", "memory:", "disk:", "tier:", "score:", "meets the minimum"] {
        assert!(human.contains(needle), "{needle:?} missing:\n{human}");
    }
}

#[test]
fn quick_reads_only_cheap_sources() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(&["--quick", "--json"], &config(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["quick"], true);
    assert_eq!(v["hardware"]["nvml"], "skipped (--quick)");
    assert!(v["hardware"]["disks"].as_array().unwrap().iter().all(|d| d["write_mib_per_s"].is_null()));
    assert!(v["hardware"]["services"].as_array().unwrap().iter().all(|s| s["port_answering"].is_null()));
}

#[test]
fn a_bad_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[swap]\nmin_size = true\n").unwrap();
    let out = check(&[], &bad);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:2:12: swap.min_size"));
}

/// A child memory cgroup of our own with a 2 GiB limit, removed when dropped.
struct LimitedCgroup(PathBuf);

impl Drop for LimitedCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl LimitedCgroup {
    fn new(limit: u64) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers.split(',').any(|c| c == "memory").then(|| path.to_string())
        });
        let (base, path, file) = match &v1 {
            Some(p) => ("/sys/fs/cgroup/memory", p.clone(), "memory.limit_in_bytes"),
            None => ("/sys/fs/cgroup", own.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string(), "memory.max"),
        };
        let dir = Path::new(base).join(path.trim_start_matches('/')).join(format!("cluster-ai-check-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create the test cgroup {}: {e}", dir.display()));
        let cg = LimitedCgroup(dir);
        std::fs::write(cg.0.join(file), limit.to_string()).unwrap();
        cg
    }
}

/// Issue 18 §2: a process in a memory cgroup of its own (the daemon in a unit with
/// `MemoryMax=200M`) sized the whole cluster from it: `optimize` wrote
/// `DASK_MEMORY_LIMIT=268435456` for 2 workers (512 MiB) under a 200 MiB limit. That limit is
/// the process's, not the workers' nor the node's: neither `check` nor `optimize` counts it.
#[test]
fn a_memory_cgroup_of_the_process_own_does_not_size_the_cluster() {
    if !common::require_root("a memory cgroup of the test's own") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let env_dir = dir.path().join("env");
    std::fs::write(
        &cfg,
        format!(
            "[swap]\ndir = \"{}\"\n[optimize]\nenv_dir = \"{}\"\ndask_worker_unit = \"\"\n",
            dir.path().join("swap").display(),
            env_dir.display()
        ),
    )
    .unwrap();
    let cg = LimitedCgroup::new(200 << 20);
    // The shell joins the cgroup, then becomes the command.
    let run = |args: &str| {
        let script = format!("echo $$ > {}/cgroup.procs && exec {} {args} --config {}", cg.0.display(), common::BIN, cfg.display());
        Command::new("sh").arg("-c").arg(&script).output().unwrap()
    };
    let out = run("check --quick --json");
    let v = json(&out);
    let total = v["hardware"]["memory"]["total_bytes"].as_u64().unwrap();
    assert!(v["hardware"]["memory"]["limit_bytes"].is_null(), "{v}");
    assert_eq!(v["hardware"]["memory"]["dask_workers"]["bytes"].as_u64(), Some(total), "{v}");
    assert_eq!(v["hardware"]["memory"]["dask_workers"]["source"].as_str(), Some("the host's RAM"), "{v}");
    let out = run("optimize --dry-run --json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let workers = v["plan"]["dask_workers"]["value"].as_u64().unwrap();
    let limit = &v["plan"]["dask_memory_limit_bytes"];
    assert!(workers * limit["value"].as_u64().unwrap() <= total, "{v}");
    assert!(limit["why"].as_str().unwrap().contains("(the host's RAM)"), "{v}");
    assert!(!env_dir.exists(), "--dry-run writes nothing");
}
