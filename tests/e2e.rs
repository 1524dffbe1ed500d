//! End to end under real systemd: the container (tests/e2e/) boots systemd 252 as PID 1 with
//! systemd-nspawn, installs the binary, the unit and a config, and drives it with systemctl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

/// One container at a time: both tests boot the same root.
static CONTAINER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What the container gets: the binary, the shipped unit and the test's script.
fn payload(script: &str) -> tempfile::TempDir {
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    std::fs::copy(common::BIN, p.join("cluster-ai")).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cluster-ai.service"), p.join("cluster-ai.service")).unwrap();
    std::fs::copy(format!("{E2E}/{script}"), p.join(script)).unwrap();
    payload
}

#[test]
fn under_real_systemd() {
    if !common::require_root("the systemd-nspawn end-to-end test") {
        return;
    }
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let payload = payload("test-in-container.sh");
    let p = payload.path();
    let (stdout, left) = common::run_in_container(p, "test-in-container.sh");
    assert!(stdout.contains("e2e: start, baseline swap, status, reload, broken reload, watchdog restart, bad config, optimize restarts, CPU weight (put back, and left when changed by someone else), journal vacuum, health restarts, a unit installed and removed after the start and stop all behaved"));
    assert!(left.is_empty(), "swap clean inside the container left {left:?}");
}

/// §6 of issue 18: the shipped unit lets the daemon reach NVIDIA's device nodes (a node of
/// major 195 made in the container's /dev), so its GPU discovery under systemd finds what
/// `check` finds by hand (the fake NVML, loaded through the same dlopen); with the old
/// `PrivateDevices=yes` it finds nothing. (systemd's device cgroup program is not enforced
/// inside this nspawn container: `DevicePolicy=`/`DeviceAllow=` are checked as systemd parsed
/// them, not by a denied open.)
#[test]
fn a_gpu_node_under_real_systemd() {
    if !common::require_root("the systemd-nspawn GPU test") {
        return;
    }
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let payload = payload("gpu-in-container.sh");
    let p = payload.path();
    std::fs::create_dir(p.join("nvml")).unwrap();
    common::build_fake_nvml(&p.join("nvml"));
    let (stdout, _) = common::run_in_container(p, "gpu-in-container.sh");
    assert!(stdout.contains(
        "gpu e2e: the daemon under the shipped unit reaches /dev/nvidiactl and plans for the GPU; with PrivateDevices=yes it cannot"
    ));
}
