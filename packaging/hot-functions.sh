#!/bin/bash
# Makes packaging/hot-functions.txt: the functions the idle release daemon runs, which build.rs
# has the linker place together at the start of `.text` (see build.rs for why). Run by hand
# after changes to the daemon's periodic paths (bench/footprint.sh shows the binary's resident
# code grow as the list ages: a function missing from it lands elsewhere and maps its 64 KiB
# again). Needs valgrind and root (the daemon makes its baseline swap file, in a tempdir).
#
# How: the release build, linked with a map (CLUSTER_AI_LINK_MAP), run as footprint.sh runs it,
# twice side by side (four services probed over HTTP and scraped by Prometheus every 15 s; the
# built-in service list with nothing installed), each under callgrind, its counts zeroed
# at READY; every instruction run in the window is named by the function section of the
# linker's map it lies in (packaging/hot_functions.py).
# usage: packaging/hot-functions.sh [SECONDS]      (default 130: four 30 s cycles and a minute's
#        systemd retry)
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-130}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "no valgrind: apt install valgrind" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (the daemon's baseline swap file)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  for f in "$WORK"/*/swap/*; do [ -f "$f" ] && { swapoff "$f" 2>/dev/null; rm -f "$f"; }; done
  rm -rf "$WORK"
}
trap cleanup EXIT
CLUSTER_AI_LINK_MAP=$WORK/cluster-ai.map cargo build --release --quiet
BIN=$(realpath "$TARGET/release/cluster-ai")
[ -s "$WORK/cluster-ai.map" ] || { echo "no linker map: build.rs did not ask for one (not linked by rustc's lld?)" >&2; exit 1; }

# Four stand-ins that answer as footprint.sh's do (bench/standins.py).
python3 bench/standins.py 4 "$WORK/ports.tmp" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/ports.tmp" ] && break; sleep 0.1; done

start() { # name, services (0 or 4)
  local d=$WORK/$1
  mkdir -p "$d"
  printf '[swap]\ndir = "%s/swap"\n[metrics]\nlisten = "127.0.0.1:0"\n' "$d" > "$d/config.toml"
  if [ "$2" -gt 0 ]; then
    n=0
    for port in $(cat "$WORK/ports.tmp"); do
      n=$((n + 1))
      printf '[[health.service]]\nname = "service-%s"\nprobe = "http://127.0.0.1:%s/health"\nexpect_body = "ok"\n' "$n" "$port" >> "$d/config.toml"
    done
  fi
  python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    s.recv(4096)
' "$d/notify.sock" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -S "$d/notify.sock" ] && break; sleep 0.1; done
  RUNTIME_DIRECTORY=$d/run STATE_DIRECTORY=$d/state NOTIFY_SOCKET=$d/notify.sock WATCHDOG_USEC=30000000 \
    valgrind --tool=callgrind --vgdb-prefix="$WORK/vgdb" --dump-instr=yes --compress-pos=no --callgrind-out-file="$d/callgrind.out" \
    "$BIN" run --config "$d/config.toml" 2>"$d/log" &
  PIDS+=($!)
  echo $! > "$d/pid"
}
start probed 4
start builtin 0
# From READY on: what runs once between READY and the trim of start-up's pages (sys/trim.rs)
# stays mapped after it too (the first sample, plan and look).
for d in probed builtin; do
  for _ in $(seq 600); do grep -q ' ready pid=' "$WORK/$d/log" && break; sleep 0.1; done
  grep -q ' ready pid=' "$WORK/$d/log" || { echo "$d: no 'ready' in the log:"; tail -20 "$WORK/$d/log"; exit 1; }
  callgrind_control --vgdb-prefix="$WORK/vgdb" -z "$(cat "$WORK/$d/pid")" | grep -q OK ||
    { echo "$d: callgrind did not zero its counts" >&2; exit 1; }
done
MURL=$(grep -o 'metrics: serving http://[0-9.:]*/metrics' "$WORK/probed/log" | head -1 | sed 's/metrics: serving //' || true)
[ -n "$MURL" ] || { echo "probed: no 'metrics: serving' in the log" >&2; exit 1; }
end=$((SECONDS + WINDOW))
while [ $SECONDS -lt $end ]; do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()' "$MURL"
  sleep 15
done

# Each daemon's code run in the window: every instruction's address (--dump-instr, uncompressed:
# functions entered by a jump, as tail calls are, have no name of their own in callgrind's output
# for a stripped binary), which callgrind gives relative to the object it lies in: for this
# binary, the linker's address.
for d in probed builtin; do
  callgrind_control --vgdb-prefix="$WORK/vgdb" -d "$(cat "$WORK/$d/pid")" | grep -q OK ||
    { echo "$d: callgrind did not dump its counts" >&2; exit 1; }
done
sleep 2

python3 packaging/hot_functions.py name "$BIN" "$WORK/cluster-ai.map" "$WORK/hot-functions.txt" \
  "$WORK"/probed/callgrind.out.* -- "$WORK"/builtin/callgrind.out.*
found=$(wc -l < "$WORK/hot-functions.txt")
[ "$found" -gt 50 ] || { echo "only $found functions named: the map or callgrind's output is not as expected" >&2; exit 1; }
made_from=$(git describe --always --dirty)   # before the list itself is rewritten
{
  echo "# The functions the idle daemon runs, placed together by the linker (build.rs)."
  echo "# Made by packaging/hot-functions.sh on $(date -u +%F) from $made_from: $found functions seen in ${WINDOW} s."
  echo "# The names carry hashes of the toolchain and the crate graph: make the list again after a"
  echo "# toolchain update, a change of Cargo.lock or of the package's version (build.rs warns of"
  echo "# another rustc; bench/footprint.sh says how many of these names a build has)."
  echo "# rustc: $(rustc --version)"
  cat "$WORK/hot-functions.txt"
} > packaging/hot-functions.txt
echo "packaging/hot-functions.txt: $found functions"
