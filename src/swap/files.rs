//! The files cluster-ai manages: named `cluster-ai-NNNNNN.swap` inside `swap.dir`, made through
//! a `.partial` name so a crash at any step leaves nothing half-made in use. Anything else in
//! the swap table (partitions, zram, files elsewhere or named otherwise) is foreign: reported,
//! never touched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault;
use crate::sys::procfs::ProcError;
use crate::sys::swap::{SwapEntry, SwapFs};
use crate::sys::swap_os::{DirFile, SwapOs};

/// Whether a failure to make a swap file says swap files cannot work in swap.dir at all (a
/// read-only mount, a filesystem without what swap files need, a namespace that may not
/// swapon, a btrfs that is not single-profile on one device, btrfs-progs#840), and why, with
/// the fix. Trying again every `check_interval` would only add a kernel warning each time.
pub fn impossible_here(e: &std::io::Error, fs: SwapFs) -> Option<String> {
    use std::io::ErrorKind;
    let text = e.to_string();
    match e.kind() {
        ErrorKind::ReadOnlyFilesystem => Some(format!(
            "swap.dir is on a read-only filesystem ({text}); fix: remount it read-write or choose another swap.dir, then reload"
        )),
        ErrorKind::Unsupported => Some(format!(
            "the filesystem of swap.dir cannot do what a swap file needs ({text}); fix: choose a directory on ext4 or XFS, then reload"
        )),
        ErrorKind::PermissionDenied => Some(format!(
            "the kernel does not permit it here ({text}); a container or a user namespace may not swapon: run cluster-ai on the host"
        )),
        ErrorKind::InvalidInput if text.starts_with("swapon") => Some(match fs {
            SwapFs::Btrfs => format!(
                "the kernel refuses swap files on this btrfs ({text}): btrfs takes them only on one device with the single data \
                 profile, not RAID or DUP; fix: choose a swap.dir on another filesystem (or convert the data profile: \
                 btrfs balance start -dconvert=single), then reload"
            ),
            _ => format!(
                "the kernel refuses swap files in swap.dir ({text}); fix: choose a directory on ext4, XFS, btrfs or f2fs, then reload"
            ),
        }),
        _ => None,
    }
}

/// Why a swap step failed: the swap table could not be read, the step was refused (with the
/// reason and the fix), or the filesystem said no.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("{0}")]
    Read(#[from] ProcError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

const PREFIX: &str = "cluster-ai-";
const SUFFIX: &str = ".swap";
const PARTIAL: &str = ".partial";
/// The first file's priority. Below zram-generator's usual 100, so compressed RAM is used
/// first; above the negative defaults of swap enabled without a priority. Each newer file gets
/// one less, so the kernel fills the oldest first and the newest (the one a shrink removes)
/// stays the emptiest.
pub const FIRST_PRIORITY: u16 = 50;

/// The spare: made as a managed file is (through its `.partial`), but never enabled under this
/// name; it becomes `cluster-ai-NNNNNN.swap` when it is enabled.
pub const SPARE: &str = "cluster-ai-spare.swap";

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
    /// The spare (complete, not enabled), with its size.
    #[serde(default)]
    pub spare: Option<(PathBuf, u64)>,
}

impl Inventory {
    /// Sorts the swap table and the directory listing (`files`, with their sizes) into the
    /// four kinds. The directory is the truth of what is ours: a file of ours is active when
    /// the table lists its path, or, failing that, when `is_active` says so (the table shows
    /// files enabled from another mount namespace under a path we cannot see; their line is
    /// found by file name). A managed file's size is the file's own: the table leaves out the
    /// header page, and on filesystems with small blocks a few pages more.
    pub fn new(dir: &Path, table: &[SwapEntry], files: &[DirFile], is_active: &dyn Fn(&str) -> bool) -> Self {
        let mut inv = Inventory::default();
        let mut claimed = vec![false; table.len()];
        let mut files: Vec<&DirFile> = files.iter().collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        for file in files {
            let name = &file.name;
            if *name == SPARE {
                inv.spare = Some((dir.join(name), file.size));
                continue;
            }
            if name.strip_suffix(PARTIAL) == Some(SPARE) {
                inv.partials.push(dir.join(name));
                continue;
            }
            let Some((seq, partial)) = parse_name(name) else { continue };
            let path = dir.join(name);
            if partial {
                inv.partials.push(path);
                continue;
            }
            let unclaimed = |i: &usize, claimed: &[bool]| !claimed[*i] && table[*i].kind == "file";
            let exact = (0..table.len()).find(|i| unclaimed(i, &claimed) && table[*i].path == path);
            let line = exact.or_else(|| {
                is_active(name)
                    .then(|| (0..table.len()).find(|i| unclaimed(i, &claimed) && table[*i].path.file_name() == path.file_name()))
                    .flatten()
            });
            match line {
                Some(i) => {
                    claimed[i] = true;
                    let e = &table[i];
                    inv.managed.push(ManagedFile { path, seq, size_bytes: file.size, used_bytes: e.used_bytes, priority: e.priority });
                }
                // Active but with no line of its own: in use, so never "inactive" (never deleted).
                None if is_active(name) => {}
                None => inv.inactive.push(path),
            }
        }
        inv.managed.sort_by_key(|m| m.seq);
        inv.foreign = table.iter().zip(&claimed).filter(|(_, c)| !**c).map(|(e, _)| e.clone()).collect();
        inv
    }

