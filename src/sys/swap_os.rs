//! Everything the swap engine asks of the operating system, behind one trait: memory, the swap
//! table, the swap directory (checked, opened once, locked, listed), file creation, swapon and
//! swapoff, and the vm sysctls. [`RealSwapOs`] is the system; [`fake::FakeSwapOs`] is an
//! in-memory stand-in, so the engine and the swap task are unit-tested without root.
//!
//! The directory is opened once, after every ancestor has been checked, and every later call
//! works relative to that handle (through `/proc/self/fd/N/name`, the final name opened with
//! `O_NOFOLLOW`): a user who controls a parent directory cannot swap the directory for a
//! symlink after the check and have a swap file made where they chose.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::fs::DiskUsage;
use super::procfs::{parse_meminfo, MemInfo, ProcError, ProcFile, ProcFs};
use super::swap::{self as sys, classify_fs, SwapDirError, SwapEntry, SwapFs};
use super::sysctl::{Restored, Sysctl, Tunables};

#[cfg(any(test, feature = "fakes"))]
pub mod fake;

/// A regular file in the swap directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFile {
    pub name: String,
    pub size: u64,
}

pub trait SwapOs: Send + 'static {
    fn meminfo(&mut self) -> Result<MemInfo, ProcError>;
    /// `/proc/pressure/memory`, for a PSI trigger.
    fn memory_pressure_file(&self) -> PathBuf;
    /// `/proc/swaps`, parsed.
    fn swap_table(&mut self) -> Result<Vec<SwapEntry>, ProcError>;
    /// Whether swapon/swapoff are allowed (CAP_SYS_ADMIN).
    fn can_manage_swap(&self) -> bool;
    /// Checks `dir` and every ancestor, creates what is missing (the directory itself 0700),
    /// and opens it; every later call works on that handle.
    fn open_dir(&mut self, dir: &Path) -> Result<SwapFs, SwapDirError>;
    /// The directory's exclusive lock, waited for up to `wait`; refused with who holds it.
    fn lock_dir(&mut self, wait: Duration) -> Result<(), String>;
    /// Regular files in the opened directory; none when it is not open (or does not exist).
    fn list_dir(&mut self) -> io::Result<Vec<DirFile>>;
    /// How full the directory's filesystem is.
    fn dir_usage(&self) -> Option<DiskUsage>;
    /// Whether the directory's disk spins (`None`: cannot tell).
    fn rotational(&self) -> Option<bool>;
    /// Whether the file is an active swap area, whatever mount namespace enabled it.
    fn is_active(&self, name: &str) -> bool;
    fn create_file(&mut self, name: &str, nocow: bool) -> io::Result<()>;
    fn allocate(&mut self, name: &str, size: u64) -> io::Result<()>;
    /// Writes the swap header (what mkswap writes) and makes the file durable.
    fn format(&mut self, name: &str, size: u64) -> io::Result<()>;
    /// Renames within the directory and makes the rename durable.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn swapon(&mut self, name: &str, priority: u16) -> io::Result<()>;
    fn swapoff(&mut self, name: &str) -> io::Result<()>;
    /// Deletes and makes the deletion durable.
    fn delete(&mut self, name: &str) -> io::Result<()>;
    /// Sets vm.swappiness and vm.vfs_cache_pressure, saving the originals once; returns the
    /// values that were in force.
    fn tune(&mut self, want: Tunables) -> io::Result<Tunables>;
    /// Puts back the saved originals of the values that still hold what `tune` set, leaving
    /// the ones someone else changed since; `None` when nothing was saved.
    fn restore_tuning(&mut self) -> io::Result<Option<Restored>>;
}

/// The swap directory, open.
struct OpenDir {
    path: PathBuf,
    handle: Handle,
}

enum Handle {
    Open(File),
    Locked(nix::fcntl::Flock<File>),
    /// Taken out for the moment of locking.
    Moved,
}

impl OpenDir {
    fn file(&self) -> Option<&File> {
        match &self.handle {
            Handle::Open(f) => Some(f),
            Handle::Locked(f) => Some(f),
            Handle::Moved => None,
        }
    }
}

