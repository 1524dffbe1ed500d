use super::*;
use crate::config::Config;
use crate::optimize::profile::test_machine as machine;
use crate::sys::hardware::Gpu;

fn cfg() -> OptimizeConfig {
    Config::default().optimize
}

fn gpu(vram: u64) -> Gpu {
    Gpu { vendor: "nvidia".into(), name: "test".into(), vram_bytes: Some(vram), source: "nvml".into() }
}

#[test]
fn auto_values_follow_the_documented_rules() {
    // 2 cores, 4 GiB: 2 workers of 1 thread, 80 % of 4 GiB / 2 each.
    let p = plan(&machine(2, 4 * GIB), &cfg());
    assert_eq!((p.dask_workers.value, p.dask_threads_per_worker.value, p.omp_num_threads), (2, 1, 1));
    assert_eq!(p.dask_memory_limit_bytes.value, 4 * GIB / 10 * 8 / 2 / MIB * MIB);
    assert_eq!((p.ollama_num_parallel.value, p.ollama_max_loaded_models.value, p.ollama_gpu_layers.value), (1, 1, 0));
    assert_eq!(p.dask_memory_limit_bytes.why, "80% of 4.0 GiB (the host's RAM) / 2 workers");
    // 16 cores, 64 GiB, a 16 GiB GPU: 8 workers of 2 threads; advanced tier; 64 layers.
    let mut big = machine(16, 64 * GIB);
    big.gpus.push(gpu(16 * GIB));
    let p = plan(&big, &cfg());
    assert_eq!((p.tier, p.dask_workers.value, p.dask_threads_per_worker.value), (Tier::Advanced, 8, 2));
    assert_eq!((p.ollama_num_parallel.value, p.ollama_max_loaded_models.value, p.ollama_gpu_layers.value), (2, 3, 64));
    big.gpus.push(gpu(80 * GIB));
    assert_eq!(plan(&big, &cfg()).ollama_gpu_layers.value, 999, "the largest GPU decides: every layer");
    // Tiny: 256 MiB each would be 4 x 256 MiB = all of 1 GiB: 3 workers fit in its 80 %.
    let p = plan(&machine(8, GIB), &cfg());
    assert_eq!((p.dask_workers.value, p.dask_memory_limit_bytes.value), (3, 273 * MIB));
    assert_eq!(p.dask_workers.why, "8 logical cores / 2 threads, but 3 fit 256.0 MiB each in 80% of 1.0 GiB (the host's RAM)");
}

#[test]
fn pinned_values_win_and_say_so() {
    let mut c = cfg();
    c.dask_workers = Some(3);
    c.dask_memory_limit = Some(2 * GIB);
    c.ollama_gpu_layers = Some(12);
    let p = plan(&machine(8, 32 * GIB), &c);
    assert_eq!((p.dask_workers.value, p.dask_workers.source.as_str()), (3, "pinned"));
    assert_eq!(p.dask_memory_limit_bytes.value, 2 * GIB);
    assert_eq!(p.ollama_gpu_layers.value, 12);
    assert_eq!(p.dask_threads_per_worker.source, "auto");
}

#[test]
fn env_files_are_stable_and_diffed_by_key() {
    let p = plan(&machine(4, 8 * GIB), &cfg());
    let files = env_files(&p, &cfg());
    assert_eq!(files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["dask-worker.env", "ollama.env"]);
    let text = render(&files[0], None);
    assert_eq!(render(&env_files(&plan(&machine(4, 8 * GIB), &cfg()), &cfg())[0], None), text, "the same plan, the same bytes");
    assert_eq!(render(&files[0], Some(&text)), text, "written again: the same bytes");
    assert!(text.starts_with("# Written by `cluster-ai optimize` for dask-worker.service"));
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        lines,
        ["DASK_MEMORY_LIMIT=3435134976", "DASK_NTHREADS=2", "DASK_NWORKERS=2", "MKL_NUM_THREADS=2", "OMP_NUM_THREADS=2"],
        "{text}"
    );
    assert!(!files[1].vars.contains_key("OLLAMA_NUM_GPU"), "num_gpu has no environment variable: never written");
    assert!(diff(Some(&text), &files[0]).is_empty());
    let all_new = diff(None, &files[0]);
    assert_eq!(all_new.len(), 5);
    assert!(all_new.iter().all(|c| c.from.is_none()));
    assert_eq!(all_new[0].to_string(), "DASK_MEMORY_LIMIT: (unset) -> 3435134976");
    let edited = text.replace("DASK_NWORKERS=2", "DASK_NWORKERS=\"7\"");
    assert_eq!(diff(Some(&edited), &files[0]), [Change { key: "DASK_NWORKERS".into(), from: Some("7".into()), to: "2".into() }]);
    assert_eq!(parse("# c\n; c\n\nA = 'x y'\nnoequals\n"), BTreeMap::from([("A".to_string(), "x y".to_string())]));
}

