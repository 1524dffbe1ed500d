//! Every exit status the commands return, in one table: the commands return these constants,
//! and the man pages' EXIT STATUS sections, `--help` and docs/commands.md are made from
//! [`TABLE`], so the documentation cannot drift from the code.
//!
//! Where the codes come from: 0, 1 and 2 as most Unix tools and clap (2 is clap's own usage
//! error); 3 and 4 as the LSB `status` action (init scripts, `systemctl status`: 3 "program is
//! not running", 4 "status is unknown"); 5 to 7 are this tool's own answers; 69, 74 and 78 are
//! sysexits.h's EX_UNAVAILABLE, EX_IOERR and EX_CONFIG (78 is also what the systemd unit's
//! `RestartPreventExitStatus=` names).

/// Everything went as asked; for `health` and `cluster status`, everything is healthy.
pub const OK: u8 = 0;
/// The command could not do what was asked: a file not written, a restart or a measure that
/// failed, an alert not delivered, a request the daemon refused.
pub const FAILURE: u8 = 1;
/// The command line is wrong: unknown command or option, a bad value (as clap's own errors).
pub const USAGE: u8 = 2;
/// No daemon is running (nothing answers on the control socket). LSB status code 3.
pub const NOT_RUNNING: u8 = 3;
/// The daemon's state cannot be known: its socket is root-only, it did not answer in time, or
/// its answer is not understood. LSB status code 4.
pub const UNKNOWN: u8 = 4;
/// The answer is "not healthy": a watched service is down (`health`); a node down, a service
/// down, an alert firing or no node at all (`cluster status`).
pub const UNHEALTHY: u8 = 5;
/// `check`: the machine is below the minimum to run the cluster's services.
pub const BELOW_MINIMUM: u8 = 6;
/// `health`: no service could be looked at (none installed here, no systemd bus). Not "ok":
/// cron and scripts must not read such a machine as healthy.
pub const NOTHING_WATCHED: u8 = 7;
/// `cluster status`: the Prometheus server cannot be reached or its answer is not understood.
/// sysexits.h EX_UNAVAILABLE.
pub const UNAVAILABLE: u8 = 69;
/// `check`, `optimize`: the hardware cannot be read (/proc, /sys). sysexits.h EX_IOERR.
pub const IO_ERROR: u8 = 74;
/// The config file is invalid (or `--config` names a missing file). sysexits.h EX_CONFIG; the
/// systemd unit does not restart the daemon on it (`RestartPreventExitStatus=78`).
pub const CONFIG: u8 = 78;

/// One exit status: its code, what it means, and the subcommands that return it (`"*"`: every
/// command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u8,
    pub meaning: &'static str,
    /// Subcommand paths as typed (`"cluster status"`); `"*"` for all of them.
    pub commands: &'static [&'static str],
}

/// Every exit status, in code order.
pub const TABLE: &[ExitStatus] = &[
    ExitStatus { code: OK, meaning: "success; for health and cluster status, everything is healthy", commands: &["*"] },
    ExitStatus {
        code: FAILURE,
        meaning: "failure: something asked could not be done (a file not written, a restart or measure that failed, an alert not delivered, a request the daemon refused)",
        commands: &["*"],
    },
    ExitStatus { code: USAGE, meaning: "usage error: unknown command or option, or a bad value", commands: &["*"] },
    ExitStatus {
        code: NOT_RUNNING,
        meaning: "no daemon is running (LSB status code 3)",
        commands: &["status"],
    },
    ExitStatus {
        code: UNKNOWN,
        meaning: "the daemon's state cannot be known: its socket is root-only, it did not answer, or its answer is not understood (LSB status code 4)",
        commands: &["status", "swap", "free-memory", "health"],
    },
    ExitStatus {
        code: UNHEALTHY,
        meaning: "not healthy: a watched service is down (health); a node down, a service down, an alert firing or no node at all (cluster status)",
        commands: &["health", "cluster status"],
    },
    ExitStatus { code: BELOW_MINIMUM, meaning: "the machine is below the minimum", commands: &["check"] },
    ExitStatus {
        code: NOTHING_WATCHED,
        meaning: "no service could be looked at (none installed here, no systemd bus)",
        commands: &["health"],
    },
    ExitStatus {
        code: UNAVAILABLE,
        meaning: "the Prometheus server cannot be reached or its answer is not understood (sysexits.h EX_UNAVAILABLE)",
        commands: &["cluster status"],
    },
    ExitStatus {
        code: IO_ERROR,
        meaning: "the hardware cannot be read from /proc and /sys (sysexits.h EX_IOERR)",
        commands: &["check", "optimize"],
    },
    ExitStatus {
        code: CONFIG,
        meaning: "the config file is invalid, or --config names a missing file (sysexits.h EX_CONFIG; the systemd unit does not restart on it)",
        commands: &["run", "config check", "config show", "swap", "check", "optimize", "free-memory", "alert test", "health", "monitor"],
    },
];

/// The statuses `command` (a subcommand path as typed, e.g. `"cluster status"`, or `""` for the
/// program as a whole) can return, in code order: for a group (`"cluster"`) those of its
/// subcommands too; for `""` all of them.
pub fn for_command(command: &str) -> Vec<ExitStatus> {
    TABLE
        .iter()
        .filter(|s| {
            command.is_empty()
                || s.commands
                    .iter()
                    .any(|c| *c == "*" || *c == command || command.starts_with(&format!("{c} ")) || c.starts_with(&format!("{command} ")))
        })
        .copied()
        .collect()
}

/// The table as `--help` text: one line per code.
pub fn help_text() -> String {
    let mut out = String::from("Exit status:\n");
    for s in TABLE {
        let who = if s.commands == ["*"] { String::new() } else { format!(" [{}]", s.commands.join(", ")) };
        out += &format!("  {:>2}  {}{who}\n", s.code, s.meaning);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_sorted_and_clap_keeps_2() {
        let codes: Vec<u8> = TABLE.iter().map(|s| s.code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted, "one entry per code, in code order");
        assert_eq!(i32::from(USAGE), clap::Error::new(clap::error::ErrorKind::UnknownArgument).exit_code());
    }

    #[test]
    fn each_command_gets_the_common_codes_and_its_own() {
        let codes = |c: &str| for_command(c).iter().map(|s| s.code).collect::<Vec<_>>();
        assert_eq!(codes("check"), [OK, FAILURE, USAGE, BELOW_MINIMUM, IO_ERROR, CONFIG]);
        assert_eq!(codes("cluster status"), [OK, FAILURE, USAGE, UNHEALTHY, UNAVAILABLE]);
        assert_eq!(codes("swap expand"), [OK, FAILURE, USAGE, UNKNOWN, CONFIG]);
        assert_eq!(codes("cluster"), codes("cluster status"));
        assert_eq!(codes("").len(), TABLE.len());
        assert!(help_text().contains(" 69  the Prometheus server cannot be reached"));
    }
}
