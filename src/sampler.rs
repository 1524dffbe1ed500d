//! The sampler task: CPU, memory, swap, disk and pressure, every `sample_interval`, published
//! as the latest [`Snapshot`] on a watch channel that the other tasks and `status` read.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::human_size;
use crate::runtime::TaskCtx;
use crate::sys::fs::{disk_usage, DiskUsage};
use crate::sys::procfs::{
    parse_loadavg, parse_meminfo, parse_pressure, parse_stat, CpuTimes, MemInfo, Pressure, ProcError, ProcFile, ProcFs,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at_unix_ms: u64,
    /// Busy share of all CPUs since the previous sample; absent in the very first one.
    pub cpu_busy_percent: Option<f64>,
    /// CPU time of all CPUs since boot, split as the CPU watch splits it (iowait counts as
    /// idle, guest time is not counted twice); absent when `/proc/stat` could not be read.
    #[serde(default)]
    pub cpu_seconds: Option<CpuSeconds>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_used_percent: f64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disk_root: Option<DiskUsage>,
    pub disk_swap_dir: Option<DiskUsage>,
    /// Absent when the kernel has no PSI, or when its files could not be read this time
    /// (`pressure_unreadable`).
    pub pressure: Option<PressureSet>,
    /// The kernel has PSI but its files could not be read this time (no descriptor left): the
    /// measures that use it hold rather than act as on a kernel without PSI.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pressure_unreadable: bool,
    /// The last reading of `/proc/loadavg` (kept while it cannot be read).
    pub load_average: [f64; 3],
}

/// Cumulative CPU time of all CPUs, in seconds (`/proc/stat`'s ticks over `USER_HZ`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuSeconds {
    pub busy: f64,
    pub idle: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PressureSet {
    pub memory: Pressure,
    pub cpu: Pressure,
    pub io: Pressure,
}

impl Snapshot {
    /// The one line systemd shows as the unit's status, e.g. `mem 43% swap 0 B/2.0 GiB cpu 7%`.
    pub fn summary(&self) -> String {
        let cpu = self.cpu_busy_percent.map_or("-".into(), |c| format!("{c:.0}%"));
        format!(
            "mem {:.0}% swap {}/{} cpu {cpu}",
            self.memory_used_percent,
            human_size(self.swap_used_bytes),
            human_size(self.swap_total_bytes)
        )
    }
}

/// One `/proc` file the sampler reads every time: opened once, reopened after a failed read.
struct Slot {
    rel: &'static str,
    file: Option<ProcFile>,
}

impl Slot {
    const fn new(rel: &'static str) -> Self {
        Self { rel, file: None }
    }