/// A variable put in the file by hand (a password the worker needs) is not the plan's: it is
/// kept as it was, in no change, so in no log line and no `status`.
#[test]
fn lines_the_plan_does_not_own_are_kept_and_never_shown() {
    let files = env_files(&plan(&machine(4, 8 * GIB), &cfg()), &cfg());
    let old_header = "# Written by `cluster-ai optimize` for dask-worker.service; edits are replaced. Pin values in [optimize].\n";
    let by_hand = format!("{old_header}DB_PASSWORD=hunter2\nDASK_NWORKERS=7\n# the scheduler's token\nTOKEN='a=b'\n");
    let changes = diff(Some(&by_hand), &files[0]);
    assert_eq!(
        changes.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        ["DASK_MEMORY_LIMIT", "DASK_NTHREADS", "DASK_NWORKERS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"]
    );
    let shown: String = changes.iter().map(|c| format!("{c}\n")).collect();
    assert!(!shown.contains("hunter2") && !shown.contains("DB_PASSWORD") && !shown.contains("a=b"), "{shown}");
    let text = render(&files[0], Some(&by_hand));
    let (ours, kept) = text.split_once("\n\n").unwrap();
    assert_eq!(ours.lines().count(), 6, "the header and the plan's five: {text}");
    assert!(ours.contains("DASK_NWORKERS=2") && !ours.contains("edits are replaced"), "{text}");
    assert_eq!(kept, "DB_PASSWORD=hunter2\n# the scheduler's token\nTOKEN='a=b'\n");
    assert_eq!(parse(&text)["DB_PASSWORD"], "hunter2", "systemd still reads it");
    assert_eq!(render(&files[0], Some(&text)), text, "and the next write changes nothing");
}

mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::text_like;

    /// A value as the plan writes them, or as an admin might: no surrounding space or quotes,
    /// on one line.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9]{1,20}", "[!-~]([ -~]{0,30}[!-~])?"]
            .prop_filter("no quotes at the ends", |v| !v.starts_with(['"', '\'']) && !v.ends_with(['"', '\'']))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// An env file edited by hand, cut, or garbage: variables with trimmed keys and values,
        /// each on one line.
        #[test]
        fn any_env_text_is_variables(t in text_like("# Written by `cluster-ai optimize`\nDASK_NWORKERS=2\nDASK_MEMORY_LIMIT=3435134976\nA = 'x y'\n")) {
            for (k, v) in parse(&t) {
                prop_assert!(!k.contains('\n') && !v.contains('\n') && k.trim() == k, "{k:?}={v:?}");
                prop_assert!(!k.starts_with(['#', ';']), "{k:?}");
            }
        }

        /// What render writes, parse reads back, so an unchanged plan is no change.
        #[test]
        fn rendered_files_parse_back(vars in prop::collection::btree_map("[A-Z_][A-Z0-9_]{0,20}", value(), 0..12), unit in prop::option::of("[a-z-]{1,12}\\.service")) {
            let file = EnvFile { name: "x.env".into(), unit, vars };
            prop_assert_eq!(&parse(&render(&file, None)), &file.vars);
            prop_assert!(diff(Some(&render(&file, None)), &file).is_empty());
        }
    }
}

/// Issue 18 §2: the daemon in a 200 MiB memory cgroup on a 23.5 GiB host wrote
/// DASK_MEMORY_LIMIT=268435456 and 2 workers x 256 MiB = 512 MiB, more than the 200 MiB it
/// read. The daemon's own cgroup is not the workers': they get the host's RAM.
#[test]
fn the_daemons_own_cgroup_does_not_size_the_workers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::write(root.join("proc/self/cgroup"), "0::/system.slice/cluster-ai.service\n").unwrap();
    let total_kib = 23 * 1024 * 1024 + 512 * 1024;
    std::fs::write(
        root.join("proc/meminfo"),
        format!("MemTotal: {total_kib} kB\nMemAvailable: {total_kib} kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"),
    )
    .unwrap();
    std::fs::write(root.join("proc/cpuinfo"), "processor : 0\n\nprocessor : 1\n").unwrap();
    let cg = root.join("sys/fs/cgroup/system.slice/cluster-ai.service");
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(root.join("sys/fs/cgroup/cgroup.controllers"), "cpu memory\n").unwrap();
    std::fs::write(cg.join("memory.max"), format!("{}\n", 200 * MIB)).unwrap();
    let config = Config::default();
    let profile = crate::optimize::profile::gather(&config, root, crate::optimize::profile::Sources::QUICK).unwrap();
    assert_eq!((profile.memory.limit_bytes, profile.memory.dask_workers.bytes), (None, total_kib * 1024));
    let p = plan(&profile, &config.optimize);
    assert_eq!(p.dask_workers.value, 2);
    assert_eq!(p.dask_memory_limit_bytes.value, total_kib * 1024 / 10 * 8 / 2 / MIB * MIB);
    assert_eq!(p.dask_memory_limit_bytes.why, "80% of 23.5 GiB (the host's RAM) / 2 workers");
    // The same daemon in a container whose own limit is 200 MiB: everything shares it, so the
    // workers get one worker's worth of it, and never more than it.
    std::fs::write(root.join("sys/fs/cgroup/memory.max"), format!("{}\n", 200 * MIB)).unwrap();
    let profile = crate::optimize::profile::gather(&config, root, crate::optimize::profile::Sources::QUICK).unwrap();
    let p = plan(&profile, &config.optimize);
    assert_eq!((p.dask_workers.value, p.dask_memory_limit_bytes.value), (1, 160 * MIB));
    assert_eq!(p.dask_memory_limit_bytes.why, "80% of 200.0 MiB (the container's memory.max) / 1 workers");
}