/// The system, with `/proc` and `/sys` under `root` (`/` in production).
pub struct RealSwapOs {
    procfs: ProcFs,
    meminfo: Option<ProcFile>,
    swaps: Option<ProcFile>,
    dir: Option<OpenDir>,
    state_dir: PathBuf,
}

impl RealSwapOs {
    pub fn new(procfs: ProcFs, state_dir: PathBuf) -> Self {
        Self { procfs, meminfo: None, swaps: None, dir: None, state_dir }
    }

    fn open(&self) -> io::Result<&OpenDir> {
        self.dir.as_ref().ok_or_else(|| io::Error::other("the swap directory is not open"))
    }

    /// `name` inside the open directory, through its descriptor.
    fn at(&self, name: &str) -> io::Result<(PathBuf, PathBuf)> {
        let d = self.open()?;
        let f = d.file().ok_or_else(|| io::Error::other("the swap directory is not open"))?;
        Ok((PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd())), d.path.join(name)))
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.open()?.file() {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }

    fn open_file(&self, name: &str) -> io::Result<(File, PathBuf)> {
        let (at, shown) = self.at(name)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(at)
            .map_err(|e| context(e, "open", &shown))?;
        Ok((f, shown))
    }
}

/// The error with the path it concerns, keeping its kind (EBUSY stays ResourceBusy).
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", crate::sys::display_path(path)))
}

impl SwapOs for RealSwapOs {
    fn meminfo(&mut self) -> Result<MemInfo, ProcError> {
        let f = match &mut self.meminfo {
            Some(f) => f,
            None => self.meminfo.insert(self.procfs.open("meminfo")?),
        };
        f.parse(parse_meminfo)
    }

    fn memory_pressure_file(&self) -> PathBuf {
        self.procfs.path("pressure/memory")
    }

    fn swap_table(&mut self) -> Result<Vec<SwapEntry>, ProcError> {
        let f = match &mut self.swaps {
            Some(f) => f,
            None => self.swaps.insert(self.procfs.open("swaps")?),
        };
        f.parse(sys::parse_swaps)
    }

    fn can_manage_swap(&self) -> bool {
        sys::has_cap_sys_admin(self.procfs.root())
    }

    fn open_dir(&mut self, dir: &Path) -> Result<SwapFs, SwapDirError> {
        if self.dir.as_ref().is_some_and(|d| d.path == dir) {
            if let Some(f) = self.dir.as_ref().and_then(|d| d.file()) {
                let st = nix::sys::statfs::fstatfs(f).map_err(|e| SwapDirError::io(dir, "statfs", e.into()))?;
                return classify_fs(st.filesystem_type().0 as i64).map_err(|why| SwapDirError::bad_fs(dir, why));
            }
        }
        self.dir = None;
        let (file, fs) = open_checked(dir, nix::unistd::geteuid().as_raw())?;
        if fs == SwapFs::Btrfs {
            if let Some(reason) = sys::btrfs::refusal(self.procfs.root(), dir) {
                return Err(SwapDirError::Refused { path: dir.to_path_buf(), reason, fix: sys::btrfs::FIX });
            }
        }
        self.dir = Some(OpenDir { path: dir.to_path_buf(), handle: Handle::Open(file) });
        Ok(fs)
    }

