use super::*;
use crate::config::Config;

const G: u64 = 1 << 30;

fn cfg() -> SwapConfig {
    Config::default().swap // min 2G, max 16G, step 1G, 80 %, check 30 s, reserve 10 %, shrink < 60 %, calm 5 min
}

/// Memory at `pct` percent used of 25 GiB (exact percentages), at `t` seconds.
fn at(t0: Instant, t: u64, pct: u64) -> Readings {
    let total = 25 * G;
    Readings { now: t0 + Duration::from_secs(t), mem_total: total, mem_available: total - total / 100 * pct }
}

fn books(managed: u64, used: u64, newest: Option<(u64, u64)>) -> Books {
    Books { managed_total: managed, managed_used: used, newest, disk: Some((100 * G, 80 * G)), spare: None }
}

/// One case: state carried over from the previous row of the same table.
struct Case {
    t: u64,
    pct: u64,
    books: Books,
    expect: Decision,
}

fn run(cfg: &SwapConfig, cases: &[Case]) {
    let t0 = Instant::now();
    let mut st = PolicyState::default();
    for (i, c) in cases.iter().enumerate() {
        let d = decide(cfg, &at(t0, c.t, c.pct), &c.books, &mut st);
        assert_eq!(d, c.expect, "row {i} (t={}s, {}%)", c.t, c.pct);
        // The state updates the task makes after carrying a decision out.
        let now = t0 + Duration::from_secs(c.t);
        match d {
            Decision::Expand { .. } => {}
            Decision::Shrink => st.shrunk(now),
            Decision::Hold { .. } => {}
        }
    }
}

fn expand(size: u64, reason: Reason) -> Decision {
    Decision::Expand { size, reason }
}
fn hold(why: Hold) -> Decision {
    Decision::Hold { why }
}

#[test]
fn baseline_then_a_file_only_when_the_headroom_is_below_what_the_threshold_keeps() {
    // 25 GiB of RAM at 80 %: the threshold keeps 5 GiB of headroom (MemAvailable + free managed swap).
    let mut c = cfg();
    c.max_size = 4 * G;
    run(
        &c,
        &[
            Case { t: 0, pct: 10, books: books(0, 0, None), expect: expand(2 * G, Reason::Baseline) },
            Case { t: 1, pct: 10, books: books(G, 0, Some((G, 0))), expect: expand(G, Reason::Baseline) },
            Case { t: 2, pct: 70, books: books(2 * G, 0, Some((2 * G, 0))), expect: hold(Hold::Steady) },
            // Past the threshold, but 5 GiB free + 2 GiB of empty managed swap: no new file.
            Case { t: 3, pct: 80, books: books(2 * G, 0, Some((2 * G, 0))), expect: hold(Hold::Steady) },
            Case { t: 4, pct: 88, books: books(2 * G, 0, Some((2 * G, 0))), expect: hold(Hold::Steady) },
            // 2.5 GiB free + 2 GiB of swap < 5 GiB: one increment.
            Case { t: 5, pct: 90, books: books(2 * G, 0, Some((2 * G, 0))), expect: expand(G, Reason::MemoryHigh) },
            // The new file counts at once: no second file while it is empty.
            Case { t: 6, pct: 90, books: books(3 * G, 0, Some((G, 0))), expect: hold(Hold::Steady) },
            Case { t: 7, pct: 95, books: books(3 * G, G, Some((G, 0))), expect: expand(G, Reason::MemoryHigh) },
            Case {
                t: 8,
                pct: 99,
                books: books(4 * G, 4 * G - 1, Some((G, G))),
                expect: hold(Hold::AtMax { max_size: 4 * G, managed: 4 * G }),
            },
        ],
    );
}

const M: u64 = 1 << 20;

/// Memory of a small machine: `total` and `available` MiB, at `ms` milliseconds.
fn small(t0: Instant, ms: u64, total: u64, available: u64) -> Readings {
    Readings { now: t0 + Duration::from_millis(ms), mem_total: total * M, mem_available: available * M }
}

