//! sd_notify(3) behind a small trait, so the supervisor's protocol is unit-tested with a
//! recorder and the integration tests read the real datagrams.

/// One notification, in the words of sd_notify(3).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
    Status(String),
}

pub trait Notifier: Send + Sync {
    /// Sends the notices as one datagram, so `RELOADING=1` and `MONOTONIC_USEC=` arrive together.
    fn send(&self, notices: &[Notice]);
    /// How often systemd wants `WATCHDOG=1`, if it watches us at all.
    fn watchdog_interval(&self) -> Option<std::time::Duration>;
}

/// The real thing: `$NOTIFY_SOCKET`, or nothing when it is not set.
pub struct SdNotifier {
    watchdog: Option<std::time::Duration>,
}

impl SdNotifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` once, at start; the environment is left as is so a
    /// child could not inherit a different answer than ours.
    pub fn from_env() -> Self {
        let mut usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| std::time::Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Self { watchdog }
    }

    pub fn enabled() -> bool {
        std::env::var_os("NOTIFY_SOCKET").is_some()
    }
}

impl Notifier for SdNotifier {
    fn send(&self, notices: &[Notice]) {
        use sd_notify::NotifyState as S;
        let mut states = Vec::with_capacity(notices.len() + 1);
        for n in notices {
            match n {
                Notice::Ready => states.push(S::Ready),
                Notice::Reloading => {
                    states.push(S::Reloading);
                    // systemd ≥ 253 wants the moment of the reload request with RELOADING=1.
                    if let Ok(now) = S::monotonic_usec_now() {
                        states.push(now);
                    }
                }
                Notice::Stopping => states.push(S::Stopping),
                Notice::Watchdog => states.push(S::Watchdog),
                Notice::Status(s) => states.push(S::Status(s)),
            }
        }
        if let Err(e) = sd_notify::notify(false, &states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    fn watchdog_interval(&self) -> Option<std::time::Duration> {
        self.watchdog
    }
}
