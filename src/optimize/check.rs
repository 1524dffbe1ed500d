//! The resource checker's verdict on a [`Profile`]: the seed's tier, a score, the seed's
//! recommended settings for the tier, and warnings a user can act on. Pure functions, so every
//! rule is tested on profiles written by hand or captured on real machines.

use serde::{Deserialize, Serialize};

use super::profile::Profile;
pub use super::tier::{recommended, tier, Recommended, Tier};
use crate::config::{human_size, Config};

/// The `--json` schema's version: bumped on any change of its keys or their meaning.
pub const SCHEMA_VERSION: u32 = 1;

const GIB: f64 = (1u64 << 30) as f64;

/// The score, 0–100, and its parts. The formula (also in docs/optimize.md and in `--json`):
/// - cpu    30 × min(logical cores, 16) / 16
/// - memory 35 × min(effective memory GiB, 32) / 32
/// - disk   20 × headroom × speed, where headroom = min(available on swap.dir's filesystem /
///   (swap.max_size + disk_reserve), 1) and speed = min(measured MiB/s / 400, 1) (at least 0.25)
///   when the full check measured it, else 1 on an SSD, 0.5 on a rotating disk, 0.75 unknown
/// - gpu    15 × min(largest GPU memory GiB, 16) / 16 (0 with no GPU, or memory unknown)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub total: u32,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    pub gpu: f64,
    pub formula: String,
}

pub const FORMULA: &str = "cpu 30*min(cores,16)/16 + memory 35*min(GiB,32)/32 + disk 20*headroom*speed + gpu 15*min(VRAM GiB,16)/16; \
headroom = min(available on swap.dir / (swap.max_size + disk_reserve), 1); \
speed = min(MiB/s / 400, 1) >= 0.25 when measured, else SSD 1, HDD 0.5, unknown 0.75";

pub fn score(p: &Profile, cfg: &Config) -> Score {
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let cpu = 30.0 * f64::from(p.cpu.logical_cores.min(16)) / 16.0;
    let memory = 35.0 * (p.memory.effective_bytes as f64 / GIB).min(32.0) / 32.0;
    let disk = p.disks.iter().find(|d| d.role == "swap_dir").map_or(0.0, |d| {
        let want = cfg.swap.max_size.saturating_add(cfg.swap.disk_reserve.bytes(d.total_bytes)).max(1);
        let headroom = (d.available_bytes as f64 / want as f64).min(1.0);
        let speed = match (d.write_mib_per_s, d.rotational) {
            (Some(mib), _) => (mib / 400.0).clamp(0.25, 1.0),
            (None, Some(false)) => 1.0,
            (None, Some(true)) => 0.5,
            (None, None) => 0.75,
        };
        20.0 * headroom * speed
    });
    let vram = p.gpus.iter().filter_map(|g| g.vram_bytes).max().unwrap_or(0);
    let gpu = 15.0 * (vram as f64 / GIB).min(16.0) / 16.0;
    let total = (cpu + memory + disk + gpu).round().clamp(0.0, 100.0) as u32;
    Score { total, cpu: round1(cpu), memory: round1(memory), disk: round1(disk), gpu: round1(gpu), formula: FORMULA.into() }
}

/// Things a user can act on.
pub fn warnings(p: &Profile, cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(limit) = p.memory.limit_bytes {
        w.push(format!(
            "a memory limit of {} applies (cgroup memory.max), below the {} of RAM: settings are sized for the limit",
            human_size(limit),
            human_size(p.memory.total_bytes)
        ));
    }
    if !p.kernel.swap_files_supported {
        let fix = if p.kernel.swap_dir_filesystem.starts_with("btrfs") {
            crate::sys::swap::btrfs::FIX
        } else {
            "choose a directory on ext4, XFS, btrfs or f2fs"
        };
        w.push(format!(
            "swap.dir {}: the kernel cannot swap to a file there ({}); {fix}",
            cfg.swap.dir.display(),
            p.kernel.swap_dir_filesystem
        ));
    }
    if let Some(d) = p.disks.iter().find(|d| d.role == "swap_dir") {
        let reserve = cfg.swap.disk_reserve.bytes(d.total_bytes);
        let room = d.available_bytes.saturating_sub(reserve);
        if room < cfg.swap.max_size {
            w.push(format!(
                "no swap headroom: {} free on the filesystem of swap.dir less disk_reserve {} leaves room for {} of swap, below swap.max_size {}",
                human_size(d.available_bytes),
                human_size(reserve),
                human_size(room),
                human_size(cfg.swap.max_size)
            ));
        }
        if d.rotational == Some(true) {
            w.push(format!(
                "swap.dir {} is on a rotating disk: swapping will be slow; an SSD is strongly preferred",
                cfg.swap.dir.display()
            ));
        }
    }
    if !p.kernel.psi {
        w.push("the kernel has no pressure stall information (PSI): the swap task polls only".into());
    }
    if let Some(why) = p.nvml.strip_prefix("failed: ") {
        w.push(format!("an NVIDIA driver is installed but NVML did not answer ({why}): GPU memory is unknown"));
    }
    w
}

/// Everything `cluster-ai check` reports; `--json` prints exactly this (schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub quick: bool,
    pub gathered_in_ms: f64,
    pub hardware: Profile,
    pub tier: Tier,
    pub meets_minimum: bool,
    pub reasons: Vec<String>,
    pub score: Score,
    pub recommended: Option<Recommended>,
    pub warnings: Vec<String>,
}

pub fn report(hardware: Profile, cfg: &Config, quick: bool, gathered_in_ms: f64) -> Report {
    let (tier, reasons) = tier(&hardware);
    Report {
        schema_version: SCHEMA_VERSION,
        quick,
        gathered_in_ms,
        score: score(&hardware, cfg),
        recommended: (tier != Tier::BelowMinimum).then(|| super::plan::plan(&hardware, &cfg.optimize).recommended()),
        warnings: warnings(&hardware, cfg),
        meets_minimum: tier != Tier::BelowMinimum,
        reasons,
        tier,
        hardware,
    }
}

#[cfg(test)]
mod tests;
