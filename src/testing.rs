//! What the property tests of the parsers share: generators of the text that reaches the
//! daemon from outside (the kernel's files, peers' answers, files an admin edits), and a count
//! of the heap a parser uses, so a test can hold it to a multiple of its input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

/// A real /proc file of this project's CI kernel, as text.
#[macro_export]
macro_rules! proc_fixture {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc-6.18/", $name))
    };
}

/// The system allocator, counting the bytes each thread holds: tests run in parallel, so a
/// global count would mix theirs.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// `now` more bytes held by this thread (`peak_extra` more for a moment: a realloc holds the old
/// block and the new one while it copies).
fn count(now: isize, peak_extra: isize) {
    // try_with: a thread's last frees can come after its locals are gone.
    let _ = LIVE.try_with(|live| {
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get() + now.max(0) + peak_extra)));
        live.set(live.get() + now);
    });
}

fn size(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call goes to the system allocator unchanged; the counters are thread-local
// cells with const initializers (no allocation, no destructor), so counting never re-enters
// the allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(size(layout.size()), 0);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(size(layout.size()), 0);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-size(layout.size()), 0);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(size(new_size) - size(layout.size()), size(layout.size().min(new_size)));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// `f`'s result and the most heap this thread held above what it held before, while `f` ran
/// (what `f` returns included).
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, usize::try_from(peak - base).unwrap_or(0))
}

/// A temporary directory for a property that writes files in each of its hundreds of cases: in
/// memory (/dev/shm) where there is one, as a disk's metadata writes make such a property take
/// seconds.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let in_memory = if shm.is_dir() { tempfile::tempdir_in(shm).ok() } else { None };
    in_memory.unwrap_or_else(|| tempfile::tempdir().unwrap())
}

/// What a number field may hold when its writer is wrong or hostile: any integer, the edges of
/// u64, negative, floats with NaN, infinities and huge exponents, other digits than ASCII's,
/// empty, and runs of digits far past any integer type.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        (0u32..64).prop_map(|s| (1u64 << s).to_string()),
        prop::sample::select(vec![
            "",
            "0",
            "-0",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967295",
            "4294967296",
            "-1",
            "+1",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "1e308",
            "1e309",
            "-1e309",
            "1e-400",
            "0x10",
            "1_000",
            "١٢٣",
            "１２",
            "5\u{a0}",
            "4.5.6",
            ".",
            "-",
            "100.00",
            "100.01",
        ])
        .prop_map(String::from),
        "[0-9]{20,300}",
    ]
}

/// [`number`], as one word of a line (not empty, no whitespace in it).
pub fn number_word() -> impl Strategy<Value = String> {
    number().prop_filter("one word", |w| !w.is_empty() && !w.contains(char::is_whitespace))
}

/// Short pieces of text that break parsers: separators, control characters, multi-byte
/// characters (where a byte offset would land inside one), a number.
pub fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => number(),
        2 => "\\PC{0,12}",
        1 => any::<String>(),
        2 => prop::sample::select(vec![
            "\n", "\r\n", ":", " ", "\t", "=", "@", "/", "\\", "\\040", "\\777", "\"", "'", "#", "[", "]", "{", "}", ",", "\0", "kB", "é",
            "€", "𝔘", "\u{2028}", "\u{202e}", "\u{feff}",
        ])
        .prop_map(String::from),
    ]
}

/// Any text: printable or not, multi-byte, invalid UTF-8 made lossy, lines of pieces.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..400).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(prop::collection::vec(piece(), 0..8).prop_map(|p| p.concat()), 0..24).prop_map(|l| l.join("\n")),
    ]
}

/// A JSON value as text, of any type and nearly any content: numbers at the edges of every
/// type, strings with escapes and multi-byte characters, arrays and objects of these. Valid
/// JSON that serde_json reads (for text that is not, see [`text_like`] and [`number`]).
pub fn json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["null", "true", "false", "0", "-1", "1.5", "1e20", "-0", "18446744073709551616", "1e-400"])
            .prop_map(String::from),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        "[1-9][0-9]{19,40}",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        "\"(\\\\u00e9|\\\\ud83d\\\\ude00|\\\\n|é|𝔘|[a-z:/.0-9]){0,12}\"",
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[A-Za-z_]{1,10}", inner), 0..4)
                .prop_map(|kv| { format!("{{{}}}", kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")) }),
        ]
    })
}

/// One change to a text.
#[derive(Debug, Clone)]
enum Edit {
    Insert(String),
    Delete(usize),
    /// The whitespace-separated word at the position, replaced.
    Word(String),
    DuplicateLine,
    Truncate,
    /// A run of one character, as long as a line should never be.
    Long(char, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => piece().prop_map(Edit::Insert),
        2 => (1usize..40).prop_map(Edit::Delete),
        4 => number().prop_map(Edit::Word),
        1 => Just(Edit::DuplicateLine),
        1 => Just(Edit::Truncate),
        1 => (prop::sample::select(vec!['9', 'a', ' ', 'é', '\n']), 1000usize..70_000).prop_map(|(c, n)| Edit::Long(c, n)),
    ]
}

/// The largest char boundary of `s` at or before byte `i`.
pub fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, at: prop::sample::Index, e: Edit) {
    let i = floor_boundary(text, at.index(text.len() + 1));
    match e {
        Edit::Insert(p) => text.insert_str(i, &p),
        Edit::Delete(n) => {
            let end = text[i..].char_indices().nth(n).map_or(text.len(), |(j, _)| i + j);
            text.replace_range(i..end, "");
        }
        Edit::Word(w) => {
            let is_space = |c: char| c.is_whitespace();
            let start = text[..i].rfind(is_space).map_or(0, |j| j + text[j..].chars().next().map_or(1, char::len_utf8));
            let end = text[i..].find(is_space).map_or(text.len(), |j| i + j);
            text.replace_range(start..end, &w);
        }
        Edit::DuplicateLine => {
            let start = text[..i].rfind('\n').map_or(0, |j| j + 1);
            let end = text[i..].find('\n').map_or(text.len(), |j| i + j + 1);
            let line = text[start..end].to_string();
            text.insert_str(start, &line);
        }
        Edit::Truncate => text.truncate(i),
        Edit::Long(c, n) => text.insert_str(i, &c.to_string().repeat(n)),
    }
}

/// `base` (a real file, a well-formed answer) with a few edits: words replaced by hostile
/// numbers, pieces inserted, lines duplicated or cut, a very long run.
pub fn mutated(base: String) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<prop::sample::Index>(), edit()), 0..6).prop_map(move |edits| {
        let mut t = base.clone();
        for (at, e) in edits {
            apply(&mut t, at, e);
        }
        t
    })
}

/// Any text, or a mutation of `base`: what a property over a parser of that kind of text runs on.
pub fn text_like(base: &str) -> impl Strategy<Value = String> {
    prop_oneof![1 => text(), 3 => mutated(base.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_count_sees_a_parser_s_allocations() {
        let (v, peak) = peak_heap(|| vec![0u8; 1 << 20]);
        assert!((1 << 20..2 << 20).contains(&peak), "{peak}");
        drop(v);
        let ((), peak) = peak_heap(|| drop(vec![0u8; 4 << 20]));
        assert!(peak >= 4 << 20, "freed before the end still counts: {peak}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutations_stay_valid_text(t in mutated("MemTotal:  1 kB\nSwapFree: 2 kB\n".into())) {
            // Edits land on char boundaries: the result is a String, so this is about not panicking.
            prop_assert!(t.len() < 1 << 20);
        }
    }
}