#[test]
fn on_a_small_machine_the_burst_reserve_applies_below_the_threshold() {
    // 512 MiB of RAM, min_size 0: the threshold keeps 102 MiB, the reserve (1 GiB/s for 250 ms)
    // is 256 MiB and is what applies. Rows are (ms, available MiB, books, expected).
    let mut c = cfg();
    c.min_size = 0;
    let t0 = Instant::now();
    let mut st = PolicyState::default();
    let rows = [
        (0, 400, books(0, 0, None), hold(Hold::Steady)),
        (1000, 257, books(0, 0, None), hold(Hold::Steady)),
        (2000, 255, books(0, 0, None), expand(G, Reason::Burst)),
        (3000, 200, books(G, 0, Some((G, 0))), hold(Hold::Steady)),
        // 60 MiB free and 224 MiB of managed swap free: still above the reserve.
        (4000, 60, books(G, 800 * M, Some((G, 800 * M))), hold(Hold::Steady)),
        (5000, 50, books(G, 900 * M, Some((G, 900 * M))), expand(G, Reason::MemoryHigh)),
    ];
    for (i, (ms, avail, b, want)) in rows.into_iter().enumerate() {
        assert_eq!(decide(&c, &small(t0, ms, 512, avail), &b, &mut st), want, "row {i}");
    }
}

#[test]
fn a_fall_faster_than_planned_for_raises_the_growth_and_the_reserve() {
    // 4 GiB at memory_threshold 95: the threshold keeps 205 MiB, the reserve is what counts.
    let mut c = cfg();
    c.min_size = 0;
    c.memory_threshold = 95;
    let t0 = Instant::now();
    let mut st = PolicyState::default();
    let none = books(0, 0, None);
    assert_eq!(decide(&c, &small(t0, 0, 4096, 3584), &none, &mut st), hold(Hold::Steady));
    let calm_poll = poll_interval(&c, &small(t0, 0, 4096, 3584), &none, &st);
    assert_eq!(st.growth(), FASTEST_GROWTH);
    // 300 MiB in 100 ms: 3 GiB/s, so the reserve is 750 MiB.
    assert_eq!(decide(&c, &small(t0, 100, 4096, 3284), &none, &mut st), hold(Hold::Steady));
    assert_eq!(st.growth(), 3000 * M, "measured between the two looks");
    let fast_poll = poll_interval(&c, &small(t0, 100, 4096, 3284), &none, &st);
    assert!(fast_poll < calm_poll / 2, "{fast_poll:?} vs {calm_poll:?}");
    // 700 MiB left: above the planned-for 256 MiB, below the measured reserve.
    assert_eq!(decide(&c, &small(t0, 300, 4096, 700), &none, &mut st), expand(G, Reason::Burst));
    // A steady look: back to the planned-for growth.
    assert_eq!(decide(&c, &small(t0, 400, 4096, 700), &books(G, 0, Some((G, 0))), &mut st), hold(Hold::Steady));
    assert_eq!(st.growth(), FASTEST_GROWTH);
    // Removing a file takes 1 GiB of headroom at once, but no memory use grew: not a burst.
    // (Seen in the burst VM: the calm shrink measured as a fall of 1 GiB in 0.5 s re-added it.)
    assert_eq!(decide(&c, &small(t0, 900, 4096, 3000), &books(0, 0, None), &mut st), hold(Hold::Steady));
    assert_eq!(st.growth(), FASTEST_GROWTH);
    // A swapoff moves 500 MiB of used swap into RAM: MemAvailable falls, nothing grew.
    let mut st = PolicyState::default();
    decide(&c, &small(t0, 0, 4096, 3000), &books(2 * G, 500 * M, Some((G, 500 * M))), &mut st);
    decide(&c, &small(t0, 100, 4096, 2500), &books(G, 0, Some((G, 0))), &mut st);
    assert_eq!(st.growth(), FASTEST_GROWTH);
}

