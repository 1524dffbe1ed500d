#!/usr/bin/env python3
"""Reaction benchmark (issue 3): time from memory use crossing the threshold to a new swap file
listed in /proc/swaps, for the release cluster-ai daemon and for swapspace, with the same hog.

The hog allocates at about 1 GiB/s in 1 MiB steps. After each step it reads /proc/meminfo and
/proc/swaps; it notes the moment used = 1 - MemAvailable/MemTotal first reaches the threshold,
keeps allocating up to a few points past it, and then watches /proc/swaps every millisecond
until a file appears in the tool's directory. Root only; everything it makes lives in a
tempdir and is switched off and deleted at the end. Prints p50/p95 for both and the ratio.

usage: bench/reaction.py [TRIALS]   (default 10; SWAPSPACE=0 skips the comparison)
"""
import json, math, os, shutil, signal, statistics, subprocess, sys, tempfile, time

TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
RATE = 1 << 30          # bytes per second
STEP = 1 << 20          # the crossing is timed to within one step (about 1 ms)
FILE = 256 << 20        # the size of the file each tool adds
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Cargo's target directory as cargo reads it (CARGO_TARGET_DIR; .ci/run points it at the package's build).
BIN = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release/cluster-ai")


def meminfo():
    m = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            m[k] = int(v.split()[0]) * 1024
    return m


def used_percent():
    m = meminfo()
    return 100.0 * (1.0 - m["MemAvailable"] / m["MemTotal"])


def swaps_in(d):
    """Swap files listed under d (by file name: a path from another namespace may differ)."""
    names = set(os.listdir(d)) if os.path.isdir(d) else set()
    with open("/proc/swaps") as f:
        return {l.split()[0] for l in f.readlines()[1:] if os.path.basename(l.split()[0]) in names}


def swapoff_all(d):
    if not os.path.isdir(d):
        return
    for name in os.listdir(d):
        p = os.path.join(d, name)
        subprocess.run(["swapoff", p], stderr=subprocess.DEVNULL)
        try:
            os.remove(p)
        except OSError:
            pass


HOG = r"""
import os, sys, time
threshold, stop_at, d, rate, step = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def used():
    with open('/proc/meminfo') as f:
        m = {l.split(':')[0]: int(l.split()[1]) for l in f}
    return 100.0 * (1.0 - m['MemAvailable'] / m['MemTotal'])
def files():
    names = set(os.listdir(d))
    with open('/proc/swaps') as f:
        return {l.split()[0] for l in f.readlines()[1:] if os.path.basename(l.split()[0]) in names}
before = files()
chunks, t0, t1 = [], None, None
start = time.monotonic()
while True:
    now = time.monotonic()
    if t0 is None or used() < stop_at:
        due = start + len(chunks) * step / rate
        if now < due:
            time.sleep(due - now)
        chunks.append(bytearray(b'\x01') * step)
        if t0 is None and used() >= threshold:
            t0 = time.monotonic()
    else:
        time.sleep(0.001)
    if t0 is not None and files() - before:
        t1 = time.monotonic()
        break
    if time.monotonic() - start > 30:
        break
print(-1 if t0 is None or t1 is None else (t1 - t0) * 1000, flush=True)
"""


def trial(d, threshold):
    out = subprocess.run([sys.executable, "-c", HOG, str(threshold), str(threshold + 3), d, str(RATE), str(STEP)],
                         capture_output=True, text=True, timeout=60)
    ms = float(out.stdout.strip() or -1)
    return None if ms < 0 else ms


def settle(threshold):
    """Memory back well below the threshold before the next trial."""
    for _ in range(100):
        if used_percent() < threshold - 2:
            return
        time.sleep(0.1)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def run_cluster_ai(work, threshold):
    """One daemon per trial, each from no managed swap (min_size 0): a file a trial added has
    room left, and the headroom rule adds no file while managed swap has room, so a second
    trial on the same daemon would time what the rule is for, not the reaction."""
    d = os.path.join(work, "ca-swap")
    cfg = os.path.join(work, "ca.toml")
    with open(cfg, "w") as f:
        f.write(f'[swap]\ndir = "{d}"\nmin_size = "0"\nincrement = "{FILE >> 20}M"\nmax_size = "16G"\n'
                f'memory_threshold = {threshold}\nshrink_threshold = {max(1, threshold - 20)}\n')
    env = dict(os.environ, RUNTIME_DIRECTORY=os.path.join(work, "run"), STATE_DIRECTORY=os.path.join(work, "state"))
    env.pop("NOTIFY_SOCKET", None)
    log = open(os.path.join(work, "ca.log"), "w")
    results = []
    for _ in range(TRIALS):
        settle(threshold)
        p = subprocess.Popen([BIN, "run", "--config", cfg], env=env, stderr=log)
        try:
            for _ in range(50):
                if os.path.exists(os.path.join(work, "run/control.sock")):
                    break
                time.sleep(0.1)
            os.makedirs(d, exist_ok=True)
            time.sleep(1.0)
            results.append(trial(d, threshold))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
            swapoff_all(d)
    return results


def run_swapspace(work, threshold):
    d = os.path.join(work, "ss-swap")
    os.makedirs(d, mode=0o700)
    results = []
    for _ in range(TRIALS):
        settle(threshold)
        # swapspace counts free RAM + free swap + cache and buffers (here at 100 %) as available,
        # which with no other swap active is close to MemAvailable: it acts when available
        # drops below lower_freelimit, i.e. when use passes the same threshold.
        lower = 100 - threshold
        upper = min(99, lower + 3)
        p = subprocess.Popen(["swapspace", "-s", d, "-l", str(lower), "-u", str(upper), "-f", str((lower + upper) // 2),
                              "-C", "100", "-B", "100", "-m", str(FILE), "-M", str(FILE), "-a", "1", "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.5)
            results.append(trial(d, threshold))
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            swapoff_all(d)
    return results


def summary(name, r):
    ok = [x for x in r if x is not None]
    if not ok:
        print(f"  {name:<11} no file appeared in any of {len(r)} trials")
        return None
    print(f"  {name:<11} p50 {statistics.median(ok):7.1f} ms   p95 {pct(ok, 95):7.1f} ms   "
          f"min {min(ok):6.1f}   max {max(ok):7.1f}   ({len(ok)}/{len(r)} trials)")
    return statistics.median(ok)


def main():
    if os.geteuid() != 0:
        sys.exit("bench/reaction.py needs root (swapon)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="cluster-ai-reaction-")
    os.chmod(work, 0o700)
    try:
        threshold = math.ceil(used_percent()) + 2
        print(f"reaction: hog at {RATE >> 20} MiB/s, threshold {threshold}% (use now {used_percent():.1f}%), "
              f"{FILE >> 20} MiB files, {TRIALS} trials each")
        ours = summary("cluster-ai", run_cluster_ai(work, threshold))
        theirs = None
        if os.environ.get("SWAPSPACE", "1") != "0":
            if shutil.which("swapspace") is None:
                sys.exit("swapspace is not installed (apt-get install swapspace), or set SWAPSPACE=0")
            theirs = summary("swapspace", run_swapspace(work, threshold))
        if ours and theirs:
            print(f"  ratio       swapspace p50 / cluster-ai p50 = {theirs / ours:.1f}x")
    finally:
        for sub in ("ca-swap", "ss-swap"):
            swapoff_all(os.path.join(work, sub))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
