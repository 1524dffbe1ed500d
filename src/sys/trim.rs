//! Gives back the page-table entries of read-only file mappings (the binary's code and
//! read-only data, libc's) that start-up touched and the idle loop never uses again.
//!
//! The kernel maps up to 64 KiB around every page fault on a file mapping ("fault-around"),
//! so a start-up that runs code from all over a 3 MiB binary leaves most of it mapped and
//! counted in RSS for the life of the process, although the idle loop runs a small part of
//! it. `MADV_DONTNEED` on such a mapping unmaps its pages from this process only: they stay in
//! the page cache, shared with every other process that maps them, and the next access maps
//! them again from the file, as at start-up. No content can be lost: only mappings that are
//! not writable and hold no anonymous (copied-on-write) page are trimmed, so relocated data
//! (`.data.rel.ro`, whose pages are private copies) and every writable mapping are left
//! alone. What it saves is this process's mapped set, which also lets reclaim treat those
//! pages as the unmapped cache they are.

/// Trims every eligible mapping; returns the resident bytes they held before.
#[allow(unsafe_code)]
pub fn file_mappings() -> std::io::Result<u64> {
    let smaps = super::fs::read_text(std::path::Path::new("/proc/self/smaps"), super::fs::LARGE_FILE)?;
    let mut trimmed = 0;
    for m in eligible(&smaps) {
        // SAFETY: [start, end) is a whole mapping of this process, read from smaps just now;
        // it is a read-only file mapping with no anonymous page, so MADV_DONTNEED only drops
        // page-table entries that the next access fills again from the same file. No Rust
        // object lives in such memory as a mutable value.
        let r = unsafe { libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED) };
        if r == 0 {
            trimmed += m.rss;
        }
    }
    Ok(trimmed)
}

#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    rss: u64,
}

/// The mappings of a smaps text that may be trimmed: a path, no write permission, resident
/// pages, and no anonymous page among them.
fn eligible(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut anonymous = 0u64;
    let finish = |c: Option<(Mapping, bool)>, anonymous: u64, out: &mut Vec<Mapping>| {
        if let Some((m, ok)) = c {
            if ok && anonymous == 0 && m.rss > 0 {
                out.push(m);
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
            // Its length goes to madvise: a range that is not one (the kernel never writes it)
            // is left alone.
            if end <= start {
                finish(current.take(), anonymous, &mut out);
                continue;
            }
            finish(current.take(), anonymous, &mut out);
            anonymous = 0;
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let ok = path.starts_with('/') && perms.as_bytes().get(1) == Some(&b'-');
            current = Some((Mapping { start, end, rss: 0 }, ok));
            continue;
        }
        let kib = || fields.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0).saturating_mul(1024);
        match first {
            "Rss:" => {
                if let Some((m, _)) = current.as_mut() {
                    m.rss = kib();
                }
            }
            "Anonymous:" => anonymous = kib(),
            _ => {}
        }
    }
    finish(current.take(), anonymous, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:01 123 /usr/bin/cluster-ai
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
55d0a0100000-55d0a0300000 r-xp 00100000 fe:01 123 /usr/bin/cluster-ai
Size:               2048 kB
Rss:                2000 kB
Anonymous:             0 kB
55d0a0300000-55d0a0320000 r--p 00300000 fe:01 123 /usr/bin/cluster-ai
Size:                128 kB
Rss:                 128 kB
Anonymous:           100 kB
55d0a0320000-55d0a0322000 rw-p 00320000 fe:01 123 /usr/bin/cluster-ai
Size:                  8 kB
Rss:                   8 kB
Anonymous:             0 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
Size:               1024 kB
Rss:                 100 kB
Anonymous:           100 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r-xp 00000000 fe:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Rss:                   0 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 800 kB
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_file_mappings_without_private_copies_are_trimmed() {
        let got = eligible(SMAPS);
        let starts: Vec<usize> = got.iter().map(|m| m.start).collect();
        // The binary's headers/rodata and code, and libc's resident code; not the relocated
        // (anonymous) part, not the writable data, not the heap, not a nameless mapping, not a
        // mapping with nothing resident.
        assert_eq!(starts, vec![0x55d0a0000000, 0x55d0a0100000, 0x7f0000200000]);
        assert_eq!(got[1], Mapping { start: 0x55d0a0100000, end: 0x55d0a0300000, rss: 2000 * 1024 });
    }

    #[test]
    fn trimming_this_process_keeps_its_code_running() {
        let before = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!eligible(&before).is_empty(), "a test binary has resident read-only file mappings");
        let trimmed = file_mappings().unwrap();
        assert!(trimmed > 0);
        // Code and read-only data are mapped again on use: this still computes and formats.
        assert_eq!(format!("{}", (1..=10).sum::<u32>()), "55");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;
        use crate::testing::text_like;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// What is trimmed is a whole range, start below end, whatever the text: its length
            /// goes to madvise.
            #[test]
            fn eligible_mappings_are_ranges(t in text_like(SMAPS)) {
                for m in eligible(&t) {
                    prop_assert!(m.start < m.end, "{m:?}");
                }
            }

            /// A read-only file mapping with pages resident is trimmed when its range is one.
            #[test]
            fn a_mapping_is_trimmed_only_as_a_range(start in any::<usize>(), end in any::<usize>(), rss in any::<u64>()) {
                let t = format!("{start:x}-{end:x} r--p 00000000 fe:01 9 /usr/lib/libc.so.6\nRss: {rss} kB\nAnonymous: 0 kB\n");
                let want = (start < end && rss > 0).then(|| Mapping { start, end, rss: rss.saturating_mul(1024) });
                prop_assert_eq!(eligible(&t).pop(), want);
            }
        }
    }
}
