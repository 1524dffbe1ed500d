//! `cluster-ai alert test`: a test alert through every configured channel, straight from here
//! (not through the daemon's queue), and each channel's result.

use std::process::ExitCode;

use crate::cli::AlertTestArgs;

pub fn test(args: AlertTestArgs) -> ExitCode {
    let config = match super::config_or_exit("alert test", args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !config.alerts.any() {
        eprintln!("cluster-ai alert test: no alert channel is configured: set [alerts] webhook, alertmanager or smtp_server");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster-ai alert test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = rt.block_on(crate::alerts::task::test_all(&config.alerts));
    let mut failed = false;
    for (channel, r) in results {
        let url = channel.shown_url(&config.alerts);
        match r {
            Ok(status) => println!("{} {url}: delivered ({status})", channel.as_str()),
            Err(e) => {
                failed = true;
                println!("{} {url}: failed: {e}", channel.as_str());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
