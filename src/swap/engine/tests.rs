//! The engine on the in-memory system: every rule that ships, without root.

use super::*;
use crate::swap::policy::Reason;
use crate::sys::swap_os::fake::{FakeFile, FakeSwapOs, GIB};

const M: u64 = 1 << 20;

fn config(swap: &str) -> Config {
    Config::parse(&format!("[swap]\ndir = \"/srv/swap\"\n{swap}")).unwrap()
}

fn engine(swap: &str) -> (Engine, FakeSwapOs) {
    let fake = FakeSwapOs::new();
    let mut e = Engine::new(&config(swap), Box::new(fake.clone()), false);
    e.start();
    (e, fake)
}

/// One look, and the decision carried out as the task would.
fn step(e: &mut Engine) -> Decision {
    let look = e.look(Instant::now()).unwrap();
    if e.should_act(&look.decision, &look.readings) {
        e.act(&look.decision, look.readings.used_percent()).unwrap();
    }
    look.decision
}

#[test]
fn the_baseline_is_made_then_memory_pressure_adds_a_file() {
    let (mut e, fake) = engine("");
    assert_eq!(e.mode, Mode::Managing);
    assert_eq!(step(&mut e), Decision::Expand { size: 2 * GIB, reason: Reason::Baseline });
    assert_eq!(fake.state().ops, ["create cluster-ai-000001.swap.partial", "swapon cluster-ai-000001.swap 50"]);
    assert_eq!(step(&mut e), Decision::Hold { why: Hold::Steady });
    // 85 % of 16 GiB: 2.4 GiB free + the 2 GiB baseline, above the 3.2 GiB the threshold keeps.
    fake.set_memory_used(85.0);
    assert_eq!(step(&mut e), Decision::Hold { why: Hold::Steady });
    fake.set_memory_used(95.0);
    assert_eq!(step(&mut e), Decision::Expand { size: GIB, reason: Reason::MemoryHigh });
    assert_eq!(fake.active(), ["cluster-ai-000001.swap", "cluster-ai-000002.swap"]);
    assert!(fake.state().ops.contains(&"swapon cluster-ai-000002.swap 49".to_string()), "each newer file one priority lower");
    assert_eq!(step(&mut e), Decision::Hold { why: Hold::Steady }, "the new file's room counts at once");
}

#[test]
fn a_kernel_that_shows_less_than_the_file_still_counts_the_baseline_made() {
    // ext4 with 1 KiB blocks: a 64M file shows as 65,512 KiB in /proc/swaps. Counted from the
    // table, the baseline looked 24 KiB short and swap never grew under pressure.
    let (mut e, fake) = engine("min_size = \"64M\"\nincrement = \"64M\"\n");
    fake.state().table_loss = 20 * 1024;
    assert_eq!(step(&mut e), Decision::Expand { size: 64 * M, reason: Reason::Baseline });
    assert_eq!(step(&mut e), Decision::Hold { why: Hold::Steady });
    fake.set_memory_used(90.0);
    assert_eq!(step(&mut e), Decision::Expand { size: 64 * M, reason: Reason::MemoryHigh });
    let status = e.status(1000).unwrap();
    assert_eq!(status.managed_total_bytes, 128 * M);
}

#[test]
fn a_min_size_in_plain_bytes_rounds_up_to_whole_mib() {
    let (mut e, fake) = engine("min_size = \"100000000\"\nincrement = \"64M\"\n");
    assert_eq!(step(&mut e), Decision::Expand { size: 96 * M, reason: Reason::Baseline });
    fake.set_memory_used(1.5);
    let status = e.status(1000).unwrap();
    assert_eq!(status.next_step, "nothing to do", "no false 'max_size is reached' at 1.5 % memory use");
    fake.set_memory_used(90.0);
    assert_eq!(step(&mut e), Decision::Expand { size: 64 * M, reason: Reason::MemoryHigh });
}

