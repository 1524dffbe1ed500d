//! Writing a plan's env files: each only when its content changes, atomically. Shared by
//! `cluster-ai optimize` and the optimize task.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::plan::{self, Change, Plan};
use crate::config::OptimizeConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub unit: Option<String>,
    pub changes: Vec<Change>,
    /// "unchanged", "written", "would write" (not asked to write), or "failed: …".
    pub outcome: String,
}

impl FileOutcome {
    pub fn failed(&self) -> bool {
        self.outcome.starts_with("failed")
    }
}

/// Compares each env file of `plan` with the one in `env_dir` and, when `write`, replaces the
/// ones whose content differs (keeping their mode and the lines that are not the plan's). A
/// file that is there but cannot be read (no descriptor left, too large, not a regular file,
/// an I/O error) is "failed", never written over: its lines that are not the plan's would be
/// lost, and its unit restarted for a change that may not be one.
pub fn env_files(plan: &Plan, cfg: &OptimizeConfig, write: bool) -> Vec<FileOutcome> {
    let env_dir = &cfg.env_dir;
    plan::env_files(plan, cfg)
        .into_iter()
        .map(|file| {
            let path = env_dir.join(&file.name);
            let current = match crate::sys::fs::read_text(&path, crate::config::MAX_CONFIG_BYTES) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    let outcome = format!("failed: cannot read it ({e}), so it is left as it is");
                    return FileOutcome { path, unit: file.unit, changes: Vec::new(), outcome };
                }
            };
            let changes = plan::diff(current.as_deref(), &file);
            let text = plan::render(&file, current.as_deref());
            // A file made private (it may hold a secret of the user's beside the plan's numbers)
            // stays private; a new one holds only the numbers.
            let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
            let outcome = if current.as_deref() == Some(text.as_str()) {
                "unchanged".to_string()
            } else if !write {
                "would write".to_string()
            } else {
                match crate::sys::fs::write_atomic(&path, text.as_bytes(), mode) {
                    Ok(()) => "written".to_string(),
                    Err(e) => format!("failed: {e}"),
                }
            };
            FileOutcome { path, unit: file.unit, changes, outcome }
        })
        .collect()
}

/// Units whose env file differs from the plan (written or about to be): a restart applies it.
pub fn restart_needed(files: &[FileOutcome]) -> Vec<String> {
    files.iter().filter(|f| f.outcome != "unchanged" && !f.failed() && !f.changes.is_empty()).filter_map(|f| f.unit.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::Config;
    use crate::optimize::profile::test_machine;

    #[test]
    fn a_private_file_stays_private_and_keeps_what_the_user_put_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default().optimize;
        cfg.env_dir = dir.path().to_path_buf();
        let worker = dir.path().join("dask-worker.env");
        std::fs::write(&worker, "DB_PASSWORD=hunter2\nDASK_NWORKERS=99\n").unwrap();
        std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o600)).unwrap();
        let plan = plan::plan(&test_machine(4, 8 << 30), &cfg);
        let files = env_files(&plan, &cfg, true);
        assert_eq!(files.iter().map(|f| f.outcome.as_str()).collect::<Vec<_>>(), ["written", "written"]);
        let text = std::fs::read_to_string(&worker).unwrap();
        assert!(text.contains("\nDASK_NWORKERS=2\n") && text.ends_with("\n\nDB_PASSWORD=hunter2\n"), "{text}");
        assert_eq!(std::fs::metadata(&worker).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("ollama.env")).unwrap().permissions().mode() & 0o777, 0o644);
        // What `status`, the control socket and the log get.
        let shown = serde_json::to_string(&files).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("DB_PASSWORD"), "{shown}");
        assert!(env_files(&plan, &cfg, true).iter().all(|f| f.outcome == "unchanged"));
    }

    /// A file that is there but cannot be read is not taken for no file: it is left as it is,
    /// and its unit is not restarted.
    #[test]
    fn a_file_that_cannot_be_read_is_left_as_it_is_and_restarts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default().optimize;
        cfg.env_dir = dir.path().to_path_buf();
        let worker = dir.path().join("dask-worker.env");
        let big = format!("DB_PASSWORD=hunter2\n{}", "# a long comment\n".repeat(crate::config::MAX_CONFIG_BYTES as usize / 16 + 1));
        std::fs::write(&worker, &big).unwrap();
        let plan = plan::plan(&test_machine(4, 8 << 30), &cfg);
        let files = env_files(&plan, &cfg, true);
        let w = files.iter().find(|f| f.path == worker).unwrap();
        assert!(w.failed() && w.outcome.contains("left as it is"), "{w:?}");
        assert_eq!(std::fs::read_to_string(&worker).unwrap(), big, "not written over");
        assert!(!restart_needed(&files).contains(&"dask-worker.service".to_string()), "{files:?}");
    }
}
