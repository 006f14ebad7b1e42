"""
C{--access-log FILE}: a combined-format line per request answered, over a
real socket (kaf.api.http serving Kaf's routes) and through the real server
(written at shutdown, opened again on SIGHUP).
"""
from __future__ import annotations

import os
import re
import signal
import socket
from typing import Any, Generator, List

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python import usage

from conftest import sync_runner
from kaf.api import http
from kaf.api.accesslog import AccessLog, AccessLogService, escape
from kaf.engines.file.store import Store
from kaf.tap import KafOptions
from kaf.api.web import KafWeb, make_site
from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)

#: host ident user [time] "request" status bytes "referer" "user agent"
COMBINED = re.compile(
    r'^(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'"((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$')


def lines_of(path: str) -> List["re.Match[str]"]:
    with open(path, encoding="ascii") as f:
        text = f.read()
    assert text.endswith("\n") or not text
    out = []
    for line in text.splitlines():
        m = COMBINED.match(line)
        assert m is not None, line
        out.append(m)
    return out


def test_what_a_client_sent_cannot_break_or_forge_a_line() -> None:
    assert escape(None) == b"-"
    assert escape(b"") == b"-"
    assert escape(b'a "b" \\c') == b'a \\"b\\" \\\\c'
    assert escape(b"x\n127.0.0.1 - - [forged]\r\x00\xff") == (
        b"x\\x0a127.0.0.1 - - [forged]\\x0d\\x00\\xff")


class Logged:
    def __init__(self, port: int, path: str, service: AccessLogService, clock: Clock) -> None:
        self.port = port
        self.path = path
        self.service = service
        self.clock = clock


@pytest.fixture
def logged(tmp_path: Any) -> Generator[Logged, None, None]:
    store = Store(str(tmp_path / "data"), reactor, sync_runner, fsync=False)
    store.load()
    clock = Clock()
    path = str(tmp_path / "access.log")
    access = AccessLog(path, clock)
    service = AccessLogService(access, clock)
    service.startService()
    site = make_site(KafWeb(store, max_message_size=100), reactor, [access.request_done])
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield Logged(port.getHost().port, path, service, clock)
    port.stopListening()
    service.stopService()
    store.close()


def talk(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out += piece


@pytest_twisted.inlineCallbacks
def test_each_request_is_a_combined_line_written_within_a_second(logged: Logged) -> Any:
    yield deferToThread(talk, logged.port, (
        b"POST /put/orders HTTP/1.1\r\nHost: k\r\nContent-Length: 5\r\n"
        b"User-Agent: probe/1.0\r\nReferer: http://app.example/\r\n\r\nhello"
        b"GET /get/orders?from=1 HTTP/1.1\r\nHost: k\r\n\r\n"
        b'GET /put/"quoted" HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n'))
    # Gathered in memory: nothing is written before the second is up.
    assert os.path.getsize(logged.path) == 0
    logged.clock.advance(1)
    put, got, refused = lines_of(logged.path)
    assert put.group(1) == "127.0.0.1"
    assert put.group(3, 4, 5, 6, 7) == ("POST /put/orders HTTP/1.1", "200", "1",
                                        "http://app.example/", "probe/1.0")
    assert got.group(3, 4, 6, 7) == ("GET /get/orders?from=1 HTTP/1.1", "200", "-", "-")
    assert int(got.group(5)) > 5
    assert refused.group(3) == 'GET /put/\\"quoted\\" HTTP/1.1'
    assert refused.group(4) == "405"


@pytest_twisted.inlineCallbacks
def test_a_request_refused_as_malformed_is_logged_too(logged: Logged) -> Any:
    yield deferToThread(talk, logged.port,
                        b"POST /put/orders HTTP/1.1\r\nHost: k\r\nContent-Length: 500\r\n"
                        b"Connection: close\r\n\r\n")
    logged.clock.advance(1)
    [line] = lines_of(logged.path)
    assert line.group(3, 4) == ("POST /put/orders HTTP/1.1", "413")


@pytest_twisted.inlineCallbacks
def test_a_request_line_that_cannot_be_read_is_logged_as_a_dash(logged: Logged) -> Any:
    yield deferToThread(talk, logged.port, b"NOT AN HTTP REQUEST\r\n\r\n")
    logged.clock.advance(1)
    [line] = lines_of(logged.path)
    assert line.group(3, 4) == ("-", "400")


def test_an_access_log_that_cannot_be_written_stops_start_up(tmp_path: Any) -> None:
    with pytest.raises(usage.UsageError) as e:
        KafOptions().parseOptions(["--access-log", str(tmp_path / "no" / "such" / "a.log"),
                                   "--data", str(tmp_path / "d")])
    assert str(e.value).startswith("--access-log ") and "cannot be written" in str(e.value)


def test_the_real_server_logs_each_request_and_reopens_on_sighup(data: str,  # noqa: F811
                                                                  tmp_path: Any) -> None:
    path = str(tmp_path / "access.log")
    with KafServer(data, ["--access-log", path]) as server:
        assert curl("--data-binary", "one", server.url("/put/orders")).status == 200
        # logrotate moves the file away, then asks for a new one.
        os.rename(path, path + ".1")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_output("access log: " + path + " opened again")
        assert curl(server.url("/get/orders?from=1")).status == 200
        # A clean stop writes the lines still waiting.
        assert server.stop() == 0
    # (The start-up probe of the tests' server is a request too.)
    before = [m for m in lines_of(path + ".1") if m.group(3) != "GET /logs HTTP/1.1"]
    assert [m.group(3, 4) for m in before] == [("POST /put/orders HTTP/1.1", "200")]
    assert before[0].group(7).startswith("curl/")
    after = [m.group(3, 4) for m in lines_of(path)]
    assert after == [("GET /get/orders?from=1 HTTP/1.1", "200")]
