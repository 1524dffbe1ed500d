//! The alert task's queue discipline on tokio's paused clock, through a scripted courier:
//! deduplication, the per-minute rate limit, the retry backoff, a permanent refusal set aside,
//! and Alertmanager's re-send. Minutes of the task's time pass in milliseconds; every instant
//! asserted is exact, because paused time only moves to the next timer.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;
use crate::config::Config;
use crate::runtime::Os;

/// A delivery as the courier saw it: when (since the test began), where, which alert.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    at_s: u64,
    channel: Channel,
    key: String,
    state: AlertState,
}

struct Script {
    t0: Instant,
    seen: Mutex<Vec<Seen>>,
    resends: Mutex<Vec<(u64, usize)>>,
    /// Answers per alert key, in order; when none is left: delivered.
    answers: Mutex<BTreeMap<String, VecDeque<Result<String, channel::Failure>>>>,
}

impl Script {
    fn new() -> Arc<Script> {
        Arc::new(Script { t0: Instant::now(), seen: Mutex::default(), resends: Mutex::default(), answers: Mutex::default() })
    }

    fn answer(&self, key: &str, answers: Vec<Result<String, channel::Failure>>) {
        self.answers.lock().unwrap().insert(key.into(), answers.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn times_of(&self, key: &str) -> Vec<u64> {
        self.seen().into_iter().filter(|s| s.key == key).map(|s| s.at_s).collect()
    }
}

impl Courier for Script {
    fn deliver(&self, channel: Channel, _cfg: &AlertsConfig, alert: &Alert) -> Sent {
        let at_s = self.t0.elapsed().as_secs();
        self.seen.lock().unwrap().push(Seen { at_s, channel, key: alert.key.clone(), state: alert.state });
        let answer = self.answers.lock().unwrap().get_mut(&alert.key).and_then(VecDeque::pop_front).unwrap_or(Ok("200 OK".into()));
        Box::pin(std::future::ready(answer))
    }
    fn resend(&self, _cfg: &AlertsConfig, alerts: &[Alert]) -> Sent {
        self.resends.lock().unwrap().push((self.t0.elapsed().as_secs(), alerts.len()));
        Box::pin(std::future::ready(Ok("200 OK".into())))
    }
}

fn transient(text: &str) -> Result<String, channel::Failure> {
    Err(channel::Failure { text: text.into(), permanent: false })
}

struct Running {
    tx: Option<AlertSender>,
    report: watch::Receiver<Arc<AlertsReport>>,
    cancel: tokio_util::sync::CancellationToken,
    /// Held: the task ends when its config's sender is gone.
    _config: watch::Sender<Arc<Config>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn raise(&self, alert: Alert) {
        raise(&self.tx, alert);
    }

    async fn stop(self) {
        assert!(!self.task.is_finished(), "the task ran until stopped");
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The task on a webhook (and Alertmanager when `alertmanager`), with `set` applied to the
/// defaults.
fn start(script: &Arc<Script>, alertmanager: bool, set: impl FnOnce(&mut AlertsConfig)) -> Running {
    start_in(None, script, alertmanager, set)
}

/// [`start`], keeping the queue's files in `state_dir`.
fn start_in(state_dir: Option<&std::path::Path>, script: &Arc<Script>, alertmanager: bool, set: impl FnOnce(&mut AlertsConfig)) -> Running {
    let mut config = Config::default();
    config.alerts.node = Some("node-a".into());
    config.alerts.webhook = Some("http://127.0.0.1:9/hook".into());
    if alertmanager {
        config.alerts.alertmanager = Some("http://127.0.0.1:9".into());
    }
    set(&mut config.alerts);
    let (mut ctx, config_tx) = TaskCtx::fake("alerts", config, Os::fake());
    ctx.state_dir = state_dir.map(Into::into);
    let cancel = ctx.cancel.clone();
    let (tx, inbox) = inbox();
    let (report_tx, report) = watch::channel(Arc::new(AlertsReport::default()));
    let task = tokio::spawn(run_via(inbox, report_tx, ctx, script.clone()));
    Running { tx: Some(tx), report, cancel, _config: config_tx, task }
}

async fn after(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_firing_alert_already_firing_is_not_sent_again_and_its_resolution_is() {
    let script = Script::new();
    let t = start(&script, false, |_| {});
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down"));
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down"));
    after(1).await;
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is still down"));
    after(1).await;
    assert_eq!(script.seen().len(), 1, "one firing delivery for three raises: {:?}", script.seen());
    assert_eq!(t.report.borrow().firing, ["service/ollama"]);
    t.raise(Alert::resolved(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is back", 0));
    after(1).await;
    let states: Vec<AlertState> = script.seen().iter().map(|s| s.state).collect();
    assert_eq!(states, [AlertState::Firing, AlertState::Resolved]);
    assert!(t.report.borrow().firing.is_empty());
    // Firing again after the resolution is a new incident, sent again.
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down"));
    after(1).await;
    assert_eq!(script.seen().len(), 3);
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_most_per_minute_deliveries_a_minute_per_channel_the_rest_wait_their_turn() {
    let script = Script::new();
    let t = start(&script, false, |a| a.per_minute = 2);
    for i in 0..5 {
        t.raise(Alert::notice(AlertKey::Emergency(format!("m{i}")), Severity::Warning, "an emergency measure was taken"));
    }
    after(600).await;
    let times: Vec<u64> = script.seen().iter().map(|s| s.at_s).collect();
    assert_eq!(times, [0, 0, 60, 60, 120], "two a minute, in order: {:?}", script.seen());
    let keys: Vec<String> = script.seen().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["emergency/m0", "emergency/m1", "emergency/m2", "emergency/m3", "emergency/m4"]);
    assert_eq!(t.report.borrow().queued, 0);
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_delivery_is_retried_after_5_s_doubling_up_to_retry_max_and_holds_its_channel() {
    let script = Script::new();
    let t = start(&script, false, |a| a.retry_max = Duration::from_secs(30));
    let down = || transient("connection refused");
    script.answer("service/dask-scheduler", vec![down(), down(), down(), down(), down()]);
    t.raise(Alert::firing(AlertKey::ServiceDown("dask-scheduler".into()), Severity::Critical, "dask-scheduler is down"));
    t.raise(Alert::notice(AlertKey::Emergency("swap".into()), Severity::Warning, "swap expanded"));
    after(1).await;
    {
        let r = t.report.borrow();
        assert_eq!((r.channels[0].failed, r.queued), (1, 2), "{r:?}");
        assert_eq!(r.channels[0].last_error.as_deref(), Some("connection refused"));
    }
    after(600).await;
    // 5, 10, 20, then retry_max (30) between tries; the sixth goes through.
    assert_eq!(script.times_of("service/dask-scheduler"), [0, 5, 15, 35, 65, 95]);
    // The channel keeps its order: the notice behind the incident waits for it.
    assert_eq!(script.times_of("emergency/swap"), [95]);
    let r = t.report.borrow().clone();
    assert_eq!((r.channels[0].sent, r.channels[0].failed, r.queued), (2, 5, 0), "{r:?}");
    assert_eq!(r.channels[0].last_error, None, "a delivery that went through clears the error");
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refusal_for_good_is_set_aside_once_and_the_next_alert_goes_out() {
    let script = Script::new();
    let t = start(&script, false, |_| {});
    script.answer("service/refused", vec![Err(channel::Failure { text: "400 Bad Request: invalid payload".into(), permanent: true })]);
    t.raise(Alert::firing(AlertKey::ServiceDown("refused".into()), Severity::Critical, "a payload this receiver refuses"));
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down"));
    after(600).await;
    assert_eq!(script.times_of("service/refused"), [0], "never retried");
    assert_eq!(script.times_of("service/ollama"), [0]);
    let r = t.report.borrow().clone();
    assert_eq!((r.dead_letters, r.channels[0].refused, r.channels[0].sent, r.queued), (1, 1, 1, 0), "{r:?}");
    assert!(r.last_dead_letter.as_deref().unwrap_or_default().contains("400 Bad Request"), "{r:?}");
    t.stop().await;
}

#[tokio::test(start_paused = true)]
async fn alertmanager_gets_every_firing_alert_again_each_resend_period_and_not_the_webhook() {
    let script = Script::new();
    let t = start(&script, true, |a| a.alertmanager_resend = Duration::from_secs(60));
    t.raise(Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is down"));
    t.raise(Alert::firing(AlertKey::ServiceDown("open-webui".into()), Severity::Critical, "open-webui is down"));
    after(1).await;
    let per_channel = |c: Channel| script.seen().iter().filter(|s| s.channel == c).count();
    assert_eq!((per_channel(Channel::Webhook), per_channel(Channel::Alertmanager)), (2, 2));
    after(300).await;
    let resends = script.resends.lock().unwrap().clone();
    assert!((4..=5).contains(&resends.len()), "one re-send a minute for 5 minutes: {resends:?}");
    assert!(resends.iter().all(|(_, n)| *n == 2), "both firing alerts in each: {resends:?}");
    assert!(resends.windows(2).all(|w| w[1].0 - w[0].0 >= 60), "{resends:?}");
    assert_eq!(per_channel(Channel::Webhook), 2, "the webhook is not re-sent anything");
    t.raise(Alert::resolved(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is back", 0));
    after(120).await;
    let resends = script.resends.lock().unwrap().clone();
    assert_eq!(resends.last().map(|r| r.1), Some(1), "a resolved alert is no longer re-sent: {resends:?}");
    t.stop().await;
}

/// A courier that reads the queue file as each delivery is tried.
struct FileAtDelivery {
    path: std::path::PathBuf,
    seen: Mutex<Vec<(String, Option<String>)>>,
}

impl Courier for FileAtDelivery {
    fn deliver(&self, _channel: Channel, _cfg: &AlertsConfig, alert: &Alert) -> Sent {
        self.seen.lock().unwrap().push((alert.key.clone(), std::fs::read_to_string(&self.path).ok()));
        Box::pin(std::future::ready(Ok("200 OK".into())))
    }
    fn resend(&self, _cfg: &AlertsConfig, _alerts: &[Alert]) -> Sent {
        Box::pin(std::future::ready(Ok("200 OK".into())))
    }
}

/// A queue file with an entry that is not a delivery: the task starts, the good deliveries are
/// written back before the first is tried (the file was set aside: a kill then would lose
/// them), and delivered in their order.
#[tokio::test(start_paused = true)]
async fn a_queue_file_with_a_bad_entry_keeps_and_delivers_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let good = |key: &str| {
        serde_json::to_string(&Delivery::new(Channel::Webhook, Alert::firing(AlertKey::parse(key), Severity::Critical, key))).unwrap()
    };
    std::fs::write(&path, format!(r#"[{},{{"channel":"pager"}},{}]"#, good("service/a"), good("service/b"))).unwrap();
    let mut config = Config::default();
    config.alerts.node = Some("node-a".into());
    config.alerts.webhook = Some("http://127.0.0.1:9/hook".into());
    let (mut ctx, _config) = TaskCtx::fake("alerts", config, Os::fake());
    ctx.state_dir = Some(dir.path().to_path_buf());
    let cancel = ctx.cancel.clone();
    let (_tx, inbox) = inbox();
    let (report_tx, _report) = watch::channel(Arc::new(AlertsReport::default()));
    let courier = Arc::new(FileAtDelivery { path: path.clone(), seen: Mutex::default() });
    let task = tokio::spawn(run_via(inbox, report_tx, ctx, courier.clone()));
    while courier.seen.lock().unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    let seen = courier.seen.lock().unwrap().clone();
    assert_eq!(seen.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["service/a", "service/b"]);
    let file = seen[0].1.clone().expect("the queue file is there when the first delivery is tried");
    assert!(file.contains("service/a") && file.contains("service/b") && !file.contains("pager"), "{file}");
    assert!(dir.path().join(format!("{FILE_NAME}.bad")).exists(), "the file as it was, set aside");
}

/// A queue file that cannot be read for a reason of the moment (here its directory is not a
/// directory yet, ENOTDIR, as every descriptor taken is EMFILE: both say nothing of the file)
/// is neither set aside nor written over, and the task does not stop; alerts raised meanwhile
/// are queued, and a later tick reads the file: its delivery goes out, and the file is then
/// written with what is still queued.
#[tokio::test(start_paused = true)]
async fn a_queue_file_unreadable_for_the_moment_is_left_as_it_is_and_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "not a directory yet").unwrap();
    let script = Script::new();
    script.answer("service/new", (0..20).map(|_| transient("answered 503")).collect());
    let t = start_in(Some(&state), &script, false, |_| {});
    t.raise(Alert::firing(AlertKey::ServiceDown("new".into()), Severity::Critical, "new is down"));
    after(1).await;
    assert_eq!(script.times_of("service/new"), [0], "raised while the file is unread: queued and tried");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "not a directory yet", "nothing set aside or written over");
    assert!(!dir.path().join("state.bad").exists());

    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let old = Delivery::new(Channel::Webhook, Alert::firing(AlertKey::ServiceDown("old".into()), Severity::Critical, "old is down"));
    std::fs::write(state.join(FILE_NAME), serde_json::to_vec(&[&old]).unwrap()).unwrap();
    after(30).await;
    assert_eq!(script.times_of("service/old"), [30], "read at the tick after the file could be read");
    let file = std::fs::read_to_string(state.join(FILE_NAME)).unwrap();
    assert!(file.contains("service/new") && !file.contains("service/old"), "written with what is still queued: {file}");
    assert_eq!(t.report.borrow().queued, 1, "the failing one is still queued");
    t.stop().await;
}

/// A write of the queue's file that fails (here its directory is gone: as with the disk full or
/// no descriptor left) is tried again at the task's next wakeup, not only at the queue's next
/// change: an alert waiting its turn is in the file within a heartbeat once it can be written.
#[tokio::test(start_paused = true)]
async fn a_failed_write_of_the_queue_is_tried_again_without_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let script = Script::new();
    let t = start_in(Some(&state), &script, false, |a| a.per_minute = 1);
    after(1).await;
    std::fs::remove_dir(&state).unwrap();
    std::fs::write(&state, "not a directory").unwrap();
    t.raise(Alert::firing(AlertKey::ServiceDown("first".into()), Severity::Critical, "first is down"));
    t.raise(Alert::firing(AlertKey::ServiceDown("second".into()), Severity::Critical, "second is down"));
    after(1).await;
    assert_eq!(script.times_of("service/first"), [1], "delivered; the second waits for the rate limit");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    after(30).await;
    assert!(script.times_of("service/second").is_empty(), "still waiting its turn: the queue did not change");
    let file = std::fs::read_to_string(state.join(FILE_NAME)).expect("written again without a change");
    assert!(file.contains("service/second") && !file.contains("service/first"), "{file}");
    t.stop().await;
}
