#!/bin/bash
# Boots ROOTDIR under systemd-nspawn (real systemd as the container's PID 1), binds PAYLOADDIR
# read-only at /ci, runs /ci/$NS_SCRIPT (default test-in-container.sh) inside, powers the
# container off.
# Exit status is the test's. Root only. Boot to "running" takes about 0.5 s.
# usage: ns-run.sh ROOTDIR PAYLOADDIR        (console log: $NS_CONSOLE_LOG, default /tmp/ns-console.log)
# Adapted from ../shared/systemd-harness: the root is booted --volatile=overlay, so every run
# starts from the clean root (its writes go to a tmpfs), and $NS_EXTRA_ARGS adds nspawn options
# (a --bind of a host directory, say).
set -u
ROOT=$(realpath "$1"); PAY=$(realpath "$2"); LOG=${NS_CONSOLE_LOG:-/tmp/ns-console.log}
# The host's /run is not a tmpfs here; give nspawn one for its own state.
mkdir -p /run/systemd/nspawn; mountpoint -q /run/systemd/nspawn || mount -t tmpfs tmpfs /run/systemd/nspawn
(
  # Own cgroup subtree, so the container's systemd never takes over the host's root cgroup.
  for h in systemd unified; do
    [ -d /sys/fs/cgroup/$h ] || continue
    mkdir -p /sys/fs/cgroup/$h/nspawn-ci && echo $BASHPID > /sys/fs/cgroup/$h/nspawn-ci/cgroup.procs
  done
  # --register=no --keep-unit: there is no systemd or D-Bus on the host.
  # --system-call-filter=@swap: lets swapon/swapoff through (swap is kernel-wide: clean up!).
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn --quiet -D "$ROOT" --machine=citest \
    --register=no --keep-unit --private-network --console=read-only \
    --system-call-filter='@swap' --volatile=overlay --bind-ro="$PAY":/ci ${NS_EXTRA_ARGS:-} --boot
) >"$LOG" 2>&1 </dev/null &
NSPID=$!
LP=
for _ in $(seq 100); do   # the container's PID 1: the systemd that our nspawn started
  LP=$(pgrep -x -P "$NSPID" systemd | head -1)
  [ -n "$LP" ] && break; sleep 0.1
done
[ -n "$LP" ] || { echo "container did not start"; cat "$LOG"; kill "$NSPID" 2>/dev/null; wait; exit 2; }
IN="nsenter -t $LP -a"
trap '$IN systemctl poweroff >/dev/null 2>&1 || kill -s RTMIN+4 $LP; wait' EXIT
for _ in $(seq 600); do
  S=$($IN systemctl is-system-running 2>/dev/null)
  case "$S" in running|degraded) break ;; esac; sleep 0.1
done
echo "container is $S"
$IN /ci/"${NS_SCRIPT:-test-in-container.sh}"; RC=$?
trap - EXIT
$IN systemctl poweroff >/dev/null 2>&1 || kill -s RTMIN+4 $LP; wait
for h in systemd unified; do rmdir /sys/fs/cgroup/$h/nspawn-ci 2>/dev/null; done
exit $RC