#[test]
fn the_last_step_is_cut_to_max_size_and_whole_mib() {
    let mut c = cfg();
    c.max_size = (3 * G) + (512 << 20) + 1234;
    run(&c, &[Case { t: 0, pct: 95, books: books(3 * G, 0, None), expect: expand(512 << 20, Reason::MemoryHigh) }]);
}

#[test]
fn disk_guard_blocks_growth_and_says_by_how_much() {
    let mut b = books(2 * G, 0, Some((2 * G, 0)));
    b.disk = Some((100 * G, 10 * G + G / 2)); // 10 % reserve = 10 GiB: a 1 GiB file would leave 9.5 GiB
    let d = decide(&cfg(), &at(Instant::now(), 0, 90), &b, &mut PolicyState::default());
    assert_eq!(d, hold(Hold::DiskGuard { size: G, available: 10 * G + G / 2, reserve: 10 * G }));
    assert!(d.describe().contains("below disk_reserve 10.0 GiB"), "{}", d.describe());
    // An absolute reserve.
    let mut c = cfg();
    c.disk_reserve = crate::config::DiskReserve::Bytes(G);
    assert_eq!(decide(&c, &at(Instant::now(), 0, 90), &b, &mut PolicyState::default()), expand(G, Reason::MemoryHigh));
    // The baseline is guarded too.
    b.managed_total = 0;
    assert!(matches!(
        decide(&cfg(), &at(Instant::now(), 0, 5), &b, &mut PolicyState::default()),
        Decision::Hold { why: Hold::DiskGuard { .. } }
    ));
}

#[test]
fn shrink_hysteresis_min_size_and_fit() {
    let four = books(4 * G, 0, Some((G, 0)));
    run(
        &cfg(),
        &[
            Case { t: 0, pct: 59, books: four, expect: hold(Hold::Calming { shrink_in_ms: 300_000 }) },
            Case { t: 299, pct: 59, books: four, expect: hold(Hold::Calming { shrink_in_ms: 1000 }) },
            // A rise above shrink_threshold (still below memory_threshold) restarts the calm.
            Case { t: 300, pct: 65, books: four, expect: hold(Hold::Steady) },
            Case { t: 301, pct: 50, books: four, expect: hold(Hold::Calming { shrink_in_ms: 300_000 }) },
            Case { t: 601, pct: 50, books: four, expect: Decision::Shrink },
            // One file at a time: the calm starts over after a shrink.
            Case { t: 602, pct: 50, books: books(3 * G, 0, Some((G, 0))), expect: hold(Hold::Calming { shrink_in_ms: 299_000 }) },
            Case { t: 901, pct: 50, books: books(3 * G, 0, Some((G, 0))), expect: Decision::Shrink },
            // Never below min_size (2G): the 2G baseline stays.
            Case { t: 2000, pct: 10, books: books(2 * G, 0, Some((2 * G, 0))), expect: hold(Hold::Steady) },
        ],
    );
}

#[test]
fn shrink_waits_while_the_pages_would_not_fit() {
    // 50 % used of 25 GiB: 12.5 GiB available; the newest file holds 11 GiB, plus a 2.5 GiB margin.
    let b = books(14 * G, 11 * G, Some((12 * G, 11 * G)));
    let t0 = Instant::now();
    let mut st = PolicyState { calm_since: Some(t0), ..Default::default() };
    let d = decide(&cfg(), &at(t0, 400, 50), &b, &mut st);
    assert_eq!(d, hold(Hold::ShrinkWouldNotFit { used: 11 * G, available: 25 * G / 2 }));
    // 10 GiB used fits (10 + 2.5 <= 12.5), but without the file the headroom would be 2.5 GiB
    // free + 2 GiB of swap, below the 5 GiB the threshold keeps: the next look would add it back.
    let b = books(14 * G, 10 * G, Some((12 * G, 10 * G)));
    let needed = 5 * G + (FASTEST_GROWTH as f64 * PRESSURE_POLL.as_secs_f64()) as u64;
    assert_eq!(decide(&cfg(), &at(t0, 401, 50), &b, &mut st), hold(Hold::KeepHeadroom { headroom_after: 9 * G / 2, needed }));
    // With 4 GiB more managed swap staying, it goes.
    let b = books(18 * G, 10 * G, Some((12 * G, 10 * G)));
    assert_eq!(decide(&cfg(), &at(t0, 402, 50), &b, &mut st), Decision::Shrink);
}

