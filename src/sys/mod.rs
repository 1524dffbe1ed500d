//! The only place that touches the operating system. Nothing here depends on the rest of the
//! crate; parsers are pure functions over text and readers take a root directory.

pub mod fs;
pub mod hardware;
pub mod http;
pub mod notify;
pub mod nvml;
pub mod paths;
pub mod procfs;
pub mod psi;
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
    let s = p.to_string_lossy();
    if !s.chars().any(char::is_control) {
        return s.into_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_with_control_characters_stay_on_one_line() {
        assert_eq!(super::display_path(std::path::Path::new("/var/lib/a b")), "/var/lib/a b");
        assert_eq!(super::display_path(std::path::Path::new("/tmp/x\ny\tz")), "/tmp/x\\ny\\tz");
    }
}
