//! `cluster-ai swap status|expand|shrink|clean`. With a daemon running, the daemon's swap task
//! does the work (one owner of the swap state, no races); without one, the command acts
//! directly, on the same engine.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{SwapAction, SwapArgs};
use crate::config::{format_size, human_size, parse_size, Config};
use crate::daemon::control::{request, Request};
use crate::daemon::{load_config, socket_path};
use crate::swap::engine::{Engine, Mode, SwapStatus};
use crate::sys::paths::DEFAULT_CONFIG;
use crate::sys::procfs::ProcFs;

pub fn main(args: SwapArgs) -> ExitCode {
    crate::logging::init(crate::config::LogLevel::Warn);
    match swap(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster-ai swap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn swap(args: SwapArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let (config, _) = load_config(&config_path, args.config.is_some())?;
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => socket_path(&config.control_socket).map_err(anyhow::Error::msg)?,
    };
    let size = match &args.action {
        SwapAction::Expand { size: Some(s) } => Some(parse_size(s).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let req = match &args.action {
        SwapAction::Status { .. } => Request::SwapStatus,
        SwapAction::Expand { .. } => Request::SwapExpand { size },
        SwapAction::Shrink => Request::SwapShrink,
        SwapAction::Clean { force } => Request::SwapClean { force: *force },
    };
    if daemon_answers(&socket) {
        let value = request(&socket, &req)?;
        return match args.action {
            SwapAction::Status { json: true } => {
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(())
            }
            SwapAction::Status { json: false } => {
                print!("{}", render(&serde_json::from_value(value)?));
                Ok(())
            }
            _ => {
                println!("{}", value["message"].as_str().unwrap_or_default());
                Ok(())
            }
        };
    }
    direct(&config, args.action, size)
}

/// Whether a daemon listens on `socket`. A socket we may not use (not root) is an error to
/// show, not a reason to act behind the daemon's back.
fn daemon_answers(socket: &std::path::Path) -> bool {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused),
    }
}

fn direct(config: &Config, action: SwapAction, size: Option<u64>) -> anyhow::Result<()> {
    let mut engine = Engine::new(config, ProcFs::default(), crate::sys::paths::state_dir(), false);
    if let SwapAction::Status { json } = action {
        engine.probe();
        let status = engine.status(config.swap.check_interval.as_millis() as u64)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("(no daemon running)\n{}", render(&status));
        }
        return Ok(());
    }
    engine.probe();
    engine.recover();
    let message = match action {
        SwapAction::Expand { .. } => {
            let pct = engine.readings(tokio::time::Instant::now())?.used_percent();
            let p = engine.expand(size.unwrap_or(config.swap.increment), "requested", pct)?;
            format!("added {}", p.display())
        }
        SwapAction::Shrink => format!("removed {}", engine.shrink("swap shrink")?.display()),
        SwapAction::Clean { force } => engine.clean(force).context("swap clean")?,
        SwapAction::Status { .. } => unreachable!("handled above"),
    };
    println!("{message}");
    Ok(())
}

pub fn render(s: &SwapStatus) -> String {
    let mut out = String::new();
    let mode = match &s.mode {
        Mode::Managing => "managing".to_string(),
        Mode::MonitoringOnly(why) => format!("monitoring only: {why}"),
        Mode::Paused => "paused after `swap clean` (`swap expand` or a reload resumes)".into(),
    };
    out += &format!("mode:      {mode}{}\n", if s.dry_run { " (dry run)" } else { "" });
    out += &format!("watching:  {} (next look in {} ms)\n", s.trigger, s.poll_interval_ms);
    out += &format!("memory:    {:.1}% used, threshold {}%\n", s.memory_used_percent, s.memory_threshold_percent);
    out += &format!(
        "managed:   {} used of {} in {} (min {}, max {})\n",
        human_size(s.managed_used_bytes),
        human_size(s.managed_total_bytes),
        s.dir.display(),
        format_size(s.min_size_bytes),
        format_size(s.max_size_bytes)
    );
    for f in &s.managed {
        out += &format!(
            "  {}  {:>10}  {:>10} used  priority {}\n",
            f.path.display(),
            human_size(f.size_bytes),
            human_size(f.used_bytes),
            f.priority
        );
    }
    if s.foreign.is_empty() {
        out += "foreign:   none\n";
    } else {
        out += "foreign:   (not cluster-ai's: never touched)\n";
        for f in &s.foreign {
            out += &format!(
                "  {}  {}  {:>10}  {:>10} used  priority {}\n",
                f.path.display(),
                f.kind,
                human_size(f.size_bytes),
                human_size(f.used_bytes),
                f.priority
            );
        }
    }
    if let Some(d) = &s.disk {
        out += &format!(
            "disk:      {} free of {}, reserve {}\n",
            human_size(d.available_bytes),
            human_size(d.total_bytes),
            s.disk_reserve_bytes.map_or("-".into(), human_size)
        );
    }
    if let Some(g) = &s.disk_guard {
        out += &format!("GUARD:     {g}\n");
    }
    out += &format!("next step: {}\n", s.next_step);
    out
}
