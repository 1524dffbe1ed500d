//! The swap task on the in-memory system: requests, and what it answers while an operation runs.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::runtime::{Os, TaskCtx};
use crate::sys::swap_os::fake::FakeSwapOs;

struct Running {
    tx: SwapSender,
    fake: FakeSwapOs,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _config: watch::Sender<Arc<Config>>,
    _snapshots: watch::Sender<Option<Arc<crate::sampler::Snapshot>>>,
}

fn start(swap: &str) -> Running {
    let config = Config::parse(&format!("[swap]\ndir = \"/srv/swap\"\n{swap}")).unwrap();
    let fake = FakeSwapOs::new();
    let engine = Engine::new(&config, Box::new(fake.clone()), false);
    let (ctx, config_tx) = TaskCtx::fake("swap", config, Os::fake());
    let (snap_tx, snap_rx) = watch::channel(None);
    let (tx, rx) = mpsc::channel(8);
    let cancel = ctx.cancel.clone();
    let handle = tokio::spawn(run(engine, snap_rx, rx, ctx));
    Running { tx, fake, cancel, handle, _config: config_tx, _snapshots: snap_tx }
}

async fn status(tx: &SwapSender) -> Result<SwapStatus, String> {
    let (stx, srx) = oneshot::channel();
    tx.send(SwapCommand::Status(stx)).await.unwrap();
    srx.await.unwrap()
}

#[tokio::test]
async fn status_answers_from_the_books_while_an_operation_runs_and_other_requests_are_busy() {
    let t = start("min_size = \"0\"\n");
    assert_eq!(status(&t.tx).await.unwrap().running, None);
    let (release, gate) = std::sync::mpsc::channel();
    t.fake.state().gate = Some(gate);
    let expand = tokio::spawn({
        let tx = t.tx.clone();
        async move { answer(&tx, SwapRequest::Expand { size: Some(64 << 20) }).await }
    });
    // The expand is held in swapon; status still answers, saying what runs.
    let during = loop {
        let s = status(&t.tx).await.unwrap();
        if s.running.is_some() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(during.running.as_deref().unwrap().starts_with("swap expand 64.0 MiB"), "{:?}", during.running);
    let busy = answer(&t.tx, SwapRequest::Shrink).await;
    assert!(busy["error"].as_str().unwrap().starts_with("busy: swap expand 64.0 MiB"), "{busy}");
    release.send(()).unwrap();
    let done = expand.await.unwrap();
    assert_eq!(done["message"], "added /srv/swap/cluster-ai-000001.swap");
    assert_eq!(status(&t.tx).await.unwrap().running, None);
    assert_eq!(t.fake.active(), ["cluster-ai-000001.swap"]);
    t.cancel.cancel();
    t.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_task_that_stops_mid_request_says_the_outcome_is_unknown() {
    let t = start("min_size = \"0\"\n");
    let (release, gate) = std::sync::mpsc::channel::<()>();
    t.fake.state().gate = Some(gate);
    let expand = tokio::spawn({
        let tx = t.tx.clone();
        async move { answer(&tx, SwapRequest::Expand { size: None }).await }
    });
    while status(&t.tx).await.unwrap().running.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The daemon is being torn down: the task is gone before it could answer.
    t.handle.abort();
    let reply = expand.await.unwrap();
    assert!(reply["error"].as_str().unwrap().contains("unknown"), "never 'failed' for what may have happened: {reply}");
    drop(release);
    let gone = answer(&t.tx, SwapRequest::Shrink).await;
    assert!(gone["error"].as_str().unwrap().contains("not running; nothing was done"), "{gone}");
}

#[tokio::test]
async fn clean_pauses_and_expand_resumes() {
    let t = start("min_size = \"64M\"\n");
    while t.fake.active().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = answer(&t.tx, SwapRequest::Clean { force: false }).await;
    assert!(r["message"].as_str().unwrap().contains("paused"), "{r}");
    assert_eq!(status(&t.tx).await.unwrap().mode, Mode::Paused);
    assert!(t.fake.active().is_empty(), "no baseline while paused");
    let r = answer(&t.tx, SwapRequest::Expand { size: Some(64 << 20) }).await;
    assert!(r["message"].as_str().unwrap().starts_with("added"), "{r}");
    assert_eq!(status(&t.tx).await.unwrap().mode, Mode::Managing);
    t.cancel.cancel();
    t.handle.await.unwrap().unwrap();
}

/// Issue 19: the emergency's "expand now" is a look at once by the policy's headroom rule: with
/// free memory far above the low-water mark it adds nothing; below it, a file at once.
/// `swap expand` by hand adds one whatever the headroom.
#[tokio::test]
async fn expand_now_adds_a_file_only_by_the_headroom_rule() {
    let t = start("min_size = \"0\"\nincrement = \"64M\"\nspare = false\n");
    let emergency = |tx: SwapSender| async move { tx.send(SwapCommand::Expand { size: None, reply: None }).await.unwrap() };
    let settled = |tx: SwapSender| async move {
        // Until the request has been taken and its look carried out (status answers while an
        // operation runs).
        tokio::time::sleep(Duration::from_millis(50)).await;
        while status(&tx).await.unwrap().running.is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // The fake's memory: plenty available.
    emergency(t.tx.clone()).await;
    settled(t.tx.clone()).await;
    assert!(t.fake.active().is_empty(), "headroom far above the mark: nothing added");
    // Available memory down to 100 MiB of 16 GiB: below the 256 MiB burst reserve.
    {
        let mut st = t.fake.state();
        st.mem_available = 100 << 20;
    }
    emergency(t.tx.clone()).await;
    settled(t.tx.clone()).await;
    assert_eq!(t.fake.active().len(), 1, "below the mark: a file at once");
    let r = answer(&t.tx, SwapRequest::Expand { size: None }).await;
    assert!(r["message"].as_str().is_some_and(|m| m.starts_with("added")), "by hand it adds: {r}");
    t.cancel.cancel();
    t.handle.await.unwrap().unwrap();
}