#[test]
fn shrink_keeps_what_the_next_rise_needs() {
    // 512 MiB, min_size 0, calm after a burst: the last file goes only if the headroom without
    // it stays 358 MiB (the 256 MiB reserve plus 100 ms at 1 GiB/s) or more.
    let mut c = cfg();
    c.min_size = 0;
    c.calm_period = Duration::from_secs(1);
    let t0 = Instant::now();
    let needed = 256 * M + (FASTEST_GROWTH as f64 * 0.1) as u64;
    let rows = [
        (400, books(G, 0, Some((G, 0))), Decision::Shrink),
        (300, books(G, 0, Some((G, 0))), hold(Hold::KeepHeadroom { headroom_after: 300 * M, needed })),
        // Another file stays: plenty.
        (300, books(2 * G, 0, Some((G, 0))), Decision::Shrink),
        // The last file's pages would not fit in memory: the fit rule speaks first.
        (300, books(G, 250 * M, Some((G, 250 * M))), hold(Hold::ShrinkWouldNotFit { used: 250 * M, available: 300 * M })),
    ];
    for (i, (avail, b, want)) in rows.into_iter().enumerate() {
        let mut st = PolicyState { calm_since: Some(t0), ..Default::default() };
        assert_eq!(decide(&c, &small(t0, 5000, 512, avail), &b, &mut st), want, "row {i}");
    }
}

#[test]
fn the_poll_is_half_the_time_the_fastest_growth_needs_to_reach_the_low_water_mark() {
    // (RAM MiB, available MiB, managed free MiB, expected poll in ms); check_interval 30 s.
    let c = cfg();
    let rows: [(u64, u64, u64, u128); 8] = [
        // An idle 24 GiB host: (23 - 4.8) GiB at 1 GiB/s, halved.
        (24 * 1024, 23 * 1024, 0, 9100),
        // An idle 512 MiB VM without swap: 144 MiB above the 256 MiB reserve.
        (512, 400, 0, 70),
        // The same with 2 GiB of empty managed swap: a second.
        (512, 400, 2048, 1070),
        (512, 257, 0, 20),
        (512, 256, 0, 100),
        (512, 10, 0, 100),
        // Far: never beyond check_interval.
        (512 * 1024, 500 * 1024, 0, 30_000),
        (512, 400, 100 * 1024, 30_000),
    ];
    let t0 = Instant::now();
    for (i, (total, avail, free, want)) in rows.into_iter().enumerate() {
        let b = books(free * M, 0, None);
        let got = poll_interval(&c, &small(t0, 0, total, avail), &b, &PolicyState::default());
        assert_eq!(got.as_millis(), want, "row {i}");
    }
    let mut fast = cfg();
    fast.check_interval = Duration::from_millis(50);
    assert_eq!(poll_interval(&fast, &small(t0, 0, 512, 10), &books(0, 0, None), &PolicyState::default()), Duration::from_millis(50));
    // Monotonic above the low-water mark (819 MiB on 4 GiB): less headroom never means a
    // slower poll. At the mark and below, a file is being added: PRESSURE_POLL, as rows above.
    let mut last = Duration::ZERO;
    for avail in (820..4096).step_by(7) {
        let d = poll_interval(&c, &small(t0, 0, 4096, avail), &books(0, 0, None), &PolicyState::default());
        assert!(d >= last, "{avail} MiB");
        last = d;
    }
}

