#!/usr/bin/env python3
"""What a process's live heap gained between two instants, by allocation site.

heaptrack's own tools show the peak or the total; this answers "what grows while the calls
are up" (docs/benchmarks.md, "Memory per active call", eighth session). Input: heaptrack's
interpreted trace, decompressed (`zstd -dc heaptrack.X.zst > trace.txt`). Its lines used here:
  s <len> <string>          interned string (1-based)
  i <ip> <module> [<fn> <file> <line> [<fn> <file> <line>]...]   instruction pointer (1-based)
  t <ip index> <parent trace index>                             stack trace node (1-based)
  a <size> <trace index>    allocation info (0-based); '+'/'-' lines name one
  + <info> / - <info>       an allocation / a free
  c <ms>                    timestamp; R <pages> resident pages
All numbers are hexadecimal.

usage: heaptrack_delta.py TRACE FROM_MS TO_MS [CALLS]
Prints RSS every 2 s, then the live-heap change between the two instants per allocation
site (the three innermost frames outside std/alloc), divided by CALLS (default 1).
"""

import collections
import re
import sys

SKIP = re.compile(
    r"^(alloc::|core::|std::|_RNv|__rust|hashbrown|<alloc|<core|malloc|realloc|calloc"
    r"|tokio::sync::mpsc|<hashbrown|_\$LT\$alloc|alloc\.\.)"
)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    strings, ips, traces, infos = [None], [None], [(0, 0)], []
    live = collections.Counter()
    snapshots = {}
    rss = []
    now = 0
    with open(path, encoding="utf-8", errors="replace") as trace:
        for line in trace:
            kind, rest = line[:1], line[2:].rstrip("\n")
            if kind == "+":
                live[int(rest, 16)] += 1
            elif kind == "-":
                live[int(rest, 16)] -= 1
            elif kind == "c":
                now = int(rest, 16)
                for instant in (start, end):
                    if instant not in snapshots and now >= instant:
                        snapshots[instant] = live.copy()
            elif kind == "R":
                rss.append((now, int(rest, 16) * 4096))
            elif kind == "a":
                size, node = rest.split()
                infos.append((int(size, 16), int(node, 16)))
            elif kind == "t":
                ip, parent = rest.split()[:2]
                traces.append((int(ip, 16), int(parent, 16)))
            elif kind == "i":
                ips.append(rest.split())
            elif kind == "s":
                strings.append(rest.split(" ", 1)[-1])
    for instant in (start, end):
        snapshots.setdefault(instant, live.copy())

    shown = -1
    for at, resident in rss:
        if at // 2000 != shown:
            shown = at // 2000
            print(f"t={at / 1000:6.1f}s rss={resident / 2**20:6.1f} MiB")

    def frames(node):
        names = []
        while node:
            ip_index, node = traces[node]
            fields = ips[ip_index]
            if len(fields) < 3:
                names.append(fields[0])
                continue
            # The function, then any inlined ones (triples of function, file, line).
            for k in range(2, len(fields) - 2, 3):
                names.append(strings[int(fields[k], 16)])
        return [re.sub(r"::h[0-9a-f]{16}$", "", name) for name in names]

    by_site = collections.Counter()
    for index, (size, node) in enumerate(infos):
        change = (snapshots[end][index] - snapshots[start][index]) * size
        if change:
            inner = [f for f in frames(node) if not SKIP.search(f)]
            by_site[" < ".join(inner[:3])] += change
    total = sum(by_site.values())
    print(f"live heap change {total / 1024 / calls:.2f} KiB per call, {start} → {end} ms")
    for site, change in by_site.most_common(25):
        print(f"{change / 1024 / calls:8.2f} KiB  {site[:220]}")


if __name__ == "__main__":
    main()
