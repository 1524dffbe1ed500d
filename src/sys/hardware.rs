//! What the machine is: CPU topology, the cgroup memory limit, GPUs from sysfs, the cluster's
//! services (unit files, sockets, ports). Parsers are pure functions over text; readers take a
//! root directory, so tests run on fixture trees.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub logical_cores: u32,
    pub physical_cores: u32,
    pub model: String,
}

/// `/proc/cpuinfo`: logical CPUs are the `processor` entries; physical cores the distinct
/// (`physical id`, `core id`) pairs (architectures without them count one core per CPU).
pub fn parse_cpuinfo(text: &str) -> Result<Cpu, String> {
    let mut logical = 0u32;
    let mut cores = std::collections::BTreeSet::new();
    let mut model = String::new();
    let (mut package, mut core) = (None::<String>, None::<String>);
    let mut flush = |package: &mut Option<String>, core: &mut Option<String>, n: u32| {
        cores.insert((package.take().unwrap_or_default(), core.take().unwrap_or_else(|| format!("cpu{n}"))));
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => {
                if logical > 0 {
                    flush(&mut package, &mut core, logical);
                }
                logical += 1;
            }
            "physical id" => package = Some(value.to_string()),
            "core id" => core = Some(value.to_string()),
            "model name" | "Processor" | "cpu model" if model.is_empty() => model = value.to_string(),
            _ => {}
        }
    }
    if logical == 0 {
        return Err("no \"processor\" entry".into());
    }
    flush(&mut package, &mut core, logical);
    Ok(Cpu { logical_cores: logical, physical_cores: cores.len() as u32, model })
}

/// The tightest memory limit on the way from this process's cgroup to the root: cgroup v2
/// `memory.max` (`0::/path` in `/proc/self/cgroup`), or, where the memory controller is still
/// on v1 (`N:memory:/path`), `memory.limit_in_bytes`. `None`: no limit, or nothing readable.
pub fn cgroup_memory_limit(root: &Path) -> Option<u64> {
    let text = super::fs::read_text(&root.join("proc/self/cgroup"), super::fs::SMALL_FILE).ok()?;
    let v1 = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.to_string())
    });
    match v1 {
        Some(path) => walk_up(&root.join("sys/fs/cgroup/memory"), &path, "memory.limit_in_bytes"),
        None => walk_up(&root.join("sys/fs/cgroup"), text.lines().find_map(|l| l.strip_prefix("0::"))?, "memory.max"),
    }
}

/// The tightest memory limit from the cgroup `path` (as systemd's `ControlGroup` property or
/// `/proc/PID/cgroup` name it, e.g. `/system.slice/dask-worker.service`) up to the root of the
/// tree this process sees; v2's `memory.max`, else v1's `memory.limit_in_bytes`. `None`: no
/// limit on the way, or nothing readable.
pub fn cgroup_memory_limit_of(root: &Path, path: &str) -> Option<u64> {
    let v2 = root.join("sys/fs/cgroup");
    if v2.join("cgroup.controllers").exists() {
        walk_up(&v2, path, "memory.max")
    } else {
        walk_up(&root.join("sys/fs/cgroup/memory"), path, "memory.limit_in_bytes")
    }
}

/// The memory limit at the top of the cgroup tree this process sees. On a host the root cgroup
/// has no limit (`None`); in a container with its own cgroup namespace (Docker, Podman,
/// systemd-nspawn on cgroup v2) the top is the container's cgroup, and its limit is shared by
/// everything in the container: the daemon, the Dask workers, Ollama.
pub fn container_memory_limit(root: &Path) -> Option<u64> {
    let read = |p: PathBuf| super::fs::read_text(&p, super::fs::SMALL_FILE).ok().and_then(|v| limit_value(&v));
    read(root.join("sys/fs/cgroup/memory.max")).or_else(|| read(root.join("sys/fs/cgroup/memory/memory.limit_in_bytes")))
}

/// A limit file's value: v2 writes "max"; v1 writes a page-rounded i64::MAX for no limit.
fn limit_value(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|n| *n < 1 << 62)
}

