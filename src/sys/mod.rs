//! The only place that touches the operating system. Nothing here depends on the rest of the
//! crate; parsers are pure functions over text and readers take a root directory.

pub mod fs;
pub mod notify;
pub mod paths;
pub mod procfs;
pub mod psi;
pub mod swap;
pub mod ticker;
