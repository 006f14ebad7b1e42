"""
Live streams: many Server-Sent Events streams of one log, the server's
memory with them open, and how long one put takes to reach every stream.

    python benchmarks/sse.py [--streams 1000] [--puts 100] [--runs 3]
                             [--fsync never|always] [--gap 0.1]

Each run starts a fresh C{twistd -n kaf} (RLIMIT_NOFILE raised for it and
for this process), opens --streams streams of the log C{live} (C{GET
/get/live?from=N&format=sse}) from an asyncio client in this process, one
raw protocol a connection, and waits until each has its first line.  Then
it puts --puts messages, one every --gap seconds, and notes when each
stream receives each one (its C{id:} line).  Figures:

  rss_before_mb / rss_streams_mb   the server's RSS before the streams and
                                   with all of them open
  each_p50_ms / each_p99_ms        put sent -> one stream has it, over every
                                   (put, stream) pair
  all_p50_ms / all_p99_ms          put sent -> the last of the streams has
                                   it, over the puts
  server_cpu_ms_a_put              the server's CPU time over the puts, a put
                                   (the fan-out to every stream included)

The client shares the machine with the server: its own turns of the event
loop (reading 1,000 sockets that became readable together) are in the
figures.  Figures are medians of --runs.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
NOFILE = 8192
EVENT_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")


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


def cpu_s(pid: int) -> float:
    """The CPU time (user and system) the process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start(folder: str, port: int, fsync: str, log: str) -> "subprocess.Popen[bytes]":
    process = subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile", log, "kaf",
         "--data", folder, "--listen", "tcp:%d:interface=127.0.0.1:backlog=2048" % port,
         "--fsync", fsync], preexec_fn=raise_nofile, stdin=subprocess.DEVNULL)
    while True:
        if process.poll() is not None:
            raise SystemExit("the server exited with %d" % process.returncode)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/put/live", body=b"first")
            if c.getresponse().status == 200:
                c.close()
                return process
        except OSError:
            time.sleep(0.05)


class Stream(asyncio.Protocol):
    """One SSE stream: notes when each event id arrives."""

    def __init__(self, seen: Dict[int, List[float]], opened: "asyncio.Future[None]",
                 from_num: int) -> None:
        self._seen = seen
        self._opened = opened
        self._from = from_num
        self._buffer = b""
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"GET /get/live?from=%d&format=sse HTTP/1.1\r\nHost: k\r\n\r\n"
                        % (self._from,))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self._opened.done():
            self._opened.set_result(None)
        buffer = self._buffer + data
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        # The reply is chunked: a chunk's size line may come before an event.
        for event in events:
            found = EVENT_ID.search(event)
            if found is not None:
                self._seen.setdefault(int(found.group(1)), []).append(now)


class Putter(asyncio.Protocol):
    def __init__(self) -> None:
        self.answers: "asyncio.Queue[bytes]" = asyncio.Queue()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            self.answers.put_nowait(head.split(b" ", 2)[1] + b" " + rest[:length])
            self._buffer = rest[length:]


async def drive(port: int, pid: int, streams: int, puts: int, gap: float
                ) -> Dict[str, float]:
    loop = asyncio.get_running_loop()
    seen: Dict[int, List[float]] = {}
    figures = {"rss_before_mb": rss_mb(pid)}
    opened: List["asyncio.Future[None]"] = []
    transports = []
    for i in range(streams):
        done: "asyncio.Future[None]" = loop.create_future()
        opened.append(done)
        t, _ = await loop.create_connection(lambda: Stream(seen, done, 2), "127.0.0.1", port)
        transports.append(t)
    await asyncio.wait_for(asyncio.gather(*opened), 120)
    await asyncio.sleep(1.0)
    figures["rss_streams_mb"] = rss_mb(pid)
    putter_t, putter = await loop.create_connection(Putter, "127.0.0.1", port)
    sent: Dict[int, float] = {}
    cpu = cpu_s(pid)
    for k in range(puts):
        num = k + 2
        sent[num] = time.monotonic()
        putter_t.write(b"POST /put/live HTTP/1.1\r\nHost: k\r\nContent-Length: 12\r\n\r\n"
                       b"message %04d" % (k % 10000,))
        answer = await putter.answers.get()
        if answer != b"200 %d" % (num,):
            raise SystemExit("put answered %r" % (answer,))
        deadline = time.monotonic() + 30
        while len(seen.get(num, ())) < streams and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if len(seen.get(num, ())) < streams:
            raise SystemExit("put %d reached %d of %d streams" % (
                num, len(seen.get(num, ())), streams))
        await asyncio.sleep(gap)
    figures["server_cpu_ms_a_put"] = (cpu_s(pid) - cpu) * 1000 / puts
    for t in transports + [putter_t]:
        t.close()
    each = sorted((at - sent[num]) * 1000 for num in sent for at in seen[num])
    last = sorted((max(seen[num]) - sent[num]) * 1000 for num in sent)
    figures["each_p50_ms"] = quantile(each, 0.50)
    figures["each_p99_ms"] = quantile(each, 0.99)
    figures["all_p50_ms"] = quantile(last, 0.50)
    figures["all_p99_ms"] = quantile(last, 0.99)
    return figures


def quantile(values: List[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def run(args: argparse.Namespace) -> Dict[str, float]:
    work = tempfile.mkdtemp(prefix="kaf-sse-")
    try:
        port = free_port()
        process = start(os.path.join(work, "data"), port, args.fsync,
                        os.path.join(work, "twistd.log"))
        try:
            return asyncio.run(drive(port, process.pid, args.streams, args.puts, args.gap))
        finally:
            process.terminate()
            process.wait(60)
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", default="never", choices=["never", "always"])
    args = parser.parse_args()
    raise_nofile()
    runs = [run(args) for _ in range(args.runs)]
    print("%d SSE streams of one log, %d puts %gs apart, --fsync %s, %d runs "
          "(medians, min-max):" % (args.streams, args.puts, args.gap, args.fsync, args.runs))
    for key in runs[0]:
        values = [r[key] for r in runs]
        print("  %-15s %9.2f   (%.2f-%.2f)" % (key, statistics.median(values),
                                               min(values), max(values)))


if __name__ == "__main__":
    main()
