#!/bin/bash
# Builds target/debian/cluster-ai_<version>_<arch>.deb: the release binary, the man pages and
# shell completions generated from the clap definitions, the copyright file, then
# `cargo deb --no-build`.
# Needs cargo-deb (`cargo install cargo-deb`; .ci/run installs it).
# `--build-only`: the compiling alone (the release binary and the gen-assets example), no
# package: tests/run-all.sh makes it so ahead of the package test, which then only packages.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo build --release --quiet --example gen-assets
[ "${1:-}" = --build-only ] && exit 0
command -v cargo-deb >/dev/null || { echo "build-deb.sh needs cargo-deb: cargo install cargo-deb" >&2; exit 1; }
rm -rf target/assets
cargo run --release --quiet --example gen-assets -- target/assets
# /usr/share/doc/cluster-ai/copyright in Debian's machine-readable format (DEP-5): the notice and
# the license text are LICENSE's own, the text indented as a field continuation ("." for a blank).
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: cluster-ai"
  echo
  echo "Files: *"
  sed -n 's/^Copyright (c) /Copyright: /p' LICENSE
  echo "License: Expat"   # DEP-5's name for the MIT license text LICENSE holds
  sed -n '/^Permission is hereby granted/,$p' LICENSE | sed 's/^$/./; s/^/ /'
} > target/assets/copyright
cargo deb --no-build --no-strip "$@"
