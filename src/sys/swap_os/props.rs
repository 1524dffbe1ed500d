//! Property tests: the holder of the swap directory's lock, from `/proc/locks` text.

use proptest::prelude::*;

use super::*;
use crate::testing::{number_word, text_like};

/// `/proc/locks` as a 6.18 kernel writes it, a blocked waiter (`->`) included.
const LOCKS: &str = "1: FLOCK  ADVISORY  WRITE 1582 fe:00:5595656 0 EOF\n2: POSIX  ADVISORY  WRITE 77 08:01:99 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 999 fe:00:5595656 0 EOF\n3: OFDLCK ADVISORY  READ  -1 00:05:1234 0 EOF\n";

/// A line that is not a FLOCK held on inode `ino`: another kind of lock on any inode, a
/// waiter for ours, a FLOCK on another inode; with any pid.
fn other_line(ino: u64) -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec!["POSIX", "OFDLCK", "LEASE", "-> FLOCK", "FLOCK"]);
    (kind, number_word(), prop_oneof![Just(ino), any::<u64>()]).prop_map(move |(kind, pid, file_ino)| {
        let file_ino = if kind == "FLOCK" && file_ino == ino { ino.wrapping_add(1) } else { file_ino };
        format!("9: {kind}  ADVISORY  WRITE {pid} fe:01:{file_ino} 0 EOF")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lock_holder_of_any_text_is_a_pid_in_it_or_none(t in text_like(LOCKS), ino in prop_oneof![Just(5595656u64), any::<u64>()]) {
        if let Some(pid) = parse_lock_holder(&t, ino) {
            prop_assert!(t.contains(&pid.to_string()));
        }
    }

    /// Among any other locks, the FLOCK held on our inode names its holder.
    #[test]
    fn lock_holder_is_found_among_others(
        (ino, others) in any::<u64>().prop_flat_map(|ino| (Just(ino), prop::collection::vec(other_line(ino), 0..12))),
        pid in any::<u32>(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut lines = others;
        lines.insert(at.index(lines.len() + 1), format!("1: FLOCK  ADVISORY  WRITE {pid} fe:01:{ino} 0 EOF"));
        prop_assert_eq!(parse_lock_holder(&lines.join("\n"), ino), Some(pid));
    }
}
