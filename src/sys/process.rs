//! This process and the programs it runs: a child with a deadline, our own death (fault
//! injection), and whether stderr is the journal.

use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `cmd` to completion with its stdout and stderr captured; a child still running after
/// `timeout` is killed (SIGKILL) and reported as `TimedOut`. The thread that keeps the deadline
/// may be refused by the OS (EAGAIN: no task left): the child is then killed at once and the
/// refusal returned, never a panic.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let (done, wait) = std::sync::mpsc::channel::<()>();
    // The child is not reaped until wait_with_output returns, so its pid cannot be reused
    // while this thread may still signal it.
    let killer = std::thread::Builder::new().name("deadline".into()).spawn(move || {
        if wait.recv_timeout(timeout).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return true;
        }
        false
    });
    let killer = match killer {
        Ok(k) => k,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(e.kind(), format!("cannot keep the child's deadline: {e}")));
        }
    };
    let out = child.wait_with_output();
    let _ = done.send(());
    let killed = killer.join().unwrap_or(false);
    if killed {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("did not finish within {} s", timeout.as_secs())));
    }
    out
}

/// Restores SIGPIPE's default action (the process ends), which Rust's runtime sets to
/// "ignore": a one-shot command whose reader went away (`cluster-ai status --json | head -1`)
/// then ends quietly, as cat or grep do, instead of failing a write and panicking in
/// `println!`. Not for the daemon, whose clients may close their sockets at any time.
pub fn end_on_broken_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler: nothing runs in
    // signal context.
    #[allow(unsafe_code)]
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}

/// Ends this process at once, as `kill -9` would (fault injection's "kill").
pub fn kill_self() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

/// Whether stderr is connected to the journal, as sd_journal_stream_fd(3) documents it
/// (`JOURNAL_STREAM` names the device and inode of the stream).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reported() {
        let e = output_within(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let out = output_within(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30)).unwrap();
        assert_eq!((out.status.code(), &out.stdout[..], &out.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
    }
}
