//! The daemon's own process, as Prometheus client libraries report it (`process_*` metrics):
//! CPU time, resident and virtual memory, open and maximum file descriptors, start time. The
//! same sources as client_golang's procfs collector: `/proc/self/stat`, `/proc/self/limits`,
//! `/proc/self/fd` and `btime` in `/proc/stat` (read once), under a root so tests run on fixtures.

use super::fs::read_text;
use super::procfs::ProcFs;

/// One reading of the process. Seconds and bytes, as the `process_*` metrics want them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time (`utime + stime` of `/proc/self/stat`), in seconds.
    pub cpu_seconds: f64,
    /// Resident set size (`rss` pages × page size), in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size (`vsize`), in bytes.
    pub virtual_memory_bytes: u64,
    /// Entries of `/proc/self/fd`.
    pub open_fds: u64,
    /// The soft limit of "Max open files" in `/proc/self/limits` (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Boot time (`btime`) plus `starttime` ticks, as a Unix time in seconds.
    pub start_time_seconds: f64,
}

/// Bounded reads: these files are a few hundred bytes each.
const MAX: u64 = 64 << 10;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, the `USER_HZ` of `/proc`'s tick counts;
/// 100 on Linux when sysconf cannot say).
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).map_or(100, |t| t as u64)
}

impl ProcessStats {
    /// Reads `proc/self/*` under `procfs`'s root; `boot_time` is [`boot_time`]'s, read once by
    /// the caller (`/proc/stat` is long on a machine of many CPUs, and `btime` never changes).
    /// Errors name the file.
    pub fn read(procfs: &ProcFs, boot_time: u64) -> Result<ProcessStats, String> {
        let read = |rel: &str| {
            let path = procfs.path(rel);
            read_text(&path, MAX).map_err(|e| format!("{}: {e}", super::display_path(&path)))
        };
        let named = |rel: &str, e: String| format!("{}: {e}", super::display_path(&procfs.path(rel)));
        let stat = parse_self_stat(&read("self/stat")?).map_err(|e| named("self/stat", e))?;
        let max_fds = parse_max_open_files(&read("self/limits")?).map_err(|e| named("self/limits", e))?;
        let fd_dir = procfs.path("self/fd");
        let open_fds = std::fs::read_dir(&fd_dir).map_err(|e| format!("{}: {e}", super::display_path(&fd_dir)))?.count() as u64;
        let hz = clock_ticks_per_second() as f64;
        Ok(ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / hz,
            resident_memory_bytes: stat.rss_pages.saturating_mul(super::swap::page_size()),
            virtual_memory_bytes: stat.vsize,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + stat.starttime as f64 / hz,
        })
    }
}

/// The boot time (`btime` of `proc/stat` under `procfs`'s root), in seconds since the Unix epoch.
pub fn boot_time(procfs: &ProcFs) -> Result<u64, String> {
    let path = procfs.path("stat");
    let shown = super::display_path(&path);
    // The whole file: `btime` follows the per-CPU and interrupt lines.
    let text = read_text(&path, super::fs::LARGE_FILE).map_err(|e| format!("{shown}: {e}"))?;
    parse_btime(&text).map_err(|e| format!("{shown}: {e}"))
}

/// The fields of `/proc/<pid>/stat` that [`ProcessStats`] uses, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfStat {
    /// Clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot.
    pub starttime: u64,
    /// Bytes.
    pub vsize: u64,
    /// Pages.
    pub rss_pages: u64,
}

/// `/proc/<pid>/stat` (proc(5)): the command name is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted after the last `)`.
pub fn parse_self_stat(text: &str) -> Result<SelfStat, String> {
    let (_, rest) = text.rsplit_once(')').ok_or("no \"(comm)\" field")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers fields from 1; `rest` starts at field 3 (state).
    let field = |n: usize, name: &str| -> Result<u64, String> {
        let w = fields.get(n - 3).ok_or_else(|| format!("no field {n} ({name}); the line has {} fields", fields.len() + 2))?;
        w.parse::<u64>().map_err(|_| format!("field {n} ({name}) is not a number: {w:?}"))
    };
    Ok(SelfStat {
        utime: field(14, "utime")?,
        stime: field(15, "stime")?,
        starttime: field(22, "starttime")?,
        vsize: field(23, "vsize")?,
        rss_pages: field(24, "rss")?,
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the Unix epoch.
pub fn parse_btime(text: &str) -> Result<u64, String> {
    let line = text.lines().find_map(|l| l.strip_prefix("btime ")).ok_or("no \"btime\" line")?;
    line.trim().parse().map_err(|_| format!("btime is not a number: {:?}", line.trim()))
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`; `None` for "unlimited".
pub fn parse_max_open_files(text: &str) -> Result<Option<u64>, String> {
    let line = text.lines().find_map(|l| l.strip_prefix("Max open files")).ok_or("no \"Max open files\" line")?;
    let soft = line.split_whitespace().next().ok_or("\"Max open files\" has no soft limit")?;
    match soft {
        "unlimited" => Ok(None),
        n => n.parse().map(Some).map_err(|_| format!("\"Max open files\" soft limit is not a number: {n:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line (kernel 6.18), its comm with a space and a parenthesis to show the counting.
    const STAT: &str = "4242 (cluster) ai) S 1 4242 4242 0 -1 4194560 1393 0 0 0 17 9 0 0 20 0 1 0 5120 9728000 1100 \
                        18446744073709551615 1 1 0 0 0 0 0 4096 17127 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn self_stat_counts_fields_after_the_last_parenthesis() {
        let s = parse_self_stat(STAT).unwrap();
        assert_eq!(s, SelfStat { utime: 17, stime: 9, starttime: 5120, vsize: 9_728_000, rss_pages: 1100 });
        for bad in ["", "1 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 4194560 1393 0 0 0 x 9 0 0 20 0 1 0 5120 9728000 1100"] {
            assert!(parse_self_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn btime_and_open_file_limits_parse_and_reject_garbage() {
        assert_eq!(parse_btime("cpu  1 2 3 4\nbtime 1764547200\nprocesses 9\n").unwrap(), 1_764_547_200);
        assert!(parse_btime("cpu 1\n").is_err() && parse_btime("btime x\n").is_err());
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits).unwrap(), Some(1024));
        assert_eq!(parse_max_open_files("Max open files            unlimited            unlimited            files\n").unwrap(), None);
        assert!(parse_max_open_files("Max cpu time unlimited\n").is_err());
        assert!(parse_max_open_files("Max open files            lots    2   files\n").is_err());
    }

    #[test]
    fn this_process_reads_as_itself() {
        let p = ProcessStats::read(&ProcFs::default(), boot_time(&ProcFs::default()).unwrap()).unwrap();
        assert!(p.resident_memory_bytes > 0 && p.virtual_memory_bytes >= p.resident_memory_bytes, "{p:?}");
        // stdin, stdout, stderr at least, and the fd of the directory being listed.
        assert!(p.open_fds >= 3, "{p:?}");
        let now = crate::sys::unix_ms() as f64 / 1000.0;
        assert!(p.start_time_seconds > now - 86400.0 * 365.0 && p.start_time_seconds <= now + 1.0, "{p:?}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = ProcessStats::read(&ProcFs::new(dir.path()), 0).unwrap_err();
        assert!(e.contains("proc/self/stat"), "{e}");
        let e = boot_time(&ProcFs::new(dir.path())).unwrap_err();
        assert!(e.contains("proc/stat"), "{e}");
    }
}
