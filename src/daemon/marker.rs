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
        let last = match crate::sys::fs::read_text(path, crate::sys::fs::SMALL_FILE) {
            Ok(text) => Some(text.lines().find_map(|l| l.strip_prefix("reason: ")).unwrap_or(NO_REASON).to_string()),
            Err(_) => None,
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
        let line: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(500).collect();
        let _ = std::fs::write(path, format!("pid: {}\nreason: {line}\n", std::process::id()));
    }

    /// A clean stop.
    pub fn end(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
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
}
