//! Link-time layout of the release binary: the functions the idle daemon runs
//! (packaging/hot-functions.txt, made by packaging/hot-functions.sh) placed together at the
//! start of `.text`.
//!
//! Why: the kernel maps up to 64 KiB around every page fault on a file mapping
//! ("fault-around"), so an idle loop whose few hundred functions lie all over a 4 MiB `.text`
//! keeps about 3 MiB of it mapped, and counted in the daemon's RSS, for the life of the process
//! (bench/footprint.sh: 3.0 MiB of the binary's code resident on 2026-12-03). Packed together
//! they fit in a few such windows.
//!
//! How: lld's `--symbol-ordering-file` (symbols missing from this build, renamed since the list
//! was made, are skipped without a warning). Only where rustc links with its bundled lld:
//! x86_64-unknown-linux-gnu from Rust 1.90 on, and no linker chosen in RUSTFLAGS; elsewhere,
//! or with `CLUSTER_AI_NO_ORDERING=1`, the binary is linked as before. Only the release
//! profile. `CLUSTER_AI_LINK_MAP=PATH` also writes the linker's map there (for
//! hot-functions.sh).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=packaging/hot-functions.txt");
    println!("cargo:rerun-if-env-changed=CLUSTER_AI_NO_ORDERING");
    println!("cargo:rerun-if-env-changed=CLUSTER_AI_LINK_MAP");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release" || !links_with_bundled_lld(&env("TARGET"), &env("RUSTC"), &env("CARGO_ENCODED_RUSTFLAGS")) {
        return;
    }
    let map = env("CLUSTER_AI_LINK_MAP");
    if !map.is_empty() {
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Wl,-Map={map}");
    }
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("packaging/hot-functions.txt");
    if env("CLUSTER_AI_NO_ORDERING").is_empty() && list.is_file() {
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bin=cluster-ai=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links this target with its own rust-lld by default (x86_64 Linux GNU since
/// Rust 1.90) and RUSTFLAGS does not choose another linker.
fn links_with_bundled_lld(target: &str, rustc: &str, rustflags: &str) -> bool {
    if target != "x86_64-unknown-linux-gnu" || rustflags.contains("linker") || rustflags.contains("fuse-ld") {
        return false;
    }
    let rustc = if rustc.is_empty() { "rustc" } else { rustc };
    let ask = |arg: &str| Command::new(rustc).args(arg.split(' ')).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let minor = ask("--version")
        .ok()
        .and_then(|t| t.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)).and_then(|m| m.parse::<u32>().ok()));
    // The lld that rustc hands to the C compiler as its `ld` (a toolchain built without it, as a
    // distribution's may be, links with the system's linker instead).
    let bundled =
        ask("--print sysroot").is_ok_and(|root| Path::new(&root).join("lib/rustlib").join(target).join("bin/gcc-ld/ld.lld").exists());
    minor.is_some_and(|m| m >= 90) && bundled
}
