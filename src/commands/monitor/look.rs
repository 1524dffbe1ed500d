//! One look at the node per refresh: the running daemon's status when it answers, otherwise a
//! sample taken here; the swap table is always read here (the kernel's own numbers, readable
//! without root), so the chart can stack the managed files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::control::{request, ClientError, Request, StatusReply};
use crate::emergency::Action;
use crate::health::ServiceReport;
use crate::sampler::{Sampler, Snapshot};
use crate::sys::procfs::{ProcFile, ProcFs};
use crate::sys::swap::parse_swaps;

/// What one refresh saw; also the `--json` line (docs/monitor.md lists the fields).
#[derive(Debug, Clone, Serialize)]
pub struct Look {
    /// When the monitor looked (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// "daemon" (the running daemon's status) or "local" (no daemon answered; sampled here).
    pub source: &'static str,
    /// The daemon that answered.
    pub daemon: Option<DaemonInfo>,
    /// Why no daemon's status is shown, e.g. "no cluster-ai daemon is running (…)".
    pub daemon_error: Option<String>,
    /// The same in a few words for the screen's header: "daemon not running", …
    #[serde(skip)]
    pub daemon_short: Option<&'static str>,
    /// The sampler's snapshot (the daemon's, taken every `sample_interval`, or this process's);
    /// absent until the first one.
    pub snapshot: Option<Snapshot>,
    /// Every active swap area, from the kernel's swap table, in its order.
    pub swap_areas: Vec<SwapArea>,
    /// Why the swap table could not be read.
    pub swap_error: Option<String>,
    /// The health task's services; absent without a daemon, empty when it watches none.
    pub services: Option<Vec<ServiceReport>>,
    /// Each emergency watch ("cpu", "memory", "disk") and its state ("clear", "active", …);
    /// empty without a daemon.
    pub measures: BTreeMap<String, String>,
    /// The emergency task's recent actions, oldest first, as the daemon keeps them.
    pub recent_actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub uptime_seconds: f64,
}

/// One line of the kernel's swap table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwapArea {
    pub path: PathBuf,
    /// A file in `swap.dir`: one of the daemon's.
    pub managed: bool,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// Where looks come from: the daemon's socket, and this process's own sampler (made on the
/// first look the daemon does not answer, so a monitor of a running daemon reads nothing but
/// the swap table here).
pub struct Source {
    socket: PathBuf,
    swap_dir: PathBuf,
    procfs: ProcFs,
    sampler: Option<Sampler>,
    swaps: Option<ProcFile>,
}

impl Source {
    pub fn new(socket: PathBuf, swap_dir: PathBuf) -> Self {
        Self { socket, swap_dir, procfs: ProcFs::default(), sampler: None, swaps: None }
    }

    pub fn look(&mut self) -> Look {
        let reply = match request(&self.socket, &Request::Status) {
            Ok(v) => serde_json::from_value::<StatusReply>(v)
                .map_err(|e| ("daemon not understood", format!("the daemon's answer is not understood: {e}"))),
            Err(e) => Err((
                match e {
                    ClientError::NotRunning(_) => "daemon not running",
                    ClientError::RootOnly(_) => "the daemon's socket is root-only (sudo)",
                    _ => "daemon not answering",
                },
                e.to_string(),
            )),
        };
        let (swap_areas, swap_error) = match self.swap_table() {
            Ok(a) => (a, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut look = Look {
            at_unix_ms: crate::sys::unix_ms(),
            source: "daemon",
            daemon: None,
            daemon_error: None,
            daemon_short: None,
            snapshot: None,
            swap_areas,
            swap_error,
            services: None,
            measures: BTreeMap::new(),
            recent_actions: Vec::new(),
        };
        match reply {
            Ok(r) => {
                look.daemon = Some(DaemonInfo { pid: r.pid, version: r.version, uptime_seconds: r.uptime_seconds });
                look.snapshot = r.snapshot;
                look.services = r.health.map(|h| h.services);
                if let Some(e) = r.emergency {
                    look.measures = e.watches.into_iter().map(|(n, w)| (n, w.state)).collect();
                    look.recent_actions = e.recent;
                }
            }
            Err((short, e)) => {
                look.source = "local";
                look.daemon_short = Some(short);
                look.daemon_error = Some(e);
                let sampler = self.sampler.get_or_insert_with(|| Sampler::new(self.procfs.clone()));
                look.snapshot = sampler.sample(&self.swap_dir).ok();
            }
        }
        look
    }

    fn swap_table(&mut self) -> Result<Vec<SwapArea>, String> {
        let file = match &mut self.swaps {
            Some(f) => f,
            None => self.swaps.insert(self.procfs.open("swaps").map_err(|e| e.to_string())?),
        };
        let entries = match file.parse(parse_swaps) {
            Ok(e) => e,
            Err(e) => {
                self.swaps = None;
                return Err(e.to_string());
            }
        };
        Ok(entries.into_iter().map(|e| area(e, &self.swap_dir)).collect())
    }
}

fn area(e: crate::sys::swap::SwapEntry, swap_dir: &Path) -> SwapArea {
    SwapArea {
        managed: e.kind == "file" && e.path.parent() == Some(swap_dir),
        path: e.path,
        size_bytes: e.size_bytes,
        used_bytes: e.used_bytes,
    }
}
