//! sd_notify(3) behind a small trait, so the supervisor's protocol is unit-tested with a
//! recorder and the integration tests read the real datagrams.

use std::os::unix::net::UnixDatagram;

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
///
/// One socket for the whole run, connected once: the sd-notify crate makes, connects and closes
/// a socket for every message, which was half of what the watchdog and STATUS loop cost an idle
/// daemon. If the manager's socket goes away (a `daemon-reexec` that made a new one), the send
/// fails, and the message is sent again on a socket connected afresh.
pub struct SdNotifier {
    target: Option<std::ffi::OsString>,
    socket: std::sync::Mutex<Option<UnixDatagram>>,
    watchdog: Option<std::time::Duration>,
}

/// A datagram socket connected to `$NOTIFY_SOCKET`: a path, or an abstract name written `@name`.
fn connect(target: &std::ffi::OsStr) -> std::io::Result<UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => sock.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?,
        None => sock.connect(target)?,
    }
    Ok(sock)
}

impl SdNotifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` once, at start; the environment is left as is so a
    /// child could not inherit a different answer than ours.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).ok();
        let target = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = watchdog_from(var("WATCHDOG_USEC"), var("WATCHDOG_PID"), std::process::id());
        Self::new(target, watchdog)
    }

    fn new(target: Option<std::ffi::OsString>, watchdog: Option<std::time::Duration>) -> Self {
        let target = target.filter(|t| !t.is_empty());
        let watchdog = watchdog.filter(|_| target.is_some());
        Self { target, socket: std::sync::Mutex::new(None), watchdog }
    }

    /// Sends `msg` on the kept socket (connected now if there is none), once more on a new one
    /// if that fails. The kept socket stays when no new one can be made (every descriptor
    /// taken): the next message tries it again, so the watchdog's pings are not lost for want
    /// of a descriptor the kept socket does not need.
    fn deliver(&self, target: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
        let send = |sock: &std::os::unix::net::UnixDatagram| match sock.send(msg) {
            Ok(n) if n == msg.len() => Ok(()),
            Ok(n) => Err(std::io::Error::new(std::io::ErrorKind::WriteZero, format!("sent {n} of {} bytes", msg.len()))),
            Err(e) => Err(e),
        };
        let mut kept = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let failed = match kept.as_ref().map(send) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => Some(e),
            None => None,
        };
        let sock = match connect(target) {
            Ok(s) => s,
            Err(e) => return Err(failed.unwrap_or(e)),
        };
        send(&sock)?;
        *kept = Some(sock);
        Ok(())
    }
}

impl Notifier for SdNotifier {
    fn send(&self, notices: &[Notice]) {
        use sd_notify::NotifyState as S;
        use std::fmt::Write;
        let Some(target) = &self.target else { return };
        let mut msg = String::new();
        for n in notices {
            let state = match n {
                Notice::Ready => S::Ready,
                Notice::Reloading => S::Reloading,
                Notice::Stopping => S::Stopping,
                Notice::Watchdog => S::Watchdog,
                Notice::Status(s) => S::Status(s),
            };
            let _ = writeln!(msg, "{state}");
            // systemd ≥ 253 wants the moment of the reload request with RELOADING=1.
            if *n == Notice::Reloading {
                if let Ok(now) = S::monotonic_usec_now() {
                    let _ = writeln!(msg, "{now}");
                }
            }
        }
        if let Err(e) = self.deliver(target, msg.as_bytes()) {
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
    fn watchdog_follows_sd_watchdog_enabled() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(watchdog_from(s("30000000"), s("42"), 42), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(s("30000000"), None, 42), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from(s("30000000"), s("41"), 42), None);
        assert_eq!(watchdog_from(s("0"), None, 42), None);
        assert_eq!(watchdog_from(s("soon"), None, 42), None);
        assert_eq!(watchdog_from(None, s("42"), 42), None);
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn one_socket_for_every_message_and_a_new_one_when_the_manager_makes_a_new_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let n = SdNotifier::new(Some(path.clone().into()), Some(Duration::from_secs(30)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));
        n.send(&[Notice::Ready, Notice::Status("started".into())]);
        assert_eq!(recv(&manager), "READY=1\nSTATUS=started\n");
        let fd = |n: &SdNotifier| n.socket.lock().unwrap().as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let first = fd(&n).expect("the socket is kept");
        n.send(&[Notice::Watchdog]);
        assert_eq!(recv(&manager), "WATCHDOG=1\n");
        assert_eq!(fd(&n), Some(first), "the same socket sends the next message");

        // The manager's socket is replaced (daemon-reexec): the message still arrives, on a new one.
        drop(manager);
        std::fs::remove_file(&path).unwrap();
        let manager = UnixDatagram::bind(&path).unwrap();
        n.send(&[Notice::Reloading]);
        let got = recv(&manager);
        assert!(got.starts_with("RELOADING=1\nMONOTONIC_USEC=") && got.ends_with('\n'), "{got:?}");
        n.send(&[Notice::Stopping]);
        assert_eq!(recv(&manager), "STOPPING=1\n");
    }

    #[test]
    fn an_abstract_socket_is_reached_and_an_unset_or_empty_one_sends_nothing() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cluster-ai-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        let n = SdNotifier::new(Some(format!("@{name}").into()), None);
        n.send(&[Notice::Watchdog]);
        assert_eq!(recv(&manager), "WATCHDOG=1\n");

        // Unset or empty: not under a service manager.
        for target in [None, Some("".into())] {
            let none = SdNotifier::new(target, Some(Duration::from_secs(30)));
            assert_eq!(none.watchdog_interval(), None, "no socket, no watchdog");
            none.send(&[Notice::Ready]);
            assert!(none.socket.lock().unwrap().is_none());
        }
    }
}
