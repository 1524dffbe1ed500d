//! The alert task: takes alerts from the other tasks, deduplicates them (a firing alert whose
//! key is already firing is not sent again), queues one delivery per configured channel and
//! writes the queue to its file before trying any, then delivers each channel's queue in
//! order, each channel on its own (a hung channel delays no other), at most `per_minute` a
//! minute, retrying with a backoff. Alertmanager gets every firing alert again every
//! `alertmanager_resend`, in one request. At stop, nothing in flight is waited for: what did
//! not go is in the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::channel::{self, Channel};
use super::dead::{DeadLetter, DeadLetters};
use super::queue::{Delivery, Queue, FILE_NAME};
use super::{Alert, AlertKey, AlertState, Severity};
use crate::config::AlertsConfig;
use crate::runtime::{Clock, TaskCtx};

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(30);
/// Alerts waiting for the task, per inbox (it takes them at once; this only absorbs a burst).
pub const INBOX: usize = 256;
/// As the daemon stops, alerts raised at the last moment get this long to go out (they are in
/// the queue file either way, and go at the next start).
const STOP_DELIVERY: Duration = Duration::from_secs(2);

/// Where the tasks raise alerts: two bounded inboxes, so a flood of notices (emergency measures
/// taken) never crowds out an incident (a service down, a task failed). Every alert that finds
/// its inbox full is counted in `dropped`.
#[derive(Clone)]
pub struct AlertSender {
    incidents: mpsc::Sender<Alert>,
    notices: mpsc::Sender<Alert>,
    dropped: Arc<AtomicU64>,
}

pub struct AlertInbox {
    incidents: mpsc::Receiver<Alert>,
    notices: mpsc::Receiver<Alert>,
    dropped: Arc<AtomicU64>,
}

/// A sender for the tasks and the alert task's inbox.
pub fn inbox() -> (AlertSender, AlertInbox) {
    let (incidents, incidents_rx) = mpsc::channel(INBOX);
    let (notices, notices_rx) = mpsc::channel(INBOX);
    let dropped = Arc::new(AtomicU64::new(0));
    (AlertSender { incidents, notices, dropped: dropped.clone() }, AlertInbox { incidents: incidents_rx, notices: notices_rx, dropped })
}

impl AlertInbox {
    /// The next alert, incidents first.
    async fn recv(&mut self) -> Option<Alert> {
        tokio::select! {
            biased;
            Some(a) = self.incidents.recv() => Some(a),
            Some(a) = self.notices.recv() => Some(a),
            else => None,
        }
    }

    fn try_recv(&mut self) -> Option<Alert> {
        self.incidents.try_recv().or_else(|_| self.notices.try_recv()).ok()
    }
}

/// `status`'s and `{"command":"alerts"}`'s view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsReport {
    pub node: String,
    pub channels: Vec<ChannelReport>,
    /// Deliveries waiting (all channels), and alerts dropped since the start: those that found
    /// the inbox full and deliveries shed from a full queue.
    pub queued: usize,
    pub dropped: u64,
    /// Keys of the alerts firing now.
    pub firing: Vec<String>,
    /// Deliveries refused for good and kept in the dead-letters file (the last 100), and the
    /// last of them.
    #[serde(default)]
    pub dead_letters: usize,
    #[serde(default)]
    pub last_dead_letter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelReport {
    pub channel: String,
    pub url: String,
    pub sent: u64,
    pub failed: u64,
    /// Deliveries this channel refused for good (set aside as dead letters).
    #[serde(default)]
    pub refused: u64,
    pub queued: usize,
    pub last_error: Option<String>,
}

/// Sends without waiting: an alert task that is behind never holds up the task that raises
/// the alert. A full inbox drops the alert and counts it; the log says so at the 1st, 2nd, 4th,
/// 8th … drop, so a flood costs a few lines.
pub fn raise(tx: &Option<AlertSender>, alert: Alert) {
    let Some(tx) = tx else { return };
    let incident = alert.state != AlertState::Notice || alert.critical();
    let inbox = if incident { &tx.incidents } else { &tx.notices };
    if let Err(e) = inbox.try_send(alert) {
        let n = tx.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::error!(dropped = n, "alerts: the alert task is not taking alerts ({e}); {n} dropped so far");
        }
    }
}

