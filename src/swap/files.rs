//! The files cluster-ai manages: named `cluster-ai-NNNNNN.swap` inside `swap.dir`, made through
//! a `.partial` name so a crash at any step leaves nothing half-made in use. Anything else in
//! the swap table (partitions, zram, files elsewhere or named otherwise) is foreign: reported,
//! never touched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault;
use crate::sys::swap::{self as sys, SwapEntry, SwapFs};

const PREFIX: &str = "cluster-ai-";
const SUFFIX: &str = ".swap";
const PARTIAL: &str = ".partial";
/// The first file's priority. Below zram-generator's usual 100, so compressed RAM is used
/// first; above the negative defaults of swap enabled without a priority. Each newer file gets
/// one less, so the kernel fills the oldest first and the newest (the one a shrink removes)
/// stays the emptiest.
pub const FIRST_PRIORITY: u16 = 50;

pub fn file_name(seq: u32) -> String {
    format!("{PREFIX}{seq:06}{SUFFIX}")
}

/// `Some((seq, is_partial))` for our names only.
pub fn parse_name(name: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (digits, partial) = match rest.strip_suffix(PARTIAL) {
        Some(r) => (r.strip_suffix(SUFFIX)?, true),
        None => (rest.strip_suffix(SUFFIX)?, false),
    };
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, partial))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedFile {
    pub path: PathBuf,
    pub seq: u32,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub priority: i32,
}

/// What is in `swap.dir` and in the swap table, sorted out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Active managed files, oldest first.
    pub managed: Vec<ManagedFile>,
    /// Complete managed files that are not active (a crash between rename and swapon, or
    /// between swapoff and unlink).
    pub inactive: Vec<PathBuf>,
    /// Leftovers of a creation that did not finish.
    pub partials: Vec<PathBuf>,
    /// Everything in the swap table that is not ours.
    pub foreign: Vec<SwapEntry>,
}

impl Inventory {
    /// Sorts the swap table and the directory listing (`names`) into the four kinds. The
    /// directory is the truth of what is ours: a file of ours is active when the table lists
    /// its path, or, failing that, when `is_active` says so (the table shows files enabled
    /// from another mount namespace under a path we cannot see; their line is found by file
    /// name). The table counts usable pages; a managed file's size is one header page more.
    pub fn new(dir: &Path, table: &[SwapEntry], names: &[String], page: u64, is_active: &dyn Fn(&Path) -> bool) -> Self {
        let mut inv = Inventory::default();
        let mut claimed = vec![false; table.len()];
        let mut names: Vec<&String> = names.iter().collect();
        names.sort();
        for name in names {
            let Some((seq, partial)) = parse_name(name) else { continue };
            let path = dir.join(name);
            if partial {
                inv.partials.push(path);
                continue;
            }
            let unclaimed = |i: &usize, claimed: &[bool]| !claimed[*i] && table[*i].kind == "file";
            let exact = (0..table.len()).find(|i| unclaimed(i, &claimed) && table[*i].path == path);
            let line = exact.or_else(|| {
                is_active(&path)
                    .then(|| (0..table.len()).find(|i| unclaimed(i, &claimed) && table[*i].path.file_name() == path.file_name()))
                    .flatten()
            });
            match line {
                Some(i) => {
                    claimed[i] = true;
                    let e = &table[i];
                    inv.managed.push(ManagedFile {
                        path,
                        seq,
                        size_bytes: e.size_bytes + page,
                        used_bytes: e.used_bytes,
                        priority: e.priority,
                    });
                }
                // Active but with no line of its own: in use, so never "inactive" (never deleted).
                None if is_active(&path) => {}
                None => inv.inactive.push(path),
            }
        }
        inv.managed.sort_by_key(|m| m.seq);
        inv.foreign = table.iter().zip(&claimed).filter(|(_, c)| !**c).map(|(e, _)| e.clone()).collect();
        inv
    }

    /// Reads the swap table and lists `dir` (a missing directory is empty).
    pub fn read(dir: &Path, swaps_text: &str) -> Result<Self, String> {
        let table = sys::parse_swaps(swaps_text)?;
        let names = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        Ok(Self::new(dir, &table, &names, sys::page_size(), &|p| sys::is_active_swap(p).unwrap_or(false)))
    }

    pub fn managed_total(&self) -> u64 {
        self.managed.iter().map(|m| m.size_bytes).sum()
    }

    pub fn managed_used(&self) -> u64 {
        self.managed.iter().map(|m| m.used_bytes).sum()
    }

