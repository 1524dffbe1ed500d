//! Property tests: the /proc parsers on any text, on mutations of a real kernel's files
//! (`tests/fixtures/proc-6.18`), and on well-formed lines with any numbers in them.

use proptest::prelude::*;

use super::*;
use crate::testing::{number_word, text_like};

const MEMINFO: &str = crate::proc_fixture!("meminfo");
const STAT: &str = crate::proc_fixture!("stat");
const PRESSURE: &str = crate::proc_fixture!("pressure/memory");
const LOADAVG: &str = crate::proc_fixture!("loadavg");

fn is_percent(p: f64) -> bool {
    p.is_finite() && (0.0..=100.0).contains(&p)
}

/// What `text` holds if it is a number the kernel could write for a percentage or a load.
fn kernel_float(text: &str, max: f64) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite() && (0.0..=max).contains(v))
}

/// A counter as the kernel writes them, or anything up to u64::MAX (sums of these overflow).
fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1 << 40, any::<u64>(), Just(u64::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn meminfo_of_any_text_is_a_reading_or_an_error(t in text_like(MEMINFO)) {
        if let Ok(m) = parse_meminfo(&t) {
            prop_assert!(is_percent(m.used_percent()), "{m:?}");
            prop_assert!(m.swap_used() <= m.swap_total);
        }
    }

    /// The four numbers come back in bytes whatever the other lines and the order; kB values
    /// past u64 saturate rather than wrap.
    #[test]
    fn meminfo_round_trips_its_numbers(
        values in [counter(), counter(), counter(), counter()],
        in_kb in [any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()],
        at in [any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>()],
    ) {
        const KEYS: [&str; 4] = ["MemTotal", "MemAvailable", "SwapTotal", "SwapFree"];
        let mut lines: Vec<String> =
            MEMINFO.lines().filter(|l| !KEYS.iter().any(|k| l.starts_with(&format!("{k}:")))).map(String::from).collect();
        for i in 0..4 {
            let unit = if in_kb[i] { " kB" } else { "" };
            lines.insert(at[i].index(lines.len() + 1), format!("{}:{:>16}{unit}", KEYS[i], values[i]));
        }
        let m = parse_meminfo(&lines.join("\n")).unwrap();
        let bytes = |i: usize| if in_kb[i] { values[i].saturating_mul(1024) } else { values[i] };
        prop_assert_eq!((m.total, m.available, m.swap_total, m.swap_free), (bytes(0), bytes(1), bytes(2), bytes(3)));
        prop_assert!(is_percent(m.used_percent()));
    }

    #[test]
    fn used_percent_is_a_percentage(total in counter(), available in counter()) {
        prop_assert!(is_percent(used_percent(total, available)));
    }

    #[test]
    fn stat_of_any_text_is_a_reading_or_an_error(t in text_like(STAT)) {
        if let Ok(c) = parse_stat(&t) {
            prop_assert!(c.busy <= c.total, "{c:?}");
        }
    }

    /// The total is the sum of the first eight counters, or an error where that sum overflows:
    /// never a wrapped number.
    #[test]
    fn stat_sums_without_wrapping(fields in prop::collection::vec(counter(), 4..=10)) {
        let line = format!("cpu  {}\ncpu0 1 2 3 4\n", fields.iter().map(u64::to_string).collect::<Vec<_>>().join(" "));
        let sum = fields.iter().take(8).try_fold(0u64, |a, b| a.checked_add(*b));
        match (parse_stat(&line), sum) {
            (Ok(c), Some(total)) => {
                prop_assert_eq!(c.total, total);
                prop_assert_eq!(c.busy, total - fields[3] - fields.get(4).copied().unwrap_or(0));
            }
            (Err(e), None) => prop_assert!(e.contains("overflow"), "{e}"),
            (r, sum) => prop_assert!(false, "{r:?} for a sum of {sum:?}"),
        }
    }

    #[test]
    fn busy_percent_is_a_percentage_or_none(a in (counter(), counter()), b in (counter(), counter())) {
        let (earlier, later) = (CpuTimes { busy: a.0.min(a.1), total: a.1 }, CpuTimes { busy: b.0.min(b.1), total: b.1 });
        if let Some(p) = later.busy_percent_since(&earlier) {
            prop_assert!(is_percent(p), "{p}");
        }
    }

    #[test]
    fn pressure_of_any_text_is_percentages_or_an_error(t in text_like(PRESSURE)) {
        if let Ok(p) = parse_pressure(&t) {
            prop_assert!(is_percent(p.some_avg10) && p.full_avg10.is_none_or(is_percent), "{p:?}");
        }
    }

    /// avg10 is a percentage: NaN, infinities, negatives and values over 100 are not what the
    /// kernel writes, so they are errors rather than readings a threshold compares against.
    #[test]
    fn pressure_values_are_percentages(some in number_word(), full in prop::option::of(number_word())) {
        let mut t = format!("some avg10={some} avg60=0.00 avg300=0.00 total=0\n");
        if let Some(f) = &full {
            t += &format!("full avg10={f} avg60=0.00 avg300=0.00 total=0\n");
        }
        let want_some = kernel_float(&some, 100.0);
        let want_full = full.as_deref().map(|f| kernel_float(f, 100.0));
        match parse_pressure(&t) {
            Ok(p) => {
                prop_assert_eq!(Some(p.some_avg10), want_some);
                prop_assert_eq!(p.full_avg10, want_full.flatten());
                prop_assert!(want_full.is_none_or(|f| f.is_some()));
            }
            Err(_) => prop_assert!(want_some.is_none() || want_full.is_some_and(|f| f.is_none()), "{t:?}"),
        }
    }

    #[test]
    fn loadavg_of_any_text_is_loads_or_an_error(t in text_like(LOADAVG)) {
        if let Ok(l) = parse_loadavg(&t) {
            prop_assert!(l.iter().all(|v| v.is_finite() && *v >= 0.0), "{l:?}");
        }
    }

    #[test]
    fn loadavg_values_are_finite_and_not_negative(v in [number_word(), number_word(), number_word()]) {
        let t = format!("{} {} {} 2/79 21248\n", v[0], v[1], v[2]);
        let want: Option<Vec<f64>> = v.iter().map(|w| kernel_float(w, f64::MAX)).collect();
        match parse_loadavg(&t) {
            Ok(l) => prop_assert_eq!(Some(l.to_vec()), want),
            Err(_) => prop_assert!(want.is_none(), "{t:?}"),
        }
    }
}
