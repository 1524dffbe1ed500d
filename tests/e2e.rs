//! End to end under real systemd: the container (tests/e2e/) boots systemd 252 as PID 1 with
//! systemd-nspawn, installs the binary, the unit and a config, and drives it with systemctl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

/// The container root: built once (about 45 s) and reused; `CLUSTER_AI_NSPAWN_ROOT` overrides.
fn container_root() -> PathBuf {
    let root = std::env::var_os("CLUSTER_AI_NSPAWN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nspawn-root"));
    if !root.join("usr/lib/systemd/systemd").exists() {
        eprintln!(
            "building the container root in {} (about a minute)",
            root.display()
        );
        let st = Command::new("bash")
            .arg(format!("{E2E}/build-root.sh"))
            .arg(&root)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "building the container root failed; see the output above"
        );
    }
    root
}

#[test]
fn under_real_systemd() {
    if !common::require_root("the systemd-nspawn end-to-end test") {
        return;
    }
    let root = container_root();
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    std::fs::copy(common::BIN, p.join("cluster-ai")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cluster-ai.service"),
        p.join("cluster-ai.service"),
    )
    .unwrap();
    std::fs::copy(
        format!("{E2E}/test-in-container.sh"),
        p.join("test-in-container.sh"),
    )
    .unwrap();
    let console = p.join("console.log");
    let out = Command::new("bash")
        .arg(format!("{E2E}/ns-run.sh"))
        .arg(&root)
        .arg(p)
        .env("NS_CONSOLE_LOG", &console)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the container test failed ({}); console:\n{}",
        out.status,
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    assert!(stdout.contains("e2e: start, status, reload, broken reload, watchdog restart, bad config and stop all behaved"));
}