/// What a delivery becomes: its channel's answer (`Ok`: the status line), or why not.
pub type Sent = Pin<Box<dyn Future<Output = Result<String, channel::Failure>> + Send>>;

/// Where deliveries go: over the network to each channel in the daemon ([`Network`]); a
/// recorder with scripted answers in tests, so the queue's dedup, rate limit and retry run
/// under tokio's paused clock.
pub trait Courier: Send + Sync + 'static {
    /// Delivers one alert to `channel`.
    fn deliver(&self, channel: Channel, cfg: &AlertsConfig, alert: &Alert) -> Sent;
    /// Sends every firing alert to Alertmanager again, in one request.
    fn resend(&self, cfg: &AlertsConfig, alerts: &[Alert]) -> Sent;
}

/// The channels for real: HTTP(S) for the webhook and Alertmanager, SMTP for email.
pub struct Network;

impl Courier for Network {
    fn deliver(&self, channel: Channel, cfg: &AlertsConfig, alert: &Alert) -> Sent {
        let (cfg, alert) = (cfg.clone(), alert.clone());
        Box::pin(async move { channel::deliver(channel, &cfg, &alert).await })
    }
    fn resend(&self, cfg: &AlertsConfig, alerts: &[Alert]) -> Sent {
        let (cfg, alerts) = (cfg.clone(), alerts.to_vec());
        Box::pin(async move { channel::resend_to_alertmanager(&cfg, &alerts).await })
    }
}

/// What a delivery task reports back.
enum Done {
    Delivery {
        channel: Channel,
        id: u64,
        result: Result<String, channel::Failure>,
    },
    /// A re-send of the firing alerts to Alertmanager.
    Resend(Result<String, channel::Failure>),
}

struct State {
    cfg: AlertsConfig,
    node: String,
    queue: Queue,
    dead: DeadLetters,
    firing: BTreeMap<String, Alert>,
    /// Per channel: sent, failed, refused for good, the last failure.
    sent: BTreeMap<Channel, (u64, u64, u64, Option<String>)>,
    /// Sends of the last minute, per channel (the rate limit).
    recent: BTreeMap<Channel, VecDeque<Instant>>,
    /// Channels with a request in flight: each channel has at most one, and none waits on
    /// another's.
    busy: BTreeSet<Channel>,
    inbox_dropped: Arc<AtomicU64>,
    full_logged: bool,
    /// The last write of the queue's file failed (said once until one succeeds).
    write_failing: bool,
    /// The queue changed since it was last written to its file (and the dead letters, with
    /// `dead_dirty` too).
    dirty: bool,
    dead_dirty: bool,
    clock: Clock,
    courier: Arc<dyn Courier>,
}

/// The task, delivering over the network.
pub async fn run(inbox: AlertInbox, report: watch::Sender<Arc<AlertsReport>>, ctx: TaskCtx) -> anyhow::Result<()> {
    run_via(inbox, report, ctx, Arc::new(Network)).await
}

