//! `cluster-ai monitor`: a live view of the node. On a terminal, charts of the last minutes
//! (`screen`); otherwise one plain line per refresh, or with `--json` one JSON object per line
//! (`look::Look`). It reads the running daemon's status; without one it samples this machine
//! itself and says so. SIGINT, SIGTERM and SIGHUP end it as `q` does.

mod history;
mod look;
mod screen;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::{MonitorArgs, StatusArgs};
use crate::config::human_size;
use crate::sys::signals::StopFlag;
use look::{Look, Source};

pub fn main(args: MonitorArgs) -> ExitCode {
    let status_args = StatusArgs { json: args.json, socket: args.socket.clone(), config: args.config.clone() };
    let (config, socket) = match super::config_and_socket("monitor", &status_args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let stop = match crate::sys::signals::stop_flag() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cluster-ai monitor: cannot catch SIGINT and SIGTERM ({e}); not starting, as Ctrl-C would leave the terminal raw");
            return ExitCode::FAILURE;
        }
    };
    let mut source = Source::new(socket, config.swap.dir.clone());
    let tty = !args.json && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if tty {
        match screen::run(&mut source, args.interval, &stop) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cluster-ai monitor: the terminal failed: {e}");
                ExitCode::FAILURE
            }
        }
    } else {
        lines(&mut source, args.interval, args.json, &stop)
    }
}

/// Sleeps `d` in short steps, so a signal ends the wait; false when one did.
fn wait(d: Duration, stop: &StopFlag) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.is_set() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Not a terminal: a line (or JSON object) per refresh, until a signal or the reader leaves.
/// A change of source (the daemon gone or back) is said once on stderr.
fn lines(source: &mut Source, interval: Duration, json: bool, stop: &StopFlag) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut said: Option<Option<String>> = None;
    while !stop.is_set() {
        let look = source.look();
        if said.as_ref() != Some(&look.daemon_error) {
            if let Some(e) = &look.daemon_error {
                eprintln!("cluster-ai monitor: {e}; sampling this machine here");
            } else if said.is_some() {
                eprintln!("cluster-ai monitor: the daemon answers again");
            }
            said = Some(look.daemon_error.clone());
        }
        let text = if json {
            match serde_json::to_string(&look) {
                Ok(t) => t + "\n",
                Err(e) => {
                    eprintln!("cluster-ai monitor: cannot write a look as JSON: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            line(&look)
        };
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS; // the reader went away
        }
        if !wait(interval, stop) {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// One line per refresh for logs and pipes: `<unix seconds> cpu=7% mem=43.1% swap=0 B/2.0 GiB
/// disk[/]=40% psi_mem=0.00 psi_cpu=0.12 measures=clear last="…"`, then ` source=local` when
/// no daemon answered.
fn line(look: &Look) -> String {
    let mut out = format!("{}", look.at_unix_ms / 1000);
    if let Some(s) = &look.snapshot {
        let cpu = s.cpu_busy_percent.map_or("-".into(), |c| format!("{c:.0}%"));
        out += &format!(
            " cpu={cpu} mem={:.1}% swap={}/{}",
            s.memory_used_percent,
            human_size(s.swap_used_bytes),
            human_size(s.swap_total_bytes)
        );
        for d in [&s.disk_root, &s.disk_swap_dir].into_iter().flatten() {
            out += &format!(" disk[{}]={:.0}%", crate::sys::display_path(&d.path), d.used_percent);
        }
        if let Some(p) = &s.pressure {
            out += &format!(" psi_mem={:.2} psi_cpu={:.2}", p.memory.some_avg10, p.cpu.some_avg10);
        }
    }
    if look.daemon.is_some() {
        let active: Vec<&str> = look.measures.iter().filter(|(_, state)| *state != "clear").map(|(n, _)| n.as_str()).collect();
        out += &format!(" measures={}", if active.is_empty() { "clear".into() } else { active.join(",") });
        if let Some(a) = look.recent_actions.last() {
            out += &format!(" last=\"{}\"", crate::sys::one_line(&a.detail, 200));
        }
        if let Some(services) = &look.services {
            let down: Vec<&str> =
                services.iter().filter(|s| s.state == crate::health::ServiceState::Unhealthy).map(|s| s.name.as_str()).collect();
            if !down.is_empty() {
                out += &format!(" unhealthy={}", crate::sys::one_line(&down.join(","), 200));
            }
        }
    } else {
        out += " source=local";
    }
    out + "\n"
}
