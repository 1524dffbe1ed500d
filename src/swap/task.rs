//! The swap task: looks at memory on a PSI stall event, on each sampler snapshot, and on an
//! adaptive timer (far from the threshold: `check_interval`; close: down to 20 ms), and carries
//! out the policy's decisions. File operations run on the blocking pool; while one runs, the
//! task keeps its heartbeat, answers `swap status` from the books it had when the operation
//! began (saying what runs), and turns other requests away as busy.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::engine::{Engine, Mode, SwapError, SwapStatus};
use super::policy::{Decision, Readings, SpareStep};
use crate::config::human_size;
use crate::runtime::{Heartbeat, TaskCtx};
use crate::sampler::SnapshotReceiver;
use crate::sys::psi::PsiTrigger;

/// swapoff of a well-used file can take minutes; past this the task stops waiting (the file
/// stays in place and in the books, and no other operation starts until it returns).
pub const SWAPOFF_TIMEOUT: Duration = Duration::from_secs(300);
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// The PSI trigger fires on the first stall: 1 ms of some-stall on memory within a 500 ms window
/// (the kernel's shortest), or within 2 s where the kernel refuses a window that is not a
/// multiple of 2 s (no CAP_SYS_RESOURCE). At most one event per window, so at most 2 wakeups/s
/// even on a machine that stalls all the time; none on one that does not.
const PSI_STALL: Duration = Duration::from_millis(1);
const PSI_WINDOWS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// The swap task's part of the control protocol: `{"command":"swap","action":"expand",…}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SwapRequest {
    Status,
    Expand { size: Option<u64> },
    Shrink,
    Clean { force: bool },
}

pub type Reply = oneshot::Sender<Result<String, String>>;

pub enum SwapCommand {
    Status(oneshot::Sender<Result<SwapStatus, String>>),
    /// `swap expand [SIZE]`: a file added. With no reply, the emergency's "expand now": a look
    /// at once, which adds a file only by the policy's headroom rule.
    Expand {
        size: Option<u64>,
        reply: Option<Reply>,
    },
    Shrink(Reply),
    Clean {
        force: bool,
        reply: Reply,
    },
}

impl SwapCommand {
    /// Answers a request that cannot run now.
    fn refuse(self, why: String) {
        match self {
            SwapCommand::Status(r) => drop(r.send(Err(why))),
            SwapCommand::Expand { reply: Some(r), .. } | SwapCommand::Shrink(r) | SwapCommand::Clean { reply: r, .. } => {
                drop(r.send(Err(why)))
            }
            SwapCommand::Expand { reply: None, .. } => tracing::debug!("expand now: {why}"),
        }
    }
}

pub type SwapSender = mpsc::Sender<SwapCommand>;

/// How long a client waits for a swap request's answer.
pub fn answer_timeout(req: &SwapRequest) -> Duration {
    match req {
        SwapRequest::Status => Duration::from_secs(5),
        _ => SWAPOFF_TIMEOUT + Duration::from_secs(20),
    }
}

/// The control socket's handler for swap requests: forwards them to the swap task, the one
/// owner of the swap state, and tells the client only what is known.
pub async fn answer(swap: &SwapSender, req: SwapRequest) -> serde_json::Value {
    use serde_json::json;
    let not_running = || json!({ "error": "the swap task is not running; nothing was done" });
    let unknown = || json!({ "error": "the swap task stopped before answering (is the daemon stopping?); whether the operation was carried out is unknown: see `cluster-ai swap status`" });
    if let SwapRequest::Status = req {
        let (tx, rx) = oneshot::channel();
        if swap.send(SwapCommand::Status(tx)).await.is_err() {
            return not_running();
        }
        return match rx.await {
            Ok(Ok(status)) => serde_json::to_value(status).unwrap_or_else(|e| json!({ "error": e.to_string() })),
            Ok(Err(e)) => json!({ "error": e }),
            Err(_) => not_running(),
        };
    }
    let (tx, rx) = oneshot::channel();
    let cmd = match req {
        SwapRequest::Expand { size } => SwapCommand::Expand { size, reply: Some(tx) },
        SwapRequest::Shrink => SwapCommand::Shrink(tx),
        SwapRequest::Clean { force } => SwapCommand::Clean { force, reply: tx },
        SwapRequest::Status => return not_running(),
    };
    if swap.send(cmd).await.is_err() {
        return not_running();
    }
    match tokio::time::timeout(SWAPOFF_TIMEOUT + Duration::from_secs(10), rx).await {
        Ok(Ok(Ok(message))) => json!({ "message": message }),
        Ok(Ok(Err(e))) => json!({ "error": e }),
        Ok(Err(_)) => unknown(),
        Err(_) => {
            json!({ "error": "the swap task did not answer in time; the operation may still be running: see `cluster-ai swap status`" })
        }
    }
}

/// What an operation needs besides the engine.
struct Ctx<'a> {
    heartbeat: &'a Heartbeat,
    commands: &'a mut mpsc::Receiver<SwapCommand>,
    interval: Duration,
}

