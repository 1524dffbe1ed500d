//! The only place that touches the operating system. Nothing here depends on the rest of the
//! crate; parsers are pure functions over text and readers take a root directory.

pub mod fs;
pub mod hardware;
pub mod http;
pub mod json;
pub mod node;
pub mod notify;
pub mod nvml;
pub mod paths;
pub mod proc_self;
pub mod process;
pub mod procfs;
pub mod psi;
pub mod redact;
pub mod signals;
pub mod socket;
pub mod swap;
pub mod swap_os;
pub mod sweep;
pub mod sysctl;
pub mod systemd;
pub mod ticker;
pub mod trim;
pub mod uevent;

/// Milliseconds since the Unix epoch, for timestamps in `status` and the logs (0 on a clock
/// set before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A path for a log line or a message: control characters (a newline in a directory name)
/// are escaped, so one event stays one line.
pub fn display_path(p: &std::path::Path) -> String {
    one_line(&p.to_string_lossy(), usize::MAX)
}

/// Text from outside (a peer's answer, a model or container name, a file) for a log line or a
/// terminal: control characters and Unicode line separators escaped (`\n`, `\u{2028}`), so it
/// cannot forge a log line or move a terminal's cursor; at most `max_chars` characters written
/// (an escape counts as the characters it is written with), then `…`. Applying it again to
/// its own output changes nothing.
pub fn one_line(s: &str, max_chars: usize) -> String {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    // Counted in characters written, escapes included: text already cut by this function comes
    // back unchanged (a queue file read back at every start must not be cut again each time).
    let mut written = 0;
    for c in s.chars() {
        let piece: Vec<char> = if unsafe_char(c) { c.escape_default().collect() } else { vec![c] };
        if written + piece.len() > max_chars {
            out.push('…');
            break;
        }
        written += piece.len();
        out.extend(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_is_bounded_in_what_it_writes_and_leaves_its_own_output_alone() {
        for (s, max) in [("abc\ndef", 4), ("abcdef", 3), ("ab\n", 3), ("ab\n", 4), ("\u{1b}[2J", 5), ("x…", 1), ("", 0)] {
            let once = super::one_line(s, max);
            assert!(once.trim_end_matches('…').chars().count() <= max, "{s:?} {max}: {once:?}");
            assert_eq!(super::one_line(&once, max), once, "{s:?} {max}");
        }
        assert_eq!(super::one_line("ab\ncd", 4), "ab\\n…");
        assert_eq!(super::one_line("ab\ncd", 3), "ab…", "an escape is not cut in half");
    }

    #[test]
    fn paths_with_control_characters_stay_on_one_line() {
        assert_eq!(super::display_path(std::path::Path::new("/var/lib/a b")), "/var/lib/a b");
        assert_eq!(super::display_path(std::path::Path::new("/tmp/x\ny\tz")), "/tmp/x\\ny\\tz");
    }

    #[test]
    fn text_from_outside_stays_on_one_line_and_bounded() {
        assert_eq!(super::one_line("llama3:8b", 100), "llama3:8b");
        assert_eq!(super::one_line("a\nINFO forged\r\x1b[2J", 100), "a\\nINFO forged\\r\\u{1b}[2J");
        assert_eq!(super::one_line("x\u{2028}y", 100), "x\\u{2028}y");
        assert_eq!(super::one_line("abcdef", 3), "abc…");
        assert_eq!(super::one_line("ééé", 2), "éé…");
    }
}
