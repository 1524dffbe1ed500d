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
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("cargo-deb").exists()));
    assert!(found, "this test needs cargo-deb (cargo install cargo-deb; .ci/run installs it)");
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
    let root = common::container_root();
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    for rev in ["1", "2"] {
        let deb = build(rev, p);
        assert!(deb.starts_with(p));
    }
    std::fs::copy(format!("{ROOT}/tests/e2e/deb-in-container.sh"), p.join("deb-in-container.sh")).unwrap();
    let console = p.join("console.log");
    let swap = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(format!("{ROOT}/tests/e2e/ns-run.sh"))
        .arg(&root)
        .arg(p)
        .env("NS_SCRIPT", "deb-in-container.sh")
        .env("NS_CONSOLE_LOG", &console)
        .env("NS_EXTRA_ARGS", format!("--bind={}:/var/lib/cluster-ai/swap", swap.path().display()))
        .output()
        .unwrap();
    common::swapoff_under(swap.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the package test failed ({}); console:\n{}",
        out.status,
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    assert!(stdout.contains("deb e2e: install, reload, journal, upgrade, purge all behaved"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(swap.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "purge left {left:?} in the swap directory");
}
