#!/bin/bash
# The burst benchmark (issue 19): does a workload that outgrows RAM from an idle machine
# survive, with each swap tool? Boots a small VM per run under qemu-system-x86_64 (KVM when
# /dev/kvm works, TCG otherwise), with Debian's linux-image-cloud-amd64 (unpacked into
# target/burst, never installed), an initramfs built here (busybox-static, the release
# cluster-ai, swapspace, earlyoom, the workload bench/burst/alloc.c) and a virtio ext4 disk for
# the swap files. Prints one table.
#
#   bash bench/burst/run.sh            # the CI grid: 512 MiB, 1 GiB at 1000 MiB/s (+ 200 for two)
#   bash bench/burst/run.sh --full     # RAM 512M and 2G, P 2x..8x RAM, R 25..1000, step, two-phase
#   BURST_TOOLS="cluster-ai-min0" BURST_RATES=400 bash bench/burst/run.sh   # a subset
#   bash bench/burst/run.sh --check TOOL MODE RATE PEAK RAM   # one run; exit 1 unless it survived
#   BURST_GRID="step 0 2048 512;twophase 400 2048 512" bash bench/burst/run.sh   # chosen cells
#
# Needs (Debian): qemu-system-x86, busybox-static, swapspace, gcc, e2fsprogs; apt-get download
# for the kernel and earlyoom (.deb unpacked with dpkg-deb -x).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
W=${CARGO_TARGET_DIR:-$root/target}/burst
mkdir -p "$W/debs" "$W/runs"

need() { command -v "$1" >/dev/null || { echo "bench/burst: $1 is missing: apt-get install $2" >&2; exit 2; }; }
need qemu-system-x86_64 qemu-system-x86
need busybox busybox-static
need swapspace swapspace
need gcc gcc
need mkfs.ext4 e2fsprogs

# The kernel and earlyoom, from Debian's archive through apt, unpacked (not installed).
if [ ! -d "$W/kernel/boot" ]; then
    (cd "$W/debs" && apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 &&
        dep=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}') &&
        apt-get download "$dep" >/dev/null 2>&1) || { echo "bench/burst: apt-get download linux-image-cloud-amd64 failed" >&2; exit 2; }
    dpkg-deb -x "$(ls "$W"/debs/linux-image-[0-9]*.deb | head -1)" "$W/kernel"
fi
if [ ! -d "$W/earlyoom" ]; then
    (cd "$W/debs" && apt-get download earlyoom >/dev/null 2>&1) && dpkg-deb -x "$W"/debs/earlyoom_*.deb "$W/earlyoom" || true
