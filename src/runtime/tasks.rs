//! The registry of the daemon's tasks: each reports that it started and beats a heartbeat at
//! least once per declared period. The watchdog pings systemd only while every beat is fresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A task whose last beat is older than this many periods is stuck.
const STALE_AFTER_PERIODS: u32 = 3;

/// Where a task is in its life. On the wire (`status --json`) and in `status`: "starting",
/// "running", "stopped", "failed: WHY".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", from = "String")]
pub enum TaskState {
    Starting,
    Running,
    Stopped,
    Failed(String),
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskState::Starting => f.write_str("starting"),
            TaskState::Running => f.write_str("running"),
            TaskState::Stopped => f.write_str("stopped"),
            TaskState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl From<TaskState> for String {
    fn from(s: TaskState) -> String {
        s.to_string()
    }
}

impl From<String> for TaskState {
    /// The text back; anything unknown (a newer daemon's word) is kept as a failure's reason,
    /// so a client never refuses a reply over it.
    fn from(s: String) -> TaskState {
        match s.as_str() {
            "starting" => TaskState::Starting,
            "running" => TaskState::Running,
            "stopped" => TaskState::Stopped,
            other => TaskState::Failed(other.strip_prefix("failed: ").unwrap_or(other).to_string()),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    state: TaskState,
    last_beat: Instant,
    period: Duration,
}

#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Mutex<BTreeMap<&'static str, Entry>>>,
    started: Arc<tokio::sync::Notify>,
}

/// What `status` shows of one task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TaskReport {
    pub name: String,
    pub state: TaskState,
    pub last_heartbeat_seconds_ago: f64,
    pub period_seconds: f64,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Entry>> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a task before it is spawned, so a task that never starts is noticed.
    pub fn register(&self, name: &'static str, period: Duration) -> Heartbeat {
        self.lock().insert(name, Entry { state: TaskState::Starting, last_beat: Instant::now(), period });
        Heartbeat { name, tasks: self.clone() }
    }

    pub fn set_state(&self, name: &str, state: TaskState) {
        if let Some(e) = self.lock().get_mut(name) {
            e.state = state;
        }
        self.started.notify_waiters();
    }

    /// Waits until no registered task is still starting.
    pub async fn all_started(&self) {
        loop {
            let notified = self.started.notified();
            if !self.lock().values().any(|e| e.state == TaskState::Starting) {
                return;
            }
            notified.await;
        }
    }