#[test]
fn sizes_from_outside_are_checked_not_wrapped() {
    let (mut e, fake) = engine("min_size = \"0\"\n");
    let err = e.expand(u64::MAX, "requested", 10.0).unwrap_err().to_string();
    assert!(err.contains("would pass swap.max_size 16G"), "{err}");
    let err = e.expand(u64::MAX - 2 * GIB + 1, "requested", 10.0).unwrap_err().to_string();
    assert!(err.contains("would pass swap.max_size"), "{err}");
    assert!(fake.state().ops.is_empty());
    let err = e.expand(1000, "requested", 10.0).unwrap_err().to_string();
    assert!(err.contains("at least 1M"), "{err}");
}

#[test]
fn a_request_past_the_disk_guard_is_refused_in_human_sizes() {
    let (mut e, fake) = engine("min_size = \"0\"\n");
    fake.state().disk = (100 * GIB, 10 * GIB + 512 * M);
    let err = e.expand(GIB, "requested", 10.0).unwrap_err().to_string();
    assert_eq!(err, "disk guard: a 1.0 GiB file would leave 9.5 GiB free, below disk_reserve 10.0 GiB on /srv/swap");
}

#[test]
fn shrink_keeps_min_size_and_refuses_what_would_not_fit() {
    let (mut e, fake) = engine("min_size = \"1G\"\nincrement = \"1G\"\n");
    step(&mut e);
    e.expand(GIB, "requested", 10.0).unwrap();
    // The newest file holds 11 GiB of pages; 12 GiB available less a tenth of 16 GiB: no.
    fake.state().files.get_mut("cluster-ai-000002.swap").unwrap().active = Some((49, 11 * GIB));
    let err = e.shrink("test").unwrap_err().to_string();
    assert!(err.contains("would not fit in 12.0 GiB of available memory"), "{err}");
    fake.state().files.get_mut("cluster-ai-000002.swap").unwrap().active = Some((49, GIB));
    assert!(e.shrink("test").unwrap().ends_with("cluster-ai-000002.swap"));
    let err = e.shrink("test").unwrap_err().to_string();
    assert!(err.contains("below swap.min_size 1G"), "{err}");
    assert_eq!(fake.active(), ["cluster-ai-000001.swap"]);
}

#[test]
fn clean_is_refused_when_memory_cannot_take_the_pages_and_restores_tuning() {
    let fake = FakeSwapOs::new();
    let mut cfg = config("min_size = \"1G\"\n");
    cfg.kernel.tune = true;
    let mut e = Engine::new(&cfg, Box::new(fake.clone()), false);
    e.start();
    assert_eq!(fake.state().tunables, crate::sys::sysctl::Tunables { swappiness: 10, vfs_cache_pressure: 50 });
    step(&mut e);
    fake.state().files.get_mut("cluster-ai-000001.swap").unwrap().active = Some((50, 15 * GIB));
    assert!(e.clean(false).unwrap_err().to_string().contains("use --force"));
    let msg = e.clean(true).unwrap();
    assert!(msg.contains("removed 1 swap file(s) from /srv/swap") && msg.contains("vm.swappiness 60"), "{msg}");
    assert!(fake.state().files.is_empty());
    assert_eq!(fake.state().tunables.swappiness, 60);
}

#[test]
fn clean_leaves_a_kernel_value_someone_else_changed_and_says_so() {
    let fake = FakeSwapOs::new();
    let mut cfg = config("");
    cfg.kernel.tune = true;
    let mut e = Engine::new(&cfg, Box::new(fake.clone()), false);
    e.start();
    fake.state().tunables.swappiness = 35;
    let msg = e.clean(true).unwrap();
    assert!(
        msg.ends_with("; vm.vfs_cache_pressure 100 restored; vm.swappiness is 35, not the 10 cluster-ai set: someone else changed it; left as it is (not put back to 60)"),
        "{msg}"
    );
    assert_eq!(fake.state().tunables, crate::sys::sysctl::Tunables { swappiness: 35, vfs_cache_pressure: 100 });
}

