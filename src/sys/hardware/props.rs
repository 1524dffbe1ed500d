//! Property tests: `/proc/cpuinfo` on any text and on generated machines.

use proptest::prelude::*;

use super::*;
use crate::testing::text_like;

const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nphysical id\t: 0\ncore id\t\t: 0\ncpu cores\t: 2\nflags\t\t: fpu vme de pse tsc msr pae\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nphysical id\t: 0\ncore id\t\t: 1\ncpu cores\t: 2\n\n";

/// One processor's entry: its package and core ids where the architecture has them.
fn processor() -> impl Strategy<Value = (Option<u8>, Option<u8>)> {
    (prop::option::of(0u8..3), prop::option::of(0u8..6))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cpuinfo_of_any_text_is_a_cpu_or_an_error(t in text_like(CPUINFO)) {
        if let Ok(c) = parse_cpuinfo(&t) {
            prop_assert!(c.logical_cores >= 1 && c.physical_cores >= 1 && c.physical_cores <= c.logical_cores, "{c:?}");
        }
    }

    /// Logical CPUs are the entries; physical cores the distinct (package, core) pairs, one per
    /// entry where an entry has no core id.
    #[test]
    fn cpuinfo_counts_entries_and_distinct_cores(cpus in prop::collection::vec(processor(), 1..64), model in "\\PC{0,30}") {
        let mut text = String::new();
        let mut cores = std::collections::BTreeSet::new();
        for (i, (package, core)) in cpus.iter().enumerate() {
            text += &format!("processor\t: {i}\nmodel name\t: {model}\n");
            if let Some(p) = package {
                text += &format!("physical id\t: {p}\n");
            }
            if let Some(c) = core {
                text += &format!("core id\t\t: {c}\n");
            }
            text += "\n";
            cores.insert((*package, core.map_or(format!("#{i}"), |c| c.to_string())));
        }
        let c = parse_cpuinfo(&text).unwrap();
        prop_assert_eq!((c.logical_cores as usize, c.physical_cores as usize), (cpus.len(), cores.len()));
        prop_assert_eq!(c.model, model.trim());
    }
}