fn walk_up(base: &Path, path: &str, file: &str) -> Option<u64> {
    let rel = Path::new(path.trim().trim_start_matches('/'));
    // The kernel writes a plain path; a "..", from a cgroup file that is not the kernel's,
    // would lead the walk up and out of the cgroup tree, to limits that are not ours.
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return None;
    }
    let mut dir = base.join(rel);
    let mut limit: Option<u64> = None;
    loop {
        if let Some(n) = super::fs::read_text(&dir.join(file), super::fs::SMALL_FILE).ok().and_then(|v| limit_value(&v)) {
            limit = Some(limit.map_or(n, |l| l.min(n)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(base) {
            break;
        }
    }
    limit
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// "nvidia", "amd", "intel" or the PCI vendor id.
    pub vendor: String,
    pub name: String,
    /// Dedicated memory, where the source tells it.
    pub vram_bytes: Option<u64>,
    /// "nvml" or "sysfs".
    pub source: String,
}

fn vendor_name(id: &str) -> String {
    match id.trim() {
        "0x10de" => "nvidia".into(),
        "0x1002" => "amd".into(),
        "0x8086" => "intel".into(),
        other => other.to_string(),
    }
}

/// GPUs the kernel's DRM knows (`/sys/class/drm/cardN/device`): vendor, and VRAM where the
/// driver publishes it (amdgpu's `mem_info_vram_total`). Connectors (`card0-HDMI-A-1`) are
/// not cards.
pub fn drm_gpus(root: &Path) -> Vec<Gpu> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/drm")) else {
        return Vec::new();
    };
    let mut cards: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("card")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| (name, e.path().join("device")))
        })
        .collect();
    cards.sort();
    cards
        .into_iter()
        .filter_map(|(card, device)| {
            let vendor = vendor_name(&super::fs::read_text(&device.join("vendor"), super::fs::SMALL_FILE).ok()?);
            let vram =
                super::fs::read_text(&device.join("mem_info_vram_total"), super::fs::SMALL_FILE).ok().and_then(|v| v.trim().parse().ok());
            let product =
                super::fs::read_text(&device.join("device"), super::fs::SMALL_FILE).map(|d| d.trim().to_string()).unwrap_or_default();
            Some(Gpu { name: format!("{card} ({vendor} {product})"), vendor, vram_bytes: vram, source: "sysfs".into() })
        })
        .collect()
}

/// Whether a unit file for `unit` is installed (admin, runtime or vendor directories).
pub fn unit_installed(root: &Path, unit: &str) -> bool {
    ["etc/systemd/system", "run/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .any(|d| root.join(d).join(unit).exists())
}

/// Whether something accepts TCP connections on the loopback `port` within `timeout`.
pub fn port_answers(port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout).is_ok()
}