    fn lock_dir(&mut self, wait: Duration) -> Result<(), String> {
        let d = self.dir.as_mut().ok_or("the swap directory is not open")?;
        let Handle::Open(_) = &d.handle else { return Ok(()) };
        let Handle::Open(mut file) = std::mem::replace(&mut d.handle, Handle::Moved) else { return Ok(()) };
        let deadline = std::time::Instant::now() + wait;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    d.handle = Handle::Locked(locked);
                    return Ok(());
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((f, errno)) => {
                    let holder = (errno == nix::errno::Errno::EWOULDBLOCK)
                        .then(|| lock_holder(self.procfs.root(), &f))
                        .flatten()
                        .map_or(String::new(), |h| format!(" by {h}"));
                    d.handle = Handle::Open(f);
                    return Err(if errno == nix::errno::Errno::EWOULDBLOCK {
                        format!(
                            "swap.dir {} is locked{holder}: another cluster-ai manages it; wait for it, or use that daemon (`cluster-ai swap …` asks it)",
                            crate::sys::display_path(&d.path)
                        )
                    } else {
                        format!("swap.dir {}: cannot lock it: {errno}", crate::sys::display_path(&d.path))
                    });
                }
            }
        }
    }

    fn list_dir(&mut self) -> io::Result<Vec<DirFile>> {
        let Some(d) = &self.dir else { return Ok(Vec::new()) };
        let Some(f) = d.file() else { return Ok(Vec::new()) };
        let at = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&at).map_err(|e| context(e, "list", &d.path))? {
            let entry = entry.map_err(|e| context(e, "list", &d.path))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            // DirEntry::metadata does not follow symlinks: a link is not a regular file.
            match entry.metadata() {
                Ok(m) if m.file_type().is_file() => out.push(DirFile { name, size: m.len() }),
                _ => {}
            }
        }
        Ok(out)
    }

    fn dir_usage(&self) -> Option<DiskUsage> {
        let d = self.dir.as_ref()?;
        let st = nix::sys::statfs::fstatfs(d.file()?).ok()?;
        Some(DiskUsage::from_statfs(&d.path, &st))
    }

    fn rotational(&self) -> Option<bool> {
        let f = self.dir.as_ref()?.file()?;
        sys::rotational_of(self.procfs.root(), f.metadata().ok()?.dev())
    }

    fn is_active(&self, name: &str) -> bool {
        self.at(name).is_ok_and(|(at, _)| sys::is_active_swap(&at).unwrap_or(false))
    }

    fn create_file(&mut self, name: &str, nocow: bool) -> io::Result<()> {
        let (at, shown) = self.at(name)?;
        let file = sys::create_exclusive(&at).map_err(|e| context(e, "create", &shown))?;
        if nocow {
            sys::set_nocow(&file).map_err(|e| context(e, "btrfs: cannot set NOCOW, which swap files need, on", &shown))?;
        }
        Ok(())
    }

    fn allocate(&mut self, name: &str, size: u64) -> io::Result<()> {
        let (f, shown) = self.open_file(name)?;
        sys::allocate(&f, size).map_err(|e| context(e, "allocate", &shown))
    }

    fn format(&mut self, name: &str, size: u64) -> io::Result<()> {
        let (mut f, shown) = self.open_file(name)?;
        let header = sys::swap_header(size, sys::page_size(), sys::random_uuid()?, "cluster-ai").map_err(io::Error::other)?;
        sys::write_header(&mut f, &header).map_err(|e| context(e, "write the swap header of", &shown))
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let (a, shown) = self.at(from)?;
        let (b, _) = self.at(to)?;
        std::fs::rename(a, b).map_err(|e| context(e, "rename", &shown))?;
        self.sync_dir()
    }

    fn swapon(&mut self, name: &str, priority: u16) -> io::Result<()> {
        let (at, shown) = self.at(name)?;
        sys::swapon(&at, priority).map_err(|e| context(e, "swapon", &shown))
    }

    fn swapoff(&mut self, name: &str) -> io::Result<()> {
        let (at, shown) = self.at(name)?;
        sys::swapoff(&at).map_err(|e| context(e, "swapoff", &shown))
    }

    fn delete(&mut self, name: &str) -> io::Result<()> {
        let (at, shown) = self.at(name)?;
        std::fs::remove_file(at).map_err(|e| context(e, "delete", &shown))?;
        self.sync_dir()
    }

    fn tune(&mut self, want: Tunables) -> io::Result<Tunables> {
        Sysctl::new(self.procfs.root()).apply(&self.state_dir, want)
    }

    fn restore_tuning(&mut self) -> io::Result<Option<Restored>> {
        Sysctl::new(self.procfs.root()).restore(&self.state_dir)
    }
}

/// "pid 1234 (cluster-ai swap expand)", from `/proc/locks`, for the lock on `file`.
fn lock_holder(root: &Path, file: &File) -> Option<String> {
    let ino = file.metadata().ok()?.ino();
    let locks = super::fs::read_text(&root.join("proc/locks"), super::fs::LARGE_FILE).ok()?;
    let pid = parse_lock_holder(&locks, ino)?;
    let cmdline = super::fs::read_regular_file(&root.join(format!("proc/{pid}/cmdline")), super::fs::SMALL_FILE).unwrap_or_default();
    let words: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    let shown = words.iter().enumerate().map(|(i, w)| if i == 0 { w.rsplit('/').next().unwrap_or(w) } else { w }).collect::<Vec<_>>();
    Some(if shown.is_empty() { format!("pid {pid}") } else { format!("pid {pid} ({})", shown.join(" ")) })
}