    /// Reads the swap table and lists the open swap directory.
    pub fn read(dir: &Path, os: &mut dyn SwapOs) -> Result<Self, SwapError> {
        let table = os.swap_table()?;
        let files = os.list_dir()?;
        Ok(Self::new(dir, &table, &files, &|name| os.is_active(name)))
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

/// The file name of a path we made (always inside swap.dir).
pub fn name_of(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// How long each step of [`create`] took, for the log line (issue 19: where the time goes
/// between the decision and the swapon under a burst).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Steps {
    pub create: std::time::Duration,
    pub allocate: std::time::Duration,
    pub format: std::time::Duration,
    pub rename: std::time::Duration,
    pub swapon: std::time::Duration,
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "open {:.1} ms, fallocate {:.1} ms, header+fsync {:.1} ms, rename+dir fsync {:.1} ms, swapon {:.1} ms",
            ms(self.create),
            ms(self.allocate),
            ms(self.format),
            ms(self.rename),
            ms(self.swapon)
        )
    }
}

/// Makes `name` complete but not enabled: `.partial` (O_EXCL|O_NOFOLLOW, 0600) → [NOCOW on
/// btrfs] → fallocate → header → fsync → rename to `name` → fsync dir, hitting the fault
/// points `faults` (after the create, the fallocate, the header and the rename) where named.
/// On an error both names are removed. Returns how long each step took and when the last ended.
fn make(
    os: &mut dyn SwapOs,
    fs: SwapFs,
    name: &str,
    size: u64,
    faults: [Option<&'static str>; 4],
) -> std::io::Result<(Steps, std::time::Instant)> {
    let partial = format!("{name}{PARTIAL}");
    let mut steps = Steps::default();
    let mut t = std::time::Instant::now();
    let mut lap = |d: &mut std::time::Duration| {
        *d = t.elapsed();
        t = std::time::Instant::now();
    };
    let hit = |i: usize| faults[i].map_or(Ok(()), fault::hit);
    os.create_file(&partial, fs == SwapFs::Btrfs)?;
    lap(&mut steps.create);
    let made = (|| {
        hit(0)?;
        os.allocate(&partial, size)?;
        lap(&mut steps.allocate);
        hit(1)?;
        os.format(&partial, size)?;
        lap(&mut steps.format);
        hit(2)?;
        os.rename(&partial, name)?;
        lap(&mut steps.rename);
        hit(3)
    })();
    if let Err(e) = made {
        let _ = os.delete(&partial);
        let _ = os.delete(name);
        return Err(e);
    }
    Ok((steps, t))
}

/// Creates, formats and enables one swap file: [`make`] → swapon. On an error the file is
/// removed; a crash leaves a `.partial` or an inactive file that the next start cleans up or
/// enables. Returns the path and how long each step took.
pub fn create(os: &mut dyn SwapOs, dir: &Path, fs: SwapFs, seq: u32, size: u64, priority: u16) -> std::io::Result<(PathBuf, Steps)> {
    let name = file_name(seq);
    let faults = [Some("swap-created"), Some("swap-allocated"), Some("swap-formatted"), Some("swap-renamed")];
    let (mut steps, t) = make(os, fs, &name, size, faults)?;
    if let Err(e) = os.swapon(&name, priority) {
        let _ = os.delete(&name);
        return Err(e);
    }
    steps.swapon = t.elapsed();
    fault::hit("swap-enabled")?;
    Ok((dir.join(name), steps))
}

/// Makes the spare as [`create`] makes a file, but stops before the swapon ([`make`] with
/// [`SPARE`] as its name). A crash leaves a `.partial` (deleted at the next start) or a
/// complete spare (kept as the spare).
pub fn create_spare(os: &mut dyn SwapOs, dir: &Path, fs: SwapFs, size: u64) -> std::io::Result<(PathBuf, Steps)> {
    let (steps, _) = make(os, fs, SPARE, size, [Some("spare-created"), None, Some("spare-formatted"), None])?;
    Ok((dir.join(SPARE), steps))
}

/// Enables the spare as managed file `seq`: rename (durable) → swapon. A crash between the two
/// leaves an inactive complete managed file, which the next start enables ([`recover`]). On a
/// failed swapon the file is deleted.
pub fn enable_spare(os: &mut dyn SwapOs, dir: &Path, seq: u32, priority: u16) -> std::io::Result<(PathBuf, Steps)> {
    let name = file_name(seq);
    let mut steps = Steps::default();
    let t = std::time::Instant::now();
    os.rename(SPARE, &name)?;
    steps.rename = t.elapsed();
    fault::hit("spare-renamed")?;
    let t = std::time::Instant::now();
    if let Err(e) = os.swapon(&name, priority) {
        let _ = os.delete(&name);
        return Err(e);
    }
    steps.swapon = t.elapsed();
    Ok((dir.join(name), steps))
}

/// swapoff, then delete. A failed swapoff leaves the file in place (and in use).
pub fn remove(os: &mut dyn SwapOs, path: &Path) -> std::io::Result<()> {
    fault::hit("swap-before-off")?;
    os.swapoff(name_of(path))?;
    fault::hit("swap-off")?;
    os.delete(name_of(path))
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
/// still fits under `max_size` (or delete it). An inactive file the kernel refuses as a swap
/// file (EINVAL: no or a bad header) is deleted; one refused for a reason of the moment
/// (ENOMEM for its swap map when memory is tight, EPERM with the kernel's swap table full,
/// ENFILE) is kept, and the refusal is in `failed`: it says nothing of the file, and a whole
/// file is what a node short of memory needs. No pidfile: the swap table and the directory are
/// the whole truth.
pub fn recover(os: &mut dyn SwapOs, inv: &Inventory, sizes: &dyn Fn(&Path) -> u64, max_size: u64) -> Recovery {
    let mut r = Recovery { adopted: inv.managed.iter().map(|m| m.path.clone()).collect(), ..Default::default() };
    for p in &inv.partials {
        match os.delete(name_of(p)) {
            Ok(()) => r.deleted.push(p.clone()),
            Err(e) => r.failed.push(e.to_string()),
        }
    }
    let mut total = inv.managed_total();
    let mut priority = inv.next_priority();
    for p in &inv.inactive {
        let fits = total.checked_add(sizes(p)).is_some_and(|t| t <= max_size);
        match os.swapon(name_of(p), priority) {
            Ok(()) if fits => {
                total += sizes(p);
                priority = priority.saturating_sub(1);
                r.enabled.push(p.clone());
                continue;
            }
            Ok(()) => {
                // Over max_size: it goes; it was only enabled to prove it is ours and whole.
                if let Err(e) = os.swapoff(name_of(p)) {
                    r.failed.push(e.to_string());
                    continue;
                }
            }
            // Active after all (EBUSY): in use, so it is never deleted.
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                r.adopted.push(p.clone());
                continue;
            }
            Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => {
                r.failed.push(format!("{e}; the file is kept, and enabled at the next start or when swap is added"));
                continue;
            }
            Err(_) => {}
        }
        match os.delete(name_of(p)) {
            Ok(()) => r.deleted.push(p.clone()),
            Err(e) => r.failed.push(e.to_string()),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, u64)]) -> Vec<DirFile> {
        list.iter().map(|(n, s)| DirFile { name: n.to_string(), size: *s }).collect()
    }

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
        let names = files(&[
            ("cluster-ai-000001.swap", 2 << 30),
            ("cluster-ai-000003.swap", 1 << 30),
            ("cluster-ai-000004.swap", 1 << 30),
            ("cluster-ai-000005.swap.partial", 0),
            ("mine.swap", 1 << 30),
            ("notes.txt", 5),
        ]);
        let inv = Inventory::new(dir, &table, &names, &|_| false);
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
        assert_eq!(Inventory::new(dir, &[], &[], &|_| false).next_priority(), FIRST_PRIORITY);
        assert_eq!(Inventory::new(dir, &[], &[], &|_| false).next_seq(), 1);
        // The table leaves out the header page (and on 1 KiB-block ext4 a few pages more):
        // the size is the file's.
        let short = [entry("/var/lib/cluster-ai/swap/cluster-ai-000003.swap", "file", (64 << 20) - 24 * 1024, 0, 50)];
        let one = files(&[("cluster-ai-000003.swap", 64 << 20)]);
        assert_eq!(Inventory::new(dir, &short, &one, &|_| false).managed_total(), 64 << 20);
    }

    #[test]
    fn a_file_enabled_from_another_mount_namespace_is_still_ours() {
        // A restarted service sees its earlier swapon under the path of a mount it cannot see.
        let dir = Path::new("/var/lib/cluster-ai/swap");
        let table = [entry("/cluster-ai-000001.swap", "file", 2 << 30, 9, 50), entry("/swapfile", "file", 1 << 30, 0, -2)];
        let names = files(&[("cluster-ai-000001.swap", 2 << 30), ("cluster-ai-000002.swap", 1 << 30)]);
        let active = |n: &str| n == "cluster-ai-000001.swap";
        let inv = Inventory::new(dir, &table, &names, &active);
        assert_eq!(inv.managed.len(), 1);
        let m = &inv.managed[0];
        assert_eq!((m.path.clone(), m.used_bytes, m.priority), (dir.join("cluster-ai-000001.swap"), 9, 50));
        assert_eq!(inv.inactive, [dir.join("cluster-ai-000002.swap")]);
        assert_eq!(inv.foreign.len(), 1);
        // Active, but no line of the table is left for it: in use, so neither managed nor
        // inactive (never deleted).
        let inv = Inventory::new(dir, &table[1..], &names[..1], &|_| true);
        assert!(inv.managed.is_empty() && inv.inactive.is_empty());
    }
}
