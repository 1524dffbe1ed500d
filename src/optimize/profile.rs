//! The hardware profile: what the resource checker (and, next, the optimizer) knows of the
//! machine. Gathered through `sys/`; everything after gathering is a pure function of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::sys::hardware::{self, Cpu, Gpu};
use crate::sys::nvml::{self, Nvml};
use crate::sys::procfs::{parse_meminfo, ProcFs};
use crate::sys::swap::{rotational_of, SwapFs};
use crate::sys::systemd::UnitMemory;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub cpu: Cpu,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub gpus: Vec<Gpu>,
    /// "driver 550.54.15", "absent" (no NVIDIA driver), "skipped (--quick)" or "failed: …".
    pub nvml: String,
    pub kernel: Kernel,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    /// The container's memory limit, when the daemon runs in a container with its own cgroup
    /// namespace (the top of the cgroup tree it sees has a `memory.max`): everything in the
    /// container shares it. Never the daemon's own unit's limit, which is not the cluster's.
    pub limit_bytes: Option<u64>,
    /// What the cluster can use: the smaller of the two.
    pub effective_bytes: u64,
    pub swap_total_bytes: u64,
    /// What the Dask workers may use together (see [`dask_worker_memory`]).
    #[serde(default)]
    pub dask_workers: WorkerMemory,
}

/// The memory the Dask workers may use together, in bytes, and where the number comes from
/// ("dask-worker.service MemoryMax=", "the host's RAM", …), as the plan's "why" names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMemory {
    pub bytes: u64,
    pub source: String,
}

/// The memory the Dask workers may use together: the tightest of the worker unit's
/// `MemoryMax=` and `MemoryHigh=` (systemd's properties, `None` = "infinity"), the `memory.max`
/// on the way up from the unit's cgroup (`unit_cgroup_limit`), the container's limit (shared by
/// everything in it) and the host's RAM (`total`). The daemon's own cgroup never counts: its
/// `MemoryMax=` is the daemon's, not the workers' (issue 18: a daemon in a 200 MiB cgroup
/// sized the workers of a 23.5 GiB host from 200 MiB).
pub fn dask_worker_memory(
    total: u64,
    container: Option<u64>,
    unit: Option<(&str, &UnitMemory)>,
    unit_cgroup_limit: Option<u64>,
) -> WorkerMemory {
    let mut best = WorkerMemory { bytes: total, source: "the host's RAM".into() };
    let mut consider = |bytes: Option<u64>, source: String| {
        if let Some(b) = bytes.filter(|b| *b < best.bytes) {
            best = WorkerMemory { bytes: b, source };
        }
    };
    consider(container, "the container's memory.max".into());
    if let Some((name, m)) = unit {
        consider(unit_cgroup_limit, format!("memory.max of {}'s cgroup {}", name, m.control_group.as_deref().unwrap_or("")));
        consider(m.memory_high, format!("{name} MemoryHigh="));
        consider(m.memory_max, format!("{name} MemoryMax="));
    }
    best
}

/// The profile's worker memory, now that the worker unit's limits were read from systemd
/// (`Ok(None)`: no such unit; `Err`: systemd could not be asked, said in the source).
pub fn set_worker_unit(p: &mut Profile, root: &Path, unit: &str, read: Result<Option<UnitMemory>, String>) {
    let container = crate::sys::hardware::container_memory_limit(root);
    p.memory.dask_workers = match read {
        Ok(Some(m)) => {
            let walked = m.control_group.as_deref().and_then(|cg| crate::sys::hardware::cgroup_memory_limit_of(root, cg));
            dask_worker_memory(p.memory.total_bytes, container, Some((unit, &m)), walked)
        }
        Ok(None) => {
            let mut w = dask_worker_memory(p.memory.total_bytes, container, None, None);
            w.source += &format!(" ({unit} is not a unit systemd knows)");
            w
        }
        Err(e) => {
            let mut w = dask_worker_memory(p.memory.total_bytes, container, None, None);
            w.source += &format!(" ({unit}'s limits unknown: {e})");
            w
        }
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// "root" or "swap_dir".
    pub role: String,
    pub path: PathBuf,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// `None`: the kind of disk cannot be told (device-mapper, network, virtual).
    pub rotational: Option<bool>,
    /// Sequential write speed measured by the full check (`None` with `--quick`).
    pub write_mib_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub psi: bool,
    /// The filesystem under swap.dir, or why the kernel cannot swap to a file there.
    pub swap_dir_filesystem: String,
    pub swap_files_supported: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub unit: String,
    pub unit_installed: bool,
    /// A socket that proves it present (Docker's), and whether it exists.
    pub socket: Option<PathBuf>,
    pub socket_present: Option<bool>,
    pub port: Option<u16>,
    /// Whether the port accepts connections on loopback (`None` with `--quick`).
    pub port_answering: Option<bool>,
}

/// The cluster's services as they usually run: unit names, Docker's socket, default ports.
const SERVICES: &[(&str, &str, Option<&str>, Option<u16>)] = &[
    ("docker", "docker.service", Some("var/run/docker.sock"), None),
    ("dask-scheduler", "dask-scheduler.service", None, Some(8786)),
    ("dask-worker", "dask-worker.service", None, None),
    ("ollama", "ollama.service", None, Some(11434)),
    ("open-webui", "open-webui.service", None, Some(8080)),
];

const PORT_TIMEOUT: Duration = Duration::from_millis(200);
/// What the full check writes to measure the swap disk.
pub const WRITE_TEST_BYTES: u64 = 64 << 20;

/// Which of the costlier sources to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub nvml: bool,
    pub ports: bool,
    pub write_test: bool,
}

