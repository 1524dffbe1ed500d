#!/bin/bash
# Runs inside the booted container (real systemd 252 as PID 1), as root: the shipped unit lets
# the daemon reach NVIDIA's device nodes. /ci holds the binary, the unit, and the fake NVML
# (tests/fixtures/fake-nvml) in /ci/nvml, which opens FAKE_NVML_DEVICE in nvmlInit_v2 as the
# real library opens /dev/nvidiactl. No NVIDIA driver is loaded here: opening a node of major
# 195 reaches the kernel and gets ENXIO, which the fake counts as reached; a node the service
# cannot see (ENOENT) makes it fail as the real one does (NVML_ERROR_DRIVER_NOT_LOADED, 9).
set -euo pipefail
step() { echo "== $*"; }
fail() { echo "FAIL: $*"; echo "--- journal"; journalctl -o short-monotonic --no-pager -n 60 _SYSTEMD_UNIT=cluster-ai.service + UNIT=cluster-ai.service | cut -c1-300; exit 1; }
prop() { systemctl show -p "$1" --value cluster-ai; }
wait_for() {
  local n=$(($1 * 10)) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out after $n/10 s waiting for: $what"
}
layers_why() { cluster-ai status --json | sed -n '/"ollama_gpu_layers"/,/}/p' | grep '"why"'; }
planned() { layers_why | grep -F -- "$1" >/dev/null; }

install -m755 /ci/cluster-ai /usr/bin/cluster-ai
install -m644 /ci/cluster-ai.service /etc/systemd/system/cluster-ai.service
mkdir -p /etc/cluster-ai /etc/systemd/system/cluster-ai.service.d
printf 'sample_interval = "1s"\n[emergency]\ndask_scheduler = ""\nollama = ""\n' > /etc/cluster-ai/config.toml
# NVIDIA's fixed major (Linux's devices.txt: 195 = /dev/nvidia0.., 255 = /dev/nvidiactl).
mknod -m 666 /dev/nvidiactl c 195 255
mknod -m 666 /dev/nvidia0 c 195 0
printf '[Service]\nEnvironment=LD_LIBRARY_PATH=/ci/nvml FAKE_NVML_DEVICE=/dev/nvidiactl\n' > /etc/systemd/system/cluster-ai.service.d/nvml.conf
systemctl daemon-reload

step "the unit: a closed device policy that lets NVIDIA's and DRM's char devices through"
[ "$(prop PrivateDevices)" = no ] || fail "PrivateDevices=$(prop PrivateDevices)"
[ "$(prop DevicePolicy)" = closed ] || fail "DevicePolicy=$(prop DevicePolicy)"
allow=$(prop DeviceAllow)
case "$allow" in *"char-nvidia* rw"*"char-drm rw"*|*"char-drm rw"*"char-nvidia* rw"*) ;; *) fail "DeviceAllow=$allow" ;; esac
exposure=$(systemd-analyze security cluster-ai --no-pager | tail -n 1)
echo "systemd-analyze security: $exposure"

step "under systemd the daemon opens /dev/nvidiactl and plans for the GPU, as check does by hand"
systemctl start cluster-ai || fail "systemctl start failed"
wait_for 20 "a plan for the 40 GiB GPU" planned "40.0 GiB of GPU memory: every layer"
echo "daemon: $(layers_why)"
by_hand=$(LD_LIBRARY_PATH=/ci/nvml FAKE_NVML_DEVICE=/dev/nvidiactl cluster-ai check --json)
echo "$by_hand" | grep -F '"name": "NVIDIA Fake A100-SXM4-40GB"' >/dev/null || fail "check by hand found no GPU: $by_hand"
echo "$by_hand" | grep -F '"ollama_gpu_layers": 999' >/dev/null || fail "check by hand recommends other layers: $by_hand"
systemctl stop cluster-ai

step "with the old PrivateDevices=yes the node is hidden: NVML fails and the plan is CPU only"
printf '[Service]\nPrivateDevices=yes\n' > /etc/systemd/system/cluster-ai.service.d/private.conf
systemctl daemon-reload
systemctl start cluster-ai || fail "systemctl start failed"
wait_for 20 "a CPU-only plan" planned "no GPU with known memory: CPU only"
echo "daemon with PrivateDevices=yes: $(layers_why)"
systemctl stop cluster-ai
rm -r /etc/systemd/system/cluster-ai.service.d
systemctl daemon-reload

echo "gpu e2e: the daemon under the shipped unit reaches /dev/nvidiactl and plans for the GPU; with PrivateDevices=yes it cannot"