pub async fn run(
    engine: Engine,
    mut snapshots: SnapshotReceiver,
    mut commands: mpsc::Receiver<SwapCommand>,
    ctx: TaskCtx,
) -> anyhow::Result<()> {
    let TaskCtx { mut config, heartbeat, cancel, os, .. } = ctx;
    let mut engine = heartbeat
        .blocking(CREATE_TIMEOUT, move || {
            let mut engine = engine;
            engine.start();
            engine
        })
        .await
        .map_err(|e| anyhow::anyhow!("swap: starting: {e}"))?;
    let pressure = engine.pressure_file();
    let psi = PsiTrigger::new(&pressure, PSI_STALL, PSI_WINDOWS[0]).or_else(|_| PsiTrigger::new(&pressure, PSI_STALL, PSI_WINDOWS[1]));
    let psi = match psi {
        Ok(t) => {
            tracing::info!(trigger = %t.description, "swap: watching memory with a PSI trigger and an adaptive poll");
            Some(t)
        }
        Err(e) => {
            tracing::info!(error = %e, "swap: PSI trigger unavailable; watching memory with an adaptive poll only");
            None
        }
    };
    engine.trigger = psi.as_ref().map_or("adaptive poll".into(), |t| format!("PSI trigger {} + adaptive poll", t.description));
    // `interval`: how often to look, from the headroom; the ticker only runs faster than the
    // sampler's snapshots when the look must (a snapshot wakes the task anyway, so a look at
    // `interval` rides on it: no wakeups of its own at an idle pace, and the seed's
    // `check_interval` stays the slowest look if the sampler stops).
    let mut interval = engine.cfg.check_interval;
    let mut last_look = Instant::now();
    let mut slot = Some(engine);
    let mut ticker = os.clock.ticker(interval);
    let mut tick_period = interval;
    heartbeat.set_period(interval);
    heartbeat.started();
    loop {
        let mut requested: Option<(Option<u64>, Option<Reply>)> = None;
        let mut ctx = Ctx { heartbeat: &heartbeat, commands: &mut commands, interval };
        // Cancellation first: at stop the control task's end closes the command channel too,
        // and the stop must be seen as a stop.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => { stopped(&mut slot); return Ok(()); },
            changed = config.changed() => {
                if changed.is_err() { stopped(&mut slot); return Ok(()); }
                let c = config.borrow_and_update().clone();
                if slot.as_mut().is_some_and(|e| e.set_config(&c)) {
                    let r = op(&mut slot, &mut ctx, "restart after a reload", CREATE_TIMEOUT, |e| {
                        e.start();
                        Ok(String::new())
                    })
                    .await;
                    if let Err(err) = r {
                        tracing::error!("swap: restarting management after a reload: {err}");
                    }
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() { stopped(&mut slot); return Ok(()); }
                // The sampler has just read memory: look ourselves only if the headroom came
                // closer to the low-water mark than the current poll allows.
                let mem = snapshots.borrow_and_update().as_ref().map(|s| (s.memory_total_bytes, s.memory_available_bytes));
                let closer = match (mem, slot.as_ref()) {
                    (Some((mem_total, mem_available)), Some(e)) => {
                        last_look.elapsed() >= interval
                            || e.poll_interval(&Readings { now: Instant::now(), mem_total, mem_available }) < interval
                    }
                    _ => false,
                };
                if !closer {
                    heartbeat.beat();
                    continue;
                }
            }
            _ = async { match &psi { Some(t) => t.wait().await, None => std::future::pending().await } } => {
                tracing::debug!("PSI memory stall event");
            }
            _ = ticker.tick() => {}
            cmd = ctx.commands.recv() => match cmd {
                None => { stopped(&mut slot); return Ok(()); },
                Some(SwapCommand::Status(reply)) => {
                    let e = slot.as_mut().ok_or_else(|| anyhow::anyhow!("swap engine lost"))?;
                    let _ = reply.send(e.status(interval.as_millis() as u64).map_err(|e| e.to_string()));
                    continue;
                }
                Some(SwapCommand::Expand { size, reply }) => requested = Some((size, reply)),
                Some(SwapCommand::Shrink(reply)) => {
                    let r = op(&mut slot, &mut ctx, "swap shrink", SWAPOFF_TIMEOUT, |e| {
                        e.shrink("swap shrink").map(|p| format!("removed {}", crate::sys::display_path(&p)))
                    })
                    .await;
                    let _ = reply.send(r);
                }
                Some(SwapCommand::Clean { force, reply }) => {
                    let r = op(&mut slot, &mut ctx, "swap clean", SWAPOFF_TIMEOUT, move |e| {
                        let msg = e.clean(force)?;
                        e.mode = Mode::Paused;
                        Ok(format!("{msg}; automatic swap management is paused until `swap expand`, a reload or a restart"))
                    })
                    .await;
                    if r.is_ok() { tracing::warn!("swap clean: automatic swap management paused"); }
                    let _ = reply.send(r);
                }
            },
        }

        // The emergency memory measure's "expand now" (and `free-memory` through the daemon):
        // no one waits for an answer, and it is a look at once by the policy's headroom rule
        // (issue 19: while free memory + free managed swap is above the low-water mark,
        // another file only costs disk), not a file whatever is free. `swap expand` always adds.
        let look_now = matches!(requested, Some((_, None)));
        if let Some((size, Some(reply))) = requested {
            let what = size.map_or("swap expand".to_string(), |s| format!("swap expand {}", human_size(s)));
            let r = op(&mut slot, &mut ctx, &what, CREATE_TIMEOUT, move |e| {
                if e.mode == Mode::Paused {
                    e.mode = Mode::Managing;
                }
                let size = size.unwrap_or(e.cfg.increment);
                let pct = e.readings(Instant::now()).map(|r| r.used_percent()).unwrap_or(0.0);
                e.expand(size, "requested", pct).map(|p| format!("added {}", crate::sys::display_path(&p)))
            })
            .await;
            let _ = reply.send(r);
        }

        let Some(e) = slot.as_mut() else { anyhow::bail!("swap engine lost in a timed-out operation") };
        last_look = Instant::now();
        let look = match e.look(Instant::now()) {
            Ok(l) => l,
            Err(err) => {
                e.log_error(&err.to_string());
                heartbeat.beat();
                continue;
            }
        };
        let used = look.readings.used_percent();
        if matches!(look.decision, Decision::Hold { .. }) {
            e.clear_error();
        }
        if look_now && !matches!(look.decision, Decision::Expand { .. }) {
            tracing::info!("expand now: nothing added: {}", look.decision.describe());
        }
        if e.should_act(&look.decision, &look.readings) {
            let decision = look.decision.clone();
            let what = decision.describe();
            let decided = look.readings.now.into_std();
            let r = op(&mut slot, &mut ctx, &what, SWAPOFF_TIMEOUT, move |e| {
                e.decided = Some(decided);
                e.act(&decision, used)
            })
            .await;
            if let Some(e) = slot.as_mut() {
                match r {
                    Ok(_) => e.clear_error(),
                    Err(err) => {
                        e.log_error(&err);
                    }
                }
            }
        } else if let Some(step) = look.spare.filter(|_| e.mode == Mode::Managing && !e.dry_run) {
            let what = match step {
                SpareStep::Make { size } => format!("make a spare swap file of {}", human_size(size)),
                SpareStep::Remove { .. } => "remove the spare swap file".to_string(),
            };
            let r = op(&mut slot, &mut ctx, &what, CREATE_TIMEOUT, move |e| e.spare(step)).await;
            if let (Some(e), Err(err)) = (slot.as_mut(), r) {
                e.log_error(&err);
            }
        }
        if let Some(e) = slot.as_ref() {
            let next = e.poll_interval(&look.readings);
            if next != interval {
                interval = next;
                heartbeat.set_period(interval.max(Duration::from_secs(1)));
            }
            let sample_interval = config.borrow().sample_interval;
            let period = if interval < sample_interval { interval } else { e.cfg.check_interval };
            if period != tick_period {
                tick_period = period;
                ticker.set_period(period);
            }
        }
        heartbeat.beat();
    }
}

