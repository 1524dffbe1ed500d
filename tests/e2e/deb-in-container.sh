#!/bin/bash
# Runs inside the container (systemd 252 as PID 1): the Debian package end to end. /ci holds
# two builds of the package (the second a rebuild with a higher revision). Install -> active,
# enabled, baseline swap; reload; the structured journal; an edited config and the swap file
# kept across an upgrade; `systemd-analyze security`; purge -> no swap, no file, no unit.
set -u
fail() {
  echo "deb e2e: FAIL: $*"
  journalctl -u cluster-ai --no-pager -n 60
  exit 1
}
export DEBIAN_FRONTEND=noninteractive
OLD=$(ls /ci/cluster-ai_*-1_*.deb) NEW=$(ls /ci/cluster-ai_*-2_*.deb)
SWAPDIR=/var/lib/cluster-ai/swap

apt-get install -y -q "$OLD" </dev/null >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt install $OLD"; }
# The resource check ran at install time and said the tier and the score.
grep -q '^tier: ' /tmp/apt.log && grep -q '^score: ' /tmp/apt.log || { cat /tmp/apt.log; fail "no 'check --quick' report at install"; }
systemctl is-enabled -q cluster-ai || fail "not enabled after install"
for _ in $(seq 100); do systemctl is-active -q cluster-ai && break; sleep 0.1; done
systemctl is-active -q cluster-ai || fail "not active after install"
for _ in $(seq 100); do grep -q "^$SWAPDIR/cluster-ai-000001.swap " /proc/swaps && break; sleep 0.1; done
grep -q "^$SWAPDIR/cluster-ai-000001.swap " /proc/swaps || fail "no baseline swap file: $(cat /proc/swaps)"
INODE=$(stat -c %i "$SWAPDIR/cluster-ai-000001.swap")
[ -f /usr/share/man/man1/cluster-ai.1 ] || [ -f /usr/share/man/man1/cluster-ai.1.gz ] || grep -q "path-exclude=/usr/share/man" /etc/dpkg/dpkg.cfg.d/* 2>/dev/null || fail "no man page"
[ -f /usr/share/bash-completion/completions/cluster-ai ] || fail "no bash completion"
systemctl show -p Documentation cluster-ai | grep -qF 'man:cluster-ai.toml(5)' || fail "the unit's Documentation= lacks the config page: $(systemctl show -p Documentation cluster-ai)"
# The config may hold the webhook's token: root's alone.
[ "$(stat -c '%a %U:%G' /etc/cluster-ai/config.toml)" = "640 root:root" ] || fail "config is $(stat -c '%a %U:%G' /etc/cluster-ai/config.toml), not 640 root:root"
cluster-ai status >/dev/null || fail "cluster-ai status"

systemctl reload cluster-ai || fail "systemctl reload"
for _ in $(seq 50); do journalctl -u cluster-ai -q | grep -q "config reloaded" && break; sleep 0.1; done
journalctl -u cluster-ai -q | grep -q "config reloaded" || fail "no 'config reloaded' in the journal"
# A drop-in, as a configuration-management tool would write one, applies on reload; an
# invalid one is refused with its own path and the running config stays.
mkdir -p /etc/cluster-ai/config.d
printf 'sample_interval = "2s"\n' >/etc/cluster-ai/config.d/50-cm.toml
cluster-ai config check >/dev/null || fail "config check refused the drop-in"
systemctl reload cluster-ai || fail "systemctl reload with a drop-in"
for _ in $(seq 50); do journalctl -u cluster-ai -q | grep -q "sample_interval: 5s -> 2s" && break; sleep 0.1; done
journalctl -u cluster-ai -q | grep -q "sample_interval: 5s -> 2s" || fail "the drop-in was not applied on reload"
cluster-ai config show | grep -qx 'sample_interval = 2s  # /etc/cluster-ai/config.d/50-cm.toml:1' ||
  fail "config show: $(cluster-ai config show | grep sample_interval)"
printf '[swap]\nmax_size = "1X"\n' >/etc/cluster-ai/config.d/60-bad.toml
systemctl reload cluster-ai || true
for _ in $(seq 50); do journalctl -u cluster-ai -q | grep -q "60-bad.toml:2:12: swap.max_size" && break; sleep 0.1; done
journalctl -u cluster-ai -q | grep -q "60-bad.toml:2:12: swap.max_size" || fail "an invalid drop-in was not named on reload"
systemctl is-active -q cluster-ai || fail "not active after an invalid drop-in"
rm /etc/cluster-ai/config.d/60-bad.toml
# Structured: the swap file's fields are journal fields of their own.
journalctl -u cluster-ai -o json -q | grep '"MESSAGE":"swap file added' | grep -q '"F_REASON":"baseline"' ||
  fail "no structured F_REASON field: $(journalctl -u cluster-ai -o json -q | grep 'swap file added' | head -1)"

# Upgrade to the rebuilt package: the edited config and the swap file stay.
# (Every default is commented out in the shipped file: pinning one is uncommenting it.)
sed -i 's/^#log_level = "info"/log_level = "debug"/' /etc/cluster-ai/config.toml
grep -q '^log_level = "debug"' /etc/cluster-ai/config.toml || fail "could not edit the config"
PID=$(systemctl show -P MainPID cluster-ai)
apt-get install -y -q "$NEW" </dev/null >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt install $NEW (upgrade)"; }
dpkg-query -W -f '${Version}' cluster-ai | grep -q -- '-2$' || fail "not upgraded: $(dpkg-query -W cluster-ai)"
grep -q '^log_level = "debug"' /etc/cluster-ai/config.toml || fail "the upgrade lost the edited config"
[ -f /etc/cluster-ai/config.d/50-cm.toml ] || fail "the upgrade lost the drop-in"
[ "$(stat -c %a /etc/cluster-ai/config.toml)" = 640 ] || fail "config is $(stat -c %a /etc/cluster-ai/config.toml) after the upgrade, not 640"
for _ in $(seq 100); do systemctl is-active -q cluster-ai && [ "$(systemctl show -P MainPID cluster-ai)" != "$PID" ] && break; sleep 0.1; done
[ "$(systemctl show -P MainPID cluster-ai)" != "$PID" ] || fail "not restarted on upgrade"
systemctl is-active -q cluster-ai || fail "not active after the upgrade"
[ "$(stat -c %i "$SWAPDIR/cluster-ai-000001.swap")" = "$INODE" ] || fail "the swap file was replaced on upgrade"
# (By name: once the daemon that switched it on is gone, /proc/swaps shows the file under a
# path relative to the bind mount its mount namespace had.)
grep -q "cluster-ai-000001.swap " /proc/swaps || fail "the swap file is not active after the upgrade: $(cat /proc/swaps)"
[ "$(grep -c 'cluster-ai-0' /proc/swaps)" = 1 ] || fail "more swap files after the upgrade: $(cat /proc/swaps)"

systemd-analyze security cluster-ai --no-pager 2>/dev/null | tail -1 | sed 's/^/deb e2e: systemd-analyze security: /'

apt-get purge -y -q cluster-ai </dev/null >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt purge"; }
grep -q 'cluster-ai-0' /proc/swaps && fail "swap still active after purge: $(cat /proc/swaps)"
for f in /usr/bin/cluster-ai /etc/cluster-ai /lib/systemd/system/cluster-ai.service /usr/lib/systemd/system/cluster-ai.service \
  /etc/systemd/system/multi-user.target.wants/cluster-ai.service /run/cluster-ai /usr/share/bash-completion/completions/cluster-ai; do
  [ -e "$f" ] && fail "$f is left after purge"
done
# /var/lib/cluster-ai/swap is the host directory bound in (a mount point cannot be removed):
# it must be empty, and nothing else of the state directory may be left.
left=$(find /var/lib/cluster-ai -mindepth 1 ! -path "$SWAPDIR" 2>/dev/null)
[ -z "$left" ] || fail "left in /var/lib/cluster-ai: $left"
[ -z "$(ls -A "$SWAPDIR" 2>/dev/null)" ] || fail "left in $SWAPDIR: $(ls -A "$SWAPDIR")"
systemctl is-enabled -q cluster-ai 2>/dev/null && fail "still enabled after purge"
dpkg-query -W cluster-ai 2>/dev/null | grep -q . && dpkg -s cluster-ai 2>/dev/null | grep -q '^Status: install' && fail "still installed"
echo "deb e2e: install, reload, journal, upgrade, purge all behaved"
