//! The swap task and its parts: the pure [`policy`], the managed [`files`] (creation, removal
//! and crash recovery), optional [`kernel`] tuning, and the async [`task`].

pub mod policy;