/// The pid holding a FLOCK on inode `ino`, from `/proc/locks` text
/// (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`).
pub fn parse_lock_holder(locks: &str, ino: u64) -> Option<u32> {
    locks.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.get(1) != Some(&"FLOCK") || w.get(2) == Some(&"->") {
            return None;
        }
        let file_ino: u64 = w.get(5)?.rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then(|| w.get(4)?.parse().ok()).flatten()
    })
}

/// Walks from `/` to `dir` one component at a time, each opened relative to its parent with
/// `O_NOFOLLOW`, and checks each as sshd checks the directories above its key files: owned by
/// root (or by us), and not writable by group or others unless the sticky bit keeps others
/// from renaming what is ours (as on /tmp). Missing components are created (0755 on the way,
/// 0700 for `dir` itself). Returns the open directory and its filesystem kind.
pub fn open_checked(dir: &Path, owner: u32) -> Result<(File, SwapFs), SwapDirError> {
    let refuse = |at: &Path, reason: String, fix: &'static str| SwapDirError::Refused { path: at.to_path_buf(), reason, fix };
    let names: Vec<&std::ffi::OsStr> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| refuse(dir, "is not a plain absolute path".into(), "write swap.dir without . or .. components"))?;
    if !dir.is_absolute() || names.is_empty() {
        return Err(refuse(dir, "is not an absolute path below /".into(), "set swap.dir to a directory such as /var/lib/cluster-ai/swap"));
    }
    let open_dir =
        |p: &Path| std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(p);
    let mut current = open_dir(Path::new("/")).map_err(|e| SwapDirError::io(Path::new("/"), "cannot open it", e))?;
    let mut shown = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let meta = current.metadata().map_err(|e| SwapDirError::io(&shown, "cannot stat it", e))?;
        check_ancestor(&shown, &meta, owner)?;
        let next_shown = shown.join(name);
        let at = PathBuf::from(format!("/proc/self/fd/{}", current.as_raw_fd())).join(name);
        let next = match open_dir(&at) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(if last { 0o700 } else { 0o755 }).create(&at) {
                    // Another process made it meanwhile: open it and check it like any other.
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(SwapDirError::io(&next_shown, "cannot create it", e)),
                    _ => {}
                }
                open_dir(&at).map_err(|e| SwapDirError::io(&next_shown, "cannot open it", e))?
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                let is_link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
                return Err(if is_link {
                    refuse(
                        &next_shown,
                        "is a symbolic link".into(),
                        "point swap.dir at the real directory, with no symbolic link on the way",
                    )
                } else {
                    refuse(&next_shown, "is not a directory".into(), "point swap.dir at a directory")
                });
            }
            Err(e) => return Err(SwapDirError::io(&next_shown, "cannot open it", e)),
        };
        current = next;
        shown = next_shown;
    }
    let meta = current.metadata().map_err(|e| SwapDirError::io(dir, "cannot stat it", e))?;
    if meta.uid() != owner {
        return Err(refuse(dir, format!("is owned by uid {}, not {owner}", meta.uid()), "chown root:root it"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(dir, format!("is writable by group or others (mode {:o})", meta.mode() & 0o7777), "chmod 0700 it"));
    }
    let st = nix::sys::statfs::fstatfs(&current).map_err(|e| SwapDirError::io(dir, "statfs", e.into()))?;
    let fs = classify_fs(st.filesystem_type().0 as i64).map_err(|why| SwapDirError::bad_fs(dir, why))?;
    Ok((current, fs))
}