    pub fn newest(&self) -> Option<&ManagedFile> {
        self.managed.last()
    }

    /// A sequence number above every file of ours, active or not.
    pub fn next_seq(&self) -> u32 {
        let on_disk = self.inactive.iter().chain(&self.partials).filter_map(|p| parse_name(p.file_name()?.to_str()?).map(|(s, _)| s));
        self.managed.iter().map(|m| m.seq).chain(on_disk).max().map_or(1, |s| s + 1)
    }

    pub fn next_priority(&self) -> u16 {
        self.managed.iter().map(|m| m.priority).min().map_or(FIRST_PRIORITY, |p| u16::try_from(p.saturating_sub(1)).unwrap_or(0))
    }
}

/// Creates, formats and enables one swap file: `.partial` (O_EXCL|O_NOFOLLOW, 0600) →
/// [NOCOW on btrfs] → fallocate → header → fsync → rename → fsync dir → swapon. On an error
/// the file is removed; a crash leaves a `.partial` or an inactive file that the next start
/// cleans up or enables.
pub fn create(dir: &Path, fs: SwapFs, seq: u32, size: u64, priority: u16) -> std::io::Result<PathBuf> {
    let final_path = dir.join(file_name(seq));
    let partial = dir.join(format!("{}{PARTIAL}", file_name(seq)));
    let mut file = sys::create_exclusive(&partial)?;
    let made = (|| {
        fault::hit("swap-created")?;
        if fs == SwapFs::Btrfs {
            sys::set_nocow(&file)
                .map_err(|e| std::io::Error::new(e.kind(), format!("btrfs: cannot set NOCOW, which swap files need: {e}")))?;
        }
        sys::allocate(&file, size)?;
        fault::hit("swap-allocated")?;
        let header = sys::swap_header(size, sys::page_size(), sys::random_uuid()?, "cluster-ai").map_err(std::io::Error::other)?;
        sys::write_header(&mut file, &header)?;
        fault::hit("swap-formatted")?;
        std::fs::rename(&partial, &final_path)?;
        sys::sync_dir(dir)?;
        fault::hit("swap-renamed")
    })();
    drop(file);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    if let Err(e) = sys::swapon(&final_path, priority) {
        let _ = std::fs::remove_file(&final_path);
        return Err(std::io::Error::new(e.kind(), format!("swapon {}: {e}", final_path.display())));
    }
    fault::hit("swap-enabled")?;
    Ok(final_path)
}

/// swapoff, then delete. A failed swapoff leaves the file in place (and in use).
pub fn remove(path: &Path) -> std::io::Result<()> {
    fault::hit("swap-before-off")?;
    sys::swapoff(path).map_err(|e| std::io::Error::new(e.kind(), format!("swapoff {}: {e}", path.display())))?;
    fault::hit("swap-off")?;
    delete(path)
}

/// Deletes an inactive file of ours and makes the deletion durable.
pub fn delete(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sys::sync_dir(dir)?;
    }
    Ok(())
}

/// What a start found and did (see [`recover`]).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub adopted: Vec<PathBuf>,
    pub enabled: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    pub failed: Vec<String>,
}