#[test]
fn recovery_deletes_partials_adopts_active_and_enables_what_fits() {
    let fake = FakeSwapOs::new();
    {
        let mut s = fake.state();
        s.files.insert("cluster-ai-000001.swap".into(), FakeFile { size: GIB, active: Some((50, 0)) });
        s.files.insert("cluster-ai-000002.swap".into(), FakeFile { size: GIB, active: None });
        s.files.insert("cluster-ai-000003.swap".into(), FakeFile { size: 2 * GIB, active: None });
        s.files.insert("cluster-ai-000004.swap.partial".into(), FakeFile { size: 5, active: None });
        s.files.insert("notes.txt".into(), FakeFile { size: 5, active: None });
    }
    let mut e = Engine::new(&config("max_size = \"3G\"\nmin_size = \"1G\"\n"), Box::new(fake.clone()), false);
    e.start();
    assert_eq!(fake.active(), ["cluster-ai-000001.swap", "cluster-ai-000002.swap"]);
    let names: Vec<String> = fake.state().files.keys().cloned().collect();
    assert_eq!(names, ["cluster-ai-000001.swap", "cluster-ai-000002.swap", "notes.txt"], "over max_size: deleted");
    assert!(fake.state().ops.contains(&"swapon cluster-ai-000002.swap 49".into()));
}

/// A complete file the kernel refuses for a reason of the moment (no memory for its swap map)
/// is kept; one it refuses as no swap file (EINVAL) goes.
#[test]
fn recovery_keeps_a_file_refused_for_a_reason_of_the_moment() {
    for (kind, kept) in [(std::io::ErrorKind::OutOfMemory, true), (std::io::ErrorKind::InvalidInput, false)] {
        let fake = FakeSwapOs::new();
        fake.state().files.insert("cluster-ai-000002.swap".into(), FakeFile { size: GIB, active: None });
        fake.state().fail = Some(("swapon", kind));
        let mut e = Engine::new(&config("max_size = \"3G\"\nmin_size = \"0\"\nspare = false\n"), Box::new(fake.clone()), false);
        e.start();
        assert!(fake.active().is_empty(), "{kind:?}");
        assert_eq!(fake.state().files.contains_key("cluster-ai-000002.swap"), kept, "{kind:?}");
    }
}

#[test]
fn a_failing_directory_is_named_and_logged_once_per_episode() {
    let (mut e, fake) = engine("min_size = \"64M\"\n");
    fake.state().fail = Some(("create", std::io::ErrorKind::TimedOut));
    let look = e.look(Instant::now()).unwrap();
    let err = e.act(&look.decision, 10.0).unwrap_err().to_string();
    assert!(err.contains("/srv/swap/cluster-ai-000001.swap.partial"), "the path is in the message: {err}");
    assert!(e.log_error(&err));
    assert!(!e.log_error(&err), "the same error again is not logged again");
    e.clear_error();
    assert!(e.log_error(&err), "after it cleared, a new episode is");
}

