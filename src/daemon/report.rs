//! What systemd hears between READY and STOPPING: `WATCHDOG=1` every half watchdog interval,
//! but only while every task's heartbeat is fresh, and a `STATUS=` line that follows the
//! snapshots (at most every few seconds), the last reload's outcome and any stuck task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::tasks::Tasks;
use crate::sampler::SnapshotReceiver;
use crate::sys::notify::{Notice, Notifier};
use crate::sys::ticker::Ticker;

/// How often stuck tasks are looked for when systemd does not watch us.
const UNWATCHED_CHECK: Duration = Duration::from_secs(15);

/// Snapshot-driven STATUS updates are spaced at least this far apart (a reload, a stuck task
/// or a note goes out at once): `systemctl status` stays current enough, and an idle daemon
/// sends a datagram every few samples rather than every one.
const MIN_STATUS_GAP: Duration = Duration::from_secs(10);

/// How often `run` looks: every half watchdog interval; without a watchdog (no systemd) still
/// every 15 s, so a task that stops beating is logged whoever runs us.
pub fn period(notifier: &dyn Notifier) -> Duration {
    notifier.watchdog_interval().map_or(UNWATCHED_CHECK, |wd| wd / 2)
}

pub async fn run(
    mut ticker: Ticker,
    tasks: Tasks,
    notifier: Arc<dyn Notifier>,
    mut snapshots: SnapshotReceiver,
    mut note: watch::Receiver<String>,
    mut health: crate::health::task::HealthReceiver,
    cancel: CancellationToken,
) {
    let watchdog = notifier.watchdog_interval();
    let mut last_status = String::new();
    let mut last_sent: Option<Instant> = None;
    let mut stuck_before: Vec<&'static str> = Vec::new();
    loop {
        let mut urgent = false;
        let watchdog_due = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => true,
            changed = snapshots.changed() => { if changed.is_err() { return; } false }
            changed = note.changed() => { if changed.is_err() { return; } urgent = true; false }
            // A service going down or coming back shows at once.
            changed = health.changed() => { if changed.is_err() { return; } urgent = true; false }
        };
        let now = Instant::now();
        let stuck = tasks.stale(now);
        if stuck != stuck_before {
            urgent = true;
            if stuck.is_empty() {
                tracing::info!("every task reports again; watchdog pings resume");
            } else {
                tracing::error!(tasks = ?stuck, "no heartbeat from {}; withholding the watchdog ping so systemd restarts us", stuck.join(", "));
            }
            stuck_before = stuck.clone();
        }
        if watchdog_due && watchdog.is_some() && stuck.is_empty() {
            notifier.send(&[Notice::Watchdog]);
        }
        let spaced = last_sent.is_none_or(|t| now.duration_since(t) >= MIN_STATUS_GAP);
        if !urgent && !spaced {
            // Nothing could be sent: the line is not even written (most snapshots end here).
            continue;
        }
        let down = down_text(&health.borrow_and_update());
        let text = status_text(&snapshots, &note.borrow(), &stuck, &down);
        // Health reports change with every probe; only a change of what is down is urgent.
        let urgent = urgent && (text != last_status);
        if text != last_status && (urgent || spaced) {
            notifier.send(&[Notice::Status(text.clone())]);
            last_status = text;
            last_sent = Some(now);
        }
    }
}

/// "down: ollama, dask-scheduler workers 1/2", or nothing when every service is well.
fn down_text(h: &crate::health::HealthReport) -> String {
    if h.down().is_empty() {
        return String::new();
    }
    h.summary().split_once("down: ").map(|(_, d)| format!("down: {d}")).unwrap_or_default()
}

fn status_text(snapshots: &SnapshotReceiver, note: &str, stuck: &[&str], down: &str) -> String {
    let mut parts = Vec::new();
    if !stuck.is_empty() {
        parts.push(format!("stuck: {} (watchdog withheld)", stuck.join(", ")));
    }
    if !down.is_empty() {
        parts.push(down.to_string());
    }
    if let Some(s) = snapshots.borrow().as_ref() {
        parts.push(s.summary());
    }
    if !note.is_empty() {
        parts.push(note.to_string());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<Notice>>,
    }

    impl Notifier for Recorder {
        fn send(&self, notices: &[Notice]) {
            self.sent.lock().unwrap().extend_from_slice(notices);
        }
        fn watchdog_interval(&self) -> Option<Duration> {
            Some(Duration::from_secs(2))
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Notice> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_pings_only_while_every_heartbeat_is_fresh() {
        let tasks = Tasks::default();
        let hb = tasks.register("sampler", Duration::from_secs(1));
        hb.started();
        let rec = Arc::new(Recorder::default());
        let (_snap_tx, snap_rx) = watch::channel(None);
        let (note_tx, note_rx) = watch::channel(String::new());
        let cancel = CancellationToken::new();
        let (_health_tx, health_rx) = watch::channel(Arc::new(crate::health::HealthReport::default()));
        let ticker = crate::sys::ticker::Clock::tokio().ticker(period(rec.as_ref()));
        let handle = tokio::spawn(run(ticker, tasks.clone(), rec.clone(), snap_rx, note_rx, health_rx, cancel.clone()));

        // Healthy: the task beats every second, the loop pings every second (2 s / 2).
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            hb.beat();
        }
        let pings = rec.take().iter().filter(|n| **n == Notice::Watchdog).count();
        assert!((9..=11).contains(&pings), "{pings} pings in 10 s");

        // Hung: no beats. After 3 periods the pings stop and STATUS names the task.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let sent = rec.take();
        let pings = sent.iter().filter(|n| **n == Notice::Watchdog).count();
        // Up to 3 periods of grace, plus one tick of phase between the beat and the ticker.
        assert!(pings <= 4, "pinged {pings} times while stuck: {sent:?}");
        assert!(sent.ends_with(&[Notice::Status("stuck: sampler (watchdog withheld)".into())]), "{sent:?}");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!rec.take().contains(&Notice::Watchdog), "no ping at all while stuck");

        // Recovered: pings resume, STATUS drops the complaint; a note shows at once.
        hb.beat();
        note_tx.send_replace("config reloaded".into());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let sent = rec.take();
        assert!(sent.contains(&Notice::Watchdog), "{sent:?}");
        assert!(sent.contains(&Notice::Status("config reloaded".into())), "{sent:?}");

        cancel.cancel();
        handle.await.unwrap();
    }
}
