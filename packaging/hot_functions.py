"""The link map and callgrind reading behind packaging/hot-functions.txt (see build.rs):

  python3 packaging/hot_functions.py name BINARY MAP OUT DUMPS... [-- DUMPS...]
      every instruction of BINARY run in callgrind's dumps (--dump-instr=yes --compress-pos=no;
      one group of dumps per daemon, separated by --, each of which must hold some), named by
      the .text input section of lld's MAP it falls in; the sorted names written to OUT.
  python3 packaging/hot_functions.py coverage LIST MAP
      one line for bench/footprint.sh: how many of LIST's names MAP's build has.
"""
import bisect
import re
import sys

# rustc emits one section per function, named ".text.<mangled symbol>", with these prefixes
# for LLVM's hot and cold splitting.
PREFIXES = ("unlikely.", "hot.", "startup.", "exit.")


def text_sections(linker_map):
    """(start, end, symbol) of every .text input section in lld's map: VMA, LMA, size,
    alignment, then "file:(.text.<symbol>)"."""
    sections = []
    for line in open(linker_map):
        f = line.split(None, 4)
        if len(f) != 5 or ":(.text." not in f[4]:
            continue
        name = f[4].rstrip().rsplit(":(.text.", 1)[1].rstrip(")")
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        sections.append((int(f[0], 16), int(f[0], 16) + int(f[2], 16), name))
    return sorted(sections)


def instructions(binary, dumps):
    """Addresses, relative to BINARY (as callgrind gives them), of its instructions run."""
    seen = set()
    for dump in dumps:
        # "ob=(3) /path" or "cob=(3) /path" names object 3 (one table for both), "ob=(3)" and
        # "cob=(3)" refer to it; ob= says whose code the position lines that follow are.
        names, current = {}, None
        for line in open(dump):
            m = re.match(r"(c?)ob=\((\d+)\) ?(.*)", line.rstrip("\n"))
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3)
                if not m.group(1):
                    current = names.get(m.group(2))
            elif line.startswith("0x") and current == binary:
                seen.add(int(line.split()[0], 16))
    return seen


def name(binary, linker_map, out, dumps):
    seen = set()
    groups = " ".join(dumps).split(" -- ")
    for group in groups:
        found = instructions(binary, group.split())
        if not found:
            sys.exit(f"no instruction of {binary} in {group}: callgrind's output is not as expected")
        seen |= found
    sections = text_sections(linker_map)
    starts = [s[0] for s in sections]
    hot = set()
    for a in seen:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < sections[i][1]:
            hot.add(sections[i][2])
    with open(out, "w") as f:
        f.write("".join(h + "\n" for h in sorted(hot)))
    print(f"{len(seen)} instructions of {binary} run, {len(sections)} .text sections in the map, {len(hot)} functions", file=sys.stderr)


def coverage(listed, linker_map):
    names = [l.strip() for l in open(listed) if l.strip() and not l.startswith("#")]
    have = {s[2] for s in text_sections(linker_map)}
    found = sum(n in have for n in names)
    stale = "" if found >= 0.9 * len(names) else " (packaging/hot-functions.sh makes the list again)"
    print(f"  layout         {found} of the {len(names)} functions of {listed} are in this build{stale}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["name"] and len(sys.argv) >= 6:
        name(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif sys.argv[1:2] == ["coverage"] and len(sys.argv) == 4:
        coverage(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
