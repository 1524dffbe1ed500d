//! The node's facts and housekeeping that the tasks ask of the OS besides swap, systemd and
//! the peers: its name and addresses, who we run as, the journal's size and the page cache.
//! [`Node`] is the seam: [`RealNode`] asks the kernel and journald; [`fake::FakeNode`] (tests,
//! and `tests/` with the `fakes` feature) answers from fields and records what was asked.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Where journald keeps its files (persistent, then volatile): what a vacuum shrinks.
pub const JOURNAL_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// `journalctl --vacuum-size` that runs longer than this has failed (it is killed).
pub const VACUUM_TIMEOUT: Duration = Duration::from_secs(60);

/// What the tasks ask of the node. Blocking calls: an async caller runs them on the blocking
/// pool (`Heartbeat::blocking` or `spawn_blocking`).
pub trait Node: Send + Sync + 'static {
    /// This machine's name (`/proc/sys/kernel/hostname`); "localhost" when unknown.
    fn hostname(&self) -> String;
    /// Every interface's address (getifaddrs(3)); empty when they cannot be read.
    fn local_addresses(&self) -> Vec<IpAddr>;
    /// Whether we run as root (the effective uid is 0).
    fn is_root(&self) -> bool;
    /// `journalctl --vacuum-size=max_bytes`: the bytes the journal's directories shrank by, or
    /// why it failed (journalctl's own words, with the fix where the cause is known).
    fn vacuum_journal(&self, max_bytes: u64) -> Result<u64, String>;
    /// `sync; echo 1 > /proc/sys/vm/drop_caches`: the bytes MemFree grew by.
    fn drop_page_cache(&self) -> std::io::Result<u64>;
}

/// The running kernel and journald.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealNode;

impl Node for RealNode {
    fn hostname(&self) -> String {
        hostname()
    }

    fn local_addresses(&self) -> Vec<IpAddr> {
        let mut addrs = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs().into_iter().flatten() {
            let Some(a) = ifa.address else { continue };
            if let Some(v4) = a.as_sockaddr_in() {
                addrs.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = a.as_sockaddr_in6() {
                addrs.push(IpAddr::V6(v6.ip()));
            }
        }
        addrs
    }

    fn is_root(&self) -> bool {
        is_root()
    }

    fn vacuum_journal(&self, max_bytes: u64) -> Result<u64, String> {
        let usage = || JOURNAL_DIRS.iter().map(|d| super::sweep::tree_bytes(Path::new(d))).sum::<u64>();
        let before = usage();
        let arg = format!("--vacuum-size={max_bytes}");
        let out = super::process::output_within(std::process::Command::new("journalctl").arg(&arg), VACUUM_TIMEOUT)
            .map_err(|e| format!("journalctl {arg}: {e}"))?;
        if !out.status.success() {
            return Err(format!("journalctl {arg}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        // journalctl reports a file it could not delete (a read-only /var/log under a
        // sandboxed unit) on stderr and still exits 0.
        if let Some(e) = vacuum_failure(&String::from_utf8_lossy(&out.stderr)) {
            return Err(format!("journalctl {arg}: {e}"));
        }
        Ok(before.saturating_sub(usage()))
    }

    fn drop_page_cache(&self) -> std::io::Result<u64> {
        let free = || -> u64 {
            super::fs::read_text(Path::new("/proc/meminfo"), super::fs::SMALL_FILE)
                .ok()
                .and_then(|m| m.lines().find(|l| l.starts_with("MemFree:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
                .unwrap_or(0)
                .saturating_mul(1024)
        };
        let before = free();
        nix::unistd::sync();
        std::fs::write("/proc/sys/vm/drop_caches", b"1")?;
        Ok(free().saturating_sub(before))
    }
}

/// This machine's name, for alerts when `[alerts] node` is not set and for Dask addresses.
pub fn hostname() -> String {
    super::fs::read_text(Path::new("/proc/sys/kernel/hostname"), super::fs::SMALL_FILE)
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the effective uid is 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The effective uid.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The first "Failed to …" line of `journalctl --vacuum-size`'s stderr, with a hint where the
/// cause is the unit's read-only view of the journal.
pub fn vacuum_failure(stderr: &str) -> Option<String> {
    let line = stderr.lines().map(str::trim).find(|l| l.starts_with("Failed to"))?;
    let hint = if line.contains("Read-only file system") {
        " (the unit needs ReadWritePaths=-/var/log/journal -/run/log/journal, as the shipped one has)"
    } else {
        ""
    };
    Some(format!("{line}{hint}"))
}

#[cfg(any(test, feature = "fakes"))]
pub mod fake {
    //! A node that answers from its fields and records what the tasks asked of it.

    use std::net::IpAddr;
    use std::sync::Mutex;

    use super::Node;

    #[derive(Debug)]
    pub struct FakeNode {
        pub hostname: String,
        pub addresses: Vec<IpAddr>,
        pub root: bool,
        /// What a vacuum answers, and what a page-cache drop frees.
        pub vacuum: Mutex<Result<u64, String>>,
        pub page_cache_bytes: u64,
        /// "vacuum_journal 1048576", "drop_page_cache", in the order asked.
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeNode {
        pub fn new(hostname: &str) -> FakeNode {
            FakeNode {
                hostname: hostname.into(),
                addresses: Vec::new(),
                root: true,
                vacuum: Mutex::new(Ok(0)),
                page_cache_bytes: 0,
                calls: Mutex::new(Vec::new()),
            }
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }

        fn note(&self, call: String) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(call);
            }
        }
    }

    impl Node for FakeNode {
        fn hostname(&self) -> String {
            self.hostname.clone()
        }
        fn local_addresses(&self) -> Vec<IpAddr> {
            self.addresses.clone()
        }
        fn is_root(&self) -> bool {
            self.root
        }
        fn vacuum_journal(&self, max_bytes: u64) -> Result<u64, String> {
            self.note(format!("vacuum_journal {max_bytes}"));
            self.vacuum.lock().map_or_else(|_| Err("poisoned".into()), |v| v.clone())
        }
        fn drop_page_cache(&self) -> std::io::Result<u64> {
            self.note("drop_page_cache".into());
            Ok(self.page_cache_bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::vacuum_failure;

    #[test]
    fn a_vacuum_that_could_not_delete_is_a_failure_with_its_reason() {
        let ok = "Vacuuming done, freed 24.0M of archived journals from /var/log/journal/abc.\n";
        assert_eq!(vacuum_failure(ok), None);
        let ro = "Failed to delete archived journal file /var/log/journal/abc/system@x.journal: Read-only file system\n\
                  Vacuuming done, freed 0B of archived journals from /var/log/journal/abc.\n";
        let e = vacuum_failure(ro).unwrap();
        assert!(e.starts_with("Failed to delete archived journal file") && e.contains("ReadWritePaths=-/var/log/journal"), "{e}");
    }
}
