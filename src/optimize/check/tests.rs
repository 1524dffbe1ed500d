use super::*;
use crate::optimize::profile::test_machine as machine;
use crate::sys::hardware::Gpu;

const G: u64 = 1 << 30;

#[test]
fn the_seed_tier_table_with_the_lower_of_cores_and_memory() {
    let cases = [
        (1, 16 * G, Tier::BelowMinimum),
        (2, 3 * G, Tier::BelowMinimum),
        (2, 15 * G / 4, Tier::Basic), // a "4 GB" machine shows about 3.8 GiB
        (4, 4 * G, Tier::Basic),
        (4, 15 * G / 2, Tier::Intermediate),
        (8, 12 * G, Tier::Intermediate),
        (8, 31 * G / 2, Tier::Advanced),
        (64, 512 * G, Tier::Advanced),
    ];
    for (cores, mem, want) in cases {
        assert_eq!(tier(&machine(cores, mem)).0, want, "{cores} cores, {mem} bytes");
    }
    let (_, reasons) = tier(&machine(1, 3 * G));
    assert_eq!(reasons, ["1 logical core(s); the minimum is 2", "3.0 GiB of memory; the minimum is 4 GB"]);
    let (_, reasons) = tier(&machine(16, 12 * G));
    assert_eq!(reasons, ["12.0 GiB of memory keep it intermediate (4-8 cores, 8-16 GB)"]);
}

#[test]
fn a_cgroup_limit_decides_the_tier_and_is_warned_about() {
    let mut p = machine(16, 64 * G);
    p.memory.limit_bytes = Some(2 * G);
    p.memory.effective_bytes = 2 * G;
    let cfg = Config::default();
    let r = report(p, &cfg, true, 1.0);
    assert_eq!((r.tier, r.meets_minimum, r.recommended.clone()), (Tier::BelowMinimum, false, None));
    assert_eq!(r.reasons, ["2.0 GiB of memory (the container's memory limit); the minimum is 4 GB"]);
    assert!(
        r.warnings[0].starts_with("a memory limit of 2.0 GiB applies (cgroup memory.max), below the 64.0 GiB of RAM"),
        "{:?}",
        r.warnings
    );
}

#[test]
fn the_score_follows_its_documented_formula() {
    let cfg = Config::default(); // max 16G, reserve 10 %
    let p = machine(8, 16 * G);
    let s = score(&p, &cfg);
    // cpu 30*8/16 = 15; memory 35*16/32 = 17.5; disk: 300 GiB free for 16 + 50 GiB: 20; gpu 0.
    assert_eq!((s.cpu, s.memory, s.disk, s.gpu, s.total), (15.0, 17.5, 20.0, 0.0, 53));
    let mut hdd = p.clone();
    hdd.disks[0].rotational = Some(true);
    assert_eq!(score(&hdd, &cfg).disk, 10.0);
    let mut measured = p.clone();
    measured.disks[0].write_mib_per_s = Some(100.0);
    assert_eq!(score(&measured, &cfg).disk, 5.0, "100 MiB/s of 400: 0.25");
    let mut full = p.clone();
    full.disks[0].available_bytes = 33 * G; // half of 16 + 50 GiB
    assert_eq!(score(&full, &cfg).disk, 10.0);
    let mut big = machine(64, 1024 * G);
    big.gpus.push(Gpu { vendor: "nvidia".into(), name: "big".into(), vram_bytes: Some(80 * G), source: "nvml".into() });
    assert_eq!(score(&big, &cfg).total, 100);
    assert_eq!(score(&big, &cfg).formula, FORMULA);
}

