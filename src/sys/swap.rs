//! Swap at the system level: the kernel's swap table, the swap header (what mkswap writes),
//! swapon/swapoff, and the checks that a directory can hold swap files at all.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapEntry {
    pub path: PathBuf,
    /// "file" or "partition".
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub priority: i32,
}

/// `/proc/swaps`: a header line, then `path type size used priority` with sizes in KiB and
/// the path escaped as the kernel's seq_file does (`\040` for a space).
pub fn parse_swaps(text: &str) -> Result<Vec<SwapEntry>, String> {
    let mut out = Vec::new();
    // The kernel pads with spaces and tabs only, and escapes those in a path; any other
    // whitespace (a vertical tab, U+00A0) is part of the path.
    let separator = [' ', '\t'];
    for line in text.lines().skip(1).filter(|l| !l.trim_matches(separator).is_empty()) {
        let f: Vec<&str> = line.split(separator).filter(|w| !w.is_empty()).collect();
        let [path, kind, size, used, prio] = f[..] else {
            return Err(format!("expected 5 fields: {line:?}"));
        };
        // KiB, in bytes: a count past u64 is not the kernel's, and must not wrap to a small size.
        let bytes =
            |s: &str| s.parse::<u64>().ok().and_then(|k| k.checked_mul(1024)).ok_or_else(|| format!("not a size in KiB {s:?} in {line:?}"));
        out.push(SwapEntry {
            path: PathBuf::from(unmangle(path)),
            kind: kind.to_string(),
            size_bytes: bytes(size)?,
            used_bytes: bytes(used)?,
            priority: prio.parse().map_err(|_| format!("not a priority {prio:?} in {line:?}"))?,
        });
    }
    Ok(out)
}

/// Undoes seq_file's `\ooo` escapes. Only those of one byte (`\000` to `\377`) are the
/// kernel's; anything else (`\400`, `\8`) is left as written.
fn unmangle(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escape = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(d) = escape {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as u64)
}

/// The kernel refuses swap areas of fewer pages than this (mm/swapfile.c wants a few).
pub const MIN_PAGES: u64 = 10;

/// The first page of a swap area, as mkswap(8) writes it: 1024 bytes left for boot code, the
/// v1 header (version, last page, no bad pages, UUID, label), and `SWAPSPACE2` at the end.
pub fn swap_header(size: u64, page: u64, uuid: [u8; 16], label: &str) -> Result<Vec<u8>, String> {
    let pages = size / page;
    if pages < MIN_PAGES {
        return Err(format!("{size} bytes is too small for swap (at least {} bytes)", MIN_PAGES * page));
    }
    let last_page = u32::try_from(pages - 1).map_err(|_| format!("{size} bytes is too large for one swap file"))?;
    let mut h = vec![0u8; page as usize];
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // nr_badpages stays 0.
    h[1036..1052].copy_from_slice(&uuid);
    let label = label.as_bytes();
    let n = label.len().min(15);
    h[1052..1052 + n].copy_from_slice(&label[..n]);
    let magic_at = page as usize - 10;
    h[magic_at..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

pub fn random_uuid() -> std::io::Result<[u8; 16]> {
    let mut u = [0u8; 16];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut u)?;
    u[6] = (u[6] & 0x0f) | 0x40; // version 4
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(u)
}

fn cpath(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("path contains a NUL byte"))
}

const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
const SWAP_FLAG_PRIO_MASK: libc::c_int = 0x7fff;

