#!/bin/bash
# What one health probe cycle costs the daemon, in instructions (valgrind --tool=callgrind:
# reproducible, unlike CPU time on a shared machine): the release daemon on defaults but for
# its services, run twice for the same time, once probing N local stand-ins over HTTP every
# second and once with the health task off; the difference over the probes the stand-ins answered is the
# cost of one probe as the daemon runs it (timer, task, connect, request, answer, the policy,
# the report). Prints figures only.
# usage: bench/probe-cost.sh [SECONDS] [N]        (default 30 s, 4 services)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-30}
N=${2:-4}
command -v valgrind >/dev/null || { echo "no valgrind: apt install valgrind"; exit 1; }
BIN=${PROBE_COST_BIN:-${CARGO_TARGET_DIR:-target}/release/cluster-ai}
[ -n "${PROBE_COST_BIN:-}" ] || cargo build --release --quiet
WORK=$(mktemp -d)
STANDINS=
DAEMON=
cleanup() {
  set +e
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  [ -n "$STANDINS" ] && kill "$STANDINS" 2>/dev/null && wait "$STANDINS" 2>/dev/null
  for f in "$WORK"/*/swap/*; do [ -f "$f" ] && { swapoff "$f" 2>/dev/null; rm -f "$f"; }; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# N stand-ins that answer "ok" and count the requests they answered.
python3 -c '
import http.server, socketserver, sys, threading
count = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        count[0] += 1
        with open(sys.argv[3], "w") as f: f.write(str(count[0]))
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
servers = [socketserver.ThreadingTCPServer(("127.0.0.1", 0), H) for _ in range(int(sys.argv[1]))]
with open(sys.argv[2], "w") as f:
    f.write(" ".join(str(s.server_address[1]) for s in servers))
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
' "$N" "$WORK/ports" "$WORK/answered" &
STANDINS=$!
for _ in $(seq 50); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
# run NAME SERVICES: the daemon under callgrind for DURATION s; prints its total instructions.
run() {
  local dir=$WORK/$1 n=0
  mkdir -p "$dir/swap"
  printf '[swap]\ndir = "%s/swap"\nmin_size = "0"\n[metrics]\nlisten = ""\n[health]\n' "$dir" > "$dir/config.toml"
  if [ "$2" = 0 ]; then
    printf 'enabled = false\n' >> "$dir/config.toml"   # no health task (older builds lack remove_services)
  fi
  for port in $(cat "$WORK/ports"); do
    [ "$n" -lt "$2" ] || break
    n=$((n + 1))
    printf '[[health.service]]\nname = "s%s"\nprobe = "http://127.0.0.1:%s/health"\nexpect_body = "ok"\ninterval = "1s"\ntimeout = "1s"\n' "$n" "$port" >> "$dir/config.toml"
  done
  RUNTIME_DIRECTORY=$dir/run STATE_DIRECTORY=$dir/state valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$BIN" run --config "$dir/config.toml" 2>"$dir/log" &
  DAEMON=$!
  sleep "$DURATION"
  kill -TERM "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
  DAEMON=
  grep -q 'ERROR' "$dir/log" && { echo "$1: errors in the daemon's log:" >&2; grep ERROR "$dir/log" | head -3 >&2; }
  awk '/^summary:/ {print $2}' "$dir/callgrind.out"
}
none=$(run none 0)
before=$(cat "$WORK/answered" 2>/dev/null || echo 0)
probed=$(run probed "$N")
answered=$(( $(cat "$WORK/answered") - before ))
[ "$answered" -gt 0 ] || { echo "the stand-ins answered no probe"; exit 1; }
awk -v a="$probed" -v b="$none" -v p="$answered" -v d="$DURATION" -v n="$N" 'BEGIN {
  printf "probe cost under callgrind, %d s each, release build\n", d
  printf "  %d services probed every 1 s: %.1f M instructions (%d probes answered)\n", n, a / 1e6, p
  printf "  health off:                     %.1f M instructions\n", b / 1e6
  printf "  one probe cycle:                %.0f instructions\n", (a - b) / p
}'
