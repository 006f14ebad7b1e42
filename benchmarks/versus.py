"""
Kaf side by side with the Go version it replaces, in one run.

    python benchmarks/versus.py [--python PATH ...] [--runs N] [--json FILE]

Builds the Go version from ../shared/peers/gokaf/kaf.go (--go-source) with
``go build`` (Debian: apt-get install -y golang-go) into a temporary
folder, and runs every case against it, against Kaf under each --python
(``--fsync always``, Kaf's default, and ``never`` where the case says) and
against the parser floor of benchmarks/hfloor.py under each --python.
Every round of a case starts a fresh server of each peer in turn (Go, Kaf
CPython, Kaf PyPy, ...) so that all see the machine in the same state, warms
it up and measures it; the table gives the median of the rounds and the
ratio to Go.  HTTP load is wrk with two threads, as run.py's Lua scripts.

Cases:
  put c64         put 100 B, one log, 64 connections
  put 8logs c64   put 100 B over 8 logs, 64 connections
                  (both also beside the floor with group commit, "floor ...
                  group": each log fsynced by one thread at a time, the
                  puts written before an fsync answered after it)
  put c1 never    put 100 B, 1 connection, Kaf with --fsync never, beside the
                  floor (one connection is bound by the loopback round trip)
  put c1 always   put 100 B, 1 connection, Kaf with --fsync always, beside
                  1 / the latency of a 100 B append and fsync in the same folder
                  and the floor with an fsync before each answer
  start-up, RSS   a 1,000,000 x 100 B log (--messages)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import clients
import run

HERE = os.path.dirname(os.path.abspath(__file__))
HFLOOR = os.path.join(HERE, "hfloor.py")
GO_SOURCE = os.path.join(HERE, "..", "..", "shared", "peers", "gokaf", "kaf.go")


def build_go(source: str, work: str) -> Tuple[Optional[str], str]:
    """The Go version built into C{work}, or None and why not."""
    go = shutil.which("go")
    if go is None:
        return None, "go is not installed (Debian: apt-get install -y golang-go)"
    if not os.path.exists(source):
        return None, "no Go source at %s" % (source,)
    folder = os.path.join(work, "gokaf")
    os.makedirs(folder)
    shutil.copy(source, os.path.join(folder, "kaf.go"))
    env = dict(os.environ, GOPATH=os.path.join(work, "gopath"), GOFLAGS="-mod=mod",
               GOCACHE=os.path.join(work, "gocache"), GO111MODULE="on")
    for argv in ([go, "mod", "init", "gokaf"], [go, "build", "-o", "gokaf", "."]):
        done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return None, "%s failed: %s" % (" ".join(argv[:2]), done.stderr.strip()[-500:])
    return os.path.join(folder, "gokaf"), ""


class Peer:
    """One column of the table: how to make a fresh server of it."""

    def __init__(self, label: str, make: Callable[[], run.Server]) -> None:
        self.label = label
        self.make = make


def go_server(settings: run.Settings, python: run.Python, binary: str) -> run.Server:
    server = run.Server(settings, python, "go")
    server.argv = [binary, "127.0.0.1:%d" % (server.port,), server.data]
    server.probe = "/get/ready?from=1"
    return server


def hfloor_server(settings: run.Settings, python: run.Python, mode: str = ""
                  ) -> run.Server:
    """The floor; C{mode}: "" (no fsync), "fsync" (each put) or "group" (group commit)."""
    server = run.Server(settings, python, "hfloor")
    server.argv = [python.path, HFLOOR, "--port", str(server.port), "--data", server.data,
                   "--backlog", str(run.BACKLOG)] + (["--" + mode] if mode else [])
    server.probe = "/ready"
    return server


def kaf_server(settings: run.Settings, python: run.Python, fsync: str) -> run.Server:
    return run.Server(settings, python, "kaf", fsync=fsync)


def fsync_latency(folder: str, n: int = 300) -> float:
    """The median seconds of a 100 B append and fsync, in C{folder}."""
    path = os.path.join(folder, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 100)
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times)


class Case:
    def __init__(self, key: str, unit: str, peers: List[Peer],
                 measure: Callable[[run.Server], Dict[str, float]],
                 higher_is_better: bool = True) -> None:
        self.key = key
        self.unit = unit
        self.peers = peers
        self.measure = measure
        self.higher_is_better = higher_is_better
        self.samples: Dict[str, List[Dict[str, float]]] = {p.label: [] for p in peers}
        self.errors: Dict[str, str] = {}

    def median(self, label: str, field: str = "value") -> Optional[float]:
        values = [s[field] for s in self.samples.get(label, []) if field in s]
        return statistics.median(values) if values else None


def wrk_measure(bench: run.Bench, driver: run.WrkDriver) -> Callable[[run.Server],
                                                                     Dict[str, float]]:
    def measure(server: run.Server) -> Dict[str, float]:
        server.start()
        driver.warm(bench, server)
        return driver.measure(bench, server)
    return measure


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[],
                        help="a Python with Kaf installed (repeatable; default: this one)")
    parser.add_argument("--go-source", default=GO_SOURCE)
    parser.add_argument("--runs", type=int, default=3, help="rounds a case (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a wrk run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000000)
    parser.add_argument("--cases", default="put c64,put 8logs c64,put c1 never,"
                                           "put c1 always,start-up")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--pypy-nursery", default="32MB")
    parser.add_argument("--json", default="kaf-versus.json")
    options = parser.parse_args(argv)
    wanted = [c.strip() for c in options.cases.split(",") if c.strip()]
    pythons = [run.Python(p) for p in (options.python or [sys.executable])]
    work = tempfile.mkdtemp(prefix="kaf-versus-")
    settings = run.Settings(argparse.Namespace(
        quick=False, runs=options.runs, duration=options.duration, warmup=options.warmup,
        trials=None, messages=options.messages, profile=None, pin=False,
        pypy_nursery=options.pypy_nursery), work)
    run.WRK_THREADS = options.threads
    bench = run.Bench(settings, pythons)
    try:
        binary, why = build_go(options.go_source, work)
        if binary is None:
            run.say("the Go version is not measured: " + why)
        first = pythons[0]

        def peers(fsyncs: Tuple[str, ...], floors: Tuple[str, ...] = ("",)) -> List[Peer]:
            out = []
            if binary is not None:
                out.append(Peer("go", lambda: go_server(settings, first, binary)))
            for p in pythons:
                for fsync in fsyncs:
                    out.append(Peer("kaf %s %s" % (p.label, fsync),
                                    lambda p=p, fsync=fsync: kaf_server(settings, p, fsync)))
                for mode in floors:
                    label = "floor %s group" % (p.label,) if mode == "group" else (
                        "floor %s" % (p.label,))
                    out.append(Peer(label, lambda p=p, mode=mode: hfloor_server(
                        settings, p, mode)))
            return out

        def wrk_case(key: str, connections: int, script: str, args: List[str],
                     fsyncs: Tuple[str, ...], floors: Tuple[str, ...] = ("",)) -> Case:
            driver = run.WrkDriver("/put/v", script, args, connections)
            return Case(key, "req/s", peers(fsyncs, floors),
                        wrk_measure(bench, driver))

        cases: List[Case] = []
        latency: List[float] = []
        if "put c64" in wanted:
            cases.append(wrk_case("put c64", 64, "put.lua", ["100"], ("always", "never"),
                                  ("", "group")))
        if "put 8logs c64" in wanted:
            cases.append(wrk_case("put 8logs c64", 64, "put_logs.lua", ["100", "8"],
                                  ("always",), ("", "group")))
        if "put c1 never" in wanted:
            cases.append(wrk_case("put c1 never", 1, "put.lua", ["100"], ("never",)))
        if "put c1 always" in wanted:
            # The floor fsyncs each put here: one connection's ceiling with fsyncs.
            cases.append(wrk_case("put c1 always", 1, "put.lua", ["100"], ("always",),
                                  ("fsync",)))
        startup: Optional[Tuple[Case, Case]] = None
        if "start-up" in wanted:
            n = options.messages
            template = bench.log_file(n)
            got: Dict[int, Dict[str, float]] = {}

            def start(server: run.Server) -> Dict[str, float]:
                server.add_log("b6", template)
                seconds = server.start("/get/b6?from=%d" % (n,), timeout=120)
                status = clients.proc_status(server.pid)
                got[id(server)] = {"value": status["VmRSS"] / 1024.0}
                return {"value": seconds}

            # The RSS of the same start: filled in by start-up's runs.
            ps = peers(("always",), ())
            up = Case("start-up", "s", ps, start, higher_is_better=False)
            rss = Case("RSS", "MB", ps, lambda s: {}, higher_is_better=False)
            startup = (up, rss)
            cases.append(up)

        for case in list(cases):
            for _ in range(options.runs):
                for peer in case.peers:
                    if peer.label in case.errors:
                        continue
                    if case.key == "put c1 always" and peer is case.peers[0]:
                        latency.append(fsync_latency(settings.work))
                    try:
                        with peer.make() as server:
                            case.samples[peer.label].append(case.measure(server))
                            if startup is not None and case is startup[0]:
                                startup[1].samples[peer.label].append(got.pop(id(server)))
                    except Exception as e:  # one broken peer must not stop the others
                        case.errors[peer.label] = "%s: %s" % (type(e).__name__, e)
            run.say(format_case(case))
            if startup is not None and case is startup[0]:
                run.say(format_case(startup[1]))
                cases.append(startup[1])
                startup = None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fsync_rate = 1.0 / statistics.median(latency) if latency else None
    if fsync_rate is not None:
        run.say("1 / fsync latency (100 B append + fsync, median): %.0f/s" % (fsync_rate,))
    verdicts = targets(cases, pythons, fsync_rate)
    for v in verdicts:
        run.say("%-34s %-28s %-8s %s" % (v["case"], v["target"],
                                         "-" if v["value"] is None else "%.2f" % v["value"],
                                         {True: "ok", False: "MISSED", None: "-"}[v["ok"]]))
    with open(options.json, "w") as f:
        json.dump({"cases": [{"key": c.key, "unit": c.unit, "samples": c.samples,
                              "errors": c.errors} for c in cases],
                   "fsync_rate": fsync_rate, "targets": verdicts,
                   "pythons": [p.describe() for p in pythons]}, f, indent=1)
    return 1 if any(c.errors for c in cases) else 0


def format_case(case: Case) -> str:
    go = case.median("go")
    cells = []
    for peer in case.peers:
        if peer.label in case.errors:
            cells.append("%s ERROR %s" % (peer.label, case.errors[peer.label][:120]))
            continue
        m = case.median(peer.label)
        ratio = " (%.2fx)" % (m / go,) if go and m is not None and peer.label != "go" else ""
        cells.append("%s %s%s" % (peer.label, run.number(m, case.unit), ratio))
    return "%-14s [%s] %s" % (case.key, case.unit, " | ".join(cells))


def targets(cases: List[Case], pythons: List[run.Python], fsync_rate: Optional[float]
            ) -> List[Dict[str, Any]]:
    """Each target of the comparison with Go: ratio to Go (or to the fsync rate)."""
    by_key = {c.key: c for c in cases}
    wants = {  # case, Kaf's peer suffix: (CPython, PyPy) least ratio, or most for s/MB
        ("put c64", "always"): (0.75, 1.5), ("put 8logs c64", "always"): (0.75, 1.5),
        ("put c1 never", "never"): (0.6, 1.2), ("start-up", "always"): (1.0, 1.0),
        ("RSS", "always"): (1.0, 2.5),
    }
    out = []
    for p in pythons:
        pypy = p.label == "pypy"
        for (key, fsync), limits in wants.items():
            case = by_key.get(key)
            if case is None:
                continue
            go, kaf = case.median("go"), case.median("kaf %s %s" % (p.label, fsync))
            value = kaf / go if go and kaf else None
            limit = limits[1 if pypy else 0]
            ok = None if value is None else (
                value >= limit if case.higher_is_better else value <= limit)
            out.append({"case": "%s kaf %s %s" % (key, p.label, fsync),
                        "target": "%s %.2f x Go" % ("≥" if case.higher_is_better else "≤",
                                                    limit),
                        "value": value, "ok": ok})
        for key in ("put c64", "put 8logs c64"):
            # Against the floor that fsyncs as Kaf does: the ceiling of group commit here.
            case = by_key.get(key)
            if case is not None:
                kaf = case.median("kaf %s always" % (p.label,))
                floor = case.median("floor %s group" % (p.label,))
                out.append({"case": "%s kaf %s always" % (key, p.label),
                            "target": "(x the floor with group commit)",
                            "value": kaf / floor if kaf and floor else None, "ok": None})
        case = by_key.get("put c1 always")
        if case is not None:
            kaf = case.median("kaf %s always" % (p.label,))
            value = kaf / fsync_rate if kaf and fsync_rate else None
            out.append({"case": "put c1 always kaf %s" % (p.label,),
                        "target": "≥ 0.70 x 1/fsync latency", "value": value,
                        "ok": None if value is None else value >= 0.7})
            floor = case.median("floor %s" % (p.label,))
            out.append({"case": "put c1 always floor %s" % (p.label,),
                        "target": "(the floor, fsync a put)",
                        "value": floor / fsync_rate if floor and fsync_rate else None,
                        "ok": None})
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
