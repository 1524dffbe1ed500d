//! Removing files a disk cleaner was told it may remove: regular files under a directory,
//! optionally only those older than an age. The walk goes through directory descriptors
//! (`openat` with `O_NOFOLLOW`, `unlinkat`), so a directory swapped for a symlink while it
//! runs cannot lead it elsewhere; it never follows symlinks, never crosses into another
//! filesystem, and leaves directories, symlinks, sockets and devices in place.

use std::ffi::CStr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags, CWD};

/// Deeper trees are left alone below this depth.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    /// Bytes the removed files occupied on disk (their blocks, not their apparent size).
    pub bytes: u64,
    /// Entries that could not be read or removed (they are left).
    pub errors: u64,
}

/// Removes the regular files under `dir` (older than `min_age` by modification time, when
/// given). `dir` itself must be a real directory, not a symlink.
pub fn remove_files(dir: &Path, min_age: Option<Duration>) -> std::io::Result<Swept> {
    let fd = openat(CWD, dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let dev = rustix::fs::fstat(&fd)?.st_dev;
    let cutoff = min_age.map(|age| SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let mut swept = Swept::default();
    walk(fd, dev, cutoff, 0, &mut swept);
    Ok(swept)
}

fn walk(dir: OwnedFd, dev: u64, cutoff: Option<SystemTime>, depth: usize, swept: &mut Swept) {
    let Ok(entries) = Dir::read_from(&dir) else {
        swept.errors += 1;
        return;
    };
    for entry in entries {
        let Ok(entry) = entry else {
            swept.errors += 1;
            break;
        };
        let name: &CStr = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let Ok(st) = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            swept.errors += 1;
            continue;
        };
        if st.st_dev != dev {
            continue;
        }
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory if depth < MAX_DEPTH => {
                match openat(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                    Ok(sub) => walk(sub, dev, cutoff, depth + 1, swept),
                    Err(_) => swept.errors += 1,
                }
            }
            FileType::RegularFile => {
                let mtime = SystemTime::UNIX_EPOCH + Duration::new(st.st_mtime.max(0) as u64, 0);
                if cutoff.is_some_and(|c| mtime > c) {
                    continue;
                }
                match unlinkat(&dir, name, AtFlags::empty()) {
                    Ok(()) => {
                        swept.files += 1;
                        swept.bytes += (st.st_blocks as u64).saturating_mul(512);
                    }
                    Err(_) => swept.errors += 1,
                }
            }
            _ => {}
        }
    }
}

/// The bytes regular files under `dir` occupy (same walk, nothing removed): for "what a
/// cleaner freed" where the cleaner is another program (journald's vacuum).
pub fn tree_bytes(dir: &Path) -> u64 {
    fn walk(dir: OwnedFd, depth: usize) -> u64 {
        let Ok(entries) = Dir::read_from(&dir) else { return 0 };
        let mut total = 0u64;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let Ok(st) = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory if depth < MAX_DEPTH => {
                    if let Ok(sub) =
                        openat(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    {
                        total = total.saturating_add(walk(sub, depth + 1));
                    }
                }
                FileType::RegularFile => total = total.saturating_add((st.st_blocks as u64).saturating_mul(512)),
                _ => {}
            }
        }
        total
    }
    match openat(CWD, dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => walk(fd, 0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn removes_old_regular_files_only_and_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep me").unwrap();
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("old"), vec![1u8; 10000]).unwrap();
        fs::write(d.join("a/b/old"), b"x").unwrap();
        fs::write(d.join("new"), b"y").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("precious"), d.join("a/file-link")).unwrap();
        let old = fs::File::options().write(true).open(d.join("old")).unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(7200);
        old.set_modified(hour_ago).unwrap();
        fs::File::options().write(true).open(d.join("a/b/old")).unwrap().set_modified(hour_ago).unwrap();

        let swept = remove_files(d, Some(Duration::from_secs(3600))).unwrap();
        assert_eq!((swept.files, swept.errors), (2, 0));
        assert!(swept.bytes >= 10000, "{swept:?}");
        assert!(!d.join("old").exists() && !d.join("a/b/old").exists());
        assert!(d.join("new").exists() && d.join("a/b").is_dir() && d.join("link").is_symlink());
        assert!(outside.path().join("precious").exists());

        // Without an age: everything regular, still nothing through the links.
        assert_eq!(remove_files(d, None).unwrap().files, 1);
        assert!(outside.path().join("precious").exists());
        // The directory itself must not be a symlink.
        assert!(remove_files(&d.join("link"), None).is_err());
        assert_eq!(tree_bytes(d), 0);
    }
}