impl Sources {
    /// `check --quick`: cheap sources only.
    pub const QUICK: Sources = Sources { nvml: false, ports: false, write_test: false };
    /// `check`: everything.
    pub const FULL: Sources = Sources { nvml: true, ports: true, write_test: true };
    /// What a plan needs: GPU memory, not disk speed or ports.
    pub const PLAN: Sources = Sources { nvml: true, ports: false, write_test: false };
}

/// Reads the machine under `root` (`/` in production), the costlier sources as `sources` says.
pub fn gather(cfg: &Config, root: &Path, sources: Sources) -> Result<Profile, String> {
    let procfs = ProcFs::new(root);
    let read = |rel: &str| {
        crate::sys::fs::read_text(&procfs.path(rel), crate::sys::fs::SMALL_FILE).map_err(|e| format!("{}: {e}", procfs.path(rel).display()))
    };
    let cpu = hardware::parse_cpuinfo(&read("cpuinfo")?)?;
    let mem = parse_meminfo(&read("meminfo")?)?;
    let container = hardware::container_memory_limit(root);
    let limit = container.filter(|l| *l < mem.total);
    let memory = Memory {
        total_bytes: mem.total,
        limit_bytes: limit,
        effective_bytes: limit.unwrap_or(mem.total).min(mem.total),
        swap_total_bytes: mem.swap_total,
        dask_workers: dask_worker_memory(mem.total, container, None, None),
    };

    let swap_dir = &cfg.swap.dir;
    // swap.dir may not exist yet: its filesystem is that of its nearest existing ancestor.
    let existing = swap_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/")).to_path_buf();
    let mut disks = Vec::new();
    for (role, path, probe) in
        [("root", Path::new("/").to_path_buf(), Path::new("/").to_path_buf()), ("swap_dir", swap_dir.clone(), existing.clone())]
    {
        let Ok(usage) = crate::sys::fs::disk_usage(&probe) else { continue };
        let dev = std::fs::metadata(&probe).map(|m| std::os::unix::fs::MetadataExt::dev(&m)).ok();
        let write = (sources.write_test && role == "swap_dir").then(|| hardware::write_throughput(&probe, WRITE_TEST_BYTES).ok()).flatten();
        disks.push(Disk {
            role: role.into(),
            path,
            total_bytes: usage.total_bytes,
            available_bytes: usage.available_bytes,
            rotational: dev.and_then(|d| rotational_of(root, d)),
            write_mib_per_s: write,
        });
    }

    let (fs_name, supported) = match crate::sys::swap::filesystem_at(&existing) {
        Ok(kind) => match kind {
            Ok(SwapFs::Btrfs) => match crate::sys::swap::btrfs::refusal(root, &existing) {
                Some(why) => (format!("btrfs: swap.dir {why}"), false),
                None => ("btrfs".into(), true),
            },
            Ok(fs) => (format!("{fs:?}").to_lowercase(), true),
            Err(why) => (why, false),
        },
        Err(e) => (format!("cannot statfs {}: {e}", existing.display()), false),
    };
    let kernel = Kernel { psi: procfs.path("pressure/memory").exists(), swap_dir_filesystem: fs_name, swap_files_supported: supported };

    let mut gpus = hardware::drm_gpus(root);
    let nvml = if !sources.nvml {
        "skipped (--quick)".to_string()
    } else {
        match nvml::probe() {
            Nvml::Absent => "absent".into(),
            Nvml::Failed(why) => format!("failed: {why}"),
            Nvml::Found { driver, gpus: found } => {
                // NVML knows NVIDIA cards better than DRM does: it replaces their sysfs lines.
                gpus.retain(|g| g.vendor != "nvidia");
                gpus.splice(0..0, found);
                format!("driver {driver}")
            }
        }
    };

    let services = SERVICES
        .iter()
        .map(|(name, unit, socket, port)| {
            let socket = socket.map(|s| root.join(s));
            Service {
                name: name.to_string(),
                unit: unit.to_string(),
                unit_installed: hardware::unit_installed(root, unit),
                socket_present: socket.as_ref().map(|s| s.exists()),
                socket,
                port: *port,
                port_answering: sources.ports.then(|| port.map(|p| hardware::port_answers(p, PORT_TIMEOUT))).flatten(),
            }
        })
        .collect();
    Ok(Profile { cpu, memory, disks, gpus, nvml, kernel, services })
}

/// How long gathering took, for `--quick`'s promise (well under 100 ms).
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// A machine of `cores` logical cores and `mem` bytes, an SSD with room, no GPU: for tests.
#[cfg(test)]
pub fn test_machine(cores: u32, mem: u64) -> Profile {
    const G: u64 = 1 << 30;
    Profile {
        cpu: Cpu { logical_cores: cores, physical_cores: cores, model: "test".into() },
        memory: Memory {
            total_bytes: mem,
            limit_bytes: None,
            effective_bytes: mem,
            swap_total_bytes: 0,
            dask_workers: WorkerMemory { bytes: mem, source: "the host's RAM".into() },
        },
        disks: vec![Disk {
            role: "swap_dir".into(),
            path: "/var/lib/cluster-ai/swap".into(),
            total_bytes: 500 * G,
            available_bytes: 300 * G,
            rotational: Some(false),
            write_mib_per_s: None,
        }],
        gpus: vec![],
        nvml: "absent".into(),
        kernel: Kernel { psi: true, swap_dir_filesystem: "ext".into(), swap_files_supported: true },
        services: vec![],
    }
}
