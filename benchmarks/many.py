"""
Many logs on one node: start-up time and memory with N logs of 10
messages each, under an open-file limit, then a put to every log and a
get of every log.

    python benchmarks/many.py [--logs 100000] [--nofile 1024] [--runs 3]
                              [--no-requests] [--fsync never|always]

Each run writes a fresh data folder (log files as Kaf writes them), starts
C{twistd -n kaf} with RLIMIT_NOFILE set to --nofile, and measures the time
from the start of the process to its first answer, and its resident size
then.  With requests, a put to each log and then a get of each go over 8
keep-alive connections; every put must answer 200 with number 11 and every
get must return the log's 11 messages.  Figures are medians of --runs.
"""
from __future__ import annotations

import argparse
import http.client
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kaf import _format  # noqa: E402

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
MESSAGES = [b"message %d of the log" % i for i in range(1, 11)]
CONNECTIONS = 8


def make_folder(folder: str, logs: int) -> None:
    os.makedirs(folder)
    body = _format.db_header(0) + _format.records(1, MESSAGES)
    for n in range(logs):
        with open(os.path.join(folder, "log%07d" % n), "wb") as f:
            f.write(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(folder: str, port: int, nofile: int, fsync: str, log: str) -> "subprocess.Popen[bytes]":
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", log, "kaf",
         "--data", folder, "--listen", "tcp:%d:interface=127.0.0.1" % port, "--fsync", fsync],
        preexec_fn=limit, stdin=subprocess.DEVNULL)


def wait_ready(port: int, process: "subprocess.Popen[bytes]") -> None:
    while True:
        if process.poll() is not None:
            raise SystemExit("the server exited with %d" % process.returncode)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/get/log0000000?from=1&limit=1")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.01)


def drive(port: int, logs: int) -> Dict[str, float]:
    errors: List[str] = []

    def worker(names: range, op: str) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in names:
            name = "log%07d" % n
            if op == "put":
                c.request("POST", "/put/" + name, body=b"one more")
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != b"11":
                    errors.append("put %s: %d %r" % (name, r.status, body[:80]))
            else:
                c.request("GET", "/get/%s?from=1&format=raw" % name)
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != b"\n".join(MESSAGES + [b"one more"]) + b"\n":
                    errors.append("get %s: %d %r" % (name, r.status, body[:80]))
        c.close()

    out: Dict[str, float] = {}
    for op in ("put", "get"):
        began = time.monotonic()
        threads = [threading.Thread(target=worker, args=(range(i, logs, CONNECTIONS), op))
                   for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[op + "_s"] = time.monotonic() - began
    out["errors"] = len(errors)
    if errors:
        print("errors: %d, e.g. %s" % (len(errors), errors[:3]))
    return out


def run(args: argparse.Namespace) -> Dict[str, float]:
    work = tempfile.mkdtemp(prefix="kaf-many-")
    try:
        folder = os.path.join(work, "data")
        make_folder(folder, args.logs)
        port = free_port()
        began = time.monotonic()
        process = start(folder, port, args.nofile, args.fsync, os.path.join(work, "twistd.log"))
        try:
            wait_ready(port, process)
            figures = {"startup_s": time.monotonic() - began, "rss_start_mb": rss_mb(process.pid)}
            if args.requests:
                figures.update(drive(port, args.logs))
                figures["rss_end_mb"] = rss_mb(process.pid)
                figures["fds_end"] = len(os.listdir("/proc/%d/fd" % process.pid))
        finally:
            process.terminate()
            process.wait(60)
        return figures
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=100000)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", default="never", choices=["never", "always"])
    parser.add_argument("--no-requests", dest="requests", action="store_false")
    args = parser.parse_args()
    runs = [run(args) for _ in range(args.runs)]
    print("%d logs of 10 messages, nofile %d, --fsync %s, %d runs (medians, min-max):"
          % (args.logs, args.nofile, args.fsync, args.runs))
    for key in runs[0]:
        values = [r[key] for r in runs]
        print("  %-13s %10.2f   (%.2f-%.2f)" % (key, statistics.median(values),
                                                min(values), max(values)))


if __name__ == "__main__":
    main()
