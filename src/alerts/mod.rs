//! Alerts: what the other tasks say is worth waking someone for, delivered to every configured
//! channel (a JSON webhook, Prometheus Alertmanager, email), deduplicated, rate-limited per channel,
//! and never lost to a channel that is down: each delivery waits in a bounded queue that is
//! kept in the state directory and retried with a backoff, across daemon restarts.

pub mod channel;
pub mod dead;
pub mod email;
pub mod queue;
pub mod task;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An alert's summary at most, in characters (a "workers left" alert naming 25,000 workers is
/// cut here, with `…`); the key, severity, node and each label are cut shorter, and at most
/// [`MAX_LABELS`] labels are kept. So one delivery is a few KiB at most, in the queue file too.
/// A delivery (webhook, Alertmanager or email) that takes longer than this has failed and is
/// retried.
pub const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const MAX_SUMMARY: usize = 1000;
pub const MAX_LABELS: usize = 16;
/// The last instant an alert's time may name: 9999-12-31T23:59:59.999Z, the last RFC 3339
/// (four-digit year) time, which Alertmanager and webhooks parse. A later one (a queue file
/// edited by hand) is held to it.
pub const MAX_UNIX_MS: u64 = 253_402_300_799_999;
const MAX_SHORT: usize = 200;
/// A delivery's last error or a receiver's refusal, in characters, on one line.
pub const MAX_ANSWER: usize = 300;

/// What an alert says about its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// An incident started.
    Firing,
    /// It ended (`ends_at_unix_ms` set).
    Resolved,
    /// Something happened that has no end (an emergency measure taken, a test).
    Notice,
}

/// What an alert is about, as the tasks that raise it name it: its kind (Alertmanager's
/// `alertname`) and its subject. On the wire and in the queue file it is the text
/// [`AlertKey::as_key`] gives ("service/ollama", "swap/max", "test"), which is how a firing
/// alert is matched with its resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertKey {
    /// `service/NAME`: a watched service is down (health).
    ServiceDown(String),
    /// `flapping/NAME`: its incidents passed `flap_restarts` within `flap_window` (health).
    Flapping(String),
    /// `workers/NAME`: a Dask scheduler has fewer workers than `min_workers` (health).
    WorkersLow(String),
    /// `emergency/ACTION`: an emergency measure was taken (emergency).
    Emergency(String),
    /// `swap/disk-guard`: swap may not grow, the disk is too full (swap).
    SwapDiskGuard,
    /// `swap/max`: swap is at `max_size` and memory is still high (swap).
    SwapMax,
    /// `task/failed`: one of the daemon's tasks failed (the supervisor).
    TaskFailed,
    /// `task/unclean-stop`: the last run did not stop cleanly (the supervisor).
    UncleanStop,
    /// `test`: `cluster-ai alert test`.
    Test,
    /// Any other text: an alert read back from a queue file written by another version, or a
    /// test's.
    Other(String),
}

impl AlertKey {
    /// The key's text (see the type).
    pub fn as_key(&self) -> String {
        match self {
            AlertKey::ServiceDown(n) => format!("service/{n}"),
            AlertKey::Flapping(n) => format!("flapping/{n}"),
            AlertKey::WorkersLow(n) => format!("workers/{n}"),
            AlertKey::Emergency(a) => format!("emergency/{a}"),
            AlertKey::SwapDiskGuard => "swap/disk-guard".into(),
            AlertKey::SwapMax => "swap/max".into(),
            AlertKey::TaskFailed => "task/failed".into(),
            AlertKey::UncleanStop => "task/unclean-stop".into(),
            AlertKey::Test => "test".into(),
            AlertKey::Other(s) => s.clone(),
        }
    }

    /// A key's text read back (the inverse of [`AlertKey::as_key`]); unknown text is `Other`.
    pub fn parse(key: &str) -> AlertKey {
        let subject = |s: &str| s.to_string();
        match key.split_once('/') {
            Some(("service", n)) => AlertKey::ServiceDown(subject(n)),
            Some(("flapping", n)) => AlertKey::Flapping(subject(n)),
            Some(("workers", n)) => AlertKey::WorkersLow(subject(n)),
            Some(("emergency", a)) => AlertKey::Emergency(subject(a)),
            _ => match key {
                "swap/disk-guard" => AlertKey::SwapDiskGuard,
                "swap/max" => AlertKey::SwapMax,
                "task/failed" => AlertKey::TaskFailed,
                "task/unclean-stop" => AlertKey::UncleanStop,
                "test" => AlertKey::Test,
                other => AlertKey::Other(other.into()),
            },
        }
    }

