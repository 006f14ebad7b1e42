"""
Summarise a profile of collapsed stacks (py-spy's C{--format raw}): the
functions where the time goes, by own time and by inclusive time, leaving
out the samples of threads that wait.

    py-spy record -p PID -d 8 --format raw -o put.txt    # while wrk runs
    python benchmarks/stacks.py put.txt [--top 25] [--under FUNCTION]
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Dict, List, Tuple

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frames(stack: str) -> List[str]:
    """The frames of one stack, outermost first, as 'function (file)'."""
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame.strip())
        if m is None:
            out.append(frame.strip())
            continue
        path = m.group("file")
        for marker in ("site-packages/", "lib_pypy/", "lib-python/", "/work/main/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        out.append("%s (%s)" % (m.group("func"), path))
    return out


#: Leaf frames of a thread that waits: the reactor in epoll, idle workers.
IDLE = ("EPollReactor.doPoll ", "Condition.wait ", "Event.wait ")


def summarise(lines: List[str], under: str = "") -> Tuple[int, Dict[str, int], Dict[str, int]]:
    """
    Samples, and the samples in each function (own and inclusive), of the
    stacks through C{under} (all when empty); waiting threads are left out.
    """
    total = 0
    own: Dict[str, int] = collections.Counter()
    inclusive: Dict[str, int] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        fs = frames(stack)
        if under:
            at = next((i for i, f in enumerate(fs) if f.startswith(under + " ")), None)
            if at is None:
                continue
            fs = fs[at:]
        if fs[-1].startswith(IDLE):
            continue
        n = int(count)
        total += n
        own[fs[-1]] += n
        for f in set(fs):
            inclusive[f] += n
    return total, own, inclusive


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", default="", help="only stacks through this function")
    options = parser.parse_args(argv)
    with open(options.profile) as f:
        total, own, inclusive = summarise(f.readlines(), options.under)
    if not total:
        print("no samples")
        return
    print("%d samples%s" % (total, " under " + options.under if options.under else ""))
    for title, table in (("own time", own), ("inclusive time", inclusive)):
        print("\n%s:" % (title,))
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:options.top]:
            print("  %5.1f%%  %s" % (100.0 * n / total, name))


if __name__ == "__main__":
    main(sys.argv[1:])
