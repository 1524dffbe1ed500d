//! Signals for the one-shot commands that loop until told to stop (`monitor`): SIGINT,
//! SIGTERM and SIGHUP set a flag that the loop reads between refreshes, so it leaves the way
//! it would on `q` (the terminal put back, the last line flushed). The daemon has its own,
//! tokio's signal streams (`daemon/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that SIGINT, SIGTERM or SIGHUP sets (through `signal-hook`: the handler only stores
/// to the atomic). Errors: the kernel refused a handler (`sigaction`), which leaves the
/// signal's default action (the process ends).
pub fn stop_flag() -> std::io::Result<StopFlag> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(StopFlag(flag))
}

/// Set once one of the signals arrived.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sigterm_sets_the_flag_instead_of_ending_the_process() {
        let flag = super::stop_flag().unwrap();
        assert!(!flag.is_set());
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        assert!(flag.is_set());
    }
}