fn check_ancestor(path: &Path, meta: &std::fs::Metadata, owner: u32) -> Result<(), SwapDirError> {
    let refuse = |reason: String, fix| SwapDirError::Refused { path: path.to_path_buf(), reason, fix };
    if meta.uid() != 0 && meta.uid() != owner {
        return Err(refuse(
            format!("(a parent of swap.dir) is owned by uid {}: that user could replace swap.dir", meta.uid()),
            "choose a swap.dir whose every parent is owned by root",
        ));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        return Err(refuse(
            format!("(a parent of swap.dir) is writable by group or others (mode {:o}): they could replace swap.dir", meta.mode() & 0o7777),
            "chmod go-w it, or choose another swap.dir",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holder_from_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 77 08:01:99 0 EOF\n2: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 999 fe:01:5678 0 EOF\n";
        assert_eq!(parse_lock_holder(text, 5678), Some(1234));
        assert_eq!(parse_lock_holder(text, 99), None, "a POSIX lock is not ours");
        assert_eq!(parse_lock_holder("garbage\n\n", 1), None);
    }

    #[test]
    fn every_ancestor_is_checked_and_the_directory_is_opened_once() {
        use std::os::unix::fs::PermissionsExt;
        let me = nix::unistd::geteuid().as_raw();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b/swap");
        let (_, fs) = open_checked(&dir, me).unwrap();
        assert_eq!(fs, SwapFs::Ext, "created, on the ext4 test disk");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(t.path().join("a/b")).unwrap().mode() & 0o777, 0o755);

        // A parent writable by others (no sticky bit): they could rename swap.dir away.
        std::fs::set_permissions(t.path().join("a"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_checked(&dir, me).unwrap_err().to_string();
        assert!(err.contains("/a: (a parent of swap.dir) is writable by group or others (mode 777)"), "{err}");
        // With the sticky bit (as /tmp), others cannot rename what is ours.
        std::fs::set_permissions(t.path().join("a"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_checked(&dir, me).is_ok());
        std::fs::set_permissions(t.path().join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();

        // A symlink on the way, not only at the end.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(t.path().join("a"), &link).unwrap();
        let err = open_checked(&link.join("b/swap"), me).unwrap_err().to_string();
        assert!(err.contains("link: is a symbolic link"), "{err}");
        let err = open_checked(&t.path().join("a/b/../b/swap"), me).unwrap_err().to_string();
        assert!(err.contains("not a plain absolute path"), "{err}");

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_checked(&dir, me).unwrap_err().to_string();
        assert!(err.contains("writable by group or others (mode 777)") && err.contains("chmod 0700"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = open_checked(&dir, me + 1).unwrap_err().to_string();
        assert!(err.contains(&format!("owned by uid {me}")), "{err}");

        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(open_checked(&file, me).unwrap_err().to_string().contains("file: is not a directory"));
    }

    #[test]
    fn the_handle_survives_a_swap_of_the_directory_for_a_symlink() {
        let me = nix::unistd::geteuid().as_raw();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("swap");
        let mut os = RealSwapOs::new(ProcFs::default(), t.path().join("state"));
        os.open_dir(&dir).unwrap();
        assert_eq!(open_checked(&dir, me).map(|r| r.1).ok(), Some(SwapFs::Ext));
        // The attacker's move: rename the real directory away and put a symlink in its place.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&dir, t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        os.create_file("cluster-ai-000001.swap.partial", false).unwrap();
        assert!(t.path().join("moved/cluster-ai-000001.swap.partial").exists(), "made in the directory that was checked");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing where the symlink points");
        assert_eq!(os.list_dir().unwrap(), [DirFile { name: "cluster-ai-000001.swap.partial".into(), size: 0 }]);
    }

    #[test]
    fn processes_creating_the_directory_at_once_all_get_it() {
        let me = nix::unistd::geteuid().as_raw();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b/swap");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| open_checked(&dir, me).map(|r| r.1))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| r.as_ref().is_ok_and(|fs| *fs == SwapFs::Ext)), "{results:?}");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("swap");
        let mut a = RealSwapOs::new(ProcFs::default(), t.path().join("state"));
        let mut b = RealSwapOs::new(ProcFs::default(), t.path().join("state"));
        a.open_dir(&dir).unwrap();
        b.open_dir(&dir).unwrap();
        a.lock_dir(Duration::ZERO).unwrap();
        let err = b.lock_dir(Duration::from_millis(120)).unwrap_err();
        assert!(err.contains(&format!("is locked by pid {}", std::process::id())), "{err}");
        drop(a);
        b.lock_dir(Duration::from_millis(500)).unwrap();
    }
}

#[cfg(test)]
mod props;
