"""
Kaf's benchmarks, one command: start Kaf (and, beside it, the floor of
benchmarks/floor.py) on loopback, drive it, print a table and write JSON.

    python benchmarks/run.py [--quick] [--cases B1,B4] [--python PATH ...]
                             [--json FILE] [--pin] [--profile DIR]

Every figure is the median of --runs runs (min–max beside it), each run
against a fresh server process with a fresh data folder, and every case is
run against the floor in the same run: a bare twisted.web resource under
the same Python, so that the ratio Kaf/floor holds on any machine.

HTTP load comes from wrk (Debian: apt-get install -y wrk) with the Lua
scripts in benchmarks/lua/, one wrk thread; the single consumer of B5 and
the long polls of B7 are this script's own raw-socket clients
(benchmarks/clients.py).  The CPU time of server and client is measured
in every run and reported, so a load generator that is the bottleneck
shows, and so is each figure per second of server CPU time, which holds
when other programs take CPU time.  With --pin the server runs on one CPU
and every client on another (taskset): steadier on an idle machine, but
on a busy one the pinned server waits for its CPU while the other is
free (B5 ran 10 x slower pinned on a machine with a load of 5).

Kaf listens with --listen tcp:PORT:interface=127.0.0.1:backlog=1024, and
the floor with the same backlog: Twisted's default of 50 makes 64
connections opened at once wait a second for their SYN to be sent again,
which is not what the runs measure.

Cases:
  B1  put 100 B, 1 and 64 connections, one log, --fsync never and always
  B2  put 100 B over 8 logs, 64 connections
  B3  batch put: ?batch=lines, 1,000 x 100 B a request, 8 connections
  B4  catch-up get: 64 connections, random 'from', default batch (msgs/s)
  B5  one consumer reading a 1,000,000-message log from 1 to the end
  B6  start-up time and RSS with a 1,000,000 x 100 B log
  B7  long-poll wake latency, p50 and p99 (put sent -> message received)
Puts run with --fsync never unless the case says otherwise.  B1, B2, B4
and B5 run under every --python given, the others under the first.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Tuple

import clients
import stacks

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "lua")
FLOOR = os.path.join(HERE, "floor.py")
ALL_CASES = ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
#: The cases run under every --python; the others under the first only.
EVERY_PYTHON = {"B1", "B2", "B4", "B5"}

#: Runs twistd from any Python that has Twisted and Kaf installed.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

#: Twisted listens with a backlog of 50: 64 connections opened at once
#: overflow it, and the last ones wait a second for the SYN to be sent
#: again.  The runs measure the steady state, so both servers get more.
BACKLOG = 1024

#: Servers run as deployed: with their modules' byte code cached (a shell
#: may set PYTHONDONTWRITEBYTECODE, which makes every start compile Kaf).
SERVER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

#: Requests that PyPy's JIT needs before Kaf runs at full speed (measured:
#: the rate of B1 stops growing after 10,000-16,000).
WARM_PYPY_REQUESTS = 20000

#: wrk's threads (benchmarks/versus.py runs two, as the Go comparison did).
WRK_THREADS = 1

INSTALL_WRK = """wrk, the HTTP load generator, is missing.  On Debian or Ubuntu:
    apt-get update && apt-get install -y wrk"""


class Settings:
    """How long and how often to measure, and where things run."""

    def __init__(self, options: argparse.Namespace, work: str) -> None:
        quick = options.quick
        self.runs: int = options.runs
        self.duration: float = options.duration or (2.0 if quick else 5.0)
        #: Warm-up: one-second wrk runs, at least this many, until the rate
        #: stops growing, at most max_warmup.
        self.warmup = int(options.warmup if options.warmup is not None else (
            1 if quick else 3))
        self.max_warmup = max(self.warmup, 20 if quick else 40)
        self.trials: int = options.trials or (200 if quick else 1000)
        self.messages: int = options.messages
        #: A folder for py-spy profiles of Kaf under CPython, or None.
        self.profile: Optional[str] = options.profile
        self.py_spy = find_py_spy()
        self.work = work
        cpus = sorted(os.sched_getaffinity(0))
        self.pin = options.pin and len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu = cpus[0]
        self.client_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
        #: PyPy's young-object space for every PyPy server, Kaf and floor
        #: alike (README.rst, PyPy), unless the environment sets it.
        self.pypy_nursery: str = os.environ.get("PYPY_GC_NURSERY") or options.pypy_nursery

    def server_prefix(self) -> List[str]:
        return ["taskset", "-c", str(self.server_cpu)] if self.pin else []

    def client_prefix(self) -> List[str]:
        return ["taskset", "-c", str(self.client_cpu)] if self.pin else []


def find_py_spy() -> str:
    return shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")


class Python:
    """A Python that runs the servers: its path and what it is."""

    def __init__(self, path: str) -> None:
        self.path = path
        probe = ("import platform, twisted, klein, kaf; print(platform.python_implementation(),"
                 " platform.python_version(), twisted.__version__, klein.__version__)")
        try:
            out = subprocess.run([path, "-c", probe], check=True, capture_output=True,
                                 text=True, timeout=120).stdout.split()
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise SystemExit(
                "%s cannot run Kaf: %s\nInstall it there first, e.g.\n"
                "    %s -m pip install --config-settings editable_mode=compat -e %s"
                % (path, detail.strip().splitlines()[-1] if detail.strip() else e,
                   path, os.path.dirname(HERE)))
        self.implementation, self.version, self.twisted, self.klein = out
        self.label = "pypy" if self.implementation == "PyPy" else self.implementation.lower()

    def describe(self) -> Dict[str, str]:
        return {"path": self.path, "implementation": self.implementation,
                "version": self.version, "twisted": self.twisted, "klein": self.klein}


# -- servers --------------------------------------------------------------------

class Server:
    """Kaf or the floor, as a subprocess on a free loopback port."""

    def __init__(self, settings: Settings, python: Python, kind: str, fsync: str = "never",
                 log_file: Optional[str] = None, messages: int = 0) -> None:
        self.settings = settings
        self.python = python
        self.kind = kind
        self.data = tempfile.mkdtemp(prefix="%s-" % (kind,), dir=settings.work)
        self.port = clients.free_port()
        self.output = os.path.join(settings.work, "%s-%d.out" % (kind, self.port))
        if kind == "kaf":
            self.argv = [python.path, "-c", TWISTD, "-n", "--pidfile=", "kaf",
                         "--listen", "tcp:%d:interface=127.0.0.1:backlog=%d"
                         % (self.port, BACKLOG), "--data", self.data,
                         "--fsync", fsync]
            self.probe = "/logs"
        else:
            self.argv = [python.path, FLOOR, "--port", str(self.port), "--data", self.data,
                         "--backlog", str(BACKLOG)]
            if log_file is not None:
                self.argv += ["--source", log_file, "--messages", str(messages)]
            self.probe = "/ready"
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.started = 0.0

    def add_log(self, name: str, template: str) -> None:
        """Put a copy of a log file in the data folder (before start)."""
        shutil.copyfile(template, os.path.join(self.data, name))

    def start(self, probe: Optional[str] = None, timeout: float = 60.0) -> float:
        """Start and wait until C{probe} answers; return the seconds that took."""
        with open(self.output, "wb") as out:
            self.started = time.perf_counter()
            env = dict(SERVER_ENV)
            if self.python.label == "pypy" and self.settings.pypy_nursery:
                env["PYPY_GC_NURSERY"] = self.settings.pypy_nursery
            self.proc = subprocess.Popen(self.settings.server_prefix() + self.argv,
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        proc = self.proc
        try:
            clients.wait_ready(self.port, probe or self.probe, timeout,
                               lambda: proc.poll() is None)
        except clients.HTTPError as e:
            raise clients.HTTPError("%s did not start: %s\n%s" % (self.kind, e, self.tail()))
        return time.perf_counter() - self.started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return clients.cpu_seconds(self.pid)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise clients.HTTPError("%s died during the run\n%s" % (self.kind, self.tail()))

    def tail(self) -> str:
        try:
            with open(self.output, "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)
        try:
            os.unlink(self.output)
        except OSError:
            pass

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- load generators ------------------------------------------------------------

def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def wrk(settings: Settings, server: Server, path: str, script: str, args: List[str],
        connections: int, duration: float, refused_ok: bool = False) -> Dict[str, Any]:
    """
    Run wrk against C{server}; its summary plus both processes' CPU use.
    With C{refused_ok}, replies with an error status (a 503) do not fail
    the run: they are counted ("refused"), and the rate is of the others.
    """
    url = "http://127.0.0.1:%d%s" % (server.port, path)
    argv = settings.client_prefix() + [
        "wrk", "-t%d" % (min(WRK_THREADS, connections),), "-c%d" % (connections,), "-d%gs" % (duration,), "--timeout", "10s",
        "-s", os.path.join(LUA, script), url, "--"] + args
    server_cpu, client_cpu = server.cpu(), children_cpu()
    done = subprocess.run(argv, cwd=LUA, capture_output=True, text=True,
                          timeout=duration + 60)
    client_cpu = children_cpu() - client_cpu
    server_cpu = server.cpu() - server_cpu
    server.check_alive()
    lines = [line for line in done.stdout.splitlines() if line.startswith("KAF_BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError("wrk failed (%d): %s %s" % (done.returncode, done.stdout[-1000:],
                                                        done.stderr[-1000:]))
    summary = json.loads(lines[-1][len("KAF_BENCH "):])
    errors = {k: v for k, v in summary["errors"].items() if v}
    refused = errors.pop("status", 0) if refused_ok else 0
    if errors:
        raise RuntimeError("wrk saw errors %s against %s %s" % (errors, server.kind, path))
    seconds = summary["duration_us"] / 1e6
    out = {"rate": (summary["requests"] - refused) / seconds, "seconds": seconds,
           "server_cpu": server_cpu / seconds, "client_cpu": client_cpu / seconds,
           "p99_ms": summary["latency_us"]["p99"] / 1000.0}
    if refused_ok:
        out.update(requests=summary["requests"], refused=refused)
    return out


# -- measurements ------------------------------------------------------------------

#: One run's figures: "value" in the row's unit, and what else was measured.
Sample = Dict[str, Any]

class Driver(ABC):
    """How a case loads a started server: check it, warm it up, measure a run."""

    def check(self, server: Server) -> None:
        pass

    @abstractmethod
    def warm(self, bench: "Bench", server: Server) -> List[float]:
        """Load the server until its rate stops growing; the rates seen."""

    @abstractmethod
    def measure(self, bench: "Bench", server: Server) -> Sample:
        """One measured run."""


class WrkDriver(Driver):
    """HTTP load from wrk with one of the Lua scripts."""

    def __init__(self, path: str, script: str, args: List[str], connections: int,
                 per_request: int = 1, check: Optional[Callable[[Server], None]] = None
                 ) -> None:
        self.path = path
        self.script = script
        self.args = args
        self.connections = connections
        self.per_request = per_request
        self._check = check

    def check(self, server: Server) -> None:
        if self._check is not None:
            self._check(server)

    def run(self, bench: "Bench", server: Server, seconds: float) -> Sample:
        return wrk(bench.settings, server, self.path, self.script, self.args,
                   self.connections, seconds)

    def warm(self, bench: "Bench", server: Server) -> List[float]:
        """
        One-second runs, at least --warmup of them, until the rate stops
        growing: neither of the last two runs was more than 3% faster than
        every run before it.  PyPy's JIT compiles the hot paths after some
        thousands of requests, however long they take on a busy machine:
        under PyPy the warm-up also lasts until WARM_PYPY_REQUESTS were
        answered.  (A rule that looked at one run alone stopped PyPy's
        warm-up during a dip, and measured a server still compiling.)
        """
        s = bench.settings
        least = WARM_PYPY_REQUESTS if server.python.label == "pypy" else 0
        rates: List[float] = []
        while len(rates) < s.max_warmup:
            rates.append(self.run(bench, server, 1.0)["rate"])
            if (len(rates) >= max(s.warmup, 3) and sum(rates) >= least
                    and rates[-1] <= 1.03 * max(rates[:-1])
                    and rates[-2] <= 1.03 * max(rates[:-2])):
                break
        return rates

    def measure(self, bench: "Bench", server: Server) -> Sample:
        profiler = bench.profiler(server, bench.settings.duration)
        result = self.run(bench, server, bench.settings.duration)
        if profiler is not None:
            profiler.wait()
        result["value"] = result["rate"] * self.per_request
        return with_efficiency(result)


class ConsumerDriver(Driver):
    """B5: one client reads the whole log, following X-Kaf-LastMsgSent."""

    def __init__(self, log: str, messages: int) -> None:
        self.log = log
        self.messages = messages

    def warm(self, bench: "Bench", server: Server) -> List[float]:
        """Whole passes until one is not faster than the one before (at most 6)."""
        rates: List[float] = []
        while len(rates) < 6:
            rates.append(self.measure(bench, server)["value"])
            if len(rates) >= 2 and rates[-1] <= 1.05 * rates[-2]:
                break
        return rates

    def measure(self, bench: "Bench", server: Server) -> Sample:
        n = self.messages
        profiler = bench.profiler(server, 3)
        server_cpu, client_cpu = server.cpu(), self_cpu()
        t = time.perf_counter()
        messages, requests, size = clients.consume(server.port, self.log, n)
        seconds = time.perf_counter() - t
        server_cpu = server.cpu() - server_cpu
        client_cpu = self_cpu() - client_cpu
        if profiler is not None:
            profiler.wait()
        server.check_alive()
        if messages != n:
            raise clients.HTTPError("read %d messages of %d" % (messages, n))
        return with_efficiency({"value": n / seconds, "seconds": seconds,
                                "requests": requests, "bytes": size,
                                "server_cpu": server_cpu / seconds,
                                "client_cpu": client_cpu / seconds})


def whole_batch(n: int) -> Callable[[Server], None]:
    """B4's check: a reply holds a whole default batch, so msgs = 1000 x requests."""

    def check(server: Server) -> None:
        c = clients.Connection(server.port)
        try:
            status, headers, body = c.request("GET", "/get/b4?from=%d" % (n - 999,))
        finally:
            c.close()
        if status != 200 or headers.get(b"x-kaf-lastmsgsent") != b"%d" % (n,):
            raise clients.HTTPError("get answered %d %r" % (status, headers))

    return check




