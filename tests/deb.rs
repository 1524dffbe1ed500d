//! The Debian package: its maintainer scripts' awk program under Debian's own awk (mawk), the
//! package as lintian sees it, and under real systemd: packaging/build-deb.sh builds it twice
//! (revisions 1 and 2, the second an upgrade), and the container (tests/e2e/) installs,
//! reloads, upgrades and purges it with apt (tests/e2e/deb-in-container.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The variables cargo sets for a test run (the package's `CARGO_PKG_*`, `CARGO_MANIFEST_DIR`,
/// `CARGO_BIN_EXE_*` …, from "Environment variables Cargo sets for crates" in the Cargo book),
/// which a shell that runs build-deb.sh does not have.
fn set_by_cargo_for_tests(name: &str) -> bool {
    name == "CARGO"
        || ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_"].iter().any(|p| name.starts_with(p))
        || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"].contains(&name)
}

/// Builds the package with `revision` into `out`, with a target directory of its own (the
/// one `cargo test` uses stays locked by it), in the environment tests/run-all.sh builds it in
/// ahead of the tests: without the variables cargo sets for a test. ring's build script reruns
/// when `CARGO_MANIFEST_DIR` changes, so with them the release build made ahead is not fresh
/// here and the release binary is compiled again (about 4 minutes of CI's package test).
fn build(revision: &str, out: &Path) -> PathBuf {
    common::require_tool("cargo-deb", "cargo install cargo-deb");
    let mut cmd = Command::new("bash");
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_tests) {
            cmd.env_remove(name);
        }
    }
    let st = cmd
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

/// Revisions 1 and 2, built once for all the tests here (build-deb.sh makes target/assets
/// again in place: two builds at once would race on it), in target/deb-build/packages.
fn packages() -> &'static [PathBuf; 2] {
    static BUILT: OnceLock<[PathBuf; 2]> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(ROOT).join("target/deb-build/packages");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        [build("1", &out), build("2", &out)]
    })
}

/// postrm's awk program, as the script has it: the test runs the very text that ships.
fn postrm_awk_program() -> String {
    let script = std::fs::read_to_string(format!("{ROOT}/packaging/debian/postrm")).unwrap();
    let lines: Vec<&str> = script.lines().filter(|l| l.contains("awk '") && l.contains("/proc/swaps")).collect();
    assert_eq!(lines.len(), 1, "postrm reads /proc/swaps with one awk program: {lines:?}");
    let (_, rest) = lines[0].split_once("awk '").unwrap();
    let (program, _) = rest.rsplit_once("' /proc/swaps").expect("awk '…' /proc/swaps");
    program.to_string()
}

/// Debian 12's awk is mawk 1.3.4 20200120, which has no regex intervals (`[0-9]{6}` matches
/// nothing): purge must still find the swap files that are on, or it removes their directory.
#[test]
fn the_purge_script_finds_active_swap_files_with_debians_awk() {
    common::require_tool("mawk", "apt-get install mawk; Debian's default awk");
    let dir = tempfile::tempdir().unwrap();
    let swaps = dir.path().join("swaps");
    std::fs::write(
        &swaps,
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
         /dev/sda2                               partition\t8388604\t\t0\t\t-2\n\
         /var/lib/cluster-ai/swap/cluster-ai-000001.swap file\t\t1048572\t\t0\t\t-3\n\
         /srv/big\\040disk/cluster-ai-000002.swap   file\t\t1048572\t\t0\t\t-4\n\
         /var/lib/cluster-ai/swap/cluster-ai-000003.swap.partial file\t1048572\t0\t-5\n\
         /var/lib/cluster-ai/swap/cluster-ai-7.swap file\t1048572\t0\t-6\n\
         /var/lib/cluster-ai/swap/cluster-ai-0000008.swap file\t1048572\t0\t-7\n\
         /var/lib/cluster-ai/swap/notcluster-ai-000009.swap file\t1048572\t0\t-8\n\
         /swapfile                               file\t\t1048572\t\t0\t\t-9\n",
    )
    .unwrap();
    let out = Command::new("mawk").arg(postrm_awk_program()).arg(&swaps).output().unwrap();
    assert!(out.status.success(), "mawk: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "/var/lib/cluster-ai/swap/cluster-ai-000001.swap\n/srv/big\\040disk/cluster-ai-000002.swap\n",
        "exactly the managed names (cluster-ai-NNNNNN.swap, six digits), never the header"
    );
}

/// The package as Debian's policy checker sees it, with only the overrides that
/// packaging/debian/lintian-overrides justifies; and the config, which may hold the webhook's
/// token, installed readable by root alone.
#[test]
fn the_package_passes_lintian_and_keeps_its_config_from_other_users() {
    common::require_tool("lintian", "apt-get install lintian");
    let [deb, _] = packages();
    let listing = Command::new("dpkg-deb").arg("--contents").arg(deb).output().unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let entry = |path: &str| listing.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("no {path} in:\n{listing}"));
    // (cargo-deb writes owners as numbers: 0/0 is root:root.)
    let config = entry("./etc/cluster-ai/config.toml");
    assert!(config.starts_with("-rw-r----- 0/0 "), "{config}");
    // The man pages: a command page per subcommand and the config reference the unit's
    // Documentation= names.
    for page in ["./usr/share/man/man1/cluster-ai.1", "./usr/share/man/man1/cluster-ai-run.1", "./usr/share/man/man5/cluster-ai.toml.5"] {
        assert!(listing.lines().any(|l| l.contains(page)), "no {page} in:\n{listing}");
    }
    for doc in ["copyright", "changelog.Debian.gz", "docs/swap.md"] {
        let line = entry(&format!("./usr/share/doc/cluster-ai/{doc}"));
        assert!(line.starts_with("-rw-r--r-- 0/0 "), "{line}");
    }
    let out = Command::new("lintian").args(["--fail-on", "error,warning", "--display-info"]).arg(deb).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "lintian found errors or warnings:\n{text}");
}

#[test]
fn the_debian_package_installs_upgrades_and_purges_under_real_systemd() {
    if !common::require_root("the Debian package test (systemd-nspawn)") {
        return;
    }
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    for deb in packages() {
        std::fs::copy(deb, p.join(deb.file_name().unwrap())).unwrap();
    }
    std::fs::copy(format!("{ROOT}/tests/e2e/deb-in-container.sh"), p.join("deb-in-container.sh")).unwrap();
    let (stdout, left) = common::run_in_container(p, "deb-in-container.sh");
    assert!(stdout.contains("deb e2e: install, reload, journal, upgrade, purge all behaved"), "{stdout}");
    assert!(left.is_empty(), "purge left {left:?} in the swap directory");
}
