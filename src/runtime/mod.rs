//! What the tasks share below them: the task registry with each task's heartbeat (the
//! supervisor withholds systemd's watchdog ping when one goes stale), the bounded blocking
//! helper, and the connection slots of the daemon's listeners.

pub mod slots;
pub mod tasks;

pub use tasks::{BlockingError, Heartbeat, TaskReport, TaskState, Tasks};