/// Where the system makes swap files impossible (btrfs RAID1 answers swapon with EINVAL, a
/// read-only mount, no fallocate, a namespace without swapon), the engine finds out at the
/// first try, says why with the fix, and goes to monitoring only: no retry at every look.
#[test]
fn an_impossible_swap_file_is_found_out_once_and_not_tried_again() {
    for (fs_btrfs, step, kind, says) in [
        (true, "swapon", std::io::ErrorKind::InvalidInput, "single data"),
        (false, "swapon", std::io::ErrorKind::InvalidInput, "refuses swap files in swap.dir"),
        (false, "create", std::io::ErrorKind::ReadOnlyFilesystem, "read-only"),
        (false, "allocate", std::io::ErrorKind::Unsupported, "cannot do what a swap file needs"),
        (false, "swapon", std::io::ErrorKind::PermissionDenied, "may not swapon"),
    ] {
        let fake = FakeSwapOs::new();
        if fs_btrfs {
            fake.state().fs = SwapFs::Btrfs;
        }
        let mut e = Engine::new(&config("min_size = \"64M\"\n"), Box::new(fake.clone()), false);
        e.start();
        fake.state().fail = Some((step, kind));
        let look = e.look(Instant::now()).unwrap();
        assert!(e.should_act(&look.decision, &look.readings));
        let err = e.act(&look.decision, 10.0).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("fix:") || err.contains("run cluster-ai on the host"), "{err}");
        assert!(matches!(&e.mode, Mode::MonitoringOnly(why) if why.contains(says)), "{:?}", e.mode);
        let ops = fake.state().ops.len();
        for _ in 0..3 {
            let look = e.look(Instant::now()).unwrap();
            assert!(!e.should_act(&look.decision, &look.readings), "not tried again");
        }
        assert_eq!(fake.state().ops.len(), ops);
        assert!(fake.active().is_empty() && fake.state().files.is_empty(), "nothing left behind");
        // A new swap.dir is looked at afresh, and so is the same one at a reload.
        assert!(e.set_config(&Config::parse("[swap]\ndir = \"/srv/other\"\nmin_size = \"64M\"\n").unwrap()));
        assert!(e.set_config(&Config::parse("[swap]\ndir = \"/srv/other\"\nmin_size = \"64M\"\n").unwrap()));
    }
}

#[test]
fn monitoring_only_shows_no_disk_guard_and_acts_on_nothing() {
    let fake = FakeSwapOs::new();
    fake.state().can_manage = false;
    fake.state().disk = (100 * GIB, GIB);
    let mut e = Engine::new(&config(""), Box::new(fake.clone()), false);
    e.start();
    assert!(matches!(&e.mode, Mode::MonitoringOnly(why) if why.contains("CAP_SYS_ADMIN")));
    let status = e.status(1000).unwrap();
    assert_eq!(status.disk_guard, None);
    let look = e.look(Instant::now()).unwrap();
    assert!(!e.should_act(&look.decision, &look.readings));
    assert!(e.expand(GIB, "requested", 1.0).unwrap_err().to_string().contains("CAP_SYS_ADMIN"));
    assert!(fake.state().ops.is_empty());
}

#[test]
fn a_refused_directory_is_monitoring_only_with_the_reason() {
    let fake = FakeSwapOs::new();
    fake.state().refuse_dir = Some("is not a directory".into());
    let mut e = Engine::new(&config(""), Box::new(fake.clone()), false);
    e.start();
    assert!(matches!(&e.mode, Mode::MonitoringOnly(why) if why.contains("swap.dir /srv/swap: is not a directory")), "{:?}", e.mode);
}

#[test]
fn dry_run_decides_but_changes_nothing() {
    let fake = FakeSwapOs::new();
    let mut e = Engine::new(&config(""), Box::new(fake.clone()), true);
    e.start();
    let look = e.look(Instant::now()).unwrap();
    assert!(matches!(look.decision, Decision::Expand { .. }));
    assert!(!e.should_act(&look.decision, &look.readings));
    assert!(e.expand(GIB, "requested", 1.0).unwrap_err().to_string().contains("dry run"));
    assert!(fake.state().ops.is_empty());
}