class Row:
    """One line of the table: Kaf's samples and the floor's."""

    def __init__(self, key: str, title: str, python: Python, unit: str,
                 higher_is_better: bool = True) -> None:
        self.key = key
        self.title = title
        self.python = python
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.kaf: List[Sample] = []
        self.floor: List[Sample] = []
        self.error: Optional[str] = None
        self.load: Tuple[float, float, float] = (0.0, 0.0, 0.0)
        #: The warm-up runs' figures, by server.
        self.warmup: Dict[str, List[List[float]]] = {}
        #: The uncounted run under the profiler, if any.
        self.profiled: Optional[Sample] = None

    def median(self, which: str = "kaf", field: str = "value") -> Optional[float]:
        samples = getattr(self, which)
        return statistics.median([s[field] for s in samples]) if samples else None

    def ratio(self, field: str = "value") -> Optional[float]:
        """Kaf's median over the floor's, of C{field}."""
        if not all(field in s for s in self.kaf + self.floor):
            return None
        kaf, floor = self.median("kaf", field), self.median("floor", field)
        if kaf is None or not floor:
            return None
        return kaf / floor

    def to_json(self) -> Dict[str, Any]:
        def summary(samples: List[Sample]) -> Optional[Dict[str, Any]]:
            if not samples:
                return None
            values = [s["value"] for s in samples]
            return {"median": statistics.median(values), "min": min(values),
                    "max": max(values), "runs": samples}

        return {"key": self.key, "title": self.title, "python": self.python.label,
                "unit": self.unit, "higher_is_better": self.higher_is_better,
                "kaf": summary(self.kaf), "floor": summary(self.floor),
                "ratio": self.ratio(), "ratio_per_cpu": self.ratio("per_cpu"),
                "error": self.error, "load": list(self.load), "warmup": self.warmup,
                "profiled_run": self.profiled}