    /// Alertmanager's `alertname` (what the packaged rules and docs/alerts.md name).
    pub fn alertname(&self) -> String {
        match self {
            AlertKey::ServiceDown(_) => "ClusterAiServiceDown".into(),
            AlertKey::Flapping(_) => "ClusterAiServiceFlapping".into(),
            AlertKey::WorkersLow(_) => "ClusterAiWorkersLow".into(),
            AlertKey::Emergency(_) => "ClusterAiEmergencyMeasure".into(),
            AlertKey::SwapDiskGuard | AlertKey::SwapMax => "ClusterAiSwap".into(),
            AlertKey::TaskFailed | AlertKey::UncleanStop => "ClusterAiTaskFailed".into(),
            AlertKey::Test => "ClusterAiTest".into(),
            AlertKey::Other(text) => {
                // ClusterAi and the text's kind in CamelCase ("disk/x" → ClusterAiDisk).
                let mut name = "ClusterAi".to_string();
                let mut up = true;
                for c in text.split('/').next().unwrap_or("").chars().filter(char::is_ascii_alphanumeric) {
                    name.push(if up { c.to_ascii_uppercase() } else { c });
                    up = false;
                }
                name
            }
        }
    }
}

/// How bad: the first word of a message and Alertmanager's `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What the alert is about: [`AlertKey::as_key`]'s text ("service/ollama").
    #[serde(deserialize_with = "crate::sys::json::one_line::<_, MAX_SHORT>")]
    pub key: String,
    pub state: AlertState,
    /// [`Severity::as_str`]'s text: "critical", "warning" or "info".
    #[serde(deserialize_with = "crate::sys::json::one_line::<_, MAX_SHORT>")]
    pub severity: String,
    #[serde(deserialize_with = "crate::sys::json::one_line::<_, MAX_SUMMARY>")]
    pub summary: String,
    /// Filled in by the alert task (`[alerts] node`, else the hostname).
    #[serde(default, deserialize_with = "crate::sys::json::one_line::<_, MAX_SHORT>")]
    pub node: String,
    pub starts_at_unix_ms: u64,
    #[serde(default)]
    pub ends_at_unix_ms: Option<u64>,
    #[serde(default, deserialize_with = "first_labels")]
    pub labels: BTreeMap<String, String>,
}

/// Labels as read back (from the queue file): the [`MAX_LABELS`] that [`Alert::bounded`] keeps,
/// kept while reading, so a file of a million labels is not held whole first.
fn first_labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use crate::sys::json::OneLine;
    crate::sys::json::each_entry(d, BTreeMap::new(), |labels, k: OneLine<MAX_SHORT>, v: OneLine<MAX_SHORT>| {
        labels.insert(k.0, v.0);
        // bounded() keeps the first in key order: so does this.
        if labels.len() > MAX_LABELS {
            labels.pop_last();
        }
        Ok(())
    })
}

impl Alert {
    pub fn firing(key: AlertKey, severity: Severity, summary: impl Into<String>) -> Alert {
        Alert {
            key: key.as_key(),
            state: AlertState::Firing,
            severity: severity.as_str().into(),
            summary: summary.into(),
            node: String::new(),
            starts_at_unix_ms: crate::sys::unix_ms(),
            ends_at_unix_ms: None,
            labels: BTreeMap::new(),
        }
    }

    pub fn resolved(key: AlertKey, severity: Severity, summary: impl Into<String>, started_unix_ms: u64) -> Alert {
        let mut a = Alert::firing(key, severity, summary);
        a.state = AlertState::Resolved;
        a.starts_at_unix_ms = started_unix_ms;
        a.ends_at_unix_ms = Some(crate::sys::unix_ms());
        a
    }

    pub fn notice(key: AlertKey, severity: Severity, summary: impl Into<String>) -> Alert {
        let mut a = Alert::firing(key, severity, summary);
        a.state = AlertState::Notice;
        a
    }