#[test]
fn foreign_swap_counts_for_nothing_and_is_never_touched() {
    let fake = FakeSwapOs::new();
    fake.state().foreign.push(SwapEntry {
        path: "/dev/zram0".into(),
        kind: "partition".into(),
        size_bytes: 8 * GIB,
        used_bytes: 8 * GIB,
        priority: 100,
    });
    fake.state().foreign.push(SwapEntry {
        path: "/srv/swap/mine.swap".into(),
        kind: "file".into(),
        size_bytes: GIB,
        used_bytes: 0,
        priority: 5,
    });
    fake.state().files.insert("mine.swap".into(), FakeFile { size: GIB, active: None });
    let mut e = Engine::new(&config(""), Box::new(fake.clone()), false);
    e.start();
    // 9 GiB of foreign swap, the zram one full: the baseline is still made in full.
    assert_eq!(step(&mut e), Decision::Expand { size: 2 * GIB, reason: Reason::Baseline });
    let status = e.status(1000).unwrap();
    assert_eq!(status.managed_total_bytes, 2 * GIB);
    assert_eq!(status.foreign.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(), ["/dev/zram0", "/srv/swap/mine.swap"]);
    e.clean(true).unwrap();
    let ops = fake.state().ops.join("\n");
    assert!(!ops.contains("zram0") && !ops.contains("mine.swap"), "{ops}");
    assert!(fake.state().files.contains_key("mine.swap"), "a file in swap.dir with another name is not ours");
}

/// One look, then what the task does: the decision, or the spare rule's step when it holds.
fn step_with_spare(e: &mut Engine) -> (Decision, Option<SpareStep>) {
    let look = e.look(Instant::now()).unwrap();
    if e.should_act(&look.decision, &look.readings) {
        e.act(&look.decision, look.readings.used_percent()).unwrap();
    } else if let Some(s) = look.spare {
        e.spare(s).unwrap();
    }
    (look.decision, look.spare)
}

#[test]
fn a_spare_is_made_ahead_then_enabled_with_a_rename_and_a_swapon_only() {
    let (mut e, fake) = engine("min_size = \"0\"\n");
    // 16 GiB at 60 %: 6.4 GiB available, below the spare's mark (3.2 GiB + 4 GiB).
    fake.set_memory_used(60.0);
    assert_eq!(step_with_spare(&mut e), (Decision::Hold { why: Hold::Steady }, Some(SpareStep::Make { size: GIB })));
    assert_eq!(fake.state().ops, ["create cluster-ai-spare.swap.partial"]);
    assert!(fake.active().is_empty(), "a spare is not swap");
    assert_eq!(fake.state().files["cluster-ai-spare.swap"].size, GIB);
    assert_eq!(fake.state().disk.1, 49 * GIB, "its disk is taken");
    let s = e.status(1000).unwrap();
    assert_eq!((s.managed_total_bytes, s.spare_bytes), (0, Some(GIB)));
    assert_eq!(s.spare, Some(PathBuf::from("/srv/swap/cluster-ai-spare.swap")));
    assert_eq!(step_with_spare(&mut e), (Decision::Hold { why: Hold::Steady }, None), "one spare only");
    fake.state().ops.clear();
    fake.set_memory_used(81.0);
    let (d, _) = step_with_spare(&mut e);
    assert_eq!(d, Decision::Expand { size: GIB, reason: Reason::MemoryHigh });
    assert_eq!(fake.state().ops, ["swapon cluster-ai-000001.swap 50"], "no create, no fallocate: the spare renamed");
    assert!(!fake.state().files.contains_key("cluster-ai-spare.swap"));
    // The next look makes the next spare (headroom is still under its mark).
    fake.state().ops.clear();
    assert_eq!(step_with_spare(&mut e).1, Some(SpareStep::Make { size: GIB }));
    assert_eq!(fake.state().ops, ["create cluster-ai-spare.swap.partial"]);
    assert_eq!(e.status(1000).unwrap().managed_total_bytes, GIB);
}

