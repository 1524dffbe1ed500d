//! Property tests: `/proc/cpuinfo` on any text and on generated machines, and the cgroup
//! memory limit on any `/proc/self/cgroup` and `memory.max` contents.

use proptest::prelude::*;

use super::*;
use crate::testing::{number, scratch_dir, text_like};

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

proptest! {
    // Each case writes a small tree of files.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever `/proc/self/cgroup` names (`..` included) and whatever the limit files hold,
    /// the limit is one read under the cgroup tree, or none: never a file above it.
    #[test]
    fn the_cgroup_limit_is_read_under_the_cgroup_tree_only(
        path in prop::collection::vec(prop::sample::select(vec!["..", ".", "", "system.slice", "x.service", "a b", "é"]), 0..8),
        v1 in prop::option::of(prop::sample::select(vec!["memory", "cpu,memory", "cpu", ""])),
        limits in prop::collection::vec(prop_oneof![number(), Just("max".to_string()), Just("4294967296\n".to_string())], 0..9),
    ) {
        let t = scratch_dir();
        let path = format!("/{}", path.join("/"));
        let line = match v1 {
            Some(controllers) => format!("4:{controllers}:{path}\n0::/\n"),
            None => format!("0::{path}\n"),
        };
        std::fs::create_dir_all(t.path().join("proc/self")).unwrap();
        std::fs::write(t.path().join("proc/self/cgroup"), &line).unwrap();
        // The hierarchy and file the line names (v1 only where the memory controller is listed).
        let (base, file) = match v1 {
            Some(c) if c.split(',').any(|c| c == "memory") => ("sys/fs/cgroup/memory", "memory.limit_in_bytes"),
            _ => ("sys/fs/cgroup", "memory.max"),
        };
        // Above the tree, and at the tempdir's root: a limit no read may find.
        const OUTSIDE: u64 = 12_345;
        for dir in ["", "sys", "sys/fs", "sys/fs/cgroup"].into_iter().filter(|d| *d != base) {
            std::fs::create_dir_all(t.path().join(dir)).unwrap();
            std::fs::write(t.path().join(dir).join(file), OUTSIDE.to_string()).unwrap();
        }
        // The tree: every directory on the way down ("." and ".." left out) holds one of the limits.
        let inside: Vec<&str> = path.split('/').filter(|c| !matches!(*c, "" | "." | "..")).collect();
        let mut written = Vec::new();
        let mut dir = t.path().join(base);
        for (i, limit) in limits.iter().enumerate() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), limit).unwrap();
            written.extend(limit.trim().parse::<u64>().ok());
            let Some(next) = inside.get(i) else { break };
            dir = dir.join(next);
        }
        if let Some(limit) = cgroup_memory_limit(t.path()) {
            prop_assert!(limit != OUTSIDE, "{line:?}: read a limit from above the cgroup tree");
            prop_assert!(written.contains(&limit), "{limit} was never written");
        }
    }
}
