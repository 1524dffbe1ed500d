//! The Debian package under real systemd: packaging/build-deb.sh builds it twice (revisions 1
//! and 2, the second an upgrade), and the container (tests/e2e/) installs, reloads, upgrades
//! and purges it with apt (tests/e2e/deb-in-container.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Builds the package with `revision` into `out`, with a target directory of its own (the
/// one `cargo test` uses stays locked by it).
fn build(revision: &str, out: &Path) -> PathBuf {
    common::require_tool("cargo-deb", "cargo install cargo-deb");
    let st = Command::new("bash")
        .arg(format!("{ROOT}/packaging/build-deb.sh"))
        .args(["--deb-revision", revision, "-o"])
        .arg(out)
        .env("CARGO_TARGET_DIR", format!("{ROOT}/target/deb-build"))
        .status()
        .unwrap();
    assert!(st.success(), "packaging/build-deb.sh failed; see above");
    let deb = std::fs::read_dir(out).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains(&format!("-{revision}_")));
    deb.unwrap_or_else(|| panic!("no revision {revision} package in {}", out.display()))
}

#[test]
fn the_debian_package_installs_upgrades_and_purges_under_real_systemd() {
    if !common::require_root("the Debian package test (systemd-nspawn)") {
        return;
    }
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    for rev in ["1", "2"] {
        let deb = build(rev, p);
        assert!(deb.starts_with(p));
    }
    std::fs::copy(format!("{ROOT}/tests/e2e/deb-in-container.sh"), p.join("deb-in-container.sh")).unwrap();
    let (stdout, left) = common::run_in_container(p, "deb-in-container.sh");
    assert!(stdout.contains("deb e2e: install, reload, journal, upgrade, purge all behaved"), "{stdout}");
    assert!(left.is_empty(), "purge left {left:?} in the swap directory");
}