    /// The running tasks whose heartbeat is overdue at `now`.
    pub fn stale(&self, now: Instant) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, e)| matches!(e.state, TaskState::Running | TaskState::Starting))
            .filter(|(_, e)| now.saturating_duration_since(e.last_beat) > e.period * STALE_AFTER_PERIODS)
            .map(|(name, _)| *name)
            .collect()
    }

    pub fn report(&self, now: Instant) -> Vec<TaskReport> {
        self.lock()
            .iter()
            .map(|(name, e)| TaskReport {
                name: name.to_string(),
                state: e.state.clone(),
                last_heartbeat_seconds_ago: now.saturating_duration_since(e.last_beat).as_secs_f64(),
                period_seconds: e.period.as_secs_f64(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockingError {
    #[error("still running after {0:?}")]
    TimedOut(Duration),
    #[error("failed: {0}")]
    Failed(String),
}

/// A task's handle on its own entry.
#[derive(Clone)]
pub struct Heartbeat {
    name: &'static str,
    tasks: Tasks,
}

impl Heartbeat {
    /// Awaits `f` while beating every 10 s, so a long wait on a peer (each with its own
    /// deadline) does not look like a stuck task.
    pub async fn during<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(f);
        // Most calls (the emergency task's look at each snapshot) are done at their first poll:
        // no timer is made for them.
        if let std::task::Poll::Ready(v) = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await {
            return v;
        }
        loop {
            tokio::select! {
                v = &mut f => return v,
                () = tokio::time::sleep(Duration::from_secs(10)) => self.beat(),
            }
        }
    }

    /// Marks the task running; call it once the task is ready to do its work.
    pub fn started(&self) {
        self.beat();
        self.tasks.set_state(self.name, TaskState::Running);
    }

    pub fn beat(&self) {
        if let Some(e) = self.tasks.lock().get_mut(self.name) {
            e.last_beat = Instant::now();
        }
    }

    /// Runs `f` on the blocking pool and waits for it, beating the heartbeat each second
    /// meanwhile (a long swapoff is work, not a hang); gives up waiting after `timeout`.
    pub async fn blocking<T: Send + 'static>(&self, timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> Result<T, BlockingError> {
        let mut handle = tokio::task::spawn_blocking(f);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                joined = &mut handle => return joined.map_err(|e| BlockingError::Failed(e.to_string())),
                _ = beat.tick() => self.beat(),
                _ = &mut deadline => return Err(BlockingError::TimedOut(timeout)),
            }
        }
    }

    /// The task promises a beat at least this often (a new `sample_interval` changes it).
    pub fn set_period(&self, period: Duration) {
        if let Some(e) = self.tasks.lock().get_mut(self.name) {
            e.period = period;
            e.last_beat = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time does not advance by itself while blocking work is out: the test moves it.
    #[tokio::test(start_paused = true)]
    async fn blocking_work_keeps_the_heartbeat_and_has_a_deadline() {
        let tasks = Tasks::default();
        let hb = tasks.register("swap", Duration::from_secs(1));
        hb.started();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiting = tokio::spawn({
            let hb = hb.clone();
            async move { hb.blocking(Duration::from_secs(60), move || rx.recv().is_ok()).await }
        });
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
            assert!(tasks.stale(Instant::now()).is_empty(), "beats while the work runs");
        }
        tx.send(()).unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(true));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = tokio::spawn({
            let hb = hb.clone();
            async move { hb.blocking(Duration::from_secs(5), move || rx.recv().is_ok()).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(stuck.await.unwrap(), Err(BlockingError::TimedOut(Duration::from_secs(5))));
        tx.send(()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_stops_beating_goes_stale_and_recovers() {
        let tasks = Tasks::default();
        let a = tasks.register("sampler", Duration::from_secs(5));
        let b = tasks.register("control", Duration::from_secs(10));
        a.started();
        b.started();
        tasks.all_started().await;
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(5)).await;
            a.beat();
            b.beat();
            assert!(tasks.stale(Instant::now()).is_empty());
        }
        // `sampler` hangs; `control` keeps beating.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(5)).await;
            b.beat();
        }
        assert!(tasks.stale(Instant::now()).is_empty(), "exactly 3 periods is still on time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(tasks.stale(Instant::now()), ["sampler"]);
        a.beat();
        assert!(tasks.stale(Instant::now()).is_empty());
        tasks.set_state("sampler", TaskState::Stopped);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(tasks.stale(Instant::now()), ["control"], "a stopped task is not stuck");
    }

    #[tokio::test(start_paused = true)]
    async fn all_started_waits_for_every_task() {
        let tasks = Tasks::default();
        let a = tasks.register("a", Duration::from_secs(1));
        let b = tasks.register("b", Duration::from_secs(1));
        a.started();
        let waiter = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.all_started().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.started();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        let report = tasks.report(Instant::now());
        assert_eq!(report.iter().map(|r| r.state.clone()).collect::<Vec<_>>(), [TaskState::Running, TaskState::Running]);
    }

    #[test]
    fn task_states_keep_their_text_on_the_wire() {
        for (state, text) in [
            (TaskState::Starting, "\"starting\""),
            (TaskState::Running, "\"running\""),
            (TaskState::Stopped, "\"stopped\""),
            (TaskState::Failed("panicked: x".into()), "\"failed: panicked: x\""),
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), text);
            assert_eq!(serde_json::from_str::<TaskState>(text).unwrap(), state);
        }
        // A word this client does not know is shown, not refused.
        assert_eq!(serde_json::from_str::<TaskState>("\"paused\"").unwrap(), TaskState::Failed("paused".into()));
    }
}
