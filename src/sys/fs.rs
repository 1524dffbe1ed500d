//! Filesystem facts: how full the filesystem that holds a path is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// The path asked about.
    pub path: PathBuf,
    pub total_bytes: u64,
    /// Free to an unprivileged user, as `df` reports "Avail".
    pub available_bytes: u64,
    /// As `df` computes Use%: used / (used + available).
    pub used_percent: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("statfs {path}: {source}")]
pub struct StatfsError {
    pub path: PathBuf,
    #[source]
    pub source: nix::Error,
}

/// Usage of the filesystem holding `path`. A path that does not exist yet (a swap directory
/// the daemon will create) is measured at its nearest existing ancestor.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, StatfsError> {
    let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let st = nix::sys::statfs::statfs(probe).map_err(|source| StatfsError { path: probe.to_path_buf(), source })?;
    Ok(DiskUsage::from_statfs(path, &st))
}

impl DiskUsage {
    pub fn from_statfs(path: &Path, st: &nix::sys::statfs::Statfs) -> Self {
        let block = st.block_size() as u64;
        let total = (st.blocks() as u64).saturating_mul(block);
        let free = (st.blocks_free() as u64).saturating_mul(block);
        let available = (st.blocks_available() as u64).saturating_mul(block);
        let used = total.saturating_sub(free);
        let denominator = used.saturating_add(available);
        let used_percent = if denominator == 0 { 0.0 } else { 100.0 * used as f64 / denominator as f64 };
        DiskUsage { path: path.to_path_buf(), total_bytes: total, available_bytes: available, used_percent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_real_directory_and_a_missing_child() {
        let dir = tempfile::tempdir().unwrap();
        let here = disk_usage(dir.path()).unwrap();
        assert!(here.total_bytes > 0 && here.used_percent >= 0.0 && here.used_percent <= 100.0);
        let missing = disk_usage(&dir.path().join("not/yet/there")).unwrap();
        assert_eq!(missing.total_bytes, here.total_bytes);
        assert_eq!(missing.path, dir.path().join("not/yet/there"));
    }
}
