//! A periodic tick from a `timerfd`, polled through tokio's reactor. Tokio's own timers sit in
//! a hierarchical wheel that wakes the thread at every level it cascades through (three
//! wakeups for a 5 s period); a timerfd wakes it exactly once per period, which is what an
//! idle daemon should cost.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

#[allow(unsafe_code)]
fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
    // SAFETY: `Fd` owns the timerfd, which stays open, and is the same descriptor, for as long
    // as the AsyncFd that owns `Fd` lives; nothing else closes or replaces it.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

pub struct Ticker {
    fd: AsyncFd<Fd>,
}

impl Ticker {
    /// Ticks at once, then every `period` (on CLOCK_MONOTONIC; a tick missed while the machine
    /// was suspended is delivered once, not as a burst).
    pub fn new(period: Duration) -> std::io::Result<Self> {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let period = period.max(Duration::from_millis(1));
        timer.set(
            Expiration::IntervalDelayed(TimeSpec::from_duration(Duration::from_nanos(1)), TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(Self { fd: register(Fd(timer))? })
    }

    /// From now on, tick every `period` (the first tick one period from now).
    pub fn set_period(&mut self, period: Duration) -> std::io::Result<()> {
        let period = period.max(Duration::from_millis(1));
        let p = TimeSpec::from_duration(period);
        self.fd.get_ref().0.set(Expiration::IntervalDelayed(p, p), TimerSetTimeFlags::empty())?;
        Ok(())
    }

    /// Waits for the next tick; returns how many periods passed since the last one (1 unless
    /// the task was late).
    pub async fn tick(&mut self) -> std::io::Result<u64> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut count = [0u8; 8];
            match ready.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), &mut count).map_err(std::io::Error::from)) {
                Ok(Ok(8)) => return Ok(u64::from_ne_bytes(count)),
                Ok(Ok(n)) => return Err(std::io::Error::other(format!("timerfd read {n} bytes"))),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No upper bound on wall-clock time (a loaded machine delays anything): "at once" is
    // told from "after a period" with a period far longer than any delay, and the rest are
    // lower bounds, which a timer cannot beat.
    #[tokio::test]
    async fn ticks_at_once_then_every_period() {
        let mut t = Ticker::new(Duration::from_secs(60)).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(30), t.tick()).await;
        assert_eq!(first.expect("the first tick comes at once, not after the 60 s period").unwrap(), 1);
        t.set_period(Duration::from_millis(20)).unwrap();
        let start = std::time::Instant::now();
        t.tick().await.unwrap();
        t.tick().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40), "then one per period");
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert!(t.tick().await.unwrap() >= 3, "late ticks are counted, not replayed");
    }
}
