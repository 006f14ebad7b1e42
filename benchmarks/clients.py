"""
The benchmarks' own clients and data, in plain blocking Python: a raw-socket
keep-alive HTTP/1.1 client, the start-up probe, the single consumer of B5,
the long-poll trials of B7, and a log file written directly in the disk
format (SPEC 4).  No Twisted here: the load generator must not share the
server's costs, and it runs under whatever Python starts the benchmarks.
"""
from __future__ import annotations

import os
import select
import socket
import time
from typing import Callable, Dict, List, Optional, Tuple

Headers = Dict[bytes, bytes]


class HTTPError(Exception):
    """The server answered something the benchmark did not expect."""


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are sent one at a time."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        if body or method == "POST":
            head += "Content-Length: %d\r\n" % (len(body),)
        self.sock.sendall(head.encode("ascii") + b"\r\n" + body)

    def response(self) -> Tuple[int, Headers, bytes]:
        """Read one whole response: (status, headers by lower-case name, body)."""
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        lines = bytes(buf[:end]).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: Headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length")
        if length is None:
            raise HTTPError("no Content-Length in a reply with status %d" % (status,))
        total = end + 4 + int(length)
        while len(buf) < total:
            self._fill()
        body = bytes(buf[end + 4:total])
        del buf[:total]
        return status, headers, body

    def ready(self) -> bool:
        """Has a whole response arrived (without blocking)?"""
        while True:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                break
            self._fill()
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            return True
        length = int(head[at + 15:].split(b"\r\n", 1)[0])
        return len(self._buf) >= end + 4 + length

    def request(self, method: str, path: str, body: bytes = b"") -> Tuple[int, Headers, bytes]:
        self.send(method, path, body)
        return self.response()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise HTTPError("the server closed the connection")
        self._buf += data


def wait_ready(port: int, path: str, timeout: float, pid_alive: Callable[[], bool]
               ) -> float:
    """
    Poll C{path} until it answers 200; return the time it took.  Raise
    when the server dies or C{timeout} passes.
    """
    start = time.perf_counter()
    while True:
        try:
            c = Connection(port, timeout=5.0)
            try:
                status, _, body = c.request("GET", path)
            finally:
                c.close()
            if status == 200:
                return time.perf_counter() - start
            raise HTTPError("GET %s answered %d: %r" % (path, status, body[:200]))
        except (ConnectionError, socket.timeout, OSError):
            pass
        if not pid_alive():
            raise HTTPError("the server exited before it answered")
        if time.perf_counter() - start > timeout:
            raise HTTPError("no answer from port %d after %.0f s" % (port, timeout))
        time.sleep(0.005)


def message(num: int, size: int) -> bytes:
    """The benchmark's message number C{num}: C{size} printable bytes."""
    return (b"m%d " % (num,)).ljust(size, b"x")[:size]


def json_message(num: int, size: int) -> bytes:
    """Message C{num} as a JSON object of C{size} bytes (an event as most are)."""
    head = b'{"n": %d, "pad": "' % (num,)
    return head + b"x" * (size - len(head) - 2) + b'"}'


def write_log(path: str, count: int, size: int,
              make: Callable[[int, int], bytes] = message) -> int:
    """Write a log of C{count} messages of C{size} bytes in the disk format."""
    with open(path, "wb") as f:
        f.write(b"KAF_DB|v1|0")
        step = 10000
        for first in range(1, count + 1, step):
            last = min(first + step, count + 1)
            f.write(b"".join([b"\nKAF_MSG|%d|%d\n%s" % (n, size, make(n, size))
                              for n in range(first, last)]))
        return f.tell()


def consume(port: int, log: str, upto: int, first: int = 1) -> Tuple[int, int, int]:
    """
    Read C{log} from C{first} until message C{upto}, following
    X-Kaf-LastMsgSent with the default batch; return (messages, requests,
    body bytes).
    """
    c = Connection(port)
    try:
        at, messages, requests, size = first, 0, 0, 0
        while at <= upto:
            status, headers, body = c.request("GET", "/get/%s?from=%d" % (log, at))
            requests += 1
            if status != 200:
                raise HTTPError("get answered %d: %r" % (status, body[:200]))
            last = headers.get(b"x-kaf-lastmsgsent")
            if last is None:
                raise HTTPError("get from %d answered no message" % (at,))
            messages += int(last) - at + 1
            size += len(body)
            at = int(last) + 1
        return messages, requests, size
    finally:
        c.close()


def long_poll_trials(port: int, log: str, trials: int, settle: float = 0.005,
                     warmup: int = 20) -> Tuple[List[float], List[float]]:
    """
    B7: hold a long-poll get for the next message, put it, and time when
    it arrives.  Returns two lists of seconds, one entry per trial:
    put sent -> message received, and put acknowledged -> message received.
    """
    getter, putter = Connection(port), Connection(port)
    sent_to_msg: List[float] = []
    ack_to_msg: List[float] = []
    try:
        status, _, body = putter.request("POST", "/put/%s" % (log,), message(0, 100))
        if status != 200:
            raise HTTPError("put answered %d: %r" % (status, body[:200]))
        num = int(body)
        for trial in range(warmup + trials):
            num += 1
            getter.send("GET", "/get/%s?from=%d&wait=10" % (log, num))
            # Let the server register the waiter: nothing may arrive meanwhile.
            r, _, _ = select.select([getter.sock], [], [], settle)
            if r and getter.ready():
                raise HTTPError("the long poll was answered before the put")
            t_sent = time.perf_counter()
            putter.send("POST", "/put/%s" % (log,), message(num, 100))
            t_ack: Optional[float] = None
            t_msg: Optional[float] = None
            while t_ack is None or t_msg is None:
                waiting = [c.sock for c, t in ((putter, t_ack), (getter, t_msg)) if t is None]
                select.select(waiting, [], [], 10.0)
                now = time.perf_counter()
                if t_ack is None and putter.ready():
                    t_ack = now
                if t_msg is None and getter.ready():
                    t_msg = now
            status, _, body = putter.response()
            if status != 200 or int(body) != num:
                raise HTTPError("put answered %d: %r (expected %d)" % (status, body, num))
            status, headers, body = getter.response()
            if status != 200 or headers.get(b"x-kaf-lastmsgsent") != b"%d" % (num,):
                raise HTTPError("long poll answered %d %r" % (status, headers))
            if trial >= warmup:
                sent_to_msg.append(t_msg - t_sent)
                ack_to_msg.append(t_msg - t_ack)
        return sent_to_msg, ack_to_msg
    finally:
        getter.close()
        putter.close()


def free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def proc_status(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of a process, in kB, from /proc/<pid>/status."""
    out = {}
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far."""
    with open("/proc/%d/stat" % (pid,)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
