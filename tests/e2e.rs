//! End to end under real systemd: the container (tests/e2e/) boots systemd 252 as PID 1 with
//! systemd-nspawn, installs the binary, the unit and a config, and drives it with systemctl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

#[test]
fn under_real_systemd() {
    if !common::require_root("the systemd-nspawn end-to-end test") {
        return;
    }
    let root = common::container_root();
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    std::fs::copy(common::BIN, p.join("cluster-ai")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cluster-ai.service"), p.join("cluster-ai.service")).unwrap();
    std::fs::copy(format!("{E2E}/test-in-container.sh"), p.join("test-in-container.sh")).unwrap();
    let console = p.join("console.log");
    // The container's /var is a volatile overlay, which cannot hold swap: the service's
    // swap.dir is a host directory on ext4, bound in. Whatever is left active there is
    // switched off when `swap` is dropped.
    let swap = SwapDir(tempfile::tempdir().unwrap());
    let out = Command::new("bash")
        .arg(format!("{E2E}/ns-run.sh"))
        .arg(&root)
        .arg(p)
        .env("NS_CONSOLE_LOG", &console)
        .env("NS_EXTRA_ARGS", format!("--bind={}:/var/lib/cluster-ai/swap", swap.0.path().display()))
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
    assert!(stdout.contains("e2e: start, baseline swap, status, reload, broken reload, watchdog restart, bad config, optimize restarts, CPU weight, journal vacuum, health restarts and stop all behaved"));
    let left: Vec<_> = std::fs::read_dir(swap.0.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "swap clean inside the container left {left:?}");
}

struct SwapDir(tempfile::TempDir);

impl Drop for SwapDir {
    fn drop(&mut self) {
        common::swapoff_under(self.0.path());
    }
}