#[test]
fn a_min_size_that_is_not_whole_mib_still_lets_swap_grow_under_pressure() {
    // min_size = "100000000" (95.37 MiB): the baseline rounds up to 96 MiB; once 96 MiB is
    // there, memory pressure is what decides, and no message claims max_size is reached.
    let mut c = cfg();
    c.min_size = 100_000_000;
    c.increment = 64 << 20;
    assert_eq!(effective_min(&c), 96 << 20);
    run(
        &c,
        &[
            Case { t: 0, pct: 2, books: books(0, 0, None), expect: expand(96 << 20, Reason::Baseline) },
            Case { t: 1, pct: 2, books: books(95 << 20, 0, Some((95 << 20, 0))), expect: expand(1 << 20, Reason::Baseline) },
            Case { t: 2, pct: 2, books: books(96 << 20, 0, Some((96 << 20, 0))), expect: hold(Hold::Steady) },
            Case { t: 3, pct: 85, books: books(96 << 20, 0, Some((96 << 20, 0))), expect: expand(64 << 20, Reason::MemoryHigh) },
        ],
    );
    let d = decide(&c, &at(Instant::now(), 0, 2), &books(96 << 20, 0, Some((96 << 20, 0))), &mut PolicyState::default());
    assert_eq!(d.describe(), "nothing to do");
}

#[test]
fn min_above_a_max_that_is_not_whole_mib_is_capped() {
    let mut c = cfg();
    c.min_size = 100_000_000;
    c.max_size = 100_000_000;
    assert_eq!(effective_min(&c), 95 << 20, "min cannot pass what max allows in whole MiB");
    let d = decide(&c, &at(Instant::now(), 0, 90), &books(95 << 20, 0, Some((95 << 20, 0))), &mut PolicyState::default());
    assert_eq!(d, hold(Hold::AtMax { max_size: 100_000_000, managed: 95 << 20 }));
    assert_eq!(d.describe(), "max_size 95.4 MiB is reached (95.0 MiB managed)");
}

#[test]
fn sizes_from_outside_cannot_overflow() {
    let c = cfg();
    let b = books(2 * G, 0, Some((2 * G, u64::MAX)));
    assert!(check_expand(&c, &b, u64::MAX).is_ok_and(|s| s == 14 * G), "cut to max_size, no wrap");
    let mut huge = b;
    huge.disk = Some((u64::MAX, u64::MAX));
    let mut c2 = c.clone();
    c2.disk_reserve = crate::config::DiskReserve::Bytes(u64::MAX);
    assert!(matches!(check_expand(&c2, &huge, G), Err(Hold::DiskGuard { .. })));
    let r = at(Instant::now(), 0, 10);
    assert!(!fits_in_memory(u64::MAX, &r));
    let mut four = books(4 * G, 0, Some((2 * G, u64::MAX)));
    four.managed_used = u64::MAX;
    assert!(matches!(check_shrink(&c, &four, &r), Err(Hold::ShrinkWouldNotFit { .. })));
}

