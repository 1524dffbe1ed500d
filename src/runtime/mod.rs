//! What the tasks share below them: for now the connection slots of the daemon's listeners.

pub mod slots;