/// Writes `bytes` to a new file in `dir` (O_EXCL, removed afterwards, also on error) and syncs
/// it: sequential write throughput in MiB/s.
pub fn write_throughput(dir: &Path, bytes: u64) -> std::io::Result<f64> {
    use std::io::Write;
    let path = dir.join(format!(".cluster-ai-check-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    let result = (|| {
        let chunk = vec![0x5au8; 1 << 20];
        let start = std::time::Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        Ok(bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64().max(1e-6))
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SOCKETS_HT: &str = "processor\t: 0\nmodel name\t: Example CPU\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 1\nmodel name\t: Example CPU\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n\n\
processor\t: 3\nphysical id\t: 1\ncore id\t\t: 1\n";

    #[test]
    fn cpuinfo_counts_logical_and_physical_cores() {
        let c = parse_cpuinfo(TWO_SOCKETS_HT).unwrap();
        assert_eq!((c.logical_cores, c.physical_cores, c.model.as_str()), (4, 3, "Example CPU"));
        // An ARM board without physical/core ids: one core per processor.
        let arm = parse_cpuinfo("processor : 0\nBogoMIPS : 1\n\nprocessor : 1\n").unwrap();
        assert_eq!((arm.logical_cores, arm.physical_cores), (2, 2));
        assert!(parse_cpuinfo("").is_err() && parse_cpuinfo("garbage\n\0").is_err());
        let here = parse_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap()).unwrap();
        assert!(here.logical_cores >= 1 && here.physical_cores >= 1 && here.physical_cores <= here.logical_cores);
    }

    #[test]
    fn the_tightest_memory_max_on_the_way_up_wins() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/self")).unwrap();
        std::fs::write(t.path().join("proc/self/cgroup"), "0::/system.slice/x.service\n").unwrap();
        let cg = t.path().join("sys/fs/cgroup");
        std::fs::create_dir_all(cg.join("system.slice/x.service")).unwrap();
        std::fs::write(cg.join("system.slice/x.service/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_limit(t.path()), None);
        std::fs::write(cg.join("system.slice/memory.max"), "4294967296\n").unwrap();
        assert_eq!(cgroup_memory_limit(t.path()), Some(4 << 30));
        std::fs::write(cg.join("system.slice/x.service/memory.max"), "1073741824\n").unwrap();
        assert_eq!(cgroup_memory_limit(t.path()), Some(1 << 30));
        // The memory controller on cgroup v1 (a hybrid host): its own hierarchy and file.
        std::fs::write(t.path().join("proc/self/cgroup"), "4:memory:/legacy/job\n0::/\n").unwrap();
        let v1 = cg.join("memory/legacy/job");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_memory_limit(t.path()), None, "v1's 'unlimited'");
        std::fs::write(cg.join("memory/legacy/memory.limit_in_bytes"), "2147483648\n").unwrap();
        assert_eq!(cgroup_memory_limit(t.path()), Some(2 << 30));
    }

    #[test]
    fn a_units_cgroup_and_the_containers_limit() {
        let t = tempfile::tempdir().unwrap();
        let cg = t.path().join("sys/fs/cgroup");
        std::fs::create_dir_all(cg.join("system.slice/dask-worker.service")).unwrap();
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory\n").unwrap();
        // A host: the root has no memory.max; the unit's own is read, then its slice's.
        assert_eq!(container_memory_limit(t.path()), None);
        assert_eq!(cgroup_memory_limit_of(t.path(), "/system.slice/dask-worker.service"), None);
        std::fs::write(cg.join("system.slice/dask-worker.service/memory.max"), "209715200\n").unwrap();
        assert_eq!(cgroup_memory_limit_of(t.path(), "/system.slice/dask-worker.service"), Some(200 << 20));
        std::fs::write(cg.join("system.slice/memory.max"), "104857600\n").unwrap();
        assert_eq!(cgroup_memory_limit_of(t.path(), "/system.slice/dask-worker.service"), Some(100 << 20));
        assert_eq!(cgroup_memory_limit_of(t.path(), "/../x"), None, "never out of the tree");
        // A container's namespace: its limit sits at the top and is everybody's.
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        assert_eq!(container_memory_limit(t.path()), None);
        std::fs::write(cg.join("memory.max"), "52428800\n").unwrap();
        assert_eq!(container_memory_limit(t.path()), Some(50 << 20));
        assert_eq!(cgroup_memory_limit_of(t.path(), "/system.slice/dask-worker.service"), Some(50 << 20));
    }

    #[test]
    fn drm_cards_with_vendor_and_vram() {
        let t = tempfile::tempdir().unwrap();
        let drm = t.path().join("sys/class/drm");
        for (card, vendor, vram) in [("card0", "0x8086", None), ("card1", "0x1002", Some("17163091968"))] {
            let dev = drm.join(card).join("device");
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(dev.join("device"), "0x73bf\n").unwrap();
            if let Some(v) = vram {
                std::fs::write(dev.join("mem_info_vram_total"), v).unwrap();
            }
        }
        std::fs::create_dir_all(drm.join("card1-DP-1")).unwrap();
        let gpus = drm_gpus(t.path());
        assert_eq!(gpus.len(), 2, "{gpus:?}");
        assert_eq!((gpus[0].vendor.as_str(), gpus[0].vram_bytes), ("intel", None));
        assert_eq!((gpus[1].vendor.as_str(), gpus[1].vram_bytes), ("amd", Some(17_163_091_968)));
        assert!(drm_gpus(&t.path().join("none")).is_empty());
    }

    #[test]
    fn units_ports_and_a_write_that_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("lib/systemd/system")).unwrap();
        std::fs::write(t.path().join("lib/systemd/system/ollama.service"), "").unwrap();
        assert!(unit_installed(t.path(), "ollama.service"));
        assert!(!unit_installed(t.path(), "docker.service"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_answers(port, Duration::from_millis(200)));
        drop(listener);
        assert!(!port_answers(port, Duration::from_millis(200)));
        let speed = write_throughput(t.path(), 4 << 20).unwrap();
        assert!(speed > 0.0);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1, "only lib/ is left: the test file is gone");
    }
}

#[cfg(test)]
mod props;
