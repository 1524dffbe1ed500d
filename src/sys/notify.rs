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

/// sd_watchdog_enabled(3): `WATCHDOG_USEC` asks for pings; a `WATCHDOG_PID` naming another
/// process (say, a parent that did not clean its environment) means they are not ours to send.
/// (The sd-notify crate also refuses when `WATCHDOG_PID` is absent, which the man page allows.)
fn watchdog_from(usec: Option<String>, pid: Option<String>, me: u32) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid {
        Some(p) if p.trim().parse::<u32>().ok() != Some(me) => None,
        _ => Some(std::time::Duration::from_micros(usec)),
    }
}

/// The real thing: `$NOTIFY_SOCKET`, or nothing when it is unset or empty (sd_notify(3) treats
/// both as "not under a service manager": no datagram, no warning).
pub struct SdNotifier {
    enabled: bool,
    watchdog: Option<std::time::Duration>,
}

fn socket_set(value: Option<std::ffi::OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

impl SdNotifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` once, at start; the environment is left as is so a
    /// child could not inherit a different answer than ours.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok();
        let enabled = socket_set(std::env::var_os("NOTIFY_SOCKET"));
        let watchdog = watchdog_from(var("WATCHDOG_USEC"), var("WATCHDOG_PID"), std::process::id()).filter(|_| enabled);
        Self { enabled, watchdog }
    }
}

impl Notifier for SdNotifier {
    fn send(&self, notices: &[Notice]) {
        use sd_notify::NotifyState as S;
        if !self.enabled {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_empty_notify_socket_is_no_socket() {
        assert!(!socket_set(None));
        assert!(!socket_set(Some("".into())));
        assert!(socket_set(Some("/run/systemd/notify".into())));
    }

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(watchdog_from(s("30000000"), s("42"), 42), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(s("30000000"), None, 42), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(s("30000000"), s("41"), 42), None);
        assert_eq!(watchdog_from(s("0"), None, 42), None);
        assert_eq!(watchdog_from(s("soon"), None, 42), None);
        assert_eq!(watchdog_from(None, s("42"), 42), None);
    }
}
