//! `cluster-ai check [--quick] [--json]`: the resource checker. Exit 0 when the machine meets
//! the minimum, [`exit::BELOW_MINIMUM`] when it does not, [`exit::IO_ERROR`] when the hardware
//! cannot be read, [`exit::CONFIG`] on a bad config.

use std::path::Path;
use std::process::ExitCode;

use super::exit;
use crate::cli::CheckArgs;
use crate::config::human_size;
use crate::optimize::check::{report, Report};
use crate::optimize::profile::{gather, timed, Sources};
use crate::sys::display_path;

pub fn main(args: CheckArgs) -> ExitCode {
    let config = match super::config_or_exit("check", args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sources = if args.quick { Sources::QUICK } else { Sources::FULL };
    let (profile, took) = timed(|| gather(&config, Path::new("/"), sources));
    let profile = match profile {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cluster-ai check: cannot read the hardware: {e}");
            return ExitCode::from(exit::IO_ERROR);
        }
    };
    let r = report(profile, &config, args.quick, took.as_secs_f64() * 1000.0);
    if args.json {
        match serde_json::to_string_pretty(&r) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("cluster-ai check: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render(&r));
    }
    if r.meets_minimum {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::BELOW_MINIMUM)
    }
}

pub fn render(r: &Report) -> String {
    let h = &r.hardware;
    let mut out = String::new();
    out += &format!("cpu:       {} logical / {} physical cores ({})\n", h.cpu.logical_cores, h.cpu.physical_cores, h.cpu.model);
    let limit = h.memory.limit_bytes.map_or(String::new(), |l| format!(", limited to {} by its cgroup", human_size(l)));
    out += &format!("memory:    {}{limit}, swap {}\n", human_size(h.memory.total_bytes), human_size(h.memory.swap_total_bytes));
    for d in &h.disks {
        let kind = match d.rotational {
            Some(true) => "HDD",
            Some(false) => "SSD",
            None => "disk of unknown kind",
        };
        let speed = d.write_mib_per_s.map_or(String::new(), |s| format!(", writes {s:.0} MiB/s"));
        out += &format!(
            "disk:      {} ({}): {} free of {}, {kind}{speed}\n",
            display_path(&d.path),
            d.role,
            human_size(d.available_bytes),
            human_size(d.total_bytes)
        );
    }
    if h.gpus.is_empty() {
        out += &format!("gpu:       none found (NVML: {})\n", h.nvml);
    }
    for g in &h.gpus {
        let vram = g.vram_bytes.map_or("memory unknown".into(), human_size);
        out += &format!("gpu:       {} {} ({vram}, from {})\n", g.vendor, g.name, g.source);
    }
    if !h.gpus.is_empty() && h.nvml.contains(crate::sys::nvml::NOTE) {
        // What NVML answered that was not taken as given (a memory size of 0, a count past
        // the limit): said, not only visible in --json.
        out += &format!("gpu:       NVML: {}\n", h.nvml);
    }
    let k = &h.kernel;
    out += &format!(
        "kernel:    PSI {}, swap files on {} {}\n",
        if k.psi { "yes" } else { "no" },
        k.swap_dir_filesystem,
        if k.swap_files_supported { "supported" } else { "NOT supported" }
    );
    for s in &h.services {
        let mut seen = Vec::new();
        if s.unit_installed {
            seen.push(format!("unit {}", s.unit));
        }
        if s.socket_present == Some(true) {
            seen.push("socket".into());
        }
        match (s.port, s.port_answering) {
            (Some(p), Some(true)) => seen.push(format!("port {p} answers")),
            (Some(p), Some(false)) => seen.push(format!("port {p} closed")),
            _ => {}
        }
        out += &format!("service:   {:<15} {}\n", s.name, if seen.is_empty() { "not installed".into() } else { seen.join(", ") });
    }
    out += &format!("tier:      {}\n", r.tier.describe());
    for reason in &r.reasons {
        out += &format!("           {reason}\n");
    }
    let s = &r.score;
    out += &format!("score:     {}/100 (cpu {}, memory {}, disk {}, gpu {})\n", s.total, s.cpu, s.memory, s.disk, s.gpu);
    if let Some(rec) = &r.recommended {
        out += &format!(
            "recommended (what `cluster-ai optimize` plans here): Dask {} workers x {} threads, {} per worker; Ollama {} GPU layers (num_gpu, a per-model option), {} models loaded at most\n",
            rec.dask_workers,
            rec.dask_threads_per_worker,
            human_size(rec.dask_memory_limit_bytes),
            rec.ollama_gpu_layers,
            rec.ollama_max_loaded_models
        );
    }
    for w in &r.warnings {
        out += &format!("WARNING:   {w}\n");
    }
    out += &format!("{}\n", if r.meets_minimum { "meets the minimum" } else { "DOES NOT meet the minimum" });
    out
}
