"""
A real C{twistd -n kaf} process for the end-to-end tests: start it on free
ports with a given data folder and options, wait until it answers, stop it
with SIGTERM or SIGKILL, and read what it logged.

Not a test module: the e2e, crash and hostile tests import it.
"""
from __future__ import annotations

import http.client
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: How long a server may take to start answering (start-up on 2 busy cores).
START_TIMEOUT = 30.0

#: How long a stopping server may take to exit.
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistd_command(args: Sequence[str]) -> List[str]:
    """C{twistd -n kaf ARGS}, with no pid file (several servers run at once)."""
    return [TWISTD, "-n", "--pidfile=", "kaf"] + list(args)


def run_twistd(args: Sequence[str], timeout: float = 60.0) -> "subprocess.CompletedProcess[str]":
    """Run C{twistd -n kaf ARGS} to its end (for options that stop start-up)."""
    workdir = tempfile.mkdtemp(prefix="kaf-twistd-")
    try:
        return subprocess.run(twistd_command(args), cwd=workdir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def default_signals() -> None:
    """
    In a child before it runs: SIGINT and SIGTERM as a shell would give
    them.  A process started with SIGINT ignored (under C{nohup}, or from
    a shell's background job) keeps it ignored, and Ctrl-C would not stop it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ServerDied(Exception):
    """The server exited (or never listened) before it answered."""


class KafServer:
    """
    One C{twistd -n kaf} process.  C{ports} TCP listeners on 127.0.0.1 (one
    is given as C{--addr}, several as C{--listen tcp:…}), plus a C{unix:}
    listener at C{unix} when given.  Its log (stdout and stderr together)
    goes to a file outside the data folder and its parent.
    """

    def __init__(self, data: str, args: Sequence[str] = (), ports: int = 1,
                 unix: Optional[str] = None, nofile: Optional[int] = None,
                 workdir: Optional[str] = None,
                 twistd_flags: Sequence[str] = ("-n", "--pidfile=")) -> None:
        """C{nofile}: the process's RLIMIT_NOFILE (by default, this one's)."""
        self.data = data
        self.nofile = nofile
        self.args = list(args)
        self.nports = ports
        self.unix = unix
        self.twistd_flags = list(twistd_flags)
        self.ports: List[int] = []
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self._logdir = tempfile.mkdtemp(prefix="kaf-server-")
        # The working folder twistd runs in (its own by default).
        self._workdir = workdir or self._logdir
        self.log_path = os.path.join(self._logdir, "twistd.log")
        self.returncode: Optional[int] = None

    # -- start -----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def command(self) -> List[str]:
        args = ["--data", self.data]
        if self.nports == 1 and self.unix is None:
            args += ["--addr", "127.0.0.1:%d" % (self.ports[0],)]
        else:
            for p in self.ports:
                args += ["--listen", "tcp:%d:interface=127.0.0.1" % (p,)]
            if self.unix is not None:
                args += ["--listen", "unix:%s" % (self.unix,)]
        return [TWISTD] + self.twistd_flags + ["kaf"] + args + self.args

    def start(self) -> "KafServer":
        """Start, and return once every listener answers C{GET /logs}."""
        try:
            # Another process may take a port between our probe and twistd's
            # bind: twistd then runs without listening, so try other ports.
            for attempt in range(3):
                self.ports = [free_port() for _ in range(self.nports)]
                self._spawn()
                try:
                    self._wait_ready()
                    return self
                except _PortTaken:
                    self.kill()
            raise ServerDied("no free port after 3 attempts:\n" + self.output())
        except BaseException:
            # The exception carries the log; leave no process or folder behind.
            self.close()
            raise

    def _spawn(self) -> None:
        # A fresh log per process: the checks of _wait_ready read it whole.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self._workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._limit)
        self.returncode = None

    def _limit(self) -> None:
        default_signals()
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _wait_ready(self) -> None:
        # The one poll loop of the tests: a separate process, bounded deadline.
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.ports)
        unix_pending = self.unix is not None
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                self.returncode = self.process.returncode
                raise ServerDied("twistd exited with %d before answering:\n%s"
                                 % (self.returncode, self.output()))
            text = self.output()
            if "Couldn't listen" in text or "Address already in use" in text:
                raise _PortTaken()
            # Only our own process logs this for the port: the answer that
            # follows is not some other server's.
            pending = [p for p in pending
                       if not ("starting on %d\n" % (p,) in text and _answers_tcp(p))]
            if unix_pending:
                assert self.unix is not None
                unix_pending = not _answers_unix(self.unix)
            if not pending and not unix_pending:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerDied("twistd did not answer within %gs:\n%s"
                                 % (START_TIMEOUT, self.output()))
            time.sleep(0.05)

    # -- stop ------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send C{sig} and wait for the exit; the exit code."""
        if self.process is None:
            raise ServerDied("never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise ServerDied("twistd did not exit within %gs of signal %d:\n%s"
                                 % (timeout, sig, self.output()))
        self.returncode = self.process.returncode
        return self.returncode

    def kill(self) -> int:
        """SIGKILL: a crash."""
        return self.stop(signal.SIGKILL)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        """Return once the server has logged C{text} (a separate process: a bounded poll)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError("the server did not log %r:\n%s" % (text, self.output()))
            time.sleep(0.02)

    def output(self) -> str:
        """Everything the process logged so far."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill the process if it still runs and remove the log."""
        if self.running():
            self.kill()
        shutil.rmtree(self._logdir, ignore_errors=True)

    def __enter__(self) -> "KafServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PortTaken(Exception):
    pass


