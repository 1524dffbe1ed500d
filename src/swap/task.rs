//! The swap task: looks at memory on a PSI stall event, on each sampler snapshot, and on an
//! adaptive timer (far from the threshold: `check_interval`; close: down to 20 ms), and carries
//! out the policy's decisions. File operations run on the blocking pool; while one runs, the
//! task keeps its heartbeat.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Mode, SwapError, SwapStatus};
use super::policy::{self, Decision, Reason};
use crate::config::Config;
use crate::daemon::tasks::Heartbeat;
use crate::sampler::SnapshotReceiver;
use crate::sys::psi::PsiTrigger;
use crate::sys::ticker::Ticker;

/// swapoff of a well-used file can take minutes; past this the task stops waiting (the file
/// stays in place and in the books, and no other operation starts until it returns).
pub const SWAPOFF_TIMEOUT: Duration = Duration::from_secs(300);
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const PSI_STALL: Duration = Duration::from_millis(100);
const PSI_WINDOW: Duration = Duration::from_secs(2);

pub type Reply = oneshot::Sender<Result<String, String>>;

pub enum SwapCommand {
    Status(oneshot::Sender<Result<SwapStatus, String>>),
    /// `swap expand [SIZE]`; also the optimizer's emergency "expand now" (no reply).
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

pub type SwapSender = mpsc::Sender<SwapCommand>;

pub async fn run(
    mut engine: Engine,
    mut config: watch::Receiver<Arc<Config>>,
    mut snapshots: SnapshotReceiver,
    mut commands: mpsc::Receiver<SwapCommand>,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut engine_slot = Some(
        blocking(&heartbeat, CREATE_TIMEOUT, move || {
            engine.start();
            Ok::<_, SwapError>(engine)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let psi = match PsiTrigger::new(std::path::Path::new("/proc/pressure/memory"), PSI_STALL, PSI_WINDOW) {
        Ok(t) => {
            tracing::info!(trigger = %t.description, "swap: watching memory with a PSI trigger and an adaptive poll");
            Some(t)
        }
        Err(e) => {
            tracing::info!(error = %e, "swap: PSI trigger unavailable; watching memory with an adaptive poll only");
            None
        }
    };
    if let Some(e) = engine_slot.as_mut() {
        e.trigger = psi.as_ref().map_or("adaptive poll".into(), |t| format!("PSI trigger {} + adaptive poll", t.description));
    }
    let mut interval = engine_slot.as_ref().map_or(Duration::from_secs(30), |e| e.cfg.check_interval);
    let mut ticker = Ticker::new(interval)?;
    heartbeat.set_period(interval);
    heartbeat.started();
    loop {
        let mut requested: Option<(Option<u64>, Option<Reply>)> = None;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            changed = config.changed() => {
                if changed.is_err() { return Ok(()); }
                let c = config.borrow_and_update().clone();
                if engine_slot.as_mut().is_some_and(|e| e.set_config(&c)) {
                    let r = op(&mut engine_slot, &heartbeat, CREATE_TIMEOUT, |e| {
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
                if changed.is_err() { return Ok(()); }
                // The sampler has just read memory: look ourselves only if use came closer to
                // the threshold than the current poll allows (the far-away case costs nothing).
                let used = snapshots.borrow_and_update().as_ref().map(|s| s.memory_used_percent);
                let closer = match (used, engine_slot.as_ref()) {
                    (Some(used), Some(e)) => policy::poll_interval(&e.cfg, used) < interval,
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
            tick = ticker.tick() => { tick?; }
            cmd = commands.recv() => match cmd {
                None => return Ok(()),
                Some(SwapCommand::Status(reply)) => {
                    let e = engine_slot.as_mut().ok_or_else(|| anyhow::anyhow!("swap engine lost"))?;
                    let _ = reply.send(e.status(interval.as_millis() as u64).map_err(|e| e.to_string()));
                    continue;
                }
                Some(SwapCommand::Expand { size, reply }) => requested = Some((size, reply)),
                Some(SwapCommand::Shrink(reply)) => {
                    let r = op(&mut engine_slot, &heartbeat, SWAPOFF_TIMEOUT, |e| e.shrink("swap shrink").map(|p| format!("removed {}", p.display()))).await;
                    let _ = reply.send(r);
                }
                Some(SwapCommand::Clean { force, reply }) => {
                    let r = op(&mut engine_slot, &heartbeat, SWAPOFF_TIMEOUT, move |e| {
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

        if let Some((size, reply)) = requested {
            let r = op(&mut engine_slot, &heartbeat, CREATE_TIMEOUT, move |e| {
                if e.mode == Mode::Paused {
                    e.mode = Mode::Managing;
                }
                let size = size.unwrap_or(e.cfg.increment);
                let pct = e.readings(Instant::now()).map(|r| r.used_percent()).unwrap_or(0.0);
                e.expand(size, "requested", pct).map(|p| format!("added {}", p.display()))
            })
            .await;
            if let Some(reply) = reply {
                let _ = reply.send(r);
            } else if let Err(e) = r {
                tracing::warn!("expand now: {e}");
            }
        }

        let Some(e) = engine_slot.as_mut() else { anyhow::bail!("swap engine lost in a timed-out operation") };
        let look = match e.look(Instant::now()) {
            Ok(l) => l,
            Err(err) => {
                tracing::error!("swap: {err}");
                heartbeat.beat();
                continue;
            }
        };
        let used = look.readings.used_percent();
        if e.should_act(&look.decision, &look.readings) {
            let decision = look.decision.clone();
            let r = op(&mut engine_slot, &heartbeat, SWAPOFF_TIMEOUT, move |e| match decision {
                Decision::Expand { size, reason } => {
                    let why = match reason {
                        Reason::Baseline => "baseline",
                        Reason::MemoryHigh => "memory above threshold",
                        Reason::SwapFilling => "managed swap filling",
                    };
                    let p = e.expand(size, why, used)?;
                    if reason != Reason::Baseline {
                        e.state.last_expansion = Some(Instant::now());
                    }
                    Ok(format!("added {}", p.display()))
                }
                Decision::Shrink => {
                    let p = e.shrink("memory calm")?;
                    e.state.calm_since = Some(Instant::now());
                    Ok(format!("removed {}", p.display()))
                }
                Decision::Hold { .. } => Ok(String::new()),
            })
            .await;
            if let Err(err) = r {
                tracing::error!(memory_percent = used, "swap: {err}");
            }
        }
        if let Some(e) = engine_slot.as_ref() {
            let next = policy::poll_interval(&e.cfg, used);
            if next != interval {
                interval = next;
                ticker.set_period(interval)?;
                heartbeat.set_period(interval.max(Duration::from_secs(1)));
            }
        }
        heartbeat.beat();
    }
}

/// Runs `f` on the engine off the runtime; the engine comes back unless the operation timed
/// out, in which case the task stops managing until it returns (here: fails, so systemd
/// restarts a daemon whose swapoff is wedged — the next start adopts what is active).
async fn op<F>(slot: &mut Option<Engine>, heartbeat: &Heartbeat, timeout: Duration, f: F) -> Result<String, String>
where
    F: FnOnce(&mut Engine) -> Result<String, SwapError> + Send + 'static,
{
    let Some(mut engine) = slot.take() else {
        return Err("another swap operation is still running".into());
    };
    let result = blocking(heartbeat, timeout, move || {
        let r = f(&mut engine);
        Ok::<_, SwapError>((engine, r))
    })
    .await;
    match result {
        Ok((engine, r)) => {
            *slot = Some(engine);
            r.map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    }
}

/// A blocking closure on the blocking pool, beating the heartbeat each second while it runs.
async fn blocking<T: Send + 'static>(
    heartbeat: &Heartbeat,
    timeout: Duration,
    f: impl FnOnce() -> Result<T, SwapError> + Send + 'static,
) -> Result<T, String> {
    let mut handle = tokio::task::spawn_blocking(f);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            joined = &mut handle => return match joined {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("swap operation failed: {e}")),
            },
            _ = beat.tick() => heartbeat.beat(),
            _ = &mut deadline => {
                tracing::error!("swap operation still running after {timeout:?}; the file stays as it is");
                return Err(format!("timed out after {timeout:?}"));
            }
        }
    }
}
