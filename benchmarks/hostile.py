"""
Clients that do not read: how much the server's memory grows when many
connections ask for a large log and never read the replies.

    python benchmarks/hostile.py [--log-mb 200] [--runs 3] [--format kaf|raw|json]
                                 [--pipelined 20] [--gets 50] [--stalled 200]

Each run writes a fresh data folder holding one log of --log-mb megabytes
(1,000-byte messages, as Kaf writes them), starts C{twistd -n kaf
--fsync never}, reads the log once (so its index is built), and then:

  pipelined  --pipelined connections each send --gets gets of the whole
             log in one go and never read; the figure is the growth of the
             server's RSS (VmRSS, and its peak VmHWM, reset as root through
             /proc/PID/clear_refs: the first read maps the whole file) over
             the RSS before.
  stalled    on a fresh server, --stalled connections each send one get of
             the log and never read; the figure is the RSS growth divided
             by the connections, and the RSS after they close.

A client's socket receive buffer is set small (64 KiB), so that the
kernel takes little of a reply: what the server holds is what it read.
Figures are medians of --runs.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kaf import _format  # noqa: E402

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
MESSAGE = b"m" * 1000
GET = b"GET /get/big?from=1&format=%s HTTP/1.1\r\nHost: k\r\n\r\n"


def make_folder(folder: str, megabytes: int) -> None:
    os.makedirs(folder)
    count = megabytes * 1000
    with open(os.path.join(folder, "big"), "wb") as f:
        f.write(_format.db_header(0))
        for first in range(1, count + 1, 10000):
            f.write(_format.records(first, [MESSAGE] * min(10000, count + 1 - first)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid: int, field: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no " + field)


def start(folder: str, port: int, log: str) -> "subprocess.Popen[bytes]":
    process = subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", log, "kaf",
         "--data", folder, "--listen", "tcp:%d:interface=127.0.0.1" % port,
         "--fsync", "never"], stdin=subprocess.DEVNULL)
    while True:
        if process.poll() is not None:
            raise SystemExit("the server exited with %d" % process.returncode)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/get/big?from=1&limit=1")
            if c.getresponse().status == 200:
                c.close()
                return process
        except OSError:
            time.sleep(0.05)


def connect(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the RSS now (the first read mapped the whole file)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
    except OSError:
        pass


def settle(pid: int) -> int:
    """The server's RSS once it stops changing (it has done what it will)."""
    last = status_kb(pid, "VmRSS")
    for _ in range(100):
        time.sleep(0.2)
        now = status_kb(pid, "VmRSS")
        if abs(now - last) < 256:
            return now
        last = now
    return last


def pipelined(port: int, pid: int, connections: int, gets: int, fmt: str
              ) -> Dict[str, float]:
    reset_peak(pid)
    before = status_kb(pid, "VmRSS")
    socks = [connect(port) for _ in range(connections)]
    get = GET % (fmt.encode(),)
    data = get * gets
    sent = [0] * connections
    # Send what the server takes; it stops reading once it owes replies.
    for _ in range(50):
        for i, s in enumerate(socks):
            try:
                if sent[i] < len(data):
                    sent[i] += s.send(data[sent[i]:])
            except BlockingIOError:
                pass
        time.sleep(0.02)
    after = settle(pid)
    peak = status_kb(pid, "VmHWM")
    for s in socks:
        s.close()
    return {"pipelined_growth_mb": (after - before) / 1024,
            "pipelined_peak_growth_mb": (peak - before) / 1024,
            "pipelined_sent_gets": sum(sent) / len(get) / connections}


def stalled(port: int, pid: int, connections: int, fmt: str) -> Dict[str, float]:
    reset_peak(pid)
    before = status_kb(pid, "VmRSS")
    socks = [connect(port) for _ in range(connections)]
    for s in socks:
        s.send(GET % (fmt.encode(),))
    after = settle(pid)
    peak = status_kb(pid, "VmHWM")
    for s in socks:
        s.close()
    closed = settle(pid)
    return {"stalled_kb_each": (after - before) / connections,
            "stalled_growth_mb": (after - before) / 1024,
            "stalled_peak_growth_mb": (peak - before) / 1024,
            "stalled_after_close_growth_mb": (closed - before) / 1024}


def run(args: argparse.Namespace) -> Dict[str, float]:
    work = tempfile.mkdtemp(prefix="kaf-hostile-")
    try:
        folder = os.path.join(work, "data")
        make_folder(folder, args.log_mb)
        figures: Dict[str, float] = {}
        for case in ("pipelined", "stalled"):
            port = free_port()
            process = start(folder, port, os.path.join(work, "twistd-%s.log" % case))
            try:
                figures["%s_rss_before_mb" % case] = status_kb(process.pid, "VmRSS") / 1024
                if case == "pipelined":
                    figures.update(pipelined(port, process.pid, args.pipelined, args.gets,
                                             args.format))
                else:
                    figures.update(stalled(port, process.pid, args.stalled, args.format))
            finally:
                process.terminate()
                process.wait(60)
        return figures
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-mb", type=int, default=200)
    parser.add_argument("--pipelined", type=int, default=20)
    parser.add_argument("--gets", type=int, default=50)
    parser.add_argument("--stalled", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", default="kaf", choices=["kaf", "raw", "json"])
    args = parser.parse_args()
    runs: List[Dict[str, float]] = [run(args) for _ in range(args.runs)]
    print("a %d MB log, format=%s; %d connections x %d pipelined gets; %d stalled readers; "
          "%d runs (medians, min-max):" % (args.log_mb, args.format, args.pipelined, args.gets,
                                           args.stalled, args.runs))
    for key in runs[0]:
        values = [r[key] for r in runs]
        print("  %-30s %10.2f   (%.2f-%.2f)" % (key, statistics.median(values),
                                                min(values), max(values)))


if __name__ == "__main__":
    main()