/// The worker unit's own MemoryMax=/MemoryHigh= (read through systemd) or its cgroup's
/// memory.max size the workers, the tightest winning, and the "why" names it.
#[tokio::test]
async fn the_worker_units_limit_sizes_the_workers() {
    use crate::optimize::profile::set_worker_unit;
    use crate::sys::systemd::{fake::FakeServiceManager, UnitMemory};
    let t = tempfile::tempdir().unwrap();
    let cg = t.path().join("sys/fs/cgroup");
    std::fs::create_dir_all(cg.join("system.slice/dask-worker.service")).unwrap();
    std::fs::write(cg.join("cgroup.controllers"), "memory\n").unwrap();
    let systemd = FakeServiceManager::new();
    systemd.add_unit("dask-worker.service", "active", "running");
    let memory =
        UnitMemory { memory_max: Some(200 * MIB), memory_high: None, control_group: Some("/system.slice/dask-worker.service".into()) };
    systemd.set_memory("dask-worker.service", memory.clone());
    let mut c = Config::default();
    c.optimize.dask_worker_unit = Some("dask-worker.service".into());
    let read = crate::optimize::task::worker_unit_memory(&*systemd, &c).await;
    assert_eq!(read, Some(("dask-worker.service".to_string(), Ok(Some(memory)))));
    let planned = |read: Result<Option<UnitMemory>, String>| {
        let mut m = machine(4, 23 * GIB + GIB / 2);
        set_worker_unit(&mut m, t.path(), "dask-worker.service", read);
        let p = plan(&m, &c.optimize);
        (p.dask_workers.value, p.dask_memory_limit_bytes.value, p.dask_memory_limit_bytes.why)
    };
    let (workers, limit, why) = planned(read.unwrap().1);
    assert_eq!((workers, limit), (1, 160 * MIB));
    assert!(u64::from(workers) * limit <= 200 * MIB);
    assert_eq!(why, "80% of 200.0 MiB (dask-worker.service MemoryMax=) / 1 workers");
    // MemoryHigh= lower than MemoryMax=: the throttling point decides.
    let high = UnitMemory { memory_high: Some(GIB), memory_max: Some(2 * GIB), control_group: None };
    assert_eq!(planned(Ok(Some(high))), (2, 409 * MIB, "80% of 1.0 GiB (dask-worker.service MemoryHigh=) / 2 workers".into()));
    // No limit on the unit, one on its slice: the cgroup's walk finds it.
    std::fs::write(cg.join("system.slice/memory.max"), format!("{}\n", 2 * GIB)).unwrap();
    let free = UnitMemory { control_group: Some("/system.slice/dask-worker.service".into()), ..UnitMemory::default() };
    let (workers, limit, why) = planned(Ok(Some(free)));
    assert_eq!((workers, limit), (2, 819 * MIB));
    assert!(why.contains("memory.max of dask-worker.service's cgroup /system.slice/dask-worker.service"), "{why}");
    // systemd not reachable: the host's RAM, and the why says so.
    let (_, _, why) = planned(Err("cannot reach systemd".into()));
    assert!(why.contains("the host's RAM (dask-worker.service's limits unknown: cannot reach systemd)"), "{why}");
}

mod budget_props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the workers' memory, cores and pinned worker count: never more planned
        /// than that memory, and the why names the number it used.
        #[test]
        fn never_more_than_the_limit(cores in 1u32..256, budget_mib in 2u64..1_048_576, pinned in prop::option::of(1u32..64)) {
            let mut m = machine(cores, 1 << 40);
            m.memory.dask_workers = crate::optimize::profile::WorkerMemory { bytes: budget_mib * MIB, source: "test".into() };
            let mut c = cfg();
            c.dask_workers = pinned;
            let p = plan(&m, &c);
            let total = u64::from(p.dask_workers.value) * p.dask_memory_limit_bytes.value;
            prop_assert!(p.dask_memory_limit_bytes.value > 0);
            prop_assert!(total <= budget_mib * MIB, "{} x {} > {budget_mib} MiB", p.dask_workers.value, p.dask_memory_limit_bytes.value);
            let shown = human_size(budget_mib * MIB);
            prop_assert!(p.dask_memory_limit_bytes.why.contains(&shown), "{}", p.dask_memory_limit_bytes.why);
        }
    }
}
