//! `cluster-ai monitor`: the seed's live view, from the running daemon's status every 2 s.
//! On a terminal the screen is redrawn in place and `q` (or Ctrl-C) quits, the terminal put
//! back as it was; otherwise one plain line per refresh, until the pipe closes or Ctrl-C.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::termios::{self, LocalFlags, SetArg};

use crate::cli::StatusArgs;
use crate::config::human_size;
use crate::control::{request, Request, StatusReply};

const REFRESH: Duration = Duration::from_secs(2);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn main(args: StatusArgs) -> ExitCode {
    let (_, socket) = match super::config_and_socket("monitor", &args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let handler = nix::sys::signal::SigHandler::Handler(on_signal);
    let action = nix::sys::signal::SigAction::new(handler, nix::sys::signal::SaFlags::empty(), nix::sys::signal::SigSet::empty());
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        // sigaction is unsafe for handlers that are not async-signal-safe; this one only stores
        // to an atomic.
        #[allow(unsafe_code)]
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
    let tty = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let saved = if tty { raw_keys() } else { None };
    let code = watch(&socket, tty);
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
        println!();
    }
    code
}

/// Keys without Enter and without echo (Ctrl-C still signals); the old settings to restore.
fn raw_keys() -> Option<termios::Termios> {
    let stdin = std::io::stdin();
    let old = termios::tcgetattr(stdin.as_fd()).ok()?;
    let mut raw = old.clone();
    raw.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
    Some(old)
}

/// Waits up to `d` for a key; true when it was `q`.
fn quit_key(d: Duration) -> bool {
    let stdin = std::io::stdin();
    let mut fds = [nix::poll::PollFd::new(stdin.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = nix::poll::PollTimeout::try_from(d.as_millis() as i32).unwrap_or(nix::poll::PollTimeout::MAX);
    if !matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0) {
        return false;
    }
    let mut b = [0u8; 16];
    matches!(std::io::Read::read(&mut stdin.lock(), &mut b), Ok(n) if b[..n].contains(&b'q'))
}

fn watch(socket: &std::path::Path, tty: bool) -> ExitCode {
    let mut out = std::io::stdout();
    while !STOP.load(Ordering::SeqCst) {
        let reply = request(socket, &Request::Status)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<StatusReply>(v).map_err(|e| format!("the daemon's answer is not understood: {e}")));
        let text = match (&reply, tty) {
            (Ok(r), true) => {
                format!("\x1b[H\x1b[2J{}\n(q or Ctrl-C quits; refreshed every {}s)\n", super::status::render(r), REFRESH.as_secs())
            }
            (Ok(r), false) => line(r),
            (Err(e), true) => format!("\x1b[H\x1b[2Jcluster-ai monitor: {e}\n(retrying every {}s; q quits)\n", REFRESH.as_secs()),
            (Err(e), false) => format!("cluster-ai monitor: {e}\n"),
        };
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS; // the reader went away
        }
        if tty {
            if quit_key(REFRESH) {
                break;
            }
        } else {
            std::thread::sleep(REFRESH);
        }
    }
    ExitCode::SUCCESS
}

/// One line per refresh for logs and pipes.
fn line(r: &StatusReply) -> String {
    let mut out = format!("{}", crate::sys::unix_ms() / 1000);
    if let Some(s) = &r.snapshot {
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
    if let Some(o) = &r.optimize {
        out += &format!(" plan=dask:{}x{}", o.plan.dask_workers.value, o.plan.dask_threads_per_worker.value);
    }
    if let Some(e) = &r.emergency {
        let active: Vec<&str> = e.watches.iter().filter(|(_, w)| w.state != "clear").map(|(n, _)| n.as_str()).collect();
        out += &format!(" measures={}", if active.is_empty() { "clear".into() } else { active.join(",") });
        if let Some(a) = e.recent.last() {
            out += &format!(" last=\"{}\"", a.detail);
        }
    }
    out + "\n"
}
