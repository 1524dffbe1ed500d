#!/bin/bash
# Crash → restarted and hang → restarted, cluster-ai's health task against monit, side by side
# in one run under real systemd 252 (the e2e container, target/nspawn-root), each on its
# defaults: cluster-ai's health task (probe every 10 s, timeout 3 s, 2 failures, the second
# 1 s after the first failed; a unit that
# fails is seen at once over D-Bus), monit `set daemon 30` with an HTTP check. Each trial is a
# first incident (reset_after short, and each trial waits until the daemon calls the service
# healthy and then past reset_after, so no backoff carries over from the trial before). Goals:
# a crash restarted in <= 1 s; a hang in <= 15 s (median; issue 18 §7). Root only. Prints figures only.
# usage: bench/restart.sh [TRIALS [MONIT_TRIALS]]   (default 3 per kind and tool; monit's as
# many unless given: its trials take about 45 s (crash) and 65 s (hang) each, cluster-ai's 10 and 20)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-3}
MONIT_TRIALS=${2:-$TRIALS}
ROOT=${CLUSTER_AI_NSPAWN_ROOT:-target/nspawn-root}
[ -x "$ROOT/usr/bin/monit" ] || { echo "no monit in $ROOT: bash tests/e2e/build-root.sh $ROOT"; exit 1; }
cargo build --release --quiet
PAY=$(mktemp -d)
trap 'rm -rf "$PAY"' EXIT
cp "${CARGO_TARGET_DIR:-target}"/release/cluster-ai systemd/cluster-ai.service "$PAY/"
sed -e "s/^TRIALS=.*/TRIALS=$TRIALS/" -e "s/^MONIT_TRIALS=.*/MONIT_TRIALS=$MONIT_TRIALS/" bench/restart-in-container.sh > "$PAY/restart-in-container.sh"
chmod +x "$PAY/restart-in-container.sh"
NS_SCRIPT=restart-in-container.sh NS_CONSOLE_LOG="$PAY/console.log" bash tests/e2e/ns-run.sh "$ROOT" "$PAY" | tee "$PAY/out"
grep -q "restart benchmark done" "$PAY/out" || { echo "the benchmark did not finish; console:"; tail -30 "$PAY/console.log"; exit 1; }
for who in cluster-ai monit; do
  for kind in crash hang; do
    grep -q "^$who $kind median [0-9]" "$PAY/out" || { echo "no $who $kind median: a side did not run"; exit 1; }
  done
done
echo "restart: $TRIALS trials each for cluster-ai, $MONIT_TRIALS for monit, under systemd 252, each on its defaults (cluster-ai: 10 s probe, 3 s timeout, 2 failures; monit: 30 s cycle)"
grep ' median ' "$PAY/out" | sed 's/^/  /'
