"""
What idle long-poll waiters cost: the server's RSS with N clients waiting
(`GET /get/LOG?from=…&wait=S`) against none, and put latency with them
waiting against without (SPEC 3.2: thousands of waiting clients must be
cheap).

    python benchmarks/waiters.py [--waiters 10000] [--puts 2000] [--python PATH]

Starts `twistd -n kaf` on a free loopback port with a fresh data folder
(raising the open-file limit for it), opens the waiters from this process
with plain sockets, and prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def request(sock: socket.socket, method: str, path: str, body: bytes = b"") -> bytes:
    sock.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                 % (method.encode(), path.encode(), len(body), body))
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([h.split(b":")[1] for h in head.split(b"\r\n")
                  if h.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return rest


def put_latencies(port: int, count: int) -> List[float]:
    """Sequential puts to another log on one connection: seconds each."""
    s = socket.create_connection(("127.0.0.1", port))
    out = []
    for i in range(count):
        t = time.perf_counter()
        request(s, "POST", "/put/busy", b"x" * 100)
        out.append(time.perf_counter() - t)
    s.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=10000)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    limit = args.waiters + 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1])))
    twistd = os.path.join(os.path.dirname(args.python), "twistd")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "kaf", "--addr", "127.0.0.1:%d" % (port,),
             "--data", data, "--fsync", "never", "--max-wait", "600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            put_latencies(port, 200)  # warm up
            idle_rss = rss_kb(server.pid)
            without = put_latencies(port, args.puts)

            waiters = []
            for i in range(args.waiters):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /get/quiet%d?from=1&wait=600 HTTP/1.1\r\nHost: x\r\n\r\n"
                          % (i % 10,))
                waiters.append(s)
            # Every waiter is registered once a put behind them is answered.
            put_latencies(port, 50)
            time.sleep(1.0)
            waiting_rss = rss_kb(server.pid)
            with_waiters = put_latencies(port, args.puts)
            answered = sum(1 for s in waiters if _has_data(s))
            for s in waiters:
                s.close()
        finally:
            server.terminate()
            server.wait(30)

    def ms(values: List[float], q: float) -> float:
        values = sorted(values)
        return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 3)

    print(json.dumps({
        "waiters": args.waiters,
        "rss_kb_without": idle_rss,
        "rss_kb_with": waiting_rss,
        "rss_kb_per_waiter": round((waiting_rss - idle_rss) / args.waiters, 2),
        "put_ms_p50_without": ms(without, 0.5), "put_ms_p99_without": ms(without, 0.99),
        "put_ms_p50_with": ms(with_waiters, 0.5), "put_ms_p99_with": ms(with_waiters, 0.99),
        "put_ms_mean_without": round(1000 * statistics.mean(without), 3),
        "put_ms_mean_with": round(1000 * statistics.mean(with_waiters), 3),
        "waiters_answered_early": answered,
    }, indent=2))


def _has_data(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return bool(s.recv(1))
    except BlockingIOError:
        return False
    finally:
        s.setblocking(True)


if __name__ == "__main__":
    main()