    /// The alert within its bounds ([`MAX_SUMMARY`], [`MAX_LABELS`]), every field on one line
    /// (control characters escaped): what the alert task accepts.
    pub fn bounded(mut self) -> Alert {
        let short = |s: &str| crate::sys::one_line(s, MAX_SHORT);
        self.key = short(&self.key);
        self.severity = short(&self.severity);
        self.node = short(&self.node);
        self.summary = crate::sys::one_line(&self.summary, MAX_SUMMARY);
        self.labels = std::mem::take(&mut self.labels).into_iter().take(MAX_LABELS).map(|(k, v)| (short(&k), short(&v))).collect();
        self.starts_at_unix_ms = self.starts_at_unix_ms.min(MAX_UNIX_MS);
        self.ends_at_unix_ms = self.ends_at_unix_ms.map(|t| t.min(MAX_UNIX_MS));
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Alert {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// One line for a chat message: "[gpu-1] RESOLVED ollama is healthy again after 42s".
    pub fn text(&self) -> String {
        let tag = match self.state {
            AlertState::Firing => self.severity.to_uppercase(),
            AlertState::Resolved => "RESOLVED".into(),
            AlertState::Notice => self.severity.to_uppercase(),
        };
        format!("[{}] {tag} {}", self.node, self.summary)
    }

    /// Alertmanager's `alertname`: from the key's kind ("service/…" → ClusterAiServiceDown).
    pub fn alertname(&self) -> String {
        AlertKey::parse(&self.key).alertname()
    }

    /// Whether it is critical (an incident's inbox, never shed from a full queue).
    pub fn critical(&self) -> bool {
        self.severity == Severity::Critical.as_str()
    }
}

/// `2026-11-23T14:05:09.123Z` from milliseconds since the epoch (UTC), as Alertmanager and
/// webhooks expect timestamps.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

pub use crate::sys::node::hostname;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_441_872_223), "2026-11-23T13:51:12.223Z");
    }

    #[test]
    fn alerts_are_bounded_and_on_one_line() {
        let mut a = Alert::firing(
            AlertKey::WorkersLow("dask".into()),
            Severity::Warning,
            format!("workers left: {}", "tcp://10.0.0.1:1234, ".repeat(25_000)),
        );
        for i in 0..100 {
            a = a.label(&format!("l{i}"), &"v".repeat(10_000));
        }
        a.summary.push('\n');
        let b = a.bounded();
        assert_eq!(b.summary.chars().count(), MAX_SUMMARY + 1, "cut, with an ellipsis");
        assert!(b.summary.ends_with('…') && !b.summary.contains('\n'));
        assert_eq!(b.labels.len(), MAX_LABELS);
        assert!(b.labels.values().all(|v| v.chars().count() <= MAX_SHORT + 1));
        assert!(serde_json::to_vec(&b).unwrap().len() < 8 << 10);
        let small = Alert::firing(AlertKey::ServiceDown("x".into()), Severity::Critical, "x is down");
        assert_eq!(small.clone().bounded(), small, "an ordinary alert is left as it is");
    }

    #[test]
    fn alert_names_and_text() {
        let mut a = Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down: its unit failed");
        a.node = "gpu-1".into();
        assert_eq!(a.alertname(), "ClusterAiServiceDown");
        assert_eq!(a.text(), "[gpu-1] CRITICAL ollama is down: its unit failed");
        assert_eq!(Alert::notice(AlertKey::SwapMax, Severity::Warning, "x").alertname(), "ClusterAiSwap");
    }

    /// Every key's text reads back as the same key (a queue file written before a restart is
    /// matched with what the tasks raise after it), and names its Alertmanager alert.
    #[test]
    fn alert_keys_keep_their_text_and_name_their_alert() {
        let n = || "ollama".to_string();
        for (key, text, alertname) in [
            (AlertKey::ServiceDown(n()), "service/ollama", "ClusterAiServiceDown"),
            (AlertKey::Flapping(n()), "flapping/ollama", "ClusterAiServiceFlapping"),
            (AlertKey::WorkersLow("dask-scheduler".into()), "workers/dask-scheduler", "ClusterAiWorkersLow"),
            (AlertKey::Emergency("unload_ollama_model".into()), "emergency/unload_ollama_model", "ClusterAiEmergencyMeasure"),
            (AlertKey::SwapDiskGuard, "swap/disk-guard", "ClusterAiSwap"),
            (AlertKey::SwapMax, "swap/max", "ClusterAiSwap"),
            (AlertKey::TaskFailed, "task/failed", "ClusterAiTaskFailed"),
            (AlertKey::UncleanStop, "task/unclean-stop", "ClusterAiTaskFailed"),
            (AlertKey::Test, "test", "ClusterAiTest"),
            (AlertKey::Other("disk/full".into()), "disk/full", "ClusterAiDisk"),
        ] {
            assert_eq!(key.as_key(), text);
            assert_eq!(AlertKey::parse(text), key);
            assert_eq!(key.alertname(), alertname, "{text}");
            assert_eq!(Alert::notice(key, Severity::Info, "x").alertname(), alertname);
        }
        // A name with a slash stays the subject, whole.
        assert_eq!(AlertKey::parse("service/a/b"), AlertKey::ServiceDown("a/b".into()));
    }
}
