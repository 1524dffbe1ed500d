//! Every task's report gathered in one place: the node's state for `cluster-ai status` (over
//! the control socket) and for `/metrics`. The tasks publish; this module only reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::emergency::{EmergencyReceiver, EmergencyReport};
use crate::optimize::task::{OptimizeReceiver, OptimizeState};
use crate::runtime::tasks::{TaskReport, Tasks};
use crate::sampler::{Snapshot, SnapshotReceiver};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// The loaded configuration: where from, when, and the last refused reload.
pub struct ConfigReport {
    pub path: PathBuf,
    /// "file" or "defaults" (the default path did not exist).
    pub source: String,
    pub loaded_at_unix_ms: u64,
    pub loaded_seconds_ago: f64,
    /// The reason the last reload was refused, until a reload succeeds.
    pub last_reload_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
/// The node's whole state: what `cluster-ai status --json` prints and `/metrics` encodes.
pub struct NodeReport {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub dry_run: bool,
    pub config: ConfigReport,
    /// Absent until the sampler's first reading.
    pub snapshot: Option<Snapshot>,
    pub tasks: Vec<TaskReport>,
    /// The optimize task's latest plan; absent until it has one.
    #[serde(default)]
    pub optimize: Option<OptimizeState>,
    #[serde(default)]
    pub emergency: Option<EmergencyReport>,
    #[serde(default)]
    pub health: Option<crate::health::HealthReport>,
    #[serde(default)]
    pub alerts: Option<crate::alerts::task::AlertsReport>,
    #[serde(default)]
    pub metrics: Option<MetricsReport>,
}

/// What `/metrics` is serving: published by the metrics task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsReport {
    /// `http://ADDR/metrics` or `https://ADDR/metrics`; `None`: not served (off, not bound, or
    /// closed by a web config that does not load).
    pub url: Option<String>,
    /// Basic auth is asked for.
    pub basic_auth: bool,
    /// Why `/metrics` is closed or serves an older web config: the web config file's last
    /// problem, until a reload loads it.
    pub problem: Option<String>,
}

/// What the supervisor publishes about the loaded config.
#[derive(Debug, Clone)]
pub struct ConfigInfo {
    pub path: PathBuf,
    pub from_file: bool,
    pub loaded_at: Instant,
    pub loaded_at_unix_ms: u64,
    pub last_reload_error: Option<String>,
}

/// Where every task publishes its report (watch channels the tasks own); `status` and
/// `/metrics` only read them.
#[derive(Clone)]
pub struct Reports {
    pub started: Instant,
    pub dry_run: bool,
    pub tasks: Tasks,
    pub snapshots: SnapshotReceiver,
    pub config: watch::Receiver<ConfigInfo>,
    pub optimize: OptimizeReceiver,
    pub emergency: EmergencyReceiver,
    pub health: crate::health::task::HealthReceiver,
    pub alerts: watch::Receiver<std::sync::Arc<crate::alerts::task::AlertsReport>>,
    pub metrics: watch::Receiver<MetricsReport>,
}

impl Reports {
    /// Every report as it is now.
    pub fn node_report(&self) -> NodeReport {
        let now = Instant::now();
        let c = self.config.borrow().clone();
        NodeReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            dry_run: self.dry_run,
            config: ConfigReport {
                path: c.path,
                source: if c.from_file { "file" } else { "defaults" }.into(),
                loaded_at_unix_ms: c.loaded_at_unix_ms,
                loaded_seconds_ago: now.duration_since(c.loaded_at).as_secs_f64(),
                last_reload_error: c.last_reload_error,
            },
            snapshot: self.snapshots.borrow().as_deref().cloned(),
            tasks: self.tasks.report(now),
            optimize: self.optimize.borrow().as_deref().cloned(),
            emergency: Some(self.emergency.borrow().as_ref().clone()),
            health: Some(self.health.borrow().as_ref().clone()),
            alerts: Some(self.alerts.borrow().as_ref().clone()),
            metrics: Some(self.metrics.borrow().clone()),
        }
    }
}
