//! Writing a plan's env files: each only when its content changes, atomically. Shared by
//! `cluster-ai optimize` and the optimize task.

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
/// ones whose content differs.
pub fn env_files(plan: &Plan, cfg: &OptimizeConfig, write: bool) -> Vec<FileOutcome> {
    let env_dir = &cfg.env_dir;
    plan::env_files(plan, cfg)
        .into_iter()
        .map(|file| {
            let path = env_dir.join(&file.name);
            let current = crate::sys::fs::read_text(&path, crate::config::MAX_CONFIG_BYTES).ok();
            let changes = plan::diff(current.as_deref(), &file);
            let text = plan::render(&file);
            let outcome = if current.as_deref() == Some(text.as_str()) {
                "unchanged".to_string()
            } else if !write {
                "would write".to_string()
            } else {
                match crate::sys::fs::write_atomic(&path, text.as_bytes(), 0o644) {
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
