//! The swap task and its parts: the pure [`policy`], the managed [`files`] (creation, removal
//! and crash recovery), optional [`kernel`] tuning, and the async [`task`].

pub mod engine;
pub mod files;
pub mod kernel;
pub mod metrics;
pub mod policy;
pub mod task;
