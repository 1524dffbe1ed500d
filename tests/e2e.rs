//! End to end under real systemd: the container (tests/e2e/) boots systemd 252 as PID 1 with
//! systemd-nspawn, installs the binary, the unit and a config, and drives it with systemctl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

#[test]
fn under_real_systemd() {
    if !common::require_root("the systemd-nspawn end-to-end test") {
        return;
    }
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    std::fs::copy(common::BIN, p.join("cluster-ai")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cluster-ai.service"), p.join("cluster-ai.service")).unwrap();
    std::fs::copy(format!("{E2E}/test-in-container.sh"), p.join("test-in-container.sh")).unwrap();
    let (stdout, left) = common::run_in_container(p, "test-in-container.sh");
    assert!(stdout.contains("e2e: start, baseline swap, status, reload, broken reload, watchdog restart, bad config, optimize restarts, CPU weight, journal vacuum, health restarts and stop all behaved"));
    assert!(left.is_empty(), "swap clean inside the container left {left:?}");
}