    fn parse<T>(&mut self, procfs: &ProcFs, parse: fn(&str) -> Result<T, String>) -> Result<T, ProcError> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(procfs.open(self.rel)?),
        };
        let result = file.parse(parse);
        if matches!(result, Err(ProcError::Read { .. })) {
            self.file = None;
        }
        result
    }

    /// `Ok(None)` when the file does not exist (a kernel without PSI).
    fn parse_optional<T>(&mut self, procfs: &ProcFs, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, ProcError> {
        match self.parse(procfs, parse) {
            Ok(v) => Ok(Some(v)),
            Err(ProcError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Keeps the files open and the previous CPU reading, so each sample reports the busy share
/// since the last one.
pub struct Sampler {
    procfs: ProcFs,
    meminfo: Slot,
    stat: Slot,
    loadavg: Slot,
    pressure: [Slot; 3],
    previous_cpu: Option<CpuTimes>,
    clock_ticks: u64,
    last_load_average: [f64; 3],
    /// The figures that could not be read at the last sample, by name: each is said once when
    /// it fails and once when it is back, not at every sample.
    failing: std::collections::BTreeSet<&'static str>,
}

impl Sampler {
    pub fn new(procfs: ProcFs) -> Self {
        Self {
            procfs,
            meminfo: Slot::new("meminfo"),
            stat: Slot::new("stat"),
            loadavg: Slot::new("loadavg"),
            pressure: [Slot::new("pressure/memory"), Slot::new("pressure/cpu"), Slot::new("pressure/io")],
            previous_cpu: None,
            clock_ticks: crate::sys::proc_self::clock_ticks_per_second(),
            last_load_average: [0.0; 3],
            failing: std::collections::BTreeSet::new(),
        }
    }

    /// One reading of everything. Memory is required; every other figure degrades to "absent"
    /// with a logged reason, so one odd file does not blind the daemon to memory.
    pub fn sample(&mut self, swap_dir: &Path) -> Result<Snapshot, ProcError> {
        let procfs = &self.procfs;
        let mem: MemInfo = self.meminfo.parse(procfs, parse_meminfo)?;
        let mut failed: Vec<(&'static str, String)> = Vec::new();
        let (cpu_busy_percent, cpu_seconds) = match self.stat.parse(procfs, parse_stat) {
            Ok(now) => {
                let pct = self.previous_cpu.and_then(|before| now.busy_percent_since(&before));
                self.previous_cpu = Some(now);
                let hz = self.clock_ticks as f64;
                (pct, Some(CpuSeconds { busy: now.busy as f64 / hz, idle: now.total.saturating_sub(now.busy) as f64 / hz }))
            }
            Err(e) => {
                failed.push(("CPU times", e.to_string()));
                (None, None)
            }
        };
        let [m, c, i] = &mut self.pressure;
        let (pressure, pressure_unreadable) = match (
            m.parse_optional(procfs, parse_pressure),
            c.parse_optional(procfs, parse_pressure),
            i.parse_optional(procfs, parse_pressure),
        ) {
            (Ok(Some(memory)), Ok(Some(cpu)), Ok(Some(io))) => (Some(PressureSet { memory, cpu, io }), false),
            (Ok(None), _, _) => (None, false),
            (m, c, i) => {
                let why = [m.err(), c.err(), i.err()].into_iter().flatten().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                failed.push(("pressure", why));
                (None, true)
            }
        };
        let load_average = match self.loadavg.parse(procfs, parse_loadavg) {
            Ok(l) => l,
            Err(e) => {
                failed.push(("load average (the last reading is kept)", e.to_string()));
                self.last_load_average
            }
        };
        self.last_load_average = load_average;
        let mut disk = |p: &Path| disk_usage(p).map_err(|e| failed.push(("disk usage", e.to_string()))).ok();
        let (disk_root, disk_swap_dir) = (disk(procfs.root()), disk(swap_dir));
        self.say_failing(failed);
        Ok(Snapshot {
            taken_at_unix_ms: crate::sys::unix_ms(),
            cpu_busy_percent,
            cpu_seconds,
            memory_total_bytes: mem.total,
            memory_available_bytes: mem.available,
            memory_used_percent: mem.used_percent(),
            swap_total_bytes: mem.swap_total,
            swap_used_bytes: mem.swap_used(),
            disk_root,
            disk_swap_dir,
            pressure,
            pressure_unreadable,
            load_average,
        })
    }

    /// Says each figure that fails now and did not at the last sample, and each that is back.
    fn say_failing(&mut self, failed: Vec<(&'static str, String)>) {
        let now: std::collections::BTreeSet<&'static str> = failed.iter().map(|(what, _)| *what).collect();
        for (what, error) in &failed {
            if !self.failing.contains(what) {
                tracing::warn!(error = %error, "cannot read {what}; said again when it is back");
            }
        }
        for what in self.failing.difference(&now) {
            tracing::info!("{what}: read again");
        }
        self.failing = now;
    }
}

pub type SnapshotSender = watch::Sender<Option<Arc<Snapshot>>>;
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// The task. Reads run inline on the runtime thread: `/proc` files are generated from kernel
/// memory and never block on a device, and a blocking-pool thread every few seconds would cost
/// more (a thread, its stack, extra wakeups) than the reads themselves.
pub async fn run(mut sampler: Sampler, snapshots: SnapshotSender, ctx: TaskCtx) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, os, .. } = ctx;
    let mut interval = config.borrow_and_update().sample_interval;
    heartbeat.set_period(interval);
    let mut ticker = os.clock.ticker(interval);
    let mut failing = false;
    let mut first = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = config.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let new = config.borrow_and_update().sample_interval;
                if new != interval {
                    interval = new;
                    heartbeat.set_period(interval);
                    ticker = os.clock.ticker(interval);
                    tracing::info!(sample_interval = ?interval, "sampler uses the new interval");
                }
            }
            _ = ticker.tick() => {
                if !first {
                    crate::fault::inject("sampler").await?;
                }
                first = false;
                let swap_dir = config.borrow().swap.dir.clone();
                match sampler.sample(&swap_dir) {
                    Ok(s) => {
                        if failing {
                            tracing::info!("memory readings are back");
                            failing = false;
                        }
                        snapshots.send_replace(Some(Arc::new(s)));
                    }
                    // Once per episode: a broken /proc would otherwise fill the journal.
                    Err(e) if !failing => {
                        tracing::error!(error = %e, "cannot read memory; keeping the last snapshot");
                        failing = true;
                    }
                    Err(_) => {}
                }
                heartbeat.beat();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path, meminfo: &str, stat: &str) {
        let p = dir.join("proc");
        std::fs::create_dir_all(p.join("pressure")).unwrap();
        std::fs::write(p.join("meminfo"), meminfo).unwrap();
        std::fs::write(p.join("stat"), stat).unwrap();
        std::fs::write(p.join("loadavg"), "0.10 0.20 0.30 1/100 42\n").unwrap();
        for r in ["memory", "io"] {
            std::fs::write(
                p.join("pressure").join(r),
                "some avg10=1.00 avg60=0 avg300=0 total=1\nfull avg10=0.50 avg60=0 avg300=0 total=1\n",
            )
            .unwrap();
        }
        std::fs::write(p.join("pressure/cpu"), "some avg10=2.00 avg60=0 avg300=0 total=1\n").unwrap();
    }

    #[test]
    fn snapshot_from_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        fixture(
            dir.path(),
            "MemTotal: 1000 kB\nMemAvailable: 250 kB\nSwapTotal: 2097152 kB\nSwapFree: 1048576 kB\n",
            "cpu  10 0 10 80 0 0 0 0\n",
        );
        let mut s = Sampler::new(ProcFs::new(dir.path()));
        let first = s.sample(&dir.path().join("swap")).unwrap();
        assert_eq!(first.cpu_busy_percent, None);
        assert_eq!(first.memory_used_percent, 75.0);
        assert_eq!(first.swap_used_bytes, 1 << 30);
        assert_eq!(first.load_average, [0.1, 0.2, 0.3]);
        let psi = first.pressure.unwrap();
        assert_eq!((psi.memory.full_avg10, psi.cpu.some_avg10, psi.cpu.full_avg10), (Some(0.5), 2.0, None));
        assert!(first.disk_swap_dir.is_some() && first.disk_root.is_some());

        std::fs::write(dir.path().join("proc/stat"), "cpu  40 0 40 120 0 0 0 0\n").unwrap();
        let second = s.sample(&dir.path().join("swap")).unwrap();
        assert_eq!(second.cpu_busy_percent, Some(60.0));
        // The raw counters /metrics exports: 80 busy and 120 idle ticks at USER_HZ.
        let hz = crate::sys::proc_self::clock_ticks_per_second() as f64;
        assert_eq!(second.cpu_seconds, Some(CpuSeconds { busy: 80.0 / hz, idle: 120.0 / hz }));
        assert_eq!(second.pressure.unwrap().memory.some_total_us, Some(1));
        assert_eq!(second.summary(), "mem 75% swap 1.0 GiB/2.0 GiB cpu 60%");
    }

    #[test]
    fn broken_extras_degrade_but_broken_memory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), "MemTotal: 1000 kB\nMemAvailable: 500 kB\n", "garbage\n");
        std::fs::write(dir.path().join("proc/pressure/io"), "nonsense\n").unwrap();
        std::fs::remove_file(dir.path().join("proc/loadavg")).unwrap();
        let mut s = Sampler::new(ProcFs::new(dir.path()));
        let snap = s.sample(Path::new("/")).unwrap();
        assert_eq!((snap.cpu_busy_percent, snap.cpu_seconds, snap.pressure, snap.load_average), (None, None, None, [0.0; 3]));
        // PSI is there but unreadable: said, so the measures hold rather than act as without PSI.
        assert!(snap.pressure_unreadable);
        assert_eq!(s.failing.iter().copied().collect::<Vec<_>>(), ["CPU times", "load average (the last reading is kept)", "pressure"]);
        // Back: the load average read again; gone again: its last reading kept, not zeros.
        std::fs::write(dir.path().join("proc/loadavg"), "0.10 0.20 0.30 1/100 42\n").unwrap();
        assert_eq!(s.sample(Path::new("/")).unwrap().load_average, [0.1, 0.2, 0.3]);
        assert!(!s.failing.iter().any(|f| f.starts_with("load average")));
        std::fs::remove_file(dir.path().join("proc/loadavg")).unwrap();
        assert_eq!(s.sample(Path::new("/")).unwrap().load_average, [0.1, 0.2, 0.3]);
        std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: x\n").unwrap();
        assert!(s.sample(Path::new("/")).is_err());
    }
}