#[test]
fn a_spare_is_kept_ahead_where_a_burst_could_need_it_and_goes_on_calm_or_when_useless() {
    // Rows: (config change, RAM total GiB... as (total MiB, available MiB), books, decision,
    // spare step). 512 MiB: the low-water mark is the 256 MiB reserve, the spare's mark that
    // plus 4 s of 1 GiB/s, so a small machine keeps a spare whenever it has none.
    let mut c = cfg();
    c.min_size = 0;
    let spare = |b: Books, s: u64| Books { spare: Some(s), ..b };
    let guarded = |b: Books| Books { disk: Some((100 * G, 10 * G + 512 * M)), ..b };
    let make = |size| Some(SpareStep::Make { size });
    let gone = |why| Some(SpareStep::Remove { why });
    let full = books(16 * G, 16 * G, Some((G, G)));
    let at_max = hold(Hold::AtMax { max_size: 16 * G, managed: 16 * G });
    let t0 = Instant::now();
    let rows: Vec<(bool, u64, u64, Books, Decision, Option<SpareStep>)> = vec![
        // Idle, none yet: one of `increment` is made.
        (true, 512, 400, books(0, 0, None), hold(Hold::Steady), make(G)),
        // Ready: nothing more.
        (true, 512, 400, spare(books(0, 0, None), G), hold(Hold::Steady), None),
        // The decision takes the spare (its size, whatever increment says now).
        (true, 512, 255, spare(books(0, 0, None), 2 * G), expand(2 * G, Reason::Burst), None),
        // The disk guard does not stand in the way of a spare already made…
        (true, 512, 255, guarded(spare(books(0, 0, None), G)), expand(G, Reason::Burst), None),
        // …but keeps one from being made (10.5 GiB free, 10 GiB reserved: no 1 GiB file).
        (true, 512, 400, guarded(books(0, 0, None)), hold(Hold::Steady), None),
        // A look that adds a file makes no spare at the same time.
        (true, 512, 255, books(0, 0, None), expand(G, Reason::Burst), None),
        // swap.spare off: none made, and one left over goes.
        (false, 512, 400, books(0, 0, None), hold(Hold::Steady), None),
        (false, 512, 400, spare(books(0, 0, None), G), hold(Hold::Steady), gone(SpareGone::Disabled)),
        // At max_size it could never be enabled: it goes, and none is made.
        (true, 512, 100, spare(full, G), at_max.clone(), gone(SpareGone::OverMax)),
        (true, 512, 100, full, at_max, None),
        // 25 GiB at 10 % used: 22.5 GiB of headroom, far above the mark (5 GiB the threshold
        // keeps + 4 GiB): no spare is made.
        (true, 25 * 1024, 22 * 1024 + 512, books(0, 0, None), hold(Hold::Steady), None),
        // At 66 % used (8.5 GiB) a burst could reach the mark within 4 s: one is made.
        (true, 25 * 1024, 8 * 1024 + 512, books(0, 0, None), hold(Hold::Steady), make(G)),
    ];
    for (i, (on, total, avail, b, want, want_spare)) in rows.into_iter().enumerate() {
        c.spare = on;
        let mut st = PolicyState::default();
        let r = small(t0, 0, total, avail);
        let d = decide(&c, &r, &b, &mut st);
        assert_eq!(d, want, "row {i}");
        assert_eq!(spare_step(&c, &r, &b, &st, &d), want_spare, "row {i}");
    }
}

#[test]
fn the_spare_goes_only_after_calm_period_with_a_whole_spare_of_headroom_above_its_mark() {
    // 25 GiB: the spare's mark is 5 GiB (what the 80 % threshold keeps) + 4 GiB = 9 GiB.
    let c = cfg();
    let t0 = Instant::now();
    let mut st = PolicyState::default();
    let b = |s: u64| Books { spare: Some(s), ..books(2 * G, 0, Some((G, 0))) };
    let rows = [
        // 59 % used: 10.25 GiB available + 2 GiB free baseline = 12.25 GiB; calm starts.
        (0, 59, b(G), None),
        (299, 59, b(G), None),
        // Calm for 5 min, 12.25 ≥ 9 + 1: it goes.
        (300, 59, b(G), Some(SpareStep::Remove { why: SpareGone::Calm })),
        // A 4 GiB spare needs 13 GiB: kept (no make-remove churn at the mark).
        (301, 59, b(4 * G), None),
        // Not calm (65 % ≥ shrink_threshold 60): kept, and calm starts again after.
        (302, 65, b(G), None),
        (303, 59, b(G), None),
        (600, 59, b(G), None),
        (603, 59, b(G), Some(SpareStep::Remove { why: SpareGone::Calm })),
    ];
    for (i, (t, pct, books, want)) in rows.into_iter().enumerate() {
        let r = at(t0, t, pct);
        let d = decide(&c, &r, &books, &mut st);
        assert_eq!(d, hold(Hold::Steady), "row {i}");
        assert_eq!(spare_step(&c, &r, &books, &st, &d), want, "row {i}");
    }
}