#[test]
fn a_leftover_spare_is_kept_its_partial_deleted_and_clean_and_stop_remove_it() {
    let fake = FakeSwapOs::new();
    {
        let mut s = fake.state();
        s.files.insert("cluster-ai-spare.swap".into(), FakeFile { size: GIB, active: None });
        s.files.insert("cluster-ai-spare.swap.partial".into(), FakeFile { size: 5, active: None });
    }
    let mut e = Engine::new(&config("min_size = \"0\"\n"), Box::new(fake.clone()), false);
    e.start();
    let names: Vec<String> = fake.state().files.keys().cloned().collect();
    assert_eq!(names, ["cluster-ai-spare.swap"], "a complete spare is kept (never enabled at start), a partial one deleted");
    assert!(fake.active().is_empty());
    assert_eq!(e.inventory().unwrap().next_seq(), 1);
    // clean removes it with the rest.
    assert!(e.clean(false).unwrap().contains("removed 1 swap file(s)"));
    assert!(fake.state().files.is_empty());
    // And a stop removes it; the managed files stay active on purpose.
    let (mut e, fake) = engine("min_size = \"1G\"\n");
    fake.set_memory_used(65.0);
    step_with_spare(&mut e);
    step_with_spare(&mut e);
    assert!(fake.state().files.contains_key("cluster-ai-spare.swap"));
    e.log_left_active();
    let names: Vec<String> = fake.state().files.keys().cloned().collect();
    assert_eq!(names, ["cluster-ai-000001.swap"]);
    assert_eq!(fake.active(), ["cluster-ai-000001.swap"]);
}

#[test]
fn a_spare_that_fails_to_enable_is_deleted_and_the_error_said() {
    let (mut e, fake) = engine("min_size = \"0\"\n");
    fake.set_memory_used(60.0);
    step_with_spare(&mut e);
    fake.state().fail = Some(("swapon", std::io::ErrorKind::Other));
    fake.set_memory_used(81.0);
    let look = e.look(Instant::now()).unwrap();
    assert!(e.act(&look.decision, 81.0).is_err());
    assert!(fake.state().files.is_empty(), "neither the spare nor its managed name is left");
    assert_eq!(fake.state().disk.1, 50 * GIB);
}

#[test]
fn dry_run_and_swap_spare_off_make_no_spare() {
    let (mut e, fake) = engine("min_size = \"0\"\nspare = false\n");
    fake.set_memory_used(60.0);
    assert_eq!(step_with_spare(&mut e).1, None);
    let fake2 = FakeSwapOs::new();
    let mut d = Engine::new(&config("min_size = \"0\"\n"), Box::new(fake2.clone()), true);
    d.start();
    fake2.set_memory_used(60.0);
    let look = d.look(Instant::now()).unwrap();
    assert_eq!(look.spare, Some(SpareStep::Make { size: GIB }), "decided…");
    assert!(d.spare(SpareStep::Make { size: GIB }).is_err(), "…but a dry run changes nothing");
    assert!(fake.state().files.is_empty() && fake2.state().files.is_empty());
}

#[test]
fn a_spare_that_cannot_be_made_is_tried_again_only_after_a_minute_and_a_read_only_dir_is_found_out_once() {
    let (mut e, fake) = engine("min_size = \"0\"\n");
    fake.set_memory_used(60.0);
    fake.state().fail = Some(("allocate", std::io::ErrorKind::StorageFull));
    let look = e.look(Instant::now()).unwrap();
    assert!(e.spare(look.spare.unwrap()).unwrap_err().to_string().contains("next try in 60 s"));
    assert!(fake.state().files.is_empty(), "its partial is deleted");
    assert_eq!(e.look(Instant::now()).unwrap().spare, None, "no new try at the next look");
    // A decision to add a file is not held back by it.
    fake.set_memory_used(81.0);
    assert_eq!(step(&mut e), Decision::Expand { size: GIB, reason: Reason::MemoryHigh });
    let (mut e, fake) = engine("min_size = \"0\"\n");
    fake.set_memory_used(60.0);
    fake.state().fail = Some(("create", std::io::ErrorKind::ReadOnlyFilesystem));
    let look = e.look(Instant::now()).unwrap();
    assert!(e.spare(look.spare.unwrap()).unwrap_err().to_string().contains("read-only"));
    assert!(matches!(e.mode, Mode::MonitoringOnly(_)));
}
