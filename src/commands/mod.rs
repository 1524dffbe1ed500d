//! One-shot subcommands, one file each. None of them starts the daemon.

pub mod check;
pub mod config_check;
pub mod optimize;
pub mod run;
pub mod status;
pub mod swap;
