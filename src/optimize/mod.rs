//! The optimize task's parts. Today: the hardware [`profile`] and the resource [`check`]
//! (`cluster-ai check`); the plan, the env files and the emergency measures build on them.

pub mod apply;
pub mod check;
pub mod peers;
pub mod plan;
pub mod profile;
pub mod task;
pub mod tier;
pub mod watch;
