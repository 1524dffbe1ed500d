//! Whether the daemon's last run stopped cleanly. A small file in the state directory
//! (`running`) exists while the daemon runs; a task that fails or panics writes its reason into
//! it; a clean stop removes it. Found at start, it means the last run ended some other way — a
//! task failed (systemd restarted us), a panic (release builds abort), SIGKILL, the OOM killer,
//! a power cut — and the alerts task sends one notice saying so, through its persistent queue.

use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "running";
/// What the marker says when nothing wrote a reason into it.
pub const NO_REASON: &str = "it was killed or the machine went down (no reason recorded)";

/// The marker of this daemon (`None` in a dry run, which writes nothing).
#[derive(Debug, Clone)]
pub struct Marker {
    path: Option<PathBuf>,
}

impl Marker {
    pub fn new(state_dir: Option<&Path>) -> Marker {
        Marker { path: state_dir.map(|d| d.join(FILE_NAME)) }
    }

    /// Creates the marker; returns why the last run ended uncleanly, if it did.
    pub fn begin(&self) -> Option<String> {
        let path = self.path.as_ref()?;
        let last = match crate::sys::fs::read_regular_file(path, crate::sys::fs::SMALL_FILE) {
            // Lossy: a reason cut inside a character is still the reason.
            Ok(bytes) => {
                Some(String::from_utf8_lossy(&bytes).lines().find_map(|l| l.strip_prefix("reason: ")).map_or(NO_REASON.into(), reason_line))
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => None,
            // Its being there is what tells of an unclean stop, whatever it holds (garbage after
            // a power cut, something too large to be ours).
            Err(_) => Some(NO_REASON.to_string()),
        };
        let text = format!("pid: {}\nstarted: {}\n", std::process::id(), crate::alerts::rfc3339(crate::sys::unix_ms()));
        if let Err(e) = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/"))).and_then(|()| std::fs::write(path, text)) {
            // Not root and no STATE_DIRECTORY (a run by hand): expected, not worth a warning.
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                tracing::debug!("cannot write {}: {e}; an unclean stop will not be reported at the next start", path.display());
            } else {
                tracing::warn!("cannot write {}: {e}; an unclean stop will not be reported at the next start", path.display());
            }
        }
        last
    }

    /// Records why the daemon is about to stop uncleanly (synchronous: it also runs in the
    /// panic hook, before an abort).
    pub fn failed(&self, reason: &str) {
        let Some(path) = &self.path else { return };
        let _ = std::fs::write(path, format!("pid: {}\nreason: {}\n", std::process::id(), reason_line(reason)));
    }

    /// A clean stop.
    pub fn end(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A reason as the marker keeps it: one line (control characters as spaces), at most 500
/// characters.
fn reason_line(reason: &str) -> String {
    reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stop_leaves_nothing_an_unclean_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let m = Marker::new(Some(dir.path()));
        assert_eq!(m.begin(), None, "first start");
        m.end();
        assert!(!dir.path().join(FILE_NAME).exists());
        assert_eq!(m.begin(), None, "after a clean stop");
        assert_eq!(m.begin().as_deref(), Some(NO_REASON), "killed: the marker stayed, with no reason in it");
        m.failed("task health failed: boom\nsecond line");
        assert_eq!(m.begin().as_deref(), Some("task health failed: boom second line"));
        assert_eq!(Marker::new(None).begin(), None, "a dry run keeps no marker");
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;
        use crate::testing::scratch_dir;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the marker holds (a reason, garbage, bytes that are not UTF-8, a file
            /// larger than is read), finding it means the last run did not stop cleanly.
            #[test]
            fn any_marker_found_is_an_unclean_stop(
                content in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..600),
                    "(pid|reason|started): [\\PC\r\t\x00-\x1f]{0,600}\n".prop_map(String::into_bytes),
                    (0usize..3).prop_map(|extra| vec![b'r'; crate::sys::fs::SMALL_FILE as usize + extra]),
                ],
            ) {
                let dir = scratch_dir();
                std::fs::write(dir.path().join(FILE_NAME), &content).unwrap();
                let reason = Marker::new(Some(dir.path())).begin();
                prop_assert!(reason.as_deref().is_some_and(|r| !r.contains(char::is_control) && r.chars().count() <= 500), "{reason:?}");
            }

            /// A reason recorded is the reason found at the next start, on one line and bounded.
            #[test]
            fn a_recorded_reason_is_found_again(reason in any::<String>()) {
                let dir = scratch_dir();
                let m = Marker::new(Some(dir.path()));
                m.failed(&reason);
                let found = m.begin().unwrap();
                prop_assert!(!found.contains(char::is_control) && found.chars().count() <= 500, "{found:?}");
                if !reason.contains(char::is_control) && reason.chars().count() <= 500 {
                    prop_assert_eq!(&found, &reason);
                }
                prop_assert_eq!(found, reason_line(&reason));
                prop_assert_eq!(m.begin(), Some(NO_REASON.to_string()), "begin writes a marker of its own");
            }
        }
    }
}
