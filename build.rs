//! Link-time layout of the release binary: the functions the idle daemon runs
//! (packaging/hot-functions.txt, made by packaging/hot-functions.sh) placed together at the
//! start of `.text`.
//!
//! Why: the kernel maps up to 64 KiB around every page fault on a file mapping
//! ("fault-around"), so an idle loop whose few hundred functions lie all over a 4 MiB `.text`
//! keeps about 3 MiB of it mapped, and counted in the daemon's RSS, for the life of the process
//! (bench/footprint.sh: 3.0 MiB of the binary's code resident on 2026-12-03, 0.9 MiB with the
//! list). Packed together they fit in a few such windows.
//!
//! How: lld's `--symbol-ordering-file` (symbols missing from this build are skipped without a
//! warning). The names carry hashes of the toolchain and of the crate graph, so a list made
//! with another rustc, another version of the package or another Cargo.lock mostly misses:
//! the list records what it was made with, and a release build with another rustc says so in
//! a warning; bench/footprint.sh prints how many of its names this build has.
//!
//! Only the release profile, and only when a probe link with these flags works with the
//! linker this build uses (rustc's bundled lld on x86_64 Linux from Rust 1.90 on; not GNU ld,
//! which has no such option); otherwise, or with `CLUSTER_AI_NO_ORDERING=1`, the binary is
//! linked as before. The link map is written to `OUT_DIR/cluster-ai.map`, and also to
//! `CLUSTER_AI_LINK_MAP` when set (for hot-functions.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

const LIST: &str = "packaging/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A missing list would make cargo run this script at every build: watch its folder then.
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let list = manifest.join(LIST);
    println!("cargo:rerun-if-changed={}", if list.is_file() { LIST } else { "packaging" });
    for var in ["CLUSTER_AI_NO_ORDERING", "CLUSTER_AI_LINK_MAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env("PROFILE") != "release" || env("CLUSTER_AI_NO_ORDERING") == "1" || !list.is_file() {
        return;
    }
    let out = PathBuf::from(env("OUT_DIR"));
    let map = out.join("cluster-ai.map");
    let args =
        [format!("--symbol-ordering-file={}", list.display()), "--no-warn-symbol-ordering".to_string(), format!("-Map={}", map.display())];
    if let Err(why) = probe_link(&out, &args) {
        println!("cargo:warning=linking cluster-ai without {LIST} (its functions placed as the linker likes): {why}");
        return;
    }
    // -Xlinker, not -Wl,: a path with a comma in it stays one argument.
    for a in &args {
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Xlinker");
        println!("cargo:rustc-link-arg-bin=cluster-ai={a}");
    }
    let extra = env("CLUSTER_AI_LINK_MAP");
    if !extra.is_empty() {
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Xlinker");
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Map={extra}");
    }
    let made_with =
        std::fs::read_to_string(&list).unwrap_or_default().lines().find_map(|l| l.strip_prefix("# rustc: ").map(str::to_string));
    let rustc = rustc_version();
    if made_with.as_deref() != Some(rustc.as_str()) {
        println!(
            "cargo:warning={LIST} was made with {}, this is {rustc}: most of its names will not be in this build (run packaging/hot-functions.sh)",
            made_with.as_deref().unwrap_or("an unrecorded rustc")
        );
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

fn rustc() -> String {
    let r = env("RUSTC");
    if r.is_empty() {
        "rustc".into()
    } else {
        r
    }
}

/// "rustc 1.95.0 (59807616e 2026-04-14)".
fn rustc_version() -> String {
    Command::new(rustc()).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// Links an empty program for this target the way cargo links ours (RUSTFLAGS, the configured
/// linker) with `args` given to the linker: `Err` with the linker's complaint when it does not
/// take them.
fn probe_link(out: &Path, args: &[String]) -> Result<(), String> {
    let src = out.join("probe.rs");
    std::fs::write(&src, "fn main() {}\n").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(rustc());
    cmd.arg("--crate-type=bin").arg("--target").arg(env("TARGET")).arg("-o").arg(out.join("probe")).arg(&src);
    for flag in env("CARGO_ENCODED_RUSTFLAGS").split('\x1f').filter(|f| !f.is_empty()) {
        cmd.arg(flag);
    }
    let linker = env("RUSTC_LINKER");
    if !linker.is_empty() {
        cmd.arg("-C").arg(format!("linker={linker}"));
    }
    let probe_map = out.join("probe.map");
    for a in args {
        let a = if a.starts_with("-Map=") { format!("-Map={}", probe_map.display()) } else { a.clone() };
        cmd.arg("-C").arg("link-arg=-Xlinker").arg("-C").arg(format!("link-arg={a}"));
    }
    let o = cmd.output().map_err(|e| format!("cannot run rustc: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&o.stderr);
        let line = text.lines().find(|l| l.contains("unrecognized") || l.contains("unknown")).or_else(|| text.lines().next());
        Err(line.unwrap_or("the probe link failed").trim().to_string())
    }
}
