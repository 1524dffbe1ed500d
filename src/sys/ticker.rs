//! A periodic tick from a `timerfd`, polled through tokio's reactor. Tokio's own timers sit in
//! a hierarchical wheel that wakes the thread at every level it cascades through (three
//! wakeups for a 5 s period); a timerfd wakes it exactly once per period, which is what an
//! idle daemon should cost.
//!
//! [`Clock`] is the seam: the daemon's tasks ask it for their tickers and the wall-clock time,
//! and a test hands them [`Clock::Tokio`], tokio's clock, which `tokio::time::pause()` stops
//! and advances (a timerfd follows the kernel's clock, which no test can move).
//!
//! Every timerfd ticker of the process ticks on one grid: at whole multiples of its period counted
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

/// A timerfd on the grid; see the module's text.
pub struct TimerTicker {
    fd: AsyncFd<Fd>,
    /// The tick owed at once by `new`, not yet taken.
    now_due: bool,
    /// The period armed last.
    period: Duration,
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

impl TimerTicker {
    /// Ticks at once, then on every grid point of `period`, the first at least half a period
    /// away (so the second reading is not a few milliseconds after the first). On
    /// CLOCK_MONOTONIC; a tick missed while the machine was suspended is delivered once, not as a
    /// burst.
    pub fn new(period: Duration) -> std::io::Result<Self> {
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let mut t = Self { fd: register(Fd(timer))?, now_due: true, period };
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
        self.period = period;
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

/// Where the tasks' time comes from: the kernel's clocks in the daemon; tokio's clock in
/// tests, which `tokio::time::pause()` stops and auto-advances.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Timerfd tickers on CLOCK_MONOTONIC and the wall clock (CLOCK_REALTIME).
    Kernel,
    /// `tokio::time::Interval` tickers, and a wall clock that is `unix_ms` at `origin` plus
    /// tokio's time since (so a paused test's wall clock moves with its timers).
    Tokio { unix_ms: u64, origin: tokio::time::Instant },
}

impl Clock {
    /// Tokio's clock, its wall clock starting at the real time now. Inside a tokio runtime.
    pub fn tokio() -> Clock {
        Clock::Tokio { unix_ms: crate::sys::unix_ms(), origin: tokio::time::Instant::now() }
    }

    /// A ticker of `period` (see [`TimerTicker::new`]: a tick at once, then one a period).
    /// Never fails: where the kernel refuses a timerfd (EMFILE with every descriptor taken,
    /// ENOMEM), the ticker is tokio's timer instead (a few more wakeups, the same ticks), and
    /// the first such fallback of the process is logged. A task must not stop, and take the
    /// daemon with it, because descriptors ran out for a moment.
    pub fn ticker(&self, period: Duration) -> Ticker {
        match self {
            Clock::Kernel => match TimerTicker::new(period) {
                Ok(t) => Ticker::Timer(t),
                Err(e) => fallback(&e, tokio::time::Instant::now(), period),
            },
            Clock::Tokio { .. } => Ticker::Tokio(tokio_interval(tokio::time::Instant::now(), period)),
        }
    }

    /// Milliseconds since the Unix epoch (what alerts and queue files record).
    pub fn unix_ms(&self) -> u64 {
        match self {
            Clock::Kernel => crate::sys::unix_ms(),
            Clock::Tokio { unix_ms, origin } => unix_ms.saturating_add(origin.elapsed().as_millis() as u64),
        }
    }
}

/// Tokio's timer in place of a timerfd the kernel refused or that failed; said once a process.
fn fallback(e: &std::io::Error, first: tokio::time::Instant, period: Duration) -> Ticker {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(error = %e, "timerfd unavailable; this ticker, and any other that meets the same, uses tokio's timer instead (a few more wakeups, the same ticks)");
    }
    Ticker::Tokio(tokio_interval(first, period))
}

fn tokio_interval(first: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(first, period.max(Duration::from_millis(1)));
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    i
}

/// A periodic tick from a [`Clock`].
pub enum Ticker {
    Timer(TimerTicker),
    Tokio(tokio::time::Interval),
}

impl Ticker {
    /// A timerfd ticker ([`Clock::Kernel`]'s; tokio's timer if the kernel refuses one).
    pub fn new(period: Duration) -> Ticker {
        Clock::Kernel.ticker(period)
    }

    /// Waits for the next tick; returns how many periods passed since the last one (1 unless
    /// the task was late; tokio's ticker always says 1 and skips what it missed). Never fails:
    /// a timerfd that cannot be read is replaced by tokio's timer, which ticks now.
    pub async fn tick(&mut self) -> u64 {
        match self {
            Ticker::Timer(t) => match t.tick().await {
                Ok(n) => n,
                Err(e) => {
                    *self = fallback(&e, tokio::time::Instant::now(), t.period);
                    1
                }
            },
            Ticker::Tokio(i) => {
                i.tick().await;
                1
            }
        }
    }

    /// From now on, one tick per `period`, the first at most one period from now. Never fails
    /// (as [`Ticker::tick`]).
    pub fn set_period(&mut self, period: Duration) {
        let first = tokio::time::Instant::now() + period;
        match self {
            Ticker::Timer(t) => {
                if let Err(e) = t.set_period(period) {
                    *self = fallback(&e, first, period);
                }
            }
            Ticker::Tokio(i) => *i = tokio_interval(first, period),
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
        let mut t = TimerTicker::new(Duration::from_secs(60)).unwrap();
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

    /// What a task gets where the kernel refused a timerfd: the same ticks (one at once, then one
    /// a period), from tokio's timer.
    #[tokio::test(start_paused = true)]
    async fn a_refused_timerfd_falls_back_to_the_same_ticks_from_tokio() {
        let refused = std::io::Error::from_raw_os_error(libc::EMFILE);
        let mut t = fallback(&refused, tokio::time::Instant::now(), Duration::from_secs(30));
        assert!(matches!(t, Ticker::Tokio(_)));
        let start = tokio::time::Instant::now();
        assert_eq!(t.tick().await, 1);
        assert_eq!(start.elapsed(), Duration::ZERO, "the first at once");
        t.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30), "then one a period");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_ticks_and_its_wall_clock_move_with_paused_time() {
        let clock = Clock::tokio();
        let before = clock.unix_ms();
        let mut t = clock.ticker(Duration::from_secs(30));
        t.tick().await;
        let start = tokio::time::Instant::now();
        t.tick().await;
        t.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(60), "two periods of paused time");
        assert_eq!(clock.unix_ms() - before, 60_000, "the wall clock moved as much");
        t.set_period(Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        t.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5), "the new period, the first a period away");
    }
}
