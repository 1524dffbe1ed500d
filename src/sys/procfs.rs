//! Parsers for the `/proc` files the daemon reads. Each parser is a pure function over the
//! file's text, so it is tested on fixtures; [`ProcFs`] reads them under a root directory
//! (`/` in production, a fixture tree in tests), as systemd's zram-generator does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A `/proc` file that could not be read or did not look as the kernel writes it.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// The parts of `/proc/meminfo` the daemon uses, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Memory in use as the seed counts it: 1 − MemAvailable/MemTotal, in percent. Every task
/// measures memory with this one formula, so they agree on which side of a threshold it is.
pub fn used_percent(total: u64, available: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    100.0 * (1.0 - available.min(total) as f64 / total as f64)
}

impl MemInfo {
    pub fn used_percent(&self) -> f64 {
        used_percent(self.total, self.available)
    }

    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let (mut total, mut available, mut swap_total, mut swap_free) = (None, None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let number: u64 =
            words.next().and_then(|w| w.parse().ok()).ok_or_else(|| format!("{key}: expected a number of kB, found {:?}", rest.trim()))?;
        let scale = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => return Err(format!("{key}: unknown unit {unit:?}")),
        };
        *slot = Some(number.saturating_mul(scale));
        // The four come in the first 16 of some 55 lines; the rest is not read (read twice
        // every few seconds, this was a quarter of the idle daemon's instructions).
        if total.is_some() && available.is_some() && swap_total.is_some() && swap_free.is_some() {
            break;
        }
    }
    let need = |v: Option<u64>, key: &str| v.ok_or_else(|| format!("no {key} line"));
    Ok(MemInfo {
        total: need(total, "MemTotal")?,
        available: need(available, "MemAvailable")?,
        swap_total: swap_total.unwrap_or(0),
        swap_free: swap_free.unwrap_or(0),
    })
}

/// Cumulative CPU time of all CPUs, from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Busy percentage between an earlier reading and this one; `None` when no time passed
    /// (or the counters went backwards, which a fixture or a container can produce).
    pub fn busy_percent_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        // The ratio first: it is at most 1 after rounding, so the percentage is at most 100
        // (100 × busy / total can round past it when busy is total).
        (total > 0).then(|| 100.0 * (busy.min(total) as f64 / total as f64))
    }
}

pub fn parse_stat(text: &str) -> Result<CpuTimes, String> {
    let line = text.lines().find(|l| l.starts_with("cpu ")).ok_or("no aggregate \"cpu \" line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse::<u64>().map_err(|_| format!("cpu: not a number: {w:?}")))
        .collect::<Result<_, _>>()?;
    if fields.len() < 4 {
        return Err(format!("cpu: expected at least 4 counters, found {}", fields.len()));
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already
    // counted in user/nice, so only the first eight add up to the total.
    let counted = &fields[..fields.len().min(8)];
    // Counters the kernel writes never come near u64::MAX in sum; a text whose sum overflows
    // is not the kernel's, and a wrapped total would make a busy machine look idle.
    let total = counted.iter().try_fold(0u64, |sum, n| sum.checked_add(*n)).ok_or("cpu: the counters' sum overflows u64")?;
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    Ok(CpuTimes { busy: total.saturating_sub(idle), total })
}

/// One `/proc/pressure/*` file: the 10-second averages in percent, and the cumulative stall
/// times (`total=`, microseconds since boot) that `/metrics` exports as counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub some_avg10: f64,
    /// Absent from `cpu` on kernels before 5.13.
    pub full_avg10: Option<f64>,
    /// Time some task stalled, in microseconds since boot (`None` when the line has no `total=`).
    #[serde(default)]
    pub some_total_us: Option<u64>,
    #[serde(default)]
    pub full_total_us: Option<u64>,
}

pub fn parse_pressure(text: &str) -> Result<Pressure, String> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let words: Vec<&str> = words.collect();
        let avg10 = words.iter().find_map(|w| w.strip_prefix("avg10=")).ok_or_else(|| format!("no avg10= in {line:?}"))?;
        // A share of time in percent: NaN, infinities and values outside 0..=100 are not the
        // kernel's, and a NaN would compare as "under every threshold".
        let value = avg10.parse::<f64>().ok().filter(|v| (0.0..=100.0).contains(v));
        let value = value.ok_or_else(|| format!("avg10 is not a percentage: {avg10:?}"))?;
        let total = match words.iter().find_map(|w| w.strip_prefix("total=")) {
            None => None,
            Some(t) => Some(t.parse::<u64>().map_err(|_| format!("total is not a number of microseconds: {t:?}"))?),
        };
        *slot = Some((value, total));
    }
    let (some_avg10, some_total_us) = some.ok_or("no \"some\" line")?;
    Ok(Pressure { some_avg10, full_avg10: full.map(|f| f.0), some_total_us, full_total_us: full.and_then(|f| f.1) })
}

