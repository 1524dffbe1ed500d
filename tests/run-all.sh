#!/bin/bash
# Every test, on a fresh Debian 12 machine, as root: installs what the tests need (Debian
# packages, the Dask venv, cargo-deb, the nspawn container root; each only when missing), then
# runs every tier: `cargo test` (unit, integration, root, real peers, hostile peers, systemd in
# the container, the package) and the failure paths once more on the release build. README's
# second command; .ci/run calls it between the lints and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# Each phase's wall time, printed at the end: what CI spends installing, building and testing.
spent=()
phase() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  spent+=("$(printf '%-34s %5d s' "$name" $((SECONDS - t0)))")
}
if [ "$(id -u)" != 0 ]; then
  echo "tests/run-all.sh: run it as root (sudo): it installs Debian packages and the root tests make swap files" >&2
  exit 1
fi

# The end-to-end test boots a Debian root with systemd-nspawn; mmdebstrap builds that root.
# The swap reaction benchmark compares with swapspace (its unit is enabled by the package but
# never starts here: PID 1 is not systemd). The pressure test and the benchmarks use python3.
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v swapspace >/dev/null || need+=(swapspace)
command -v python3 >/dev/null || need+=(python3 python3-venv)
# The emergency tests: a real dockerd (with its CLI, to build a dangling image) and a private
# D-Bus bus for the systemd stand-in.
command -v dockerd >/dev/null || need+=(docker.io)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
# The alert tests: a real Alertmanager. The restart benchmark's peer: monit.
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v monit >/dev/null || need+=(monit)
# The fleet-view tests: a real Prometheus server and promtool (checks /metrics and the rules).
command -v promtool >/dev/null || need+=(prometheus)
# The container health test's image: a static busybox.
[ -x /bin/busybox ] || need+=(busybox-static)
# The burst test and bench/burst: a qemu VM (TCG), its initramfs built with gcc and busybox,
# its swap disk an ext4 image (Debian's kernel is fetched with apt-get download, not installed).
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# The email test: a real SMTP server (aiosmtpd, for Debian's own python3) and openssl for its
# certificates (the /metrics TLS test makes its certificates with openssl too).
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
command -v openssl >/dev/null || need+=(openssl)
# The package test: lintian checks the .deb; postrm's awk program runs under mawk, Debian's
# default awk (no regex intervals), whatever awk this machine prefers.
command -v lintian >/dev/null || need+=(lintian)
command -v mawk >/dev/null || need+=(mawk)
# The monitor test: a real terminal to draw in, keys sent and the screen read back.
command -v tmux >/dev/null || need+=(tmux)
# The swap test's btrfs RAID1 (on two loop devices), where the kernel refuses swap files.
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
# The GPU tests build a fake NVML (tests/fixtures/fake-nvml) as a shared library.
command -v gcc >/dev/null || need+=(gcc)
install_started=$SECONDS
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# A real Dask for the emergency tests and the benchmark (about 10 s from PyPI).
[ -x target/dask-venv/bin/dask ] || { python3 -m venv target/dask-venv && target/dask-venv/bin/pip install -q distributed dask; }
# The package test: cargo-deb builds the .deb (a few minutes to compile, once).
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb
# Build the container root now (about a minute) so the test run's time is the tests'.
# (Made again when it predates busybox, which the health test's hung HTTP service runs, or
# monit, the restart benchmark's peer.)
[ -x target/nspawn-root/usr/lib/systemd/systemd ] && [ -x target/nspawn-root/bin/busybox ] && [ -x target/nspawn-root/usr/bin/monit ] \
  || bash tests/e2e/build-root.sh target/nspawn-root
spent+=("$(printf '%-34s %5d s' "installs (packages, venv, root)" $((SECONDS - install_started)))")

phase "build (debug tests)" cargo test --no-run
# tests/deb.rs builds the package with packaging/build-deb.sh in a target directory of its own
# (target/deb-build): a release binary and the gen-assets example, both with LTO. Made here
# first by the same script (`--build-only`), they leave the test only the packaging to do, so
# the test run is the tests' time (about 250 s of compiling moved out of it); run alone, the
# test builds as before.
phase "build (the package's release binary)" env CARGO_TARGET_DIR="$PWD/target/deb-build" bash packaging/build-deb.sh --build-only
phase "run: cargo test" cargo test

# The failure-path tests and the hostile-peer tier once more on an optimised build (release
# profile, panic = abort: a panic there is a crash), with fault injection compiled in by its
# feature: what ships behaves as the debug build does.
phase "build (release tiers)" cargo test --release --features fault-injection --test daemon --test swap --test hostile --no-run
# (The VM burst test is the outcome of a whole VM run, not a failure path of this build: it ran
# in `cargo test` above, so it is not run a second time here.)
phase "run: release failure paths" cargo test --release --features fault-injection --test daemon --test swap --test hostile -- --skip a_burst_in_a_small_vm

# The property tests of every parser that sees outside bytes, on the release profile too:
# overflow checks are off there, so a wrapped number shows as a wrong value the tests assert
# (test binaries unwind: cargo does not build them with panic = abort).
# With the release tiers' features, as they are built (171 s in CI, against 176 s without:
# the lib's own test build is most of it).
phase "build (release property tests)" cargo test --release --features fault-injection --lib --no-run
phase "run: release property tests" cargo test --release --features fault-injection --lib -- props any_answer

echo "tests/run-all.sh: where the time went"
printf '  %s\n' "${spent[@]}"