#[test]
fn warnings_a_user_can_act_on() {
    let cfg = Config::default();
    let mut p = machine(4, 8 * G);
    assert!(warnings(&p, &cfg).is_empty(), "{:?}", warnings(&p, &cfg));
    p.disks[0].available_bytes = 60 * G; // 60 - 50 reserve = 10 < 16
    p.disks[0].rotational = Some(true);
    p.kernel.psi = false;
    p.kernel.swap_files_supported = false;
    p.kernel.swap_dir_filesystem = "tmpfs (it lives in memory: swapping to it frees nothing)".into();
    p.nvml = "failed: nvmlInit_v2 returned 9".into();
    let w = warnings(&p, &cfg);
    assert_eq!(w.len(), 5, "{w:?}");
    assert!(w[0].contains("cannot swap to a file there (tmpfs"));
    assert!(
        w[1].starts_with("no swap headroom: 60.0 GiB free") && w[1].contains("room for 10.0 GiB of swap, below swap.max_size 16.0 GiB"),
        "{}",
        w[1]
    );
    assert!(w[2].contains("rotating disk"));
    assert!(w[3].contains("PSI"));
    assert!(w[4].contains("nvmlInit_v2 returned 9"));
}

/// `check` and `optimize` agree: what check recommends is the optimizer's plan, so a machine
/// without a GPU is told 0 GPU layers (CPU only), not the seed table's 10.
#[test]
fn check_recommends_what_optimize_plans() {
    let cfg = Config::default();
    let cpu_only = machine(4, 8 * G);
    let r = report(cpu_only.clone(), &cfg, true, 0.0).recommended.unwrap();
    let p = crate::optimize::plan::plan(&cpu_only, &cfg.optimize);
    assert_eq!(r, p.recommended());
    assert_eq!(r.ollama_gpu_layers, 0);
    let mut gpu = machine(8, 32 * G);
    gpu.gpus.push(Gpu { vendor: "nvidia".into(), name: "x".into(), vram_bytes: Some(8 * G), source: "nvml".into() });
    assert_eq!(report(gpu, &cfg, true, 0.0).recommended.unwrap().ollama_gpu_layers, 32);
    assert_eq!(report(machine(1, 2 * G), &cfg, true, 0.0).recommended, None, "below the minimum: none");
}

#[test]
fn recommended_settings_are_the_seed_table() {
    assert_eq!(recommended(Tier::BelowMinimum), None);
    let b = recommended(Tier::Basic).unwrap();
    assert_eq!(
        (b.dask_workers, b.dask_threads_per_worker, b.dask_memory_limit_bytes, b.ollama_gpu_layers, b.ollama_max_loaded_models),
        (2, 1, 1536 << 20, 10, 1)
    );
    let a = recommended(Tier::Advanced).unwrap();
    assert_eq!(
        (a.dask_workers, a.dask_threads_per_worker, a.dask_memory_limit_bytes, a.ollama_gpu_layers, a.ollama_max_loaded_models),
        (6, 2, 4 << 30, 35, 3)
    );
}

#[test]
fn the_json_schema_keys_are_pinned() {
    let r = report(machine(4, 8 * G), &Config::default(), false, 12.5);
    let v = serde_json::to_value(&r).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&v),
        ["gathered_in_ms", "hardware", "meets_minimum", "quick", "reasons", "recommended", "schema_version", "score", "tier", "warnings"]
    );
    assert_eq!(keys(&v["hardware"]), ["cpu", "disks", "gpus", "kernel", "memory", "nvml", "services"]);
    assert_eq!(keys(&v["hardware"]["cpu"]), ["logical_cores", "model", "physical_cores"]);
    assert_eq!(keys(&v["hardware"]["memory"]), ["dask_workers", "effective_bytes", "limit_bytes", "swap_total_bytes", "total_bytes"]);
    assert_eq!(keys(&v["hardware"]["disks"][0]), ["available_bytes", "path", "role", "rotational", "total_bytes", "write_mib_per_s"]);
    assert_eq!(keys(&v["hardware"]["kernel"]), ["psi", "swap_dir_filesystem", "swap_files_supported"]);
    assert_eq!(keys(&v["score"]), ["cpu", "disk", "formula", "gpu", "memory", "total"]);
    assert_eq!(
        keys(&v["recommended"]),
        ["dask_memory_limit_bytes", "dask_threads_per_worker", "dask_workers", "ollama_gpu_layers", "ollama_max_loaded_models"]
    );
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["tier"], "intermediate");
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}