/// At start: delete partials, adopt active files, and enable each inactive complete file that
/// still fits under `max_size` (or delete it). No pidfile: the swap table and the directory
/// are the whole truth.
pub fn recover(inv: &Inventory, max_size: u64) -> Recovery {
    let mut r = Recovery { adopted: inv.managed.iter().map(|m| m.path.clone()).collect(), ..Default::default() };
    for p in &inv.partials {
        match delete(p) {
            Ok(()) => r.deleted.push(p.clone()),
            Err(e) => r.failed.push(format!("delete {}: {e}", p.display())),
        }
    }
    let mut total = inv.managed_total();
    let mut priority = inv.next_priority();
    for p in &inv.inactive {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let fits = total + size <= max_size;
        match sys::swapon(p, priority) {
            Ok(()) if fits => {
                total += size;
                priority = priority.saturating_sub(1);
                r.enabled.push(p.clone());
                continue;
            }
            Ok(()) => {
                // Over max_size: it goes; it was only enabled to prove it is ours and whole.
                if let Err(e) = sys::swapoff(p) {
                    r.failed.push(format!("swapoff {}: {e}", p.display()));
                    continue;
                }
            }
            // Active after all (EBUSY): in use, so it is never deleted.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                r.adopted.push(p.clone());
                continue;
            }
            Err(_) => {}
        }
        match delete(p) {
            Ok(()) => r.deleted.push(p.clone()),
            Err(e) => r.failed.push(format!("delete {}: {e}", p.display())),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: &str, size: u64, used: u64, priority: i32) -> SwapEntry {
        SwapEntry { path: path.into(), kind: kind.into(), size_bytes: size, used_bytes: used, priority }
    }

    #[test]
    fn names() {
        assert_eq!(file_name(7), "cluster-ai-000007.swap");
        assert_eq!(parse_name("cluster-ai-000007.swap"), Some((7, false)));
        assert_eq!(parse_name("cluster-ai-000123.swap.partial"), Some((123, true)));
        for other in ["cluster-ai-7.swap", "cluster-ai-00000x.swap", "swapfile", "cluster-ai-000001.swap.bak", "cluster-ai-0000001.swap"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn inventory_sorts_ours_from_foreign() {
        let dir = Path::new("/var/lib/cluster-ai/swap");
        let table = [
            entry("/dev/zram0", "partition", 8 << 30, 0, 100),
            entry("/var/lib/cluster-ai/swap/cluster-ai-000003.swap", "file", 1 << 30, 5, 48),
            entry("/var/lib/cluster-ai/swap/cluster-ai-000001.swap", "file", 2 << 30, 7, 50),
            entry("/swapfile", "file", 1 << 30, 0, -2),
            // Our name, another directory: foreign.
            entry("/srv/cluster-ai-000002.swap", "file", 1 << 30, 0, 49),
            // Our directory, another name: foreign.
            entry("/var/lib/cluster-ai/swap/mine.swap", "file", 1 << 30, 0, 10),
        ];
        let names: Vec<String> = [
            "cluster-ai-000001.swap",
            "cluster-ai-000003.swap",
            "cluster-ai-000004.swap",
            "cluster-ai-000005.swap.partial",
            "mine.swap",
            "notes.txt",
        ]
        .map(String::from)
        .to_vec();
        let inv = Inventory::new(dir, &table, &names, 0, &|_| false);
        assert_eq!(inv.managed.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            inv.foreign.iter().map(|f| f.path.to_str().unwrap()).collect::<Vec<_>>(),
            ["/dev/zram0", "/swapfile", "/srv/cluster-ai-000002.swap", "/var/lib/cluster-ai/swap/mine.swap"]
        );
        assert_eq!(inv.inactive, [dir.join("cluster-ai-000004.swap")]);
        assert_eq!(inv.partials, [dir.join("cluster-ai-000005.swap.partial")]);
        assert_eq!((inv.managed_total(), inv.managed_used()), (3 << 30, 12));
        assert_eq!(inv.newest().unwrap().seq, 3);
        assert_eq!(inv.next_seq(), 6, "above partials and inactive files too");
        assert_eq!(inv.next_priority(), 47);
        assert_eq!(Inventory::new(dir, &[], &[], 0, &|_| false).next_priority(), FIRST_PRIORITY);
        assert_eq!(Inventory::new(dir, &[], &[], 0, &|_| false).next_seq(), 1);
        let one = ["cluster-ai-000003.swap".to_string()];
        let with_header = Inventory::new(dir, &table[1..2], &one, 4096, &|_| false);
        assert_eq!(with_header.managed_total(), (1 << 30) + 4096, "the table leaves out the header page");
    }

    #[test]
    fn a_file_enabled_from_another_mount_namespace_is_still_ours() {
        // A restarted service sees its earlier swapon under the path of a mount it cannot see.
        let dir = Path::new("/var/lib/cluster-ai/swap");
        let table = [entry("/cluster-ai-000001.swap", "file", 2 << 30, 9, 50), entry("/swapfile", "file", 1 << 30, 0, -2)];
        let names = ["cluster-ai-000001.swap".to_string(), "cluster-ai-000002.swap".to_string()];
        let active = |p: &Path| p.ends_with("cluster-ai-000001.swap");
        let inv = Inventory::new(dir, &table, &names, 0, &active);
        assert_eq!(inv.managed.len(), 1);
        let m = &inv.managed[0];
        assert_eq!((m.path.clone(), m.used_bytes, m.priority), (dir.join("cluster-ai-000001.swap"), 9, 50));
        assert_eq!(inv.inactive, [dir.join("cluster-ai-000002.swap")]);
        assert_eq!(inv.foreign.len(), 1);
        // Active, but no line of the table is left for it: in use, so neither managed nor
        // inactive (never deleted).
        let inv = Inventory::new(dir, &table[1..], &names[..1], 0, &|_| true);
        assert!(inv.managed.is_empty() && inv.inactive.is_empty());
    }
}
