//! The alert task: takes alerts from the other tasks, deduplicates them (a firing alert whose
//! key is already firing is not sent again), queues one delivery per configured channel, and
//! delivers each channel's queue in order, at most `per_minute` a minute, retrying with a
//! backoff. Alertmanager gets every firing alert again every `alertmanager_resend`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::channel::{self, Channel};
use super::queue::{Delivery, Queue, FILE_NAME};
use super::{Alert, AlertState};
use crate::config::{AlertsConfig, Config};
use crate::daemon::tasks::Heartbeat;
use crate::sys::ticker::Ticker;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// Alerts waiting for the task (it takes them at once; this only absorbs a burst).
pub const INBOX: usize = 256;
/// As the daemon stops, alerts raised at the last moment get this long to go out (they stay
/// queued in the file either way).
const STOP_DELIVERY: Duration = Duration::from_secs(2);

pub type AlertSender = mpsc::Sender<Alert>;

/// `status`'s and `{"command":"alerts"}`'s view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsReport {
    pub node: String,
    pub channels: Vec<ChannelReport>,
    /// Deliveries waiting (all channels), and those dropped because the queue was full.
    pub queued: usize,
    pub dropped: u64,
    /// Keys of the alerts firing now.
    pub firing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelReport {
    pub channel: String,
    pub url: String,
    pub sent: u64,
    pub failed: u64,
    pub queued: usize,
    pub last_error: Option<String>,
}

/// Sends without waiting: an alert task that is behind never holds up the task that raises
/// the alert (a full inbox is logged and the alert dropped).
pub fn raise(tx: &Option<AlertSender>, alert: Alert) {
    if let Some(tx) = tx {
        if let Err(e) = tx.try_send(alert) {
            tracing::error!("alerts: the alert task is not taking alerts ({e}); one dropped");
        }
    }
}

struct State {
    cfg: AlertsConfig,
    node: String,
    queue: Queue,
    firing: BTreeMap<String, Alert>,
    sent: BTreeMap<Channel, (u64, u64, Option<String>)>,
    /// Sends of the last minute, per channel (the rate limit).
    recent: BTreeMap<Channel, VecDeque<Instant>>,
    full_logged: bool,
    /// The queue changed since it was last written to its file.
    dirty: bool,
}

pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    mut inbox: mpsc::Receiver<Alert>,
    report: watch::Sender<Arc<AlertsReport>>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
    dry_run: bool,
) -> anyhow::Result<()> {
    heartbeat.started();
    let cfg = config.borrow_and_update().alerts.clone();
    let path = (!dry_run).then(|| crate::sys::paths::state_dir().join(FILE_NAME));
    let (queue, problem) = Queue::load(path, cfg.queue_max as usize);
    if let Some(p) = problem {
        tracing::error!("alerts: {p}");
    }
    if !queue.is_empty() {
        tracing::info!(queued = queue.len(), "alerts: {} undelivered alert(s) from before the restart", queue.len());
    }
    let node = cfg.node.clone().unwrap_or_else(super::hostname);
    let mut st = State {
        cfg,
        node,
        queue,
        firing: BTreeMap::new(),
        sent: BTreeMap::new(),
        recent: BTreeMap::new(),
        full_logged: false,
        dirty: false,
    };
    st.forget_unconfigured();
    let mut ticker = Ticker::new(HEARTBEAT_PERIOD.min(st.cfg.alertmanager_resend))?;
    let mut last_resend = Instant::now();
    loop {
        report.send_replace(Arc::new(st.report()));
        let wake = st.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => {
                // What was raised as the daemon stops (a task that failed) is queued and kept
                // in the file, with one short try to deliver it now.
                let mut raised = false;
                while let Ok(alert) = inbox.try_recv() {
                    st.accept(alert, dry_run);
                    raised = true;
                }
                if raised && !dry_run {
                    let _ = tokio::time::timeout(STOP_DELIVERY, st.deliver_due()).await;
                }
                st.flush().await;
                return Ok(());
            }
            changed = config.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                st.cfg = config.borrow_and_update().alerts.clone();
                st.node = st.cfg.node.clone().unwrap_or_else(super::hostname);
                st.forget_unconfigured();
            }
            Some(alert) = inbox.recv() => st.accept(alert, dry_run),
            t = ticker.tick() => {
                t?;
                heartbeat.beat();
                if st.cfg.alertmanager.is_some() && last_resend.elapsed() >= st.cfg.alertmanager_resend && !dry_run {
                    last_resend = Instant::now();
                    heartbeat.during(st.resend_firing()).await;
                }
            }
            _ = sleep_until(wake) => {}
        }
        if !dry_run {
            heartbeat.during(st.deliver_due()).await;
        }
        heartbeat.during(st.flush()).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl State {
    fn accept(&mut self, mut alert: Alert, dry_run: bool) {
        alert.node = self.node.clone();
        match alert.state {
            AlertState::Firing => {
                if self.firing.contains_key(&alert.key) {
                    tracing::debug!(key = %alert.key, "alerts: {} is already firing; not sent again", alert.key);
                    return;
                }
                self.firing.insert(alert.key.clone(), alert.clone());
            }
            AlertState::Resolved => {
                if let Some(f) = self.firing.remove(&alert.key) {
                    // The same identity as the firing one (Alertmanager matches on labels).
                    alert.labels = f.labels;
                    alert.starts_at_unix_ms = f.starts_at_unix_ms;
                }
            }
            AlertState::Notice => {}
        }
        let channels = Channel::configured(&self.cfg);
        if channels.is_empty() {
            return;
        }
        if dry_run {
            tracing::info!(key = %alert.key, "alerts: would send to {}: {}", names(&channels), alert.text());
            return;
        }
        for channel in channels {
            let d = Delivery { channel, alert: alert.clone(), attempts: 0, next_try_unix_ms: 0, last_error: None };
            if let Some(old) = self.queue.push(d) {
                if !self.full_logged {
                    tracing::error!(
                        max = self.cfg.queue_max,
                        "alerts: the queue is full ({} deliveries): dropping the oldest ({} to {}); [alerts] queue_max sets the bound",
                        self.cfg.queue_max,
                        old.alert.key,
                        old.channel.as_str()
                    );
                    self.full_logged = true;
                }
            }
        }
        self.dirty = true;
    }

    /// Writes the queue to its file if it changed, off the runtime (an fsync on a busy disk must
    /// not hold up the swap task).
    async fn flush(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let Some((path, bytes)) = self.queue.serialized() else { return };
        let written = tokio::task::spawn_blocking(move || super::queue::write(&path, bytes)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("alerts: cannot keep the queue: {e}"),
            Err(e) => tracing::error!("alerts: cannot keep the queue: {e}"),
        }
    }

    fn forget_unconfigured(&mut self) {
        let dropped = self.queue.keep_channels(&Channel::configured(&self.cfg));
        if dropped > 0 {
            tracing::warn!("alerts: {dropped} queued deliveries to channels no longer configured were dropped");
            self.dirty = true;
        }
    }

    /// When the next delivery's time comes: its retry time, or the end of its channel's rate
    /// limit, whichever is later.
    fn next_wake(&self) -> Option<Instant> {
        let (now, now_ms) = (Instant::now(), crate::sys::unix_ms());
        Channel::configured(&self.cfg)
            .into_iter()
            .filter_map(|c| {
                let first = self.queue.iter().find(|d| d.channel == c)?;
                let due = now + Duration::from_millis(first.next_try_unix_ms.saturating_sub(now_ms));
                let limited = self.recent.get(&c).filter(|r| r.len() >= self.cfg.per_minute as usize);
                let limit_ends = limited.and_then(|r| r.front()).map(|t| *t + Duration::from_secs(60));
                Some(limit_ends.map_or(due, |l| l.max(due)))
            })
            .min()
    }

    /// Sends what is due, channel by channel, each in order; a channel that fails waits.
    async fn deliver_due(&mut self) {
        for channel in Channel::configured(&self.cfg) {
            loop {
                let now = Instant::now();
                let recent = self.recent.entry(channel).or_default();
                while recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                    recent.pop_front();
                }
                if recent.len() >= self.cfg.per_minute as usize {
                    break;
                }
                let Some(i) = self.queue.due(channel, crate::sys::unix_ms()) else { break };
                let Some(d) = self.queue.iter().nth(i).cloned() else { break };
                let result = channel::deliver(channel, &self.cfg, &d.alert).await;
                self.recent.entry(channel).or_default().push_back(Instant::now());
                let counts = self.sent.entry(channel).or_default();
                match result {
                    Ok(status) => {
                        counts.0 += 1;
                        counts.2 = None;
                        tracing::info!(channel = channel.as_str(), key = %d.alert.key, "alerts: sent to {} ({status}): {}", channel.as_str(), d.alert.text());
                        self.queue.remove(i);
                        self.full_logged = false;
                        self.dirty = true;
                    }
                    Err(e) => {
                        counts.1 += 1;
                        if d.attempts == 0 {
                            tracing::warn!(channel = channel.as_str(), key = %d.alert.key, "alerts: {} did not take {}: {e}; kept and retried", channel.as_str(), d.alert.key);
                        }
                        counts.2 = Some(e.clone());
                        self.queue.failed(i, e, crate::sys::unix_ms(), self.cfg.retry_max);
                        self.dirty = true;
                        break;
                    }
                }
            }
        }
    }

    /// Alertmanager forgets an alert that stops coming: every firing one goes again.
    async fn resend_firing(&mut self) {
        for alert in self.firing.values() {
            if let Err(e) = channel::deliver(Channel::Alertmanager, &self.cfg, alert).await {
                tracing::debug!(key = %alert.key, "alerts: re-sending {} to Alertmanager: {e}", alert.key);
            }
        }
    }

    fn report(&self) -> AlertsReport {
        let channels = Channel::configured(&self.cfg)
            .into_iter()
            .map(|c| {
                let (sent, failed, last_error) = self.sent.get(&c).cloned().unwrap_or_default();
                ChannelReport {
                    channel: c.as_str().into(),
                    url: c.url(&self.cfg).unwrap_or_default().into(),
                    sent,
                    failed,
                    queued: self.queue.iter().filter(|d| d.channel == c).count(),
                    last_error,
                }
            })
            .collect();
        AlertsReport {
            node: self.node.clone(),
            channels,
            queued: self.queue.len(),
            dropped: self.queue.dropped,
            firing: self.firing.keys().cloned().collect(),
        }
    }
}

fn names(channels: &[Channel]) -> String {
    channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

/// `cluster-ai alert test`: one test notice straight to every configured channel; each
/// channel's result.
pub async fn test_all(cfg: &AlertsConfig) -> Vec<(Channel, Result<String, String>)> {
    let mut alert = Alert::notice("test", "info", "test alert from cluster-ai alert test");
    alert.node = cfg.node.clone().unwrap_or_else(super::hostname);
    let mut out = Vec::new();
    for c in Channel::configured(cfg) {
        out.push((c, channel::deliver(c, cfg, &alert).await));
    }
    out
}