/// The task ends: say what swap stays active.
fn stopped(slot: &mut Option<Engine>) {
    if let Some(e) = slot.as_mut() {
        e.log_left_active();
    }
}

/// Runs `f` on the engine off the runtime. Meanwhile `swap status` is answered from the
/// books as they were when the operation began, with what is running, and other requests are
/// turned away as busy. The engine comes back unless the operation timed out; then the task
/// stops managing (the caller fails, so systemd restarts a daemon whose swapoff is wedged, and
/// the next start adopts what is active).
async fn op<F>(slot: &mut Option<Engine>, ctx: &mut Ctx<'_>, what: &str, timeout: Duration, f: F) -> Result<String, String>
where
    F: FnOnce(&mut Engine) -> Result<String, SwapError> + Send + 'static,
{
    let Some(mut engine) = slot.take() else {
        return Err("another swap operation is still running".into());
    };
    let books = engine.status(ctx.interval.as_millis() as u64).map_err(|e| e.to_string());
    let started = Instant::now();
    let work = ctx.heartbeat.blocking(timeout, move || {
        let r = f(&mut engine);
        (engine, r)
    });
    tokio::pin!(work);
    let mut open = true;
    loop {
        tokio::select! {
            done = &mut work => return match done {
                Ok((engine, r)) => {
                    *slot = Some(engine);
                    r.map_err(|e| e.to_string())
                }
                Err(e) => {
                    tracing::error!("swap: {what}: {e}; the files stay as they are");
                    Err(format!("{what}: {e}; whether it completed is unknown until it returns: see `cluster-ai swap status`"))
                }
            },
            cmd = ctx.commands.recv(), if open => {
                let running = format!("{what} (for {:.0} s)", started.elapsed().as_secs_f64());
                match cmd {
                    None => open = false,
                    Some(SwapCommand::Status(reply)) => {
                        let _ = reply.send(books.clone().map(|mut b| {
                            b.running = Some(running);
                            b
                        }));
                    }
                    Some(other) => other.refuse(format!("busy: {running} is running; try again when it is done")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