/// swapon(2) with an explicit priority (0..=32767).
#[allow(unsafe_code)]
pub fn swapon(path: &Path, priority: u16) -> std::io::Result<()> {
    let c = cpath(path)?;
    let flags = SWAP_FLAG_PREFER | (libc::c_int::from(priority) & SWAP_FLAG_PRIO_MASK);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    match unsafe { libc::swapon(c.as_ptr(), flags) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[allow(unsafe_code)]
pub fn swapoff(path: &Path) -> std::io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: as for swapon.
    match unsafe { libc::swapoff(c.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// A new file that did not exist, is not reached through a symlink, and only root can read.
pub fn create_exclusive(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// Real blocks for every byte (a swap file must have no holes).
pub fn allocate(file: &File, size: u64) -> std::io::Result<()> {
    let len = i64::try_from(size).map_err(|_| std::io::Error::other("size too large"))?;
    nix::fcntl::fallocate(file.as_raw_fd(), nix::fcntl::FallocateFlags::empty(), 0, len)?;
    Ok(())
}

/// Writes the header page at offset 0 and makes the whole file durable.
pub fn write_header(file: &mut File, header: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(header, 0)?;
    file.flush()?;
    file.sync_all()
}

/// Whether `path` is an active swap file, whatever mount namespace enabled it. `/proc/swaps`
/// prints a file enabled from another mount namespace (an earlier run of a service with
/// ProtectSystem=, say) relative to a mount we cannot see, so its path there is no proof
/// either way. The kernel refuses to allocate in an active swap file (ETXTBSY), and
/// allocating inside the file's size with KEEP_SIZE changes nothing in an inactive one.
pub fn is_active_swap(path: &Path) -> std::io::Result<bool> {
    let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    match nix::fcntl::fallocate(f.as_raw_fd(), nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, 1) {
        Ok(()) => Ok(false),
        Err(nix::errno::Errno::ETXTBSY) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// btrfs can swap only to files without copy-on-write, and the flag only holds on an empty file.
pub fn set_nocow(file: &File) -> std::io::Result<()> {
    let flags = rustix::fs::ioctl_getflags(file)?;
    rustix::fs::ioctl_setflags(file, flags | rustix::fs::IFlags::NOCOW)?;
    Ok(())
}

/// Filesystems the kernel can swap to through a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapFs {
    Ext,
    Xfs,
    Btrfs,
    F2fs,
}

/// What kind of filesystem `path` is on, for swap files: `Ok(Err(why))` where swap files
/// cannot work (tmpfs, NFS, …); `Err` when statfs(2) itself fails.
pub fn filesystem_at(path: &std::path::Path) -> std::io::Result<Result<SwapFs, String>> {
    let st = nix::sys::statfs::statfs(path).map_err(std::io::Error::from)?;
    Ok(classify_fs(st.filesystem_type().0))
}

/// What `statfs` says a filesystem is, by its magic number.
pub fn classify_fs(magic: i64) -> Result<SwapFs, String> {
    Ok(match magic {
        0xEF53 => SwapFs::Ext,
        0x5846_5342 => SwapFs::Xfs,
        0x9123_683E => SwapFs::Btrfs,
        0xF2F5_2010 => SwapFs::F2fs,
        0x0102_1994 => return Err("tmpfs (it lives in memory: swapping to it frees nothing)".into()),
        0x8584_58F6 => return Err("ramfs (it lives in memory: swapping to it frees nothing)".into()),
        0x794C_7630 => return Err("overlayfs (the kernel cannot swap to it)".into()),
        0x6969 => return Err("NFS (the kernel cannot swap to a network filesystem here)".into()),
        0xFF53_4D42 | 0xFE53_4D42 | 0x517B => return Err("CIFS/SMB (the kernel cannot swap to a network filesystem here)".into()),
        0x6573_5546 => return Err("FUSE (the kernel cannot swap to it)".into()),
        0x2FC1_2FC1 => return Err("ZFS (swap files on ZFS can deadlock; use a zvol or another filesystem)".into()),
        0x7371_7368 => return Err("squashfs (read-only)".into()),
        other => return Err(format!("a filesystem of type {other:#x}, which cluster-ai does not know to support swap files")),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SwapDirError {
    #[error("swap.dir {}: {reason}; fix: {fix}", crate::sys::display_path(path))]
    Refused { path: PathBuf, reason: String, fix: &'static str },
    #[error("swap.dir {}: {what}: {source}", crate::sys::display_path(path))]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SwapDirError {
    pub fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        SwapDirError::Io { path: path.to_path_buf(), what, source }
    }

    pub fn bad_fs(path: &Path, why: String) -> Self {
        SwapDirError::Refused {
            path: path.to_path_buf(),
            reason: format!("is on {why}"),
            fix: "choose a directory on ext4, XFS, btrfs or f2fs",
        }
    }
}

/// Whether the process holds CAP_SYS_ADMIN (what swapon/swapoff need). A status file that
/// cannot be read at all (no descriptor left) tells nothing: true, and swapon says whether it
/// may (a false "run as root" would stop swap management until a reload).
pub fn has_cap_sys_admin(proc_root: &Path) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = super::fs::read_text(&proc_root.join("proc/self/status"), super::fs::SMALL_FILE) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether the block device `dev` (a file's `st_dev`) spins, from sysfs under `sys_root`:
/// `None` when it cannot be told (device-mapper stacks, network or virtual filesystems).
pub fn rotational_of(sys_root: &Path, dev: u64) -> Option<bool> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let base = sys_root.join(format!("sys/dev/block/{major}:{minor}"));
    // A partition has no queue/ of its own: its parent directory is the whole disk.
    for candidate in [base.join("queue/rotational"), base.join("../queue/rotational")] {
        if let Ok(text) = super::fs::read_text(&candidate, super::fs::SMALL_FILE) {
            return match text.trim() {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            };
        }
    }
    None
}

pub mod btrfs;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