def _answers_tcp(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/logs")
        # 401: a server with --auth answers too.
        return conn.getresponse().status in (200, 401)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _answers_unix(path: str) -> bool:
    try:
        status, _, _ = unix_request(path, b"GET /logs HTTP/1.0\r\nHost: kaf\r\n\r\n")
        return status in (200, 401)
    except OSError:
        return False


def unix_request(path: str, request: bytes, timeout: float = 5.0
                 ) -> Tuple[int, bytes, bytes]:
    """Send a raw HTTP/1.0 request over a unix socket: (status, head, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request)
        data = recv_all(s)
    return split_response(data)


def recv_all(s: socket.socket) -> bytes:
    """Read until the peer closes (or resets after answering)."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def split_response(data: bytes) -> Tuple[int, bytes, bytes]:
    """(status, head, body) of one raw HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    m = _STATUS.match(head)
    if m is None:
        raise ValueError("not an HTTP response: %r" % (data[:200],))
    return int(m.group(1)), head, body


def header(head: bytes, name: str) -> Optional[str]:
    """A header's value in a raw response head (names case-insensitive)."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode("latin-1")
    return None


_DB_HEADER = re.compile(rb"KAF_DB\|v1\|(\d+)")
_REPLY_HEADER = re.compile(rb"KAF_MSGS\|v1\|(\d+)")
_RECORD = re.compile(rb"\nKAF_MSG\|(\d+)\|(\d+)\n")


def read_log_strictly(data: bytes) -> Tuple[int, List[Tuple[int, bytes]]]:
    """
    (start, [(number, message), …]) of a log file that must be exactly in
    the format Kaf writes (SPEC 4): no blank lines, no partial record.
    """
    m = _DB_HEADER.match(data)
    if m is None:
        raise ValueError("no KAF_DB header: %r" % (data[:40],))
    return int(m.group(1)), _records(data, m.end())


def parse_kaf_reply(body: bytes) -> List[Tuple[int, bytes]]:
    """[(number, message), …] of a C{format=kaf} reply body (SPEC 3.2)."""
    m = _REPLY_HEADER.match(body)
    if m is None:
        raise ValueError("no KAF_MSGS header: %r" % (body[:40],))
    records = _records(body, m.end())
    if len(records) != int(m.group(1)):
        raise ValueError("header says %s messages, body holds %d"
                         % (m.group(1).decode(), len(records)))
    return records


def _records(data: bytes, pos: int) -> List[Tuple[int, bytes]]:
    records = []
    while pos < len(data):
        m = _RECORD.match(data, pos)
        if m is None:
            raise ValueError("offset %d: not a record header: %r" % (pos, data[pos:pos + 40]))
        end = m.end() + int(m.group(2))
        if end > len(data):
            raise ValueError("offset %d: partial record (%d of %d data bytes)"
                             % (pos, len(data) - m.end(), int(m.group(2))))
        records.append((int(m.group(1)), data[m.end():end]))
        pos = end
    return records


def stopped_cleanly(code: int, sig: int, output: str) -> bool:
    """
    Did twistd shut down cleanly on signal C{sig}?  SIGTERM, the way to stop
    a service, and Ctrl-C (SIGINT) both exit 0 (SPEC 1).
    """
    return code == 0 and "Server Shut Down." in output and "Traceback" not in output


def self_signed(folder: str) -> Tuple[str, str]:
    """A key and a self-signed certificate for 127.0.0.1, made with openssl."""
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return key, cert
