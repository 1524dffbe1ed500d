//! Fault injection for tests of failure paths on the real binary. Debug builds (what `cargo
//! test` runs) and builds with the `fault-injection` feature (`cargo test --release --features
//! fault-injection`) read `CLUSTER_AI_FAULT=point:action`; release builds compile it to nothing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic,
    Error,
    /// Stop making progress without blocking the runtime: the watchdog must notice.
    Hang,
    /// SIGKILL ourselves, as `kill -9` would: for crash-safety tests.
    Kill,
    /// Blocking code sleeps 30 s there: an operation held mid-way.
    Sleep,
}

/// Whether this build reads `CLUSTER_AI_FAULT`.
pub const ENABLED: bool = cfg!(any(debug_assertions, feature = "fault-injection"));

/// The fault configured for `point`, if any.
pub fn at(point: &str) -> Option<Fault> {
    #[cfg(any(debug_assertions, feature = "fault-injection"))]
    {
        let spec = std::env::var("CLUSTER_AI_FAULT").ok()?;
        let (p, action) = spec.split_once(':')?;
        if p != point {
            return None;
        }
        match action {
            "panic" => Some(Fault::Panic),
            "error" => Some(Fault::Error),
            "hang" => Some(Fault::Hang),
            "kill" => Some(Fault::Kill),
            "sleep" => Some(Fault::Sleep),
            _ => None,
        }
    }
    #[cfg(not(any(debug_assertions, feature = "fault-injection")))]
    {
        let _ = point;
        None
    }
}

/// Acts out the fault configured for `point`: panics, returns an error, or never returns.
pub async fn inject(point: &str) -> anyhow::Result<()> {
    match at(point) {
        None => Ok(()),
        Some(Fault::Panic) => panic!("injected fault at {point}"),
        Some(Fault::Error) => anyhow::bail!("injected fault at {point}"),
        Some(Fault::Hang | Fault::Sleep) => std::future::pending().await,
        Some(Fault::Kill) => kill_self(),
    }
}

/// The same, for blocking code (where hanging is not offered).
pub fn hit(point: &str) -> std::io::Result<()> {
    match at(point) {
        None | Some(Fault::Hang) => Ok(()),
        Some(Fault::Sleep) => {
            tracing::warn!("injected fault at {point}: sleeping 30 s");
            std::thread::sleep(std::time::Duration::from_secs(30));
            Ok(())
        }
        Some(Fault::Panic) => panic!("injected fault at {point}"),
        Some(Fault::Error) => Err(std::io::Error::other(format!("injected fault at {point}"))),
        Some(Fault::Kill) => kill_self(),
    }
}

fn kill_self() -> ! {
    crate::sys::process::kill_self()
}
