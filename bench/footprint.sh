#!/bin/bash
# Idle footprint of the release daemon on built-in defaults, run as the unit runs it: with a
# real notify socket (read by a helper, as systemd would) and WATCHDOG_USEC of the unit's
# WatchdogSec=30s, so READY/STATUS/WATCHDOG datagrams are sent and counted (swap task
# included; as root it makes its 2G baseline, in a tempdir rather than /var/lib, removed at
# the end): RSS (VmRSS, VmHWM), CPU time
# (utime+stime) scaled to seconds per hour, and wakeups per second (voluntary context
# switches of all its threads per second), and where the resident pages are. Goals (issues 7
# and 8, the whole daemon): RSS <= 5 MiB, CPU <= 0.4 s/h, <= 1 wakeup/s. Prints figures; it measures, it does not judge pass/fail.
# usage: bench/footprint.sh [SECONDS]        (default 60; FOOTPRINT_ARGS adds daemon options,
#        FOOTPRINT_BIN measures that binary instead of building this tree, FOOTPRINT_CONFIG
#        adds top-level settings to its config)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
# Cargo's target directory (CARGO_TARGET_DIR, as cargo reads it; .ci/run points it at the
# package's build). FOOTPRINT_BIN: another build to measure (e.g. an older one, side by side).
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${FOOTPRINT_BIN:-$TARGET/release/cluster-ai}
[ -n "${FOOTPRINT_BIN:-}" ] || cargo build --release --quiet
# The floor measured beside the daemon (examples/sampling-floor.rs): the sampler's reads alone.
cargo build --release --quiet --example sampling-floor
WORK=$(mktemp -d)
PID=
LISTENER=
STANDINS=
FLOOR=
cleanup() {
  set +e   # every step runs, whatever the one before returned
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -n "$FLOOR" ] && kill "$FLOOR" 2>/dev/null && wait "$FLOOR" 2>/dev/null
  [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null && wait "$LISTENER" 2>/dev/null
  [ -n "$STANDINS" ] && kill "$STANDINS" 2>/dev/null && wait "$STANDINS" 2>/dev/null
  for f in "$WORK"/swap/*; do [ -f "$f" ] && { swapoff "$f" 2>/dev/null; rm -f "$f"; }; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# The built-in defaults, but swap.dir in the tempdir (a benchmark never touches /var/lib), and
# the health task watching four services probed over HTTP at the default interval (the built-in four are
# replaced by four local stand-ins that answer, so the figure is that of a healthy node; no
# unit, so nothing is restarted). SERVICES=0 keeps the built-in list instead.
# Each stand-in writes its answer as the peer it stands for does (bench/standins.py).
SERVICES=${SERVICES:-4}
# /metrics served (on a port of its own: two of these may run side by side); scraped only
# after the idle window, to measure what a scrape costs.
# FOOTPRINT_CONFIG: top-level settings put first (e.g. sample_interval = "30s"), to see what
# a setting costs.
printf '%s\n[swap]\ndir = "%s/swap"\n[metrics]\nlisten = "127.0.0.1:0"\n' "${FOOTPRINT_CONFIG:-}" "$WORK" > "$WORK/config.toml"
if [ "$SERVICES" -gt 0 ]; then
  python3 bench/standins.py "$SERVICES" "$WORK/ports.tmp" &
  STANDINS=$!
  for _ in $(seq 50); do [ -s "$WORK/ports.tmp" ] && break; sleep 0.1; done
  n=0
  for port in $(cat "$WORK/ports.tmp"); do
    n=$((n + 1))
    printf '[[health.service]]\nname = "service-%s"\nprobe = "http://127.0.0.1:%s/health"\nexpect_body = "ok"\n' "$n" "$port" >> "$WORK/config.toml"
  done
fi
# systemd's side of sd_notify: a datagram socket whose messages are written, one per line.
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "w") as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
        out.flush()
' "$WORK/notify.sock" "$WORK/notify.log" &
LISTENER=$!
for _ in $(seq 50); do [ -S "$WORK/notify.sock" ] && break; sleep 0.1; done
RUNTIME_DIRECTORY=$WORK/run STATE_DIRECTORY=$WORK/state NOTIFY_SOCKET=$WORK/notify.sock WATCHDOG_USEC=30000000 \
  $BIN run --config "$WORK/config.toml" ${FOOTPRINT_ARGS:-} 2>"$WORK/log" &
PID=$!
for _ in $(seq 50); do [ -S "$WORK/run/control.sock" ] && break; sleep 0.1; done
[ -S "$WORK/run/control.sock" ] || { echo "daemon did not start:"; cat "$WORK/log"; exit 1; }
# Past start-up (the baseline swap file, the first plan) and the trim of its file mappings
# five seconds after READY (sys/trim.rs): measure the steady state.
for _ in $(seq 150); do grep -q 'start-up done' "$WORK/log" && break; sleep 0.1; done
grep -q 'start-up done' "$WORK/log" || { echo "no 'start-up done' (the trim) in the log:"; cat "$WORK/log"; exit 1; }
# Then one whole 30 s cycle (swap check, probes, heartbeats), so every periodic path has run once
# and faulted its code back in: what follows is the idle steady state.
sleep "${SETTLE:-30}"

# On-CPU nanoseconds of every thread (schedstat): clock ticks (utime+stime) are 10 ms each, too
# coarse for a figure of tenths of a second per hour.
cpu_ns() { cat /proc/"${1:-$PID}"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
vcsw() { cat /proc/"$PID"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }
field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }
HZ=$(getconf CLK_TCK)
grep -q '^READY=1' "$WORK/notify.log" || { echo "no READY=1 on the notify socket:"; cat "$WORK/notify.log" "$WORK/log"; exit 1; }
# This machine charges different windows differently for the same work (a microVM: 0.3 and
# 0.5 s/h for one build in two windows). So the same window also measures a floor: the
# sampler's reads every 5 s, alone, with no runtime and no other task; a noisy window raises both.
"$TARGET"/release/examples/sampling-floor "$WORK/swap" &
FLOOR=$!
sleep 1
t0=$(ticks); c0=$(cpu_ns); w0=$(vcsw); s0=$(date +%s.%N); n0=$(wc -l < "$WORK/notify.log"); f0=$(cpu_ns "$FLOOR")
sleep "$DURATION"
t1=$(ticks); c1=$(cpu_ns); w1=$(vcsw); s1=$(date +%s.%N); n1=$(wc -l < "$WORK/notify.log"); f1=$(cpu_ns "$FLOOR")
wd=$(tail -n +"$((n0 + 1))" "$WORK/notify.log" | grep -c 'WATCHDOG=1' || true)
rss=$(field VmRSS); hwm=$(field VmHWM); threads=$(field Threads)
# Where the resident pages are: the binary's own mapping, shared libraries (libc, ld.so: shared
# with every process), anonymous memory (heap, stacks: this process's own); and the proportional
# (PSS) and private (USS) sizes that say what the process costs the machine.
split=$(awk '
  /^[0-9a-f]+-[0-9a-f]+ / { kind = (NF >= 6 && $6 ~ /^\//) ? ($6 ~ /cluster-ai$/ ? "binary" : "libs") : "anon"; next }
  /^Rss:/ { r[kind] += $2 }
  END { printf "binary %.2f MiB, shared libraries %.2f MiB, anonymous %.2f MiB", r["binary"] / 1024, r["libs"] / 1024, r["anon"] / 1024 }' "/proc/$PID/smaps")
pss=$(awk '$1 == "Pss:" {print $2}' "/proc/$PID/smaps_rollup")
uss=$(awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" {s += $2} END {print s}' "/proc/$PID/smaps_rollup")
kill -0 "$PID" || { echo "daemon died:"; cat "$WORK/log"; exit 1; }
# What a scrape costs: 200 GETs of /metrics (the daemon's on-CPU time for them, per scrape).
MURL=$(grep -o 'metrics: serving http://[0-9.:]*/metrics' "$WORK/log" | head -1 | sed 's/metrics: serving //')
scrape=""
if [ -n "$MURL" ]; then
  m0=$(cpu_ns)
  python3 -c '
import sys, urllib.request
for _ in range(200):
    urllib.request.urlopen(sys.argv[1]).read()
' "$MURL"
  m1=$(cpu_ns)
  scrape=$(awk -v c="$((m1 - m0))" -v b="$(python3 -c 'import sys, urllib.request; print(len(urllib.request.urlopen(sys.argv[1]).read()))' "$MURL")" \
    'BEGIN {printf "%.0f us of CPU per scrape (200 scrapes, %d bytes each)", c / 200 / 1000, b}')
fi
awk -v c="$((c1 - c0))" -v f="$((f1 - f0))" -v t="$((t1 - t0))" -v hz="$HZ" -v w="$((w1 - w0))" -v s0="$s0" -v s1="$s1" -v rss="$rss" -v hwm="$hwm" -v th="$threads" 'BEGIN {
  el = s1 - s0
  printf "footprint over %.1f s (release build, built-in defaults, %d thread(s))\n", el, th
  printf "  VmRSS          %6.2f MiB   (goal <= 5 MiB, whole daemon)\n", rss / 1024
  printf "  VmHWM          %6.2f MiB   (peak, at start-up)\n", hwm / 1024
  printf "  CPU            %6.3f s/h   (goal <= 0.4 s/h; schedstat on-CPU time; utime+stime: %d ticks of 1/%d s)\n", c / 1e9 / el * 3600, t, hz
  printf "  wakeups        %6.3f /s    (goal <= 1/s; %d voluntary context switches)\n", w / el, w
  printf "  floor          %6.3f s/h   (the sampler'"'"'s reads alone every 5 s, same window; the daemon costs %.1fx that)\n", f / 1e9 / el * 3600, (f > 0 ? c / f : 0)
}'
echo "  health         $SERVICES service(s) probed at the default interval: $(grep -c 'health: service-[0-9]* is down' "$WORK/log" || true) went down while measured"
echo "  RSS by mapping $split"
awk -v p="$pss" -v u="$uss" 'BEGIN {printf "  PSS            %6.2f MiB   USS (private) %.2f MiB\n", p / 1024, u / 1024}'
[ -n "$scrape" ] && echo "  /metrics       $scrape"
echo "  notify         $((n1 - n0)) datagrams in the window, $wd of them WATCHDOG=1 (WATCHDOG_USEC=30 s: one per 15 s)"
grep -q 'sd_notify failed' "$WORK/log" && { echo "  sd_notify failed while measuring:"; grep 'sd_notify failed' "$WORK/log" | head -3; }
true
ls -l "$BIN" | awk '{printf "  binary size    %6.2f MiB\n", $5 / 1048576}'
# How many of packaging/hot-functions.txt's names this build has (build.rs places them together;
# they carry hashes of the toolchain and crate graph): from the link map build.rs writes.
if [ -z "${FOOTPRINT_BIN:-}" ]; then
  MAP=$(ls -t "$TARGET"/release/build/cluster-ai-*/out/cluster-ai.map 2>/dev/null | head -1 || true)
  if [ -n "$MAP" ]; then
    python3 packaging/hot_functions.py coverage packaging/hot-functions.txt "$MAP"
  else
    echo "  layout         no link map under $TARGET/release/build: linked without packaging/hot-functions.txt (see build.rs)"
  fi
fi
grep -o 'swap file added: [^(]* ([a-z]*)' "$WORK/log" | sed 's/^/  during start-up: /' || true
