//! cluster-ai keeps one node of a local AI cluster from running out of memory and from
//! silently losing a service.
//!
//! One process, one tokio runtime (current-thread: the daemon's work is small and periodic,
//! so a single thread keeps the footprint low), separate tasks:
//!
//! - [`daemon`]: the supervisor. It loads the [`config`], spawns the tasks with a shutdown
//!   token, speaks sd_notify (READY, STATUS, WATCHDOG gated on every task's heartbeat,
//!   RELOADING on SIGHUP, STOPPING on SIGTERM) and serves the control socket.
//! - [`sampler`]: reads CPU, memory, swap, disk and pressure every `sample_interval` and
//!   publishes the latest [`sampler::Snapshot`] on a watch channel for the other tasks.
//! - [`swap`]: auto-expanding swap files (policy, engine, task).
//! - [`optimize`]: the hardware profile and the resource checker (`cluster-ai check`).
//! - [`health`]: follows the cluster's services (systemd units, probes), restarts them with a
//!   backoff and a flap guard.
//! - [`commands`]: one-shot subcommands; they never start the daemon.
//!
//! [`sys`] is the only module that touches the operating system.

pub mod alerts;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod emergency;
pub mod exit;
pub mod fault;
pub mod health;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod optimize;
pub mod report;
pub mod runtime;
pub mod sampler;
pub mod swap;
pub mod sys;
#[cfg(test)]
mod testing;
