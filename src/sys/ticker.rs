//! A periodic tick from a `timerfd`, polled through tokio's reactor. Tokio's own timers sit in
//! a hierarchical wheel that wakes the thread at every level it cascades through (three
//! wakeups for a 5 s period); a timerfd wakes it exactly once per period, which is what an
//! idle daemon should cost.
//!
//! Every ticker of the process ticks on one grid: at whole multiples of its period counted
//! from one instant (the first ticker's creation), as absolute CLOCK_MONOTONIC expiries. Periods
//! that divide one another (the 5 s sampler, the 15 s watchdog, the 30 s heartbeats and checks)
//! then expire at the same nanosecond, in the same timer interrupt, and the thread wakes once
//! for all of them instead of once each.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::OnceLock;
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
    /// The tick owed at once by `new`, not yet taken.
    now_due: bool,
}

/// CLOCK_MONOTONIC now.
fn monotonic() -> std::io::Result<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Ok(Duration::from(t))
}

/// The grid's origin: the first time any ticker asked.
static ORIGIN: OnceLock<Duration> = OnceLock::new();

/// The first grid point of `period` more than `min_gap` after `now`.
fn next_on_grid(origin: Duration, now: Duration, period: Duration, min_gap: Duration) -> Duration {
    let p = period.as_nanos();
    let earliest = (now + min_gap).saturating_sub(origin).as_nanos();
    let n = earliest / p + 1;
    origin + Duration::from_nanos(u64::try_from(n * p).unwrap_or(u64::MAX))
}

impl Ticker {
    /// Ticks at once, then on every grid point of `period`, the first at least half a period
    /// away (so the second reading is not a few milliseconds after the first). On
    /// CLOCK_MONOTONIC; a tick missed while the machine was suspended is delivered once, not as a
    /// burst.
    pub fn new(period: Duration) -> std::io::Result<Self> {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let mut t = Self { fd: register(Fd(timer))?, now_due: true };
        t.arm(period, period / 2)?;
        Ok(t)
    }

    /// From now on, tick on the grid of `period`, the first tick at the next grid point (at
    /// most one period from now). A tick owed at once by `new` is still owed.
    pub fn set_period(&mut self, period: Duration) -> std::io::Result<()> {
        self.arm(period, Duration::ZERO)
    }

    fn arm(&mut self, period: Duration, min_gap: Duration) -> std::io::Result<()> {
        let period = period.max(Duration::from_millis(1));
        let now = monotonic()?;
        let origin = *ORIGIN.get_or_init(|| now);
        let first = next_on_grid(origin, now, period, min_gap);
        self.fd.get_ref().0.set(
            Expiration::IntervalDelayed(TimeSpec::from_duration(first), TimeSpec::from_duration(period)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        Ok(())
    }

    /// Waits for the next tick; returns how many periods passed since the last one (1 unless
    /// the task was late).
    pub async fn tick(&mut self) -> std::io::Result<u64> {
        if std::mem::take(&mut self.now_due) {
            return Ok(1);
        }
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

/// What ticks: the grid's timerfd in the daemon; tokio's interval, whose clock a test can pause.
pub trait Tick {
    /// Waits for the next tick; returns how many periods passed since the last one.
    fn tick(&mut self) -> impl std::future::Future<Output = std::io::Result<u64>>;
}

impl Tick for Ticker {
    fn tick(&mut self) -> impl std::future::Future<Output = std::io::Result<u64>> {
        Ticker::tick(self)
    }
}

impl Tick for tokio::time::Interval {
    async fn tick(&mut self) -> std::io::Result<u64> {
        tokio::time::Interval::tick(self).await;
        Ok(1)
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
        // The first at the next grid point (up to a period away), then one per period.
        for _ in 0..3 {
            t.tick().await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(40), "then one per period");
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert!(t.tick().await.unwrap() >= 3, "late ticks are counted, not replayed");
    }

    #[test]
    fn ticks_of_periods_that_divide_one_another_fall_on_the_same_instants() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let origin = s(1000);
        // A 5 s and a 30 s ticker made at different moments: the 30 s one's ticks are ticks of
        // the 5 s one too.
        assert_eq!(next_on_grid(origin, s(1007) + ms(300), s(5), ms(2500)), s(1010));
        assert_eq!(next_on_grid(origin, s(1008), s(5), ms(2500)), s(1015));
        assert_eq!(next_on_grid(origin, s(1013), s(30), s(15)), s(1030));
        assert_eq!(next_on_grid(origin, s(1016), s(30), s(15)), s(1060));
        // Never the present instant, even on a grid point; the first grid point is the origin's
        // next.
        assert_eq!(next_on_grid(origin, s(1030), s(30), Duration::ZERO), s(1060));
        assert_eq!(next_on_grid(origin, origin, s(15), Duration::ZERO), s(1015));
    }
}
