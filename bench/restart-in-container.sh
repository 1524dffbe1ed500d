#!/bin/bash
# Runs inside the booted container (bench/restart.sh). One test service, busybox httpd on
# 127.0.0.1:8099 (no Restart= of its own), watched first by cluster-ai's health task and then by
# monit, each on its defaults (cluster-ai 10 s, monit its usual 30 s cycle), never both at once. Per trial: crash (SIGKILL) or hang
# (SIGSTOP: the process lives, HTTP never answers); timed from the signal to the unit running
# again under a new main PID, polled every 20 ms. Prints one line per trial and the medians.
set -euo pipefail
TRIALS=${1:-3}
MONIT_TRIALS=$TRIALS
now() { date +%s%N; }
pid() { systemctl show -p MainPID --value web; }
install -m755 /ci/cluster-ai /usr/bin/cluster-ai
install -m644 /ci/cluster-ai.service /etc/systemd/system/cluster-ai.service
mkdir -p /srv/www /etc/cluster-ai && echo ok > /srv/www/health
printf '[Service]\nExecStart=/bin/busybox httpd -f -p 127.0.0.1:8099 -h /srv/www\n' > /etc/systemd/system/web.service
systemctl daemon-reload
systemctl start web

# Whether web answers its /health (bash's /dev/tcp: busybox wget crashes in this root).
answers() {
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8099 && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && grep -q "^ok" <&3' 2>/dev/null
}

# measure KIND: one trial; prints the seconds from the signal to a new running main PID.
measure() {
  local old t0 p
  # From a healthy start: running and answering.
  for _ in $(seq 600); do answers && break; sleep 0.2; done
  # cluster-ai: also healthy in its own eyes, for longer than its reset_after (1 s below), so
  # the trial is a first incident. Without this, a trial that fell within a second of the
  # last one's recovery met that incident's backoff (a crash restarted after 2.4 s, "attempt
  # 1") or its every-second probing (a hang restarted after 3.3 s).
  if [ "$who" = cluster-ai ]; then
    for _ in $(seq 600); do cluster-ai health >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 1.5
  fi
  old=$(pid)
  # A random phase within the monitor's cycle (CYCLE: cluster-ai's 10 s probe interval,
  # monit's 30 s), so the trials sample it evenly.
  sleep "$(( RANDOM % CYCLE )).$(( RANDOM % 10 ))"
  t0=$(now)
  echo "$t0" > /tmp/trial-start
  case "$1" in crash) kill -KILL "$old" ;; hang) kill -STOP "$old" ;; esac
  for _ in $(seq 6000); do   # 120 s at most
    p=$(pid)
    if [ "$p" != 0 ] && [ "$p" != "$old" ] && [ "$(systemctl is-active web)" = active ]; then
      awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f\n", (b - a) / 1e9}'
      return
    fi
    sleep 0.02
  done
  echo "timeout"
}

median() { sort -n | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

run_trials() {
  local who=$1 kind out=""
  for kind in crash hang; do
    out=""
    for i in $(seq "$TRIALS"); do
      s=$(measure "$kind")
      echo "  $who $kind trial $i: $s s"
      # A crash restarted later than its goal (1 s): what the daemon logged meanwhile, to say why.
      if [ "$who" = cluster-ai ] && [ "$kind" = crash ] && awk -v s="$s" 'BEGIN {exit !(s == "timeout" || s > 1)}'; then
        journalctl -u cluster-ai -o short-precise --no-pager --since "@$(( $(cat /tmp/trial-start) / 1000000000 - 1 ))" | sed 's/^/    /' | head -20 || true   # head's early close must not end the bench (pipefail)
      fi
      out+="$s"$'\n'
    done
    echo "$who $kind median $(printf '%s' "$out" | grep -v timeout | median) s"
  done
}

# cluster-ai: the health task on its defaults (interval 10 s, timeout 3 s, fail_after 2), but
# for the flap guard and the backoff: the trials restart the service more than 5 times in 10
# minutes, which on defaults holds further restarts off for 15 minutes (as it should on a real
# node), and each trial comes within reset_after (5 min) of the last, so its restart would wait
# for the last one's doubled backoff: each trial is measured as a first incident.
printf '[swap]\nmin_size = "0"\n[health]\nflap_restarts = 1000\nreset_after = "1s"\n[[health.service]]\nname = "web"\nunit = "web.service"\nprobe = "http://127.0.0.1:8099/health"\nexpect_body = "ok"\n' \
  > /etc/cluster-ai/config.toml
systemctl start cluster-ai
for _ in $(seq 100); do cluster-ai health >/dev/null 2>&1 && break; sleep 0.1; done
CYCLE=10 run_trials cluster-ai | tee /tmp/cluster-ai.out
systemctl stop cluster-ai

# monit 5.33: the same service, `set daemon 30`, restart through systemctl.
cat > /etc/monit-bench.rc <<'RC'
set daemon 30
set pidfile /run/monit-bench.pid
set statefile /run/monit-bench.state
set idfile /run/monit-bench.id
set httpd unixsocket /run/monit-bench.sock allow root
check process web matching "busybox httpd -f -p 127.0.0.1:8099"
  start program = "/bin/systemctl start web"
  stop program = "/bin/systemctl stop web"
  if failed host 127.0.0.1 port 8099 protocol http request "/health" with timeout 5 seconds then restart
RC
chmod 600 /etc/monit-bench.rc
monit -I -c /etc/monit-bench.rc >/tmp/monit.log 2>&1 &
MONIT=$!
sleep 2
# (Not a line starting "TRIALS=": bench/restart.sh sets the trials by rewriting that line.)
CYCLE=30 TRIALS=$MONIT_TRIALS run_trials monit | tee /tmp/monit.out
kill "$MONIT"; wait "$MONIT" 2>/dev/null || true
systemctl stop web
echo "restart benchmark done"
