//! Property tests: `/proc/swaps` on any text, on mutations of a real kernel's table, and on
//! well-formed lines with any numbers and any path.

use proptest::prelude::*;

use super::*;
use crate::testing::text_like;

const SWAPS: &str = crate::proc_fixture!("swaps");
const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

/// A path as the kernel's seq_file prints it in /proc/swaps: space, tab, newline and backslash
/// as `\ooo`, everything else as it is.
fn mangle(path: &str) -> String {
    path.chars().map(|c| if matches!(c, ' ' | '\t' | '\n' | '\\') { format!("\\{:03o}", c as u32) } else { c.to_string() }).collect()
}

/// A size in KiB as the kernel writes it, or one whose bytes overflow u64.
fn kib() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1 << 40, any::<u64>(), Just(u64::MAX / 1024), Just(u64::MAX / 1024 + 1)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn swaps_of_any_text_is_a_table_or_an_error(t in text_like(SWAPS)) {
        if let Ok(entries) = parse_swaps(&t) {
            for e in entries {
                prop_assert!(e.size_bytes % 1024 == 0 && e.used_bytes % 1024 == 0, "{e:?}");
            }
        }
    }

    /// Any path (spaces, tabs, newlines, backslashes, non-ASCII whitespace, multi-byte
    /// characters), any sizes and priority: the entry comes back as the kernel meant it, or an
    /// error where a number does not fit; never a wrapped size.
    #[test]
    fn swaps_round_trip(
        path in "/[^\0]{0,40}",
        kind in prop::sample::select(vec!["file", "partition"]),
        size in kib(),
        used in kib(),
        priority in prop_oneof![any::<i32>().prop_map(i64::from), any::<i64>()],
        pad in prop::sample::select(vec!["\t", " ", "\t\t", "                               "]),
    ) {
        let text = format!("{HEADER}{}{pad}{kind}\t{size}\t\t{used}\t\t{priority}\n", mangle(&path));
        let want = (|| {
            Some(SwapEntry {
                path: PathBuf::from(&path),
                kind: kind.to_string(),
                size_bytes: size.checked_mul(1024)?,
                used_bytes: used.checked_mul(1024)?,
                priority: i32::try_from(priority).ok()?,
            })
        })();
        match (parse_swaps(&text), want) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, vec![want]),
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{text:?}: {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn unmangle_undoes_the_kernel_s_escapes(path in any::<String>()) {
        prop_assert_eq!(unmangle(&mangle(&path)), path);
    }

    /// Escapes the kernel never writes (`\777`, `\8`, a lone `\` at the end) stay as they are.
    #[test]
    fn unmangle_of_any_text_is_text(t in "(\\\\[0-9]{0,4}|\\PC{0,3})*") {
        let out = unmangle(&t);
        prop_assert!(out.chars().count() <= t.chars().count());
    }
}