pub fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let mut out = [0.0; 3];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        let w = words.next().ok_or("fewer than three load averages")?;
        // A load is a finite number, never negative (NaN, infinities and "-1" are not the kernel's).
        *slot = w.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| format!("not a load average: {w:?}"))?;
    }
    Ok(out)
}

/// A `/proc` file kept open and re-read from offset 0 with one `pread` into a reused buffer:
/// the kernel regenerates the text on each read, and the daemon saves an open, a stat, a close
/// and the growing reads of `read_to_string` on every sample.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
}

impl ProcFile {
    pub fn open(path: PathBuf) -> Result<Self, ProcError> {
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Self { path, file, buf: vec![0; 4096] }),
            Err(source) => Err(ProcError::Read { path, source }),
        }
    }

    /// The file's whole current text.
    pub fn read(&mut self) -> Result<&str, ProcError> {
        use std::os::unix::fs::FileExt;
        let mut len = 0;
        loop {
            let n = self
                .file
                .read_at(&mut self.buf[len..], len as u64)
                .map_err(|source| ProcError::Read { path: self.path.clone(), source })?;
            len += n;
            // A short read is the end: /proc text comes whole when the buffer can hold it.
            if n == 0 || len < self.buf.len() {
                break;
            }
            if self.buf.len() as u64 >= super::fs::LARGE_FILE {
                return Err(ProcError::Parse { path: self.path.clone(), what: format!("longer than {} bytes", super::fs::LARGE_FILE) });
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        std::str::from_utf8(&self.buf[..len]).map_err(|_| ProcError::Parse { path: self.path.clone(), what: "not UTF-8".into() })
    }

    pub fn parse<T>(&mut self, parse: fn(&str) -> Result<T, String>) -> Result<T, ProcError> {
        let text = self.read()?;
        parse(text).map_err(|what| ProcError::Parse { path: self.path.clone(), what })
    }
}

/// Reads `/proc` files under `root`.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/")
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join("proc").join(rel)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn open(&self, rel: &str) -> Result<ProcFile, ProcError> {
        ProcFile::open(self.path(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:        20000000 kB\nMemAvailable:   18432000 kB\nBuffers: 1 kB\nSwapTotal:       2097148 kB\nSwapFree:        1048574 kB\n";

    #[test]
    fn meminfo_parses_the_four_fields_in_bytes() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total, 24_576_000 * 1024);
        assert_eq!(m.available, 18_432_000 * 1024);
        assert_eq!(m.swap_used(), (2_097_148 - 1_048_574) * 1024);
        assert!((m.used_percent() - 25.0).abs() < 1e-9);
    }

    #[test]
    fn meminfo_without_memavailable_is_an_error() {
        let err = parse_meminfo("MemTotal: 10 kB\n").unwrap_err();
        assert!(err.contains("MemAvailable"), "{err}");
    }

    #[test]
    fn meminfo_with_garbage_numbers_is_an_error_not_a_panic() {
        for bad in ["MemTotal: lots kB\nMemAvailable: 1 kB", "MemTotal: 1 MB\nMemAvailable: 1 kB", "MemTotal:", "", "\0\0\0"] {
            assert!(parse_meminfo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_counts_iowait_as_idle_and_guest_not_twice() {
        let a = parse_stat("cpu  100 0 100 700 100 0 0 0 50 0\ncpu0 1 1 1 1\n").unwrap();
        assert_eq!(a, CpuTimes { busy: 200, total: 1000 });
        let b = parse_stat("cpu  200 0 200 1400 200 0 0 0 90 0\n").unwrap();
        assert_eq!(b.busy_percent_since(&a), Some(20.0));
        assert_eq!(a.busy_percent_since(&b), None, "counters going backwards give no figure");
        assert_eq!(a.busy_percent_since(&a), None);
    }

    #[test]
    fn stat_malformed_is_an_error() {
        for bad in ["", "cpu0 1 2 3 4", "cpu  1 2 x 4", "cpu  1 2", "intr 5"] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pressure_parses_some_and_optional_full() {
        let p =
            parse_pressure("some avg10=1.50 avg60=0.00 avg300=0.00 total=12\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=3\n").unwrap();
        assert_eq!(p, Pressure { some_avg10: 1.5, full_avg10: Some(0.25), some_total_us: Some(12), full_total_us: Some(3) });
        let cpu = parse_pressure("some avg10=3.00 avg60=0.00 avg300=0.00 total=12\n").unwrap();
        assert_eq!(cpu.full_avg10, None);
        for bad in ["", "some avg60=1", "some avg10=abc", "full avg10=1.0", "some avg10=1.0 total=-5"] {
            assert!(parse_pressure(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        assert_eq!(parse_loadavg("0.50 1.25 2.00 1/234 5678\n").unwrap(), [0.5, 1.25, 2.0]);
        for bad in ["", "0.5 1.0", "a b c"] {
            assert!(parse_loadavg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn readers_use_the_root_and_name_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("proc");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("meminfo"), MEMINFO).unwrap();
        std::fs::write(proc_dir.join("stat"), "cpu 1 2\n").unwrap();
        let fs = ProcFs::new(dir.path());
        assert_eq!(fs.open("meminfo").unwrap().parse(parse_meminfo).unwrap().total, 24_576_000 * 1024);
        let err = fs.open("stat").unwrap().parse(parse_stat).unwrap_err().to_string();
        assert!(err.contains("proc/stat") && err.contains("at least 4"), "{err}");
        let err = fs.open("loadavg").unwrap_err().to_string();
        assert!(err.contains("proc/loadavg"), "{err}");
    }
}

/// The parsers on text captured from a real kernel (6.18, this project's CI machine kind):
/// `tests/fixtures/proc-6.18/`.
#[cfg(test)]
mod captured {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc-6.18").join(name)).unwrap()
    }

    #[test]
    fn real_kernel_text_parses() {
        let m = parse_meminfo(&fixture("meminfo")).unwrap();
        assert!(m.total > 1 << 30 && m.available <= m.total && m.swap_free <= m.swap_total);
        let cpu = parse_stat(&fixture("stat")).unwrap();
        assert!(cpu.busy < cpu.total);
        for p in ["pressure/memory", "pressure/io"] {
            assert!(parse_pressure(&fixture(p)).unwrap().full_avg10.is_some(), "{p}");
        }
        // Since 5.13 cpu has a "full" line too (all zeros at system level).
        assert_eq!(parse_pressure(&fixture("pressure/cpu")).unwrap().full_avg10, Some(0.0));
        assert!(parse_loadavg(&fixture("loadavg")).is_ok());
        let swaps = crate::sys::swap::parse_swaps(&fixture("swaps")).unwrap();
        assert_eq!(swaps.len(), 1);
        assert_eq!(swaps[0].path, Path::new("/var/lib/cluster-ai/swap dir/cluster-ai-000001.swap"), "\\040 unescaped");
        assert_eq!((swaps[0].kind.as_str(), swaps[0].size_bytes, swaps[0].priority), ("file", 16380 * 1024, 50));
    }
}

#[cfg(test)]
mod props;