class RowPlan:
    """How to measure one row: its servers, its driver, whose floor it shares."""

    def __init__(self, row: Row, make_kaf: Callable[[], Server],
                 make_floor: Callable[[], Server], driver: "Driver",
                 floor_key: Optional[str] = None) -> None:
        self.row = row
        self.make_kaf = make_kaf
        self.make_floor = make_floor
        self.driver = driver
        self.floor_key = floor_key
        self.measures_floor = False


class Bench:
    """Runs the cases and collects the rows."""

    def __init__(self, settings: Settings, pythons: List[Python]) -> None:
        self.settings = settings
        self.pythons = pythons
        self.rows: List[Row] = []
        self._floor_cache: Dict[Tuple[str, str], List[Sample]] = {}
        self._logs: Dict[int, str] = {}
        self._profile_to: Optional[str] = None

    def log_file(self, messages: int) -> str:
        """A log of C{messages} x 100 B, written once in the disk format."""
        if messages not in self._logs:
            path = os.path.join(self.settings.work, "template-%d" % (messages,))
            t = time.perf_counter()
            size = clients.write_log(path, messages, 100)
            say("  (wrote a %d-message log of %.0f MB in %.1f s)"
                % (messages, size / 1e6, time.perf_counter() - t))
            self._logs[messages] = path
        return self._logs[messages]

    def row(self, row: Row, make_kaf: Callable[[], Server], make_floor: Callable[[], Server],
            driver: "Driver", floor_key: Optional[str] = None) -> Row:
        """One row on its own: see L{rows_together}."""
        self.rows_together([RowPlan(row, make_kaf, make_floor, driver, floor_key)])
        return row

    def rows_together(self, plans: List["RowPlan"]) -> None:
        """
        --runs runs of every row, the rows taking turns run by run, each run
        with a fresh Kaf and a fresh floor, warmed up and measured in turns.

        A fresh process a run, because under PyPy two processes of one
        program differ by up to a third in speed (the JIT compiles what was
        hot first): one process would measure its own luck --runs times.
        Rows in turns, so that rows compared with each other (fsync always
        and never) see the machine in the same state.  Rows that share a
        floor_key share the floor's runs: the first of them measures it.
        """
        owners: Dict[str, RowPlan] = {}
        for plan in plans:
            row = plan.row
            self.rows.append(row)
            row.warmup = {"kaf": [], "floor": []}
            key = plan.floor_key
            if key is not None:
                cached = self._floor_cache.get((key, row.python.path))
                if cached is not None:
                    row.floor = cached
                elif key in owners:
                    row.floor = owners[key].row.floor  # the same list, filled by its owner
                else:
                    owners[key] = plan
                    plan.measures_floor = True
            else:
                plan.measures_floor = True
        for _ in range(self.settings.runs):
            for plan in plans:
                if plan.row.error is None:
                    self._one_run(plan)
        for plan in plans:
            row = plan.row
            if plan.measures_floor and plan.floor_key is not None and row.error is None:
                self._floor_cache[(plan.floor_key, row.python.path)] = row.floor
            if self.settings.profile and row.python.implementation == "CPython" \
                    and row.error is None:
                try:
                    with plan.make_kaf() as kaf:
                        kaf.start()
                        plan.driver.warm(self, kaf)
                        self.profiled_run(row, lambda: plan.driver.measure(self, kaf))
                except Exception as e:
                    say("  (profile of %s failed: %s)" % (row.key, e))
            row.load = os.getloadavg()
            say(format_row(row))

    def _one_run(self, plan: "RowPlan") -> None:
        row, driver = plan.row, plan.driver
        try:
            with contextlib.ExitStack() as stack:
                kaf = stack.enter_context(plan.make_kaf())
                kaf.start()
                driver.check(kaf)
                floor = None
                if plan.measures_floor:
                    floor = stack.enter_context(plan.make_floor())
                    floor.start()
                    driver.check(floor)
                row.warmup["kaf"].append(driver.warm(self, kaf))
                if floor is not None:
                    row.warmup["floor"].append(driver.warm(self, floor))
                row.kaf.append(driver.measure(self, kaf))
                if floor is not None:
                    row.floor.append(driver.measure(self, floor))
        except Exception as e:  # one broken case must not stop the others
            row.error = "%s: %s" % (type(e).__name__, e)

    def profiled_run(self, row: Row, measure: Callable[[], Sample]) -> None:
        """One more run of Kaf under py-spy, not counted; its summary beside it."""
        folder = self.settings.profile
        assert folder is not None
        name = row.key.replace(" ", "_")
        self._profile_to = os.path.join(folder, name + ".stacks")
        try:
            row.profiled = measure()
        except Exception as e:
            say("  (profile of %s failed: %s)" % (row.key, e))
            return
        finally:
            self._profile_to = None
        with open(os.path.join(folder, name + ".stacks")) as f:
            total, own, inclusive = stacks.summarise(f.readlines(), "ReactorBase.mainLoop")
        with open(os.path.join(folder, name + ".txt"), "w") as out:
            out.write("%s: %d samples in the reactor loop, not waiting\n" % (row.key, total))
            for title, table in (("own time", own), ("inclusive time", inclusive)):
                out.write("\n%s:\n" % (title,))
                for func, n in sorted(table.items(), key=lambda kv: -kv[1])[:40]:
                    out.write("  %5.1f%%  %s\n" % (100.0 * n / max(total, 1), func))

    def profiler(self, server: Server, seconds: float) -> Optional["subprocess.Popen[bytes]"]:
        """py-spy recording C{server} for C{seconds}, when this run is profiled."""
        if self._profile_to is None or server.kind != "kaf":
            return None
        return subprocess.Popen(
            [self.settings.py_spy, "record", "-p", str(server.pid), "-d",
             str(max(1, int(seconds + 0.999))), "-r", "250", "--format",
             "raw", "-o", self._profile_to], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def rows_from(self, rows: List[Row], runs: Callable[[], List[Sample]],
                  floor_runs: Callable[[], List[Sample]]) -> None:
        """Rows measured together, a fresh server a run: each call gives one sample of
        every row."""
        self.rows.extend(rows)
        try:
            for _ in range(self.settings.runs):
                for row, sample in zip(rows, runs()):
                    row.kaf.append(sample)
                for row, sample in zip(rows, floor_runs()):
                    row.floor.append(sample)
        except Exception as e:
            for row in rows:
                row.error = "%s: %s" % (type(e).__name__, e)
        for row in rows:
            row.load = os.getloadavg()
            say(format_row(row))

    # -- the cases -------------------------------------------------------------------

    def put_plan(self, key: str, title: str, python: Python, fsync: str, connections: int,
                 script: str, args: List[str], floor_key: str, per_request: int = 1
                 ) -> RowPlan:
        unit = "msgs/s" if per_request > 1 else "req/s"
        return RowPlan(Row(key, title, python, unit),
                       lambda: Server(self.settings, python, "kaf", fsync),
                       lambda: Server(self.settings, python, "floor"),
                       WrkDriver("/put/bench", script, args, connections, per_request),
                       floor_key)

    def put_row(self, *args: Any, **kwargs: Any) -> None:
        self.rows_together([self.put_plan(*args, **kwargs)])

    def b1(self, python: Python) -> None:
        # fsync never and always take turns: their ratio is a target.
        for connections in (1, 64):
            self.rows_together([
                self.put_plan("B1 c%d %s %s" % (connections, fsync, python.label),
                              "put 100 B, %d conn%s, fsync %s"
                              % (connections, "s" if connections > 1 else "", fsync),
                              python, fsync, connections, "put.lua", ["100"],
                              "put100 c%d" % (connections,))
                for fsync in ("never", "always")])

    def b2(self, python: Python) -> None:
        self.put_row("B2 8logs c64 %s" % (python.label,), "put 100 B, 8 logs, 64 conns",
                     python, "never", 64, "put_logs.lua", ["100", "8"], "put100 8logs")

    def b3(self, python: Python) -> None:
        self.put_row("B3 batch c8 %s" % (python.label,),
                     "batch=lines 1,000 x 100 B, 8 conns", python, "never", 8, "put.lua",
                     ["100", "1000"], "batch", per_request=1000)

    def kaf_with_log(self, python: Python, name: str) -> Server:
        server = Server(self.settings, python, "kaf")
        server.add_log(name, self.log_file(self.settings.messages))
        return server

    def floor_with_log(self, python: Python) -> Server:
        n = self.settings.messages
        return Server(self.settings, python, "floor", log_file=self.log_file(n), messages=n)

    def json_log_file(self, messages: int) -> str:
        """A log of C{messages} JSON objects of 100 B, written once."""
        key = -messages
        if key not in self._logs:
            path = os.path.join(self.settings.work, "template-json-%d" % (messages,))
            clients.write_log(path, messages, 100, clients.json_message)
            self._logs[key] = path
        return self._logs[key]

    def b4(self, python: Python) -> None:
        n = self.settings.messages

        def driver(fmt: Optional[str] = None) -> WrkDriver:
            return WrkDriver("/get/b4", "get.lua", [str(n), "1000"] + ([fmt] if fmt else []),
                             64, 1000, whole_batch(n))

        def json_kaf() -> Server:
            server = Server(self.settings, python, "kaf")
            server.add_log("b4", self.json_log_file(n))
            return server

        label = python.label
        floor = lambda: self.floor_with_log(python)  # noqa: E731
        # In turns, so the formats are compared on one machine state: the
        # text messages in the kaf and raw formats, JSON objects in json
        # (each checked, and sent as it is).
        self.rows_together([
            RowPlan(Row("B4 get c64 %s" % (label,), "get, 64 conns, random from",
                        python, "msgs/s"),
                    lambda: self.kaf_with_log(python, "b4"), floor, driver(), "b4"),
            RowPlan(Row("B4 raw c64 %s" % (label,), "get format=raw, 64 conns", python,
                        "msgs/s"),
                    lambda: self.kaf_with_log(python, "b4"), floor, driver("raw"), "b4"),
            RowPlan(Row("B4 json c64 %s" % (label,), "get format=json (JSON), 64 conns",
                        python, "msgs/s"),
                    json_kaf, floor, driver("json"), "b4"),
        ])

    def b5(self, python: Python) -> None:
        self.row(Row("B5 consumer %s" % (python.label,), "one consumer, from 1 to end",
                     python, "msgs/s"),
                 lambda: self.kaf_with_log(python, "b5"), lambda: self.floor_with_log(python),
                 ConsumerDriver("b5", self.settings.messages))

    def b6(self, python: Python) -> None:
        n = self.settings.messages
        template = self.log_file(n)

        def start(server: Server, probe: Optional[str]) -> List[Sample]:
            with server:
                seconds = server.start(probe)
                cpu = server.cpu()
                status = clients.proc_status(server.pid)
                if probe is not None:
                    c = clients.Connection(server.port)
                    try:
                        _, headers, _ = c.request("GET", probe)
                    finally:
                        c.close()
                    if headers.get(b"x-kaf-lastmsgsent") != b"%d" % (n,):
                        raise clients.HTTPError("the log was not loaded: %r" % (headers,))
            # CPU time to start holds when other programs take the CPU.
            return [{"value": seconds, "cpu_s": cpu, "per_cpu": cpu},
                    {"value": status["VmRSS"] / 1024.0,
                                         "peak_mb": status["VmHWM"] / 1024.0}]

        def kaf() -> List[Sample]:
            server = Server(self.settings, python, "kaf")
            server.add_log("b6", template)
            # The first answer that proves the whole log is loaded.
            return start(server, "/get/b6?from=%d&limit=1" % (n,))

        def floor() -> List[Sample]:
            return start(Server(self.settings, python, "floor"), None)

        # A first start, not counted, caches byte code and the file's pages.
        try:
            kaf()
            floor()
        except Exception:
            pass  # the counted runs report it

        self.rows_from([Row("B6 start-up %s" % (python.label,),
                            "start-up, %s x 100 B log" % (short(n),), python, "s", False),
                        Row("B6 RSS %s" % (python.label,),
                            "RSS, %s x 100 B log" % (short(n),), python, "MB",
                            False)],
                       kaf, floor)

    def b7(self, python: Python) -> None:
        trials = self.settings.trials

        def poll(server: Server) -> List[Sample]:
            with server:
                server.start()
                sent, acked = clients.long_poll_trials(server.port, "b7", trials)
                server.check_alive()
            sent.sort()
            acked.sort()
            extra = {"ack_p50_ms": percentile(acked, 50) * 1e3,
                     "ack_p99_ms": percentile(acked, 99) * 1e3,
                     "max_ms": sent[-1] * 1e3, "trials": trials}
            return [dict(extra, value=percentile(sent, 50) * 1e3),
                    dict(extra, value=percentile(sent, 99) * 1e3)]

        self.rows_from([Row("B7 wake p50 %s" % (python.label,),
                            "long-poll wake p50", python, "ms",
                            False),
                        Row("B7 wake p99 %s" % (python.label,),
                            "long-poll wake p99", python, "ms",
                            False)],
                       lambda: poll(Server(self.settings, python, "kaf")),
                       lambda: poll(Server(self.settings, python, "floor")))


def with_efficiency(sample: Sample) -> Sample:
    """
    Add the figure per second of the server's CPU time: on a busy machine
    a server that gets half a core does half the work, but this stays.
    """
    if sample.get("server_cpu"):
        sample["per_cpu"] = sample["value"] / sample["server_cpu"]
    return sample


def short(n: int) -> str:
    return "%gM" % (n / 1e6,) if n >= 1000000 else "%gk" % (n / 1e3,)


def percentile(ordered: List[float], p: float) -> float:
    """The C{p}th percentile of a sorted list (nearest rank)."""
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


# -- targets ------------------------------------------------------------------------

def targets(rows: List[Row]) -> List[Dict[str, Any]]:
    """Each target of the issue that this run measured, with its verdict."""
    by_key = {r.key: r for r in rows}
    out: List[Dict[str, Any]] = []

    def check(key: str, text: str, value: Optional[float], ok: Callable[[float], bool]
              ) -> None:
        out.append({"key": key, "target": text, "value": value,
                    "ok": None if value is None else bool(ok(value))})

    labels = sorted({r.python.label for r in rows})
    for label in labels:
        def median(key: str) -> Optional[float]:
            row = by_key.get("%s %s" % (key, label))
            return None if row is None or row.error else row.median()

        def has(key: str) -> bool:
            return "%s %s" % (key, label) in by_key

        if has("B1 c64 never"):
            row = by_key["B1 c64 never %s" % (label,)]
            if label == "pypy":
                check(row.key, "≥ 30k req/s", median("B1 c64 never"), lambda v: v >= 30000)
            else:
                check(row.key, "≥ 0.6 x floor", None if row.error else row.ratio(),
                      lambda v: v >= 0.6)
        if has("B1 c64 always") and has("B1 c64 never"):
            always, never = median("B1 c64 always"), median("B1 c64 never")
            check("B1 c64 always %s" % (label,), "≥ 0.8 x fsync never",
                  always / never if always and never else None, lambda v: v >= 0.8)
        if has("B2 8logs c64") and label == "pypy":
            check("B2 8logs c64 pypy", "≥ 35k req/s", median("B2 8logs c64"),
                  lambda v: v >= 35000)
        if has("B3 batch c8"):
            check("B3 batch c8 %s" % (label,), "≥ 1M msgs/s", median("B3 batch c8"),
                  lambda v: v >= 1e6)
        if has("B4 get c64"):
            check("B4 get c64 %s" % (label,), "≥ 2.6M msgs/s", median("B4 get c64"),
                  lambda v: v >= 2.6e6)
        for fmt in ("raw", "json"):
            if has("B4 %s c64" % (fmt,)) and has("B4 get c64"):
                kaf_rate, rate = median("B4 get c64"), median("B4 %s c64" % (fmt,))
                check("B4 %s c64 %s" % (fmt, label), "≥ 0.8 x format=kaf",
                      rate / kaf_rate if rate and kaf_rate else None, lambda v: v >= 0.8)
        if has("B5 consumer"):
            check("B5 consumer %s" % (label,), "≥ 500k msgs/s", median("B5 consumer"),
                  lambda v: v >= 5e5)
        if has("B6 start-up"):
            check("B6 start-up %s" % (label,), "≤ 1.0 s", median("B6 start-up"),
                  lambda v: v <= 1.0)
            check("B6 RSS %s" % (label,), "≤ 60 MB", median("B6 RSS"), lambda v: v <= 60)
        if has("B7 wake p99"):
            check("B7 wake p99 %s" % (label,), "≤ 5 ms", median("B7 wake p99"),
                  lambda v: v <= 5)
    return out


# -- output ---------------------------------------------------------------------------

def say(line: str) -> None:
    print(line, flush=True)


def number(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("s", "ms", "MB"):
        return "%.2f" % (value,) if value < 100 else "%.0f" % (value,)
    if value >= 1e6:
        return "%.2fM" % (value / 1e6,)
    if value >= 1e4:
        return "%.1fk" % (value / 1e3,)
    return "%.0f" % (value,)


def spread(row: Row, which: str) -> str:
    samples = getattr(row, which)
    if not samples:
        return "-"
    values = [s["value"] for s in samples]
    return "%s (%s–%s)" % (number(statistics.median(values), row.unit),
                           number(min(values), row.unit), number(max(values), row.unit))


HEADER = "%-21s %-38s %-24s %-24s %5s %5s %9s" % (
    "case", "what", "kaf median (min–max)", "floor median (min–max)", "ratio", "r/cpu",
    "cpu s/c")


def format_row(row: Row) -> str:
    if row.error:
        return "%-21s %-38s ERROR %s" % (row.key, row.title, row.error.splitlines()[0][:200])
    ratio, per_cpu = row.ratio(), row.ratio("per_cpu")
    cpu = "-"
    if row.kaf and "server_cpu" in row.kaf[0]:
        cpu = "%.2f/%.2f" % (row.median("kaf", "server_cpu"), row.median("kaf", "client_cpu"))
    return "%-21s %-38s %-24s %-24s %5s %5s %9s" % (
        row.key, "%s [%s]" % (row.title, row.unit), spread(row, "kaf"), spread(row, "floor"),
        "-" if ratio is None else "%.2f" % (ratio,),
        "-" if per_cpu is None else "%.2f" % (per_cpu,), cpu)


def machine() -> Dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True,
                                 text=True).stdout.split("\n")[0]
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "wrk": wrk_version.strip(), "client_python": sys.version.split()[0]}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Kaf's benchmarks: Kaf against the floor, on loopback.",
        epilog="Cases: " + ", ".join(ALL_CASES) + ".  See the module docstring.")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (2 s, 1 s warm-up, 200 long polls)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help="comma-separated, e.g. B1,B4 (default: all)")
    parser.add_argument("--python", action="append", default=[],
                        help="a Python with Kaf installed to run the servers with; may be "
                        "repeated: B1, B2, B4, B5 run under each, the others under the "
                        "first (default: this one)")
    parser.add_argument("--json", default="kaf-bench.json", help="where to write the results")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--duration", type=float, help="seconds a run (default 5)")
    parser.add_argument("--warmup", type=int,
                        help="least seconds of warm-up before a row's runs (default 3); it "
                        "goes on while the rate grows, up to 40 s")
    parser.add_argument("--trials", type=int, help="long polls a run in B7 (default 1000)")
    parser.add_argument("--messages", type=int, default=1000000,
                        help="messages in the log of B4, B5, B6 (default 1,000,000)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the server to one CPU and the clients to another (steadier "
                        "on an idle machine, much worse on a busy one)")
    parser.add_argument("--pypy-nursery", default="32MB", metavar="SIZE",
                        help="PYPY_GC_NURSERY for the PyPy servers, Kaf and floor alike "
                             "(default 32MB, as README.rst advises; '' for PyPy's 1 MB)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--profile", metavar="DIR",
                        help="after the runs of each row, one more run of Kaf (CPython) under "
                        "py-spy (pip install py-spy), not counted: stacks and a summary in DIR")
    options = parser.parse_args(argv)

    cases = [c.strip().upper() for c in options.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        parser.error("unknown case %s (known: %s)" % (", ".join(unknown), ", ".join(ALL_CASES)))
    if options.runs < 1 or options.messages < 2000:
        parser.error("--runs must be ≥ 1 and --messages ≥ 2000")
    if shutil.which("wrk") is None and set(cases) & {"B1", "B2", "B3", "B4"}:
        say(INSTALL_WRK)
        return 2
    pythons = [Python(p) for p in (options.python or [sys.executable])]
    if options.profile:
        os.makedirs(options.profile, exist_ok=True)
        if not os.access(find_py_spy(), os.X_OK):
            say("--profile needs py-spy: %s -m pip install py-spy" % (sys.executable,))
            return 2

    work = tempfile.mkdtemp(prefix="kaf-bench-")
    settings = Settings(options, work)
    if settings.pin:
        # This process is the client of B5 and B7; wrk is pinned by taskset.
        os.sched_setaffinity(0, {settings.client_cpu})
    started = time.time()
    load_before = os.getloadavg()
    say("Kaf benchmarks: %d run(s) a figure, %g s a wrk run, after %d-%d s of warm-up; %s"
        % (settings.runs, settings.duration, settings.warmup, settings.max_warmup,
           "server on CPU %d, clients on CPU %d" % (settings.server_cpu, settings.client_cpu)
           if settings.pin else "not pinned"))
    for p in pythons:
        say("  %s: %s %s, Twisted %s, Klein %s%s" % (
            p.path, p.implementation, p.version, p.twisted, p.klein,
            ", PYPY_GC_NURSERY=%s" % (settings.pypy_nursery,)
            if p.label == "pypy" and settings.pypy_nursery else ""))
    say("  load average before: %.2f %.2f %.2f" % load_before)
    say("")
    say(HEADER)
    bench = Bench(settings, pythons)
    try:
        for case in cases:
            for python in pythons if case in EVERY_PYTHON else pythons[:1]:
                getattr(bench, case.lower())(python)
    except KeyboardInterrupt:
        say("interrupted: writing what was measured")
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    verdicts = targets(bench.rows)
    say("")
    say("ratio: Kaf / floor (for s, MB and ms lower is better); r/cpu: the same ratio per "
        "second of server CPU time,")
    say("which holds when other programs take CPU time; cpu s/c: CPU used by the Kaf server "
        "/ by its client, in cores")
    say("load average before: %.2f %.2f %.2f, after: %.2f %.2f %.2f"
        % (load_before + load_after))
    say("")
    say("%-22s %-20s %-12s %s" % ("target", "wants", "measured", "verdict"))
    for t in verdicts:
        row = next((r for r in bench.rows if r.key == t["key"]), None)
        unit = "x" if "x " in t["target"] else (row.unit if row else "")
        value = t["value"]
        shown = "-" if value is None else ("%.2f" % (value,) if unit == "x"
                                           else number(value, unit))
        verdict = {True: "ok", False: "MISSED", None: "not measured"}[t["ok"]]
        say("%-22s %-20s %-12s %s" % (t["key"], t["target"], shown, verdict))
    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "seconds": time.time() - started, "machine": machine(),
              "load_before": list(load_before), "load_after": list(load_after),
              "settings": {"runs": settings.runs, "duration": settings.duration,
                           "warmup": settings.warmup, "max_warmup": settings.max_warmup,
                           "trials": settings.trials,
                           "messages": settings.messages, "pinned": settings.pin,
                           "pypy_nursery": settings.pypy_nursery,
                           "server_cpu": settings.server_cpu,
                           "client_cpu": settings.client_cpu},
              "pythons": [p.describe() for p in pythons],
              "rows": [r.to_json() for r in bench.rows], "targets": verdicts}
    with open(options.json, "w") as f:
        json.dump(result, f, indent=1)
    say("")
    say("wrote %s" % (options.json,))
    return 1 if any(r.error for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
