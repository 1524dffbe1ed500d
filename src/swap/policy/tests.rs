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
    Books { managed_total: managed, managed_used: used, newest, disk: Some((100 * G, 80 * G)) }
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
            Decision::Expand { reason, .. } => st.expanded(reason, now),
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
fn baseline_then_expand_on_crossing_with_cooldown_and_cap() {
    let mut c = cfg();
    c.max_size = 4 * G;
    run(
        &c,
        &[
            Case { t: 0, pct: 10, books: books(0, 0, None), expect: expand(2 * G, Reason::Baseline) },
            Case { t: 1, pct: 10, books: books(G, 0, Some((G, 0))), expect: expand(G, Reason::Baseline) },
            Case { t: 2, pct: 70, books: books(2 * G, 0, Some((2 * G, 0))), expect: hold(Hold::Steady) },
            // Crossing: at once, however empty the baseline is.
            Case { t: 3, pct: 80, books: books(2 * G, 0, Some((2 * G, 0))), expect: expand(G, Reason::MemoryHigh) },
            Case { t: 4, pct: 85, books: books(3 * G, G / 2, Some((G, 0))), expect: hold(Hold::Cooldown { next_in_ms: 29_000 }) },
            // Managed swap 80 % full while memory is high: no waiting.
            Case { t: 5, pct: 85, books: books(3 * G, 5 * G / 2, Some((G, G / 2))), expect: expand(G, Reason::SwapFilling) },
            Case {
                t: 6,
                pct: 90,
                books: books(4 * G, 4 * G - 1, Some((G, G))),
                expect: hold(Hold::AtMax { max_size: 4 * G, managed: 4 * G }),
            },
        ],
    );
}

#[test]
fn pressure_that_lasts_adds_one_increment_per_check_interval() {
    run(
        &cfg(),
        &[
            Case { t: 0, pct: 81, books: books(2 * G, 0, Some((2 * G, 0))), expect: expand(G, Reason::MemoryHigh) },
            Case { t: 29, pct: 81, books: books(3 * G, 0, Some((G, 0))), expect: hold(Hold::Cooldown { next_in_ms: 1000 }) },
            Case { t: 30, pct: 81, books: books(3 * G, 0, Some((G, 0))), expect: expand(G, Reason::MemoryHigh) },
            // Memory drops below the threshold: the episode ends; the next crossing acts at once.
            Case { t: 31, pct: 79, books: books(4 * G, 0, Some((G, 0))), expect: hold(Hold::Steady) },
            Case { t: 32, pct: 80, books: books(4 * G, 0, Some((G, 0))), expect: expand(G, Reason::MemoryHigh) },
        ],
    );
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
    // 10 GiB used fits: 10 + 2.5 <= 12.5.
    let b = books(14 * G, 10 * G, Some((12 * G, 10 * G)));
    assert_eq!(decide(&cfg(), &at(t0, 401, 50), &b, &mut st), Decision::Shrink);
}

#[test]
fn poll_interval_shrinks_near_the_threshold() {
    let c = cfg();
    assert_eq!(poll_interval(&c, 2.0), Duration::from_secs(30), "far away: check_interval");
    assert_eq!(poll_interval(&c, 60.0), Duration::from_secs(1), "20 points: 1 s");
    assert_eq!(poll_interval(&c, 78.0), Duration::from_millis(100));
    assert_eq!(poll_interval(&c, 79.8), FASTEST_POLL);
    assert_eq!(poll_interval(&c, 85.0), PRESSURE_POLL);
    let mut fast = cfg();
    fast.check_interval = Duration::from_millis(50);
    assert_eq!(poll_interval(&fast, 60.0), Duration::from_millis(50), "never beyond check_interval");
    // Monotonic: closer never means slower.
    let mut last = Duration::MAX;
    for tenth in 0..800 {
        let d = poll_interval(&c, tenth as f64 / 10.0);
        assert!(d <= last, "{tenth}");
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