/// The task, delivering through `courier`.
pub async fn run_via(
    mut inbox: AlertInbox,
    report: watch::Sender<Arc<AlertsReport>>,
    ctx: TaskCtx,
    courier: Arc<dyn Courier>,
) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, state_dir, dry_run, os, .. } = ctx;
    heartbeat.started();
    let cfg = config.borrow_and_update().alerts.clone();
    let path = state_dir.map(|d| d.join(FILE_NAME));
    let dead_path = path.as_ref().map(|p| p.with_file_name(super::dead::FILE_NAME));
    let ((queue, problem), (dead, dead_problem)) =
        tokio::task::spawn_blocking(move || (Queue::load(path, cfg.queue_max as usize), DeadLetters::load(dead_path))).await?;
    // Good deliveries kept from a file set aside (some of its entries were not): written back
    // at once, by the first flush.
    let rewrite = problem.is_some() && !queue.is_empty();
    let dead_rewrite = dead_problem.is_some() && !dead.is_empty();
    for p in [problem, dead_problem].into_iter().flatten() {
        tracing::error!("alerts: {p}");
    }
    if !queue.is_empty() {
        tracing::info!(queued = queue.len(), "alerts: {} undelivered alert(s) from before the restart", queue.len());
    }
    let cfg = config.borrow().alerts.clone();
    let node = cfg.node.clone().unwrap_or_else(super::hostname);
    let mut st = State {
        cfg,
        node,
        queue,
        dead,
        firing: BTreeMap::new(),
        sent: BTreeMap::new(),
        recent: BTreeMap::new(),
        busy: BTreeSet::new(),
        inbox_dropped: inbox.dropped.clone(),
        full_logged: false,
        write_failing: false,
        dirty: rewrite || dead_rewrite,
        dead_dirty: dead_rewrite,
        clock: os.clock,
        courier,
    };
    st.forget_unconfigured();
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut ticker = os.clock.ticker(HEARTBEAT_PERIOD.min(st.cfg.alertmanager_resend));
    let mut last_resend = Instant::now();
    loop {
        // Accepted alerts are in the file before any delivery of them is tried.
        st.flush().await;
        if !dry_run {
            st.start_due(&mut in_flight);
        }
        report.send_replace(Arc::new(st.report()));
        let wake = st.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => {
                // What was raised as the daemon stops (a task that failed) is accepted and
                // kept, with one short try to deliver it now, as is a delivery already in
                // flight (the alert may have been taken from the inbox a moment before the
                // stop: aborting it lost the task-failed notice about one stop in three);
                // nothing is waited for longer than that, and what did not go stays in the file.
                let mut raised = !in_flight.is_empty();
                while let Some(alert) = inbox.try_recv() {
                    st.accept(alert, dry_run);
                    raised = true;
                }
                st.flush().await;
                if raised && !dry_run {
                    let _ = tokio::time::timeout(STOP_DELIVERY, async {
                        loop {
                            st.start_due(&mut in_flight);
                            let Some(done) = in_flight.join_next().await else { break };
                            if let Ok(done) = done {
                                st.finished(done);
                            }
                        }
                    })
                    .await;
                }
                in_flight.abort_all();
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
            Some(alert) = inbox.recv() => {
                st.accept(alert, dry_run);
                // Take the rest of a burst before writing the file once.
                for _ in 0..INBOX {
                    let Some(alert) = inbox.try_recv() else { break };
                    st.accept(alert, dry_run);
                }
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(done) = done {
                    st.finished(done);
                }
            }
            _ = ticker.tick() => {
                heartbeat.beat();
                if st.queue.unread() || st.dead.unread() {
                    st.read_again().await;
                }
                if st.cfg.alertmanager.is_some() && last_resend.elapsed() >= st.cfg.alertmanager_resend && !dry_run
                    && st.start_resend(&mut in_flight) {
                    last_resend = Instant::now();
                }
            }
            _ = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl State {
    fn accept(&mut self, alert: Alert, dry_run: bool) {
        let mut alert = alert.bounded();
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
            for old in self.queue.push(Delivery::new(channel, alert.clone())) {
                if !self.full_logged {
                    tracing::error!(
                        max = self.cfg.queue_max,
                        "alerts: the queue is full ({} deliveries or {} MiB): dropping {} to {} first (notices go before incidents); [alerts] queue_max sets the bound",
                        self.cfg.queue_max,
                        super::queue::MAX_BYTES >> 20,
                        old.alert.key,
                        old.channel.as_str()
                    );
                    self.full_logged = true;
                }
            }
        }
        self.dirty = true;
    }

    /// Writes the queue (and the dead letters, when they changed) to their files if they
    /// changed, off the runtime (an fsync on a busy disk must not hold up the swap task).
    /// A write that fails (the disk full, no descriptor left) is tried again at the task's next
    /// wakeup (its heartbeat at the latest), said once until one succeeds.
    async fn flush(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let dead_dirty = std::mem::take(&mut self.dead_dirty);
        let dead = if dead_dirty { self.dead.serialized() } else { None };
        let files: Vec<_> = [self.queue.serialized(), dead].into_iter().flatten().collect();
        let written =
            tokio::task::spawn_blocking(move || files.into_iter().try_for_each(|(path, bytes)| super::queue::write(&path, bytes))).await;
        let failed = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None if std::mem::take(&mut self.write_failing) => tracing::info!("alerts: the queue is kept in its file again"),
            None => {}
            Some(e) => {
                self.dirty = true;
                self.dead_dirty |= dead_dirty;
                if !std::mem::replace(&mut self.write_failing, true) {
                    tracing::error!(
                        "alerts: cannot keep the queue: {e}; kept in memory and written again at the next change or within 30 s"
                    );
                }
            }
        }
    }

    /// Reads the queue's and the dead letters' files again where they were left unread (see
    /// [`Queue::load`]), off the runtime; merged with what came meanwhile and written back.
    async fn read_again(&mut self) {
        let queue = std::mem::replace(&mut self.queue, Queue::load(None, self.cfg.queue_max as usize).0);
        let dead = std::mem::replace(&mut self.dead, DeadLetters::load(None).0);
        let Ok(((queue, said), (dead, dead_said))) = tokio::task::spawn_blocking(move || (queue.read_again(), dead.read_again())).await
        else {
            tracing::error!("alerts: reading the queue's files again failed; alerts since are kept in memory only");
            return;
        };
        self.queue = queue;
        self.dead = dead;
        for (said, what) in [(said, &mut self.dirty), (dead_said, &mut self.dead_dirty)] {
            if let Some(s) = said {
                tracing::warn!("alerts: {s}");
                *what = true;
            }
        }
        self.dirty |= self.dead_dirty;
        self.forget_unconfigured();
    }

    fn forget_unconfigured(&mut self) {
        let dropped = self.queue.keep_channels(&Channel::configured(&self.cfg));
        if dropped > 0 {
            tracing::warn!("alerts: {dropped} queued deliveries to channels no longer configured were dropped");
            self.dirty = true;
        }
    }

    /// The end of a channel's rate limit, if it is reached now.
    fn limit_ends(&mut self, channel: Channel, now: Instant) -> Option<Instant> {
        let recent = self.recent.entry(channel).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        (recent.len() >= self.cfg.per_minute as usize).then(|| recent.front().map_or(now, |t| *t + Duration::from_secs(60)))
    }

    /// When the next delivery's time comes: its retry time, or the end of its channel's rate
    /// limit, whichever is later. Channels with a request in flight wake the task when it ends.
    fn next_wake(&mut self) -> Option<Instant> {
        let (now, now_ms) = (Instant::now(), self.clock.unix_ms());
        let mut wake: Option<Instant> = None;
        for c in Channel::configured(&self.cfg) {
            if self.busy.contains(&c) {
                continue;
            }
            let Some(first) = self.queue.iter().find(|d| d.channel == c) else { continue };
            let due = now + Duration::from_millis(first.next_try_unix_ms.saturating_sub(now_ms));
            let at = self.limit_ends(c, now).map_or(due, |l| l.max(due));
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        wake
    }

    /// Starts the first due delivery of every channel that is not busy and within its rate
    /// limit, each on a task of its own: a channel that hangs delays none of the others.
    fn start_due(&mut self, in_flight: &mut JoinSet<Done>) {
        let now_ms = self.clock.unix_ms();
        for channel in Channel::configured(&self.cfg) {
            if self.busy.contains(&channel) || self.limit_ends(channel, Instant::now()).is_some() {
                continue;
            }
            let Some(d) = self.queue.due(channel, now_ms) else { continue };
            let (id, sent) = (d.id, self.courier.deliver(channel, &self.cfg, &d.alert));
            self.busy.insert(channel);
            self.recent.entry(channel).or_default().push_back(Instant::now());
            in_flight.spawn(async move { Done::Delivery { channel, id, result: sent.await } });
        }
    }

    /// Alertmanager forgets an alert that stops coming: every firing one goes again, in one
    /// request (its API takes a list). `false` while Alertmanager's channel is busy.
    fn start_resend(&mut self, in_flight: &mut JoinSet<Done>) -> bool {
        if self.firing.is_empty() {
            return true;
        }
        if !self.busy.insert(Channel::Alertmanager) {
            return false;
        }
        let alerts: Vec<Alert> = self.firing.values().cloned().collect();
        let sent = self.courier.resend(&self.cfg, &alerts);
        in_flight.spawn(async move { Done::Resend(sent.await) });
        true
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Resend(r) => {
                self.busy.remove(&Channel::Alertmanager);
                if let Err(e) = r {
                    tracing::debug!("alerts: re-sending the firing alerts to Alertmanager: {e}");
                }
            }
            Done::Delivery { channel, id, result } => {
                self.busy.remove(&channel);
                let counts = self.sent.entry(channel).or_default();
                match result {
                    Ok(status) => {
                        counts.0 += 1;
                        counts.3 = None;
                        if let Some(d) = self.queue.remove(id) {
                            tracing::info!(channel = channel.as_str(), key = %d.alert.key, "alerts: sent to {} ({status}): {}", channel.as_str(), d.alert.text());
                        }
                        self.full_logged = false;
                        self.dirty = true;
                    }
                    Err(f) if f.permanent => {
                        counts.2 += 1;
                        let answer = crate::sys::one_line(&f.text, 300);
                        counts.3 = Some(answer.clone());
                        if let Some(d) = self.queue.remove(id) {
                            tracing::error!(
                                channel = channel.as_str(), key = %d.alert.key,
                                "alerts: {} refused {} for good ({answer}); set aside in {}, not retried", channel.as_str(), d.alert.key, super::dead::FILE_NAME
                            );
                            self.dead.push(DeadLetter { channel, alert: d.alert, refused_at_unix_ms: self.clock.unix_ms(), answer });
                            self.dead_dirty = true;
                        }
                        self.dirty = true;
                    }
                    Err(f) => {
                        counts.1 += 1;
                        let e = crate::sys::one_line(&f.text, 300);
                        counts.3 = Some(e.clone());
                        if let Some(d) = self.queue.iter().find(|d| d.id == id) {
                            if d.attempts == 0 {
                                tracing::warn!(channel = channel.as_str(), key = %d.alert.key, "alerts: {} did not take {}: {e}; kept and retried", channel.as_str(), d.alert.key);
                            }
                        }
                        self.queue.failed(id, e, self.clock.unix_ms(), self.cfg.retry_max);
                        self.dirty = true;
                    }
                }
            }
        }
    }

    fn report(&self) -> AlertsReport {
        let channels = Channel::configured(&self.cfg)
            .into_iter()
            .map(|c| {
                let (sent, failed, refused, last_error) = self.sent.get(&c).cloned().unwrap_or_default();
                ChannelReport {
                    channel: c.as_str().into(),
                    url: c.shown_url(&self.cfg),
                    sent,
                    failed,
                    refused,
                    queued: self.queue.iter().filter(|d| d.channel == c).count(),
                    last_error,
                }
            })
            .collect();
        AlertsReport {
            node: self.node.clone(),
            channels,
            queued: self.queue.len(),
            dropped: self.queue.dropped + self.inbox_dropped.load(Ordering::Relaxed),
            dead_letters: self.dead.len(),
            last_dead_letter: self.dead.last().map(|d| format!("{} refused {}: {}", d.channel.as_str(), d.alert.key, d.answer)),
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
    let mut alert = Alert::notice(AlertKey::Test, Severity::Info, "test alert from cluster-ai alert test");
    alert.node = cfg.node.clone().unwrap_or_else(super::hostname);
    let mut out = Vec::new();
    for c in Channel::configured(cfg) {
        out.push((c, channel::deliver(c, cfg, &alert).await.map_err(|f| f.text)));
    }
    out
}

#[cfg(test)]
mod tests;
