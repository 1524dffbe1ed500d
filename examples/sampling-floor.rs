//! The floor under the daemon's idle CPU: the sampler's own reads (six /proc files, two
//! statfs) every 5 s on a blocking timerfd, with no runtime and no other task. bench/footprint.sh
//! runs it beside the daemon and reports both over the same window, so a window in which this
//! machine charges more for the same work shows in both figures.
//!
//! usage: sampling-floor SWAP_DIR [SECONDS]

use std::path::PathBuf;
use std::time::Duration;

use cluster_ai::sampler::Sampler;
use cluster_ai::sys::procfs::ProcFs;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: sampling-floor SWAP_DIR [SECONDS]")?);
    let period = Duration::from_secs(args.next().map(|s| s.parse()).transpose()?.unwrap_or(5));
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)?;
    timer.set(Expiration::Interval(TimeSpec::from_duration(period)), TimerSetTimeFlags::empty())?;
    let mut sampler = Sampler::new(ProcFs::default());
    loop {
        timer.wait()?;
        sampler.sample(&dir)?;
    }
}