fi
vmlinuz=$(ls "$W"/kernel/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
bin=${BURST_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/cluster-ai}
[ -x "$bin" ] || { echo "bench/burst: build it first: cargo build --release" >&2; exit 2; }

# The initramfs, built afresh each time (a few seconds); the binaries stripped (the VM's RAM
# holds it).
initrd=$W/initrd-$$.cpio.gz
trap 'rm -f "$initrd"' EXIT
{
    gcc -O2 -static -o "$W/burst-alloc" bench/burst/alloc.c
    r=$W/rootfs
    rm -rf "$r" && mkdir -p "$r"/{bin,sbin,lib/modules,lib64,proc,sys,dev,etc,tmp,run,var/lib,mnt}
    cp /bin/busybox "$r/bin/"
    for a in $(busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
    strip -o "$r/bin/cluster-ai" "$bin"
    cp "$W/burst-alloc" /usr/sbin/swapspace "$r/bin/"
    [ -x "$W/earlyoom/usr/bin/earlyoom" ] && cp "$W/earlyoom/usr/bin/earlyoom" "$r/bin/"
    for b in "$r"/bin/cluster-ai "$r"/bin/swapspace "$r"/bin/earlyoom; do
        [ -e "$b" ] || continue
        for l in $(ldd "$b" 2>/dev/null | grep -o '/[^ ]*'); do cp -L --parents "$l" "$r/" 2>/dev/null || true; done
    done
    for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
        cp "$(find "$W/kernel/lib/modules/$kver" -name "$m.ko" | head -1)" "$r/lib/modules/"
    done
    cp bench/burst/init "$r/init" && chmod 755 "$r/init"
    (cd "$r" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd"
}

accel=tcg
if [ -z "${BURST_TCG:-}" ] && [ -w /dev/kvm ] &&
    timeout 30 qemu-system-x86_64 -accel kvm -m 128 -display none -nodefaults -no-reboot -kernel "$vmlinuz" \
        -append "panic=-1 console=ttyS0 no_timer_check rdinit=/nonexistent" -serial stdio 2>/dev/null | grep -q "Kernel panic"; then
    # Nested KVM that hangs (these CI machines) never gets this far: TCG then.
    accel=kvm
fi

# One run: prints its BURST-RESULT line (or a line saying why there is none).
run_one() { # tool mode rate peak ram
    local tool=$1 mode=$2 rate=$3 peak=$4 ram=$5 disk log
    disk=$W/runs/disk-$$.img
    log=$W/runs/$tool-$mode-$rate-$peak-$ram.log
    rm -f "$disk" && truncate -s $((peak * 2 + 8192))M "$disk" && mkfs.ext4 -q -F "$disk"
    # The limit: boot and calm (3 min), the rise at a quarter of its rate, and the swap-out of
    # the peak at 10 MiB/s (TCG writes swap at about 30: 4 GiB in a 512 MiB VM took over 196 s).
    timeout $((180 + 4 * peak / (rate > 0 ? rate : 1000) + peak / 10)) qemu-system-x86_64 -accel $accel -m "$ram" -smp 2 \
        -display none -nodefaults -no-reboot -serial stdio -kernel "$vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check burst.tool=$tool burst.mode=$mode burst.rate=$rate burst.peak=$peak burst.hold=2 burst.calm=${BURST_CALM:-20}" \
        -drive file="$disk",if=virtio,format=raw,cache=unsafe >"$log" 2>&1 || true
    rm -f "$disk"
    tr -d '\r' <"$log" | grep -a '^BURST-RESULT' | tail -1 || echo "BURST-RESULT tool=$tool mode=$mode rate=$rate peak=$peak ram=$ram rc=none (no result: see $log)"
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

row() { # result ram
    local r=$1 ram=$2 rc t tot used
    rc=$(field rc "$r")
    tot=$(field swap_total_kib "$r"); used=$(field swap_used_kib "$r")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$(field tool "$r")" "$ram" "$(field mode "$r")" "$(field rate "$r") ($(field ram_rate "$r"))" "$(field peak "$r")" \
        "$([ "$rc" = 0 ] && echo survived || echo "killed: $(field killed "$r")")" \
        "$(field t_peak "$r")" "${tot:+$((tot / 1024))}" "${used:+$((used / 1024))}" \
        "$(field files_after_calm "$r")$([ "$(field spare_after_calm "$r")" = 1 ] && echo ' + spare')" "$(field tool_cpu_s "$r")" "$(field first_file_ms "$r")"
}

if [ "${1:-}" = --check ]; then
    r=$(run_one "$2" "$3" "$4" "$5" "$6")
    echo "$r accel=$accel"
    [ "$(field rc "$r")" = 0 ]
    exit
fi

# Each grid entry: "mode rate peak ram"; each runs with every tool in $tools.
# (cluster-ai-min0-nospare: min_size 0 with swap.spare off, the first file made at the decision.)
tools=${BURST_TOOLS:-none static swapspace earlyoom cluster-ai cluster-ai-min0}
grid=()
if [ -n "${BURST_GRID:-}" ]; then
    # Cells chosen by hand ("mode rate peak ram", separated by ";"), each with every tool.
    IFS=';' read -ra cells <<< "$BURST_GRID"
    for c in "${cells[@]}"; do
        set -- $c
        [ $# = 0 ] && continue   # a trailing or doubled ";"
        [ $# = 4 ] || { echo "bench/burst: BURST_GRID cell \"$c\" is not \"MODE RATE PEAK RAM\" (e.g. \"steady 100 2048 512\")" >&2; exit 2; }
        grid+=("$*")
    done
elif [ "${1:-}" = --full ]; then
    for ram in 512 2048; do
        for mult in 2 4 8; do
            for rate in ${BURST_RATES:-25 100 400 1000}; do grid+=("steady $rate $((ram * mult)) $ram"); done
            grid+=("step 0 $((ram * mult)) $ram" "twophase ${BURST_TWOPHASE_RATE:-400} $((ram * mult)) $ram")
        done
    done
else
    # The CI grid (6 runs of about a minute under TCG, so .ci/run stays well under its hour):
    # 1 GiB (2x RAM) from a 512 MiB VM; BURST_RATES="200 1000" adds rates, --full the grid.
    for rate in ${BURST_RATES:-1000}; do grid+=("steady $rate 1024 512"); done
fi

echo "bench/burst: $(date -u +%F), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), accel $accel, kernel $kver"
echo
echo '| tool | RAM MiB | workload | MiB/s (reached in RAM) | peak MiB | outcome (killed: process, its RSS) | s to peak | swap at peak MiB | used at peak MiB | files after calm | tool CPU s | decision to swapon ms |'
echo '|---|---|---|---|---|---|---|---|---|---|---|---|'
for g in "${grid[@]}"; do
    these=$tools
    case $g in *:*) these=${g#*:}; g=${g%%:*};; esac
    set -- $g
    for tool in $these; do
        r=$(run_one "$tool" "$1" "$2" "$3" "$4")
        row "$r" "$4"
    done
done
