//! `cluster-ai swap status|expand|shrink|clean`. With a daemon running, the daemon's swap task
//! does the work (one owner of the swap state, no races); without one, the command acts
//! directly, on the same engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::progress::{managed_swap_left, Progress};
use crate::cli::{SwapAction, SwapArgs};
use crate::config::{format_size, human_size, parse_size, Config};
use crate::control::{request, ClientError, Request};
use crate::daemon::{client_socket_path, load_config, EXIT_CONFIG};
use crate::swap::engine::{Engine, Mode, SwapStatus};
use crate::swap::task::SwapRequest;
use crate::sys::display_path;
use crate::sys::paths::DEFAULT_CONFIG;
use crate::sys::procfs::ProcFs;
use crate::sys::swap_os::RealSwapOs;

pub fn main(args: SwapArgs) -> ExitCode {
    // Errors only: the command prints its own outcome; the engine's info lines are the
    // daemon's journal, not this command's output.
    crate::logging::init(crate::config::LogLevel::Error);
    match swap(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("cluster-ai swap: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn swap(args: SwapArgs) -> Result<(), (u8, anyhow::Error)> {
    let fail = |e: anyhow::Error| (super::exit::FAILURE, e);
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let (config, _) = load_config(&config_path, args.config.is_some()).map_err(|e| (EXIT_CONFIG, e.into()))?;
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => client_socket_path(&config.control_socket).map_err(|e| fail(anyhow::Error::msg(e)))?,
    };
    let size = match &args.action {
        SwapAction::Expand { size: Some(s) } => Some(parse_size(s).map_err(|e| (super::exit::USAGE, anyhow::anyhow!("swap expand: {e}")))?),
        _ => None,
    };
    let req = match &args.action {
        SwapAction::Status { .. } => SwapRequest::Status,
        SwapAction::Expand { .. } => SwapRequest::Expand { size },
        SwapAction::Shrink => SwapRequest::Shrink,
        SwapAction::Clean { force } => SwapRequest::Clean { force: *force },
    };
    // A swapoff can take minutes (every page read back in): say how it goes, on a terminal.
    let label = match &args.action {
        SwapAction::Status { .. } => None,
        SwapAction::Expand { .. } => Some("swap expand: writing the new swap file"),
        SwapAction::Shrink => Some("swap shrink: swapoff of the newest managed file"),
        SwapAction::Clean { .. } => Some("swap clean: swapoff of every managed file"),
    };
    let progress = label.map(|l| Progress::start(l, Some(managed_swap_left(config.swap.dir.clone()))));
    let value = match request(&socket, &Request::Swap(req)) {
        Ok(v) => v,
        // With no daemon the command acts itself, under the lock on swap.dir.
        Err(ClientError::NotRunning(_)) => {
            let done = direct(&config, args.action, size).map_err(fail);
            drop(progress);
            if let Ok(Some(message)) = &done {
                println!("{message}");
            }
            return done.map(|_| ());
        }
        Err(e) => return Err((e.exit_code().max(1), e.into())),
    };
    drop(progress);
    match args.action {
        SwapAction::Status { json: true } => println!("{}", serde_json::to_string_pretty(&value).map_err(|e| fail(e.into()))?),
        SwapAction::Status { json: false } => print!("{}", render(&serde_json::from_value(value).map_err(|e| fail(e.into()))?)),
        _ => println!("{}", value["message"].as_str().unwrap_or_default()),
    }
    Ok(())
}

/// Status is printed here; an action's message is returned, for the caller to print once its
/// progress line is gone.
fn direct(config: &Config, action: SwapAction, size: Option<u64>) -> anyhow::Result<Option<String>> {
    let os = RealSwapOs::new(ProcFs::default(), crate::sys::paths::state_dir());
    let mut engine = Engine::new(config, Box::new(os), false);
    engine.lock_wait = Duration::from_secs(10);
    if let SwapAction::Status { json } = action {
        engine.probe();
        if engine.mode == Mode::Managing {
            engine.mode = Mode::NoDaemon;
        }
        let status = engine.status(config.swap.check_interval.as_millis() as u64)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", render(&status));
        }
        return Ok(None);
    }
    engine.take_over()?;
    let message = match action {
        SwapAction::Expand { .. } => {
            let pct = engine.readings(tokio::time::Instant::now())?.used_percent();
            let p = engine.expand(size.unwrap_or(config.swap.increment), "requested", pct)?;
            format!("added {}", display_path(&p))
        }
        SwapAction::Shrink => format!("removed {}", display_path(&engine.shrink("swap shrink")?)),
        SwapAction::Clean { force } => engine.clean(force).context("swap clean")?,
        SwapAction::Status { .. } => unreachable!("handled above"),
    };
    Ok(Some(message))
}

pub fn render(s: &SwapStatus) -> String {
    let mut out = String::new();
    let mode = match &s.mode {
        Mode::Managing => "managing".to_string(),
        Mode::MonitoringOnly(why) => format!("monitoring only: {why}"),
        Mode::Paused => "paused after `swap clean` (`swap expand` or a reload resumes)".into(),
        Mode::NoDaemon => "no daemon running: nothing adds or removes swap now (`cluster-ai swap expand|shrink|clean` act once)".into(),
    };
    out += &format!("mode:      {mode}{}\n", if s.dry_run { " (dry run)" } else { "" });
    if let Some(r) = &s.running {
        out += &format!("running:   {r} (figures from when it began)\n");
    }
    if s.mode != Mode::NoDaemon {
        out += &format!("watching:  {} (next look in {} ms)\n", s.trigger, s.poll_interval_ms);
    }
    out += &format!("memory:    {:.1}% used, threshold {}%\n", s.memory_used_percent, s.memory_threshold_percent);
    out += &format!(
        "managed:   {} used of {} in {} (min {}, max {})\n",
        human_size(s.managed_used_bytes),
        human_size(s.managed_total_bytes),
        display_path(&s.dir),
        format_size(s.min_size_bytes),
        format_size(s.max_size_bytes)
    );
    for f in &s.managed {
        out += &format!(
            "  {}  {:>10}  {:>10} used  priority {}\n",
            display_path(&f.path),
            human_size(f.size_bytes),
            human_size(f.used_bytes),
            f.priority
        );
    }
    if let (Some(p), Some(size)) = (&s.spare, s.spare_bytes) {
        out += &format!(
            "spare:     {} {} (made, not enabled: disk only, enabled when a burst needs it)
",
            display_path(p),
            human_size(size)
        );
    }
    if s.foreign.is_empty() {
        out += "foreign:   none\n";
    } else {
        out += "foreign:   (not cluster-ai's: never touched)\n";
        for f in &s.foreign {
            out += &format!(
                "  {}  {}  {:>10}  {:>10} used  priority {}\n",
                display_path(&f.path),
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
