//! Progress of a long one-shot operation (a `swap clean` or `shrink` whose swapoff takes
//! minutes, `free-memory` waiting on Ollama): one line on stderr, redrawn every second from the
//! first second on, erased when the operation ends. Only on a terminal: on a pipe or in a log
//! nothing is written, so scripts see the command's own output alone.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::human_size;

/// What is shown after the elapsed time, asked once a second (e.g. how much swap is left to
/// take back); `None` shows nothing.
pub type Detail = Box<dyn FnMut() -> Option<String> + Send>;

/// The running line; dropping it stops the redraws and erases the line.
pub struct Progress {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the line for `label` if stderr is a terminal; otherwise does nothing.
    pub fn start(label: &str, detail: Option<Detail>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { done: None, thread: None };
        }
        Self::on(label, detail, Box::new(std::io::stderr()), Duration::from_secs(1))
    }

    /// The line on `out`, redrawn every `every` (the first after one `every`, so a quick
    /// operation prints nothing).
    fn on(label: &str, mut detail: Option<Detail>, mut out: Box<dyn Write + Send>, every: Duration) -> Progress {
        let (done, wait) = mpsc::channel::<()>();
        let label = crate::sys::one_line(label, 200);
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut drawn = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(every) {
                    let more = detail.as_mut().and_then(|d| d()).map(|d| format!(", {d}")).unwrap_or_default();
                    let line = format!("\r\x1b[K{label}: {} s{more}", started.elapsed().as_secs());
                    drawn = out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_ok();
                }
                if drawn {
                    let _ = out.write_all(b"\r\x1b[K").and_then(|()| out.flush());
                }
            })
            .ok();
        Progress { done: Some(done), thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The detail for a swap operation: the managed swap still in use, from the kernel's swap
/// table (it falls as swapoff takes the pages back), e.g. "1.2 GiB swapped out in 2 managed
/// files".
pub fn managed_swap_left(swap_dir: PathBuf) -> Detail {
    let procfs = crate::sys::procfs::ProcFs::default();
    Box::new(move || {
        let table = procfs.open("swaps").ok()?.parse(crate::sys::swap::parse_swaps).ok()?;
        let ours: Vec<_> = table.iter().filter(|e| e.kind == "file" && e.path.parent() == Some(swap_dir.as_path())).collect();
        let used: u64 = ours.iter().map(|e| e.used_bytes).sum();
        let n = ours.len();
        Some(format!("{} swapped out in {n} managed file{}", human_size(used), if n == 1 { "" } else { "s" }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_line_is_redrawn_while_it_runs_and_erased_at_the_end() {
        let sink = Sink::default();
        let mut n = 0;
        let detail: Detail = Box::new(move || {
            n += 1;
            Some(format!("look {n}"))
        });
        let p = Progress::on("swap clean", Some(detail), Box::new(sink.clone()), Duration::from_millis(40));
        std::thread::sleep(Duration::from_millis(150));
        drop(p);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("\r\x1b[Kswap clean: 0 s, look 1\r\x1b[Kswap clean: 0 s, look 2"), "{text:?}");
        assert!(text.ends_with("\r\x1b[K"), "{text:?}");
    }

    #[test]
    fn an_operation_quicker_than_the_first_redraw_prints_nothing() {
        let sink = Sink::default();
        drop(Progress::on("swap shrink", None, Box::new(sink.clone()), Duration::from_secs(5)));
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
