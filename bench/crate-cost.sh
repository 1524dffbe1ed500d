#!/bin/bash
# What each crate costs in the release binary: the sizes of its functions and data (symbols
# of an unstripped build of the release profile, demangled, grouped by the crate their path
# starts with; generic code is counted where it is instantiated, as the linker placed it).
# Prints the largest crates, the total it could attribute, and the shipped (stripped) size.
# usage: bench/crate-cost.sh [TOP]       (default 25)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=${1:-25}
cargo build --release --quiet
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --quiet --target-dir target/unstripped
BIN=target/unstripped/release/cluster-ai
nm --print-size --size-sort --radix=d -C "$BIN" | awk -v top="$TOP" '
{
  size = $2; name = ""
  for (i = 4; i <= NF; i++) name = name (i > 4 ? " " : "") $i
  # Trait impls print as "<T as Trait>::f": the implementing type names the crate.
  sub(/^<+/, "", name); sub(/^(dyn |&|&mut |\*const |\*mut |\[)+/, "", name)
  crate = name
  sub(/::.*/, "", crate); sub(/[<> ].*/, "", crate)
  if (crate !~ /^[a-z_][a-z0-9_]*$/) crate = "(C, std glue and unnamed)"
  by[crate] += size; total += size
}
END {
  n = 0
  for (c in by) { names[++n] = c }
  # sort by size, descending
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (by[names[j]] > by[names[i]]) { t = names[i]; names[i] = names[j]; names[j] = t }
  printf "%-28s %9s %6s\n", "crate", "KiB", "share"
  for (i = 1; i <= n && i <= top; i++) printf "%-28s %9.1f %5.1f%%\n", names[i], by[names[i]] / 1024, 100 * by[names[i]] / total
  printf "%-28s %9.1f\n", "(all symbols)", total / 1024
}'
ls -l "${CARGO_TARGET_DIR:-target}"/release/cluster-ai | awk '{printf "shipped binary (stripped): %.2f MiB\n", $5 / 1048576}'
