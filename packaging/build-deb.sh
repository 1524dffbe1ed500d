#!/bin/bash
# Builds target/debian/cluster-ai_<version>_<arch>.deb: the release binary, the man pages and
# shell completions generated from the clap definitions, then `cargo deb --no-build`.
# Needs cargo-deb (`cargo install cargo-deb`; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "build-deb.sh needs cargo-deb: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --quiet
rm -rf target/assets
cargo run --release --quiet --example gen-assets -- target/assets
cargo deb --no-build --no-strip "$@"
