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
    // The path itself first (one syscall, every few seconds from the sampler); its ancestors
    // only when it is missing.
    if let Ok(st) = nix::sys::statfs::statfs(path) {
        return Ok(DiskUsage::from_statfs(path, &st));
    }
    let probe = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let st = nix::sys::statfs::statfs(probe).map_err(|source| StatfsError { path: probe.to_path_buf(), source })?;
    Ok(DiskUsage::from_statfs(path, &st))
}

impl DiskUsage {
    pub fn from_statfs(path: &Path, st: &nix::sys::statfs::Statfs) -> Self {
        let block = st.block_size() as u64;
        let total = st.blocks().saturating_mul(block);
        let free = st.blocks_free().saturating_mul(block);
        let available = st.blocks_available().saturating_mul(block);
        let used = total.saturating_sub(free);
        let denominator = used.saturating_add(available);
        let used_percent = if denominator == 0 { 0.0 } else { 100.0 * used as f64 / denominator as f64 };
        DiskUsage { path: path.to_path_buf(), total_bytes: total, available_bytes: available, used_percent }
    }
}

/// The whole content of a regular file of at most `max` bytes. Opened without blocking, so a
/// FIFO put where a file is expected is refused at once rather than waited on; a device, a
/// directory or a file over `max` is refused without reading it.
pub fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    let meta = file.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("it is {what}, not a regular file")));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is {} bytes, more than the {max} bytes read from it", meta.len()),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("it grew past {max} bytes while being read")));
    }
    Ok(out)
}

/// Whether an error from [`read_regular_file`] is of the moment or of the process (every
/// descriptor taken, EMFILE/ENFILE; no memory; an interrupted call; no permission; an I/O
/// error) rather than of the file (not a regular file, too large, not the text it should be):
/// a file that could not be read for such a reason may be fine, and must not be set aside or
/// written over.
pub fn says_nothing_of_the_file(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    !matches!(e.kind(), K::NotFound | K::InvalidInput | K::InvalidData | K::FileTooLarge)
}

/// A small file (a /proc or /sys value, a marker): at most this much is read.
pub const SMALL_FILE: u64 = 64 << 10;
/// A large kernel table (/proc/self/smaps, /proc/locks): at most this much is read.
pub const LARGE_FILE: u64 = 16 << 20;

/// [`read_regular_file`] as UTF-8 text (an `InvalidData` error if it is not).
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, max)?).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Replaces `path` with `contents` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it (O_EXCL), fsync, rename over, fsync of the directory. The
/// directory is created (0755) if missing.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let context = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {}: {e}", crate::sys::display_path(path)));
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|e| context("create the directory of", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| context("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env/dask-worker.env");
        write_atomic(&path, b"A=1\n", 0o644).unwrap();
        write_atomic(&path, b"A=2\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path().join("env")).unwrap().count(), 1, "no temporary left");
        let err = write_atomic(&dir.path().join("env/dask-worker.env/x"), b"", 0o644).unwrap_err().to_string();
        assert!(err.contains("dask-worker.env/x"), "{err}");
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_regular_file(&file, 100).unwrap(), b"a = 1\n");
        assert!(read_regular_file(&file, 3).unwrap_err().to_string().contains("it is 6 bytes"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_regular_file(&fifo, 100).unwrap_err().to_string().contains("a FIFO"), "refused at once, not waited on");
        assert!(read_regular_file(Path::new("/dev/zero"), 100).unwrap_err().to_string().contains("a device"));
        assert!(read_regular_file(dir.path(), 100).unwrap_err().to_string().contains("a directory"));
    }

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
