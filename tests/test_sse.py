"""
Live streams (Server-Sent Events) of a log: the event framing, and streams
driven over the real Site and channel on an in-memory transport, with a
Clock for the keep-alive.
"""
from __future__ import annotations

import base64
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from conftest import sync_runner
from kaf.api import sse
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.store import Store
from kaf.api.web import KafWeb, make_site


def parse(stream: bytes) -> List[Tuple[Optional[str], str, str]]:
    """(id, event, data) of each event, read as the SSE specification reads them."""
    found = []
    event_id: Optional[str] = None
    kind, data = "message", []
    text = stream.decode("utf-8")
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                found.append((event_id, kind, "\n".join(data)))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)
    return found


def read_back(stream: bytes) -> List[Tuple[int, bytes]]:
    """The messages of a stream, as a client decodes them."""
    return [(int(i or 0), base64.b64decode(d) if kind == "base64" else d.encode("utf-8"))
            for i, kind, d in parse(stream)]


# -- framing ---------------------------------------------------------------------------

def test_an_event_carries_the_number_as_id_and_the_message_as_data() -> None:
    assert sse.event(7, b"hello") == b"id: 7\ndata: hello\n\n"


def test_a_message_with_line_breaks_spans_several_data_lines() -> None:
    assert sse.event(1, b"a\nb\n") == b"id: 1\ndata: a\ndata: b\ndata: \n\n"


@pytest.mark.parametrize("message", [b"\xff\xfe", b"a\rb", b"a\r\nb"])
def test_a_message_that_is_not_plain_utf8_text_is_sent_base64(message: bytes) -> None:
    assert sse.event(3, message) == (
        b"id: 3\nevent: base64\ndata: " + base64.b64encode(message) + b"\n\n")


@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=8))
def test_every_message_reads_back_exactly(messages: List[bytes]) -> None:
    nums = list(range(5, 5 + len(messages)))
    assert read_back(sse.events(nums, messages)) == list(zip(nums, messages))


@pytest.mark.parametrize("header, after", [
    (None, None), (b"12", 13), (b" 12 ", 13), (b"x", None), (b"-1", None), (b"9" * 20, None)])
def test_last_event_id_resumes_after_that_number(header: Optional[bytes],
                                                  after: Optional[int]) -> None:
    assert sse.resume_from(header) == after


# -- streams over the channel ------------------------------------------------------------

class Connection:
    """One client connection to the real Site, on an in-memory transport."""

    def __init__(self, site: Any, transport: Optional[StringTransport] = None) -> None:
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = transport or StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, request: bytes) -> None:
        self.protocol.dataReceived(request)

    def received(self) -> bytes:
        return self.transport.value()

    def body(self) -> bytes:
        return self.received().partition(b"\r\n\r\n")[2]

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Server:
    def __init__(self, folder: str, clock: Clock) -> None:
        self.clock = clock
        self.store = Store(folder, clock, sync_runner, fsync=False)
        self.store.load()
        self.web = KafWeb(self.store)
        self.site = make_site(self.web, clock)

    def put(self, log: str, *messages: bytes) -> None:
        self.store.get_or_create(log).put(list(messages))
        self.clock.advance(0)

    def stream(self, path: str, headers: bytes = b"Accept: text/event-stream\r\n") -> Connection:
        c = Connection(self.site)
        c.send(b"GET " + path + b" HTTP/1.1\r\nHost: kaf\r\n" + headers + b"\r\n")
        return c


@pytest.fixture
def server(tmp_path: Any, clock: Clock) -> Iterator[Server]:
    s = Server(str(tmp_path / "data"), clock)
    yield s
    s.store.close()


def test_a_stream_sends_the_stored_messages_then_each_new_one(server: Server) -> None:
    server.put("ev", b"one", b"two")
    c = server.stream(b"/get/ev?from=1")
    head = c.received().split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Type: text/event-stream" in head
    assert read_back(dechunk(c.body())) == [(1, b"one"), (2, b"two")]
    server.put("ev", b"three\nlines")
    assert read_back(dechunk(c.body()))[-1] == (3, b"three\nlines")
    c.close()


def test_format_sse_streams_for_clients_that_cannot_set_headers(server: Server) -> None:
    server.put("ev", b"one")
    c = server.stream(b"/get/ev?from=1&format=sse", headers=b"")
    assert read_back(dechunk(c.body())) == [(1, b"one")]
    c.close()


def test_last_event_id_resumes_after_it(server: Server) -> None:
    server.put("ev", b"1", b"2", b"3")
    c = server.stream(b"/get/ev?from=1",
                      b"Accept: text/event-stream\r\nLast-Event-ID: 2\r\n")
    assert read_back(dechunk(c.body())) == [(3, b"3")]
    c.close()


def test_a_stream_from_before_an_archive_starts_at_the_first_message_there_is(
        server: Server) -> None:
    server.put("ev", b"1", b"2", b"3")
    server.store.get("ev").archive(2)
    server.clock.advance(0)
    c = server.stream(b"/get/ev?from=1")
    assert read_back(dechunk(c.body())) == [(3, b"3")]
    c.close()


def test_a_stream_of_a_log_not_yet_made_waits_for_its_first_message(server: Server) -> None:
    c = server.stream(b"/get/new?from=1")
    assert read_back(dechunk(c.body())) == []
    server.put("new", b"first")
    assert read_back(dechunk(c.body())) == [(1, b"first")]
    c.close()


def test_a_quiet_stream_gets_a_comment_every_15_seconds(server: Server) -> None:
    c = server.stream(b"/get/ev?from=1")
    before = c.body().count(b": keep-alive")
    server.clock.advance(sse.KEEPALIVE)
    assert c.body().count(b": keep-alive") == before + 1
    server.clock.advance(sse.KEEPALIVE)
    assert c.body().count(b": keep-alive") == before + 2
    c.close()


def test_a_stream_sends_a_comment_only_after_15_quiet_seconds(server: Server) -> None:
    c = server.stream(b"/get/ev?from=1")
    server.clock.advance(10)
    server.put("ev", b"one")
    server.clock.advance(sse.KEEPALIVE - 10)
    # An event went out 5 seconds ago: no comment yet.
    assert c.body().count(b": keep-alive") == 0
    server.clock.advance(10)
    assert c.body().count(b": keep-alive") == 1
    assert read_back(dechunk(c.body())) == [(1, b"one")]
    c.close()


def test_one_put_is_read_once_for_all_the_streams_it_wakes(
        server: Server, monkeypatch: Any) -> None:
    server.put("fan", b"old")
    streams = [server.stream(b"/get/fan?from=2") for _ in range(50)]
    reads: List[int] = []
    real = LogFile.read

    def counted(self: LogFile, i: int, count: int) -> Any:
        reads.append(count)
        return real(self, i, count)

    monkeypatch.setattr(LogFile, "read", counted)
    server.put("fan", b"new")
    assert reads == [1]
    for c in streams:
        assert read_back(dechunk(c.body())) == [(2, b"new")]
    server.put("fan", b"newer")
    assert reads == [1, 1]
    for c in streams:
        assert read_back(dechunk(c.body())) == [(2, b"new"), (3, b"newer")]
        c.close()


class SmallSocket(StringTransport):
    """
    A transport whose buffer fills at C{limit} bytes: then, as a real one,
    it pauses its producer (the channel) within the write, until drained.
    """

    def __init__(self, limit: int) -> None:
        StringTransport.__init__(self)
        self.limit = limit
        self.full = False

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        if not self.full and len(self.value()) >= self.limit:
            self.full = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def drain(self) -> bytes:
        sent = self.value()
        self.clear()
        self.full = False
        self.producer.resumeProducing()
        return sent


def test_a_stream_reads_the_log_only_as_the_socket_drains(server: Server) -> None:
    messages = [b"m%d" % (i,) for i in range(1, 5 * sse.BATCH + 1)]
    server.put("big", *messages)
    c = Connection(server.site, SmallSocket(limit=1000))
    c.send(b"GET /get/big?from=1 HTTP/1.1\r\nHost: kaf\r\nAccept: text/event-stream\r\n\r\n")
    sent = c.transport.value()
    # One batch at most went out while the socket was full.
    assert len(read_back(dechunk(sent.partition(b"\r\n\r\n")[2]))) <= sse.BATCH
    socket = c.transport
    assert isinstance(socket, SmallSocket)
    got = socket.drain()
    rounds = 1
    while socket.full:
        got += socket.drain()
        rounds += 1
    got += socket.value()
    assert rounds >= 3
    assert read_back(dechunk(got.partition(b"\r\n\r\n")[2])) == list(
        zip(range(1, len(messages) + 1), messages))
    c.close()


def test_a_client_that_goes_away_leaves_nothing_behind(server: Server) -> None:
    c = server.stream(b"/get/gone?from=1")
    log = server.store._logs["gone"]
    assert log.waiting == 1
    c.close()
    assert log.waiting == 0
    assert "gone" not in server.store._logs
    assert server.clock.getDelayedCalls() == []


def test_the_streams_caught_up_on_a_log_wait_on_it_once_and_leave_nothing(
        server: Server) -> None:
    server.put("many", b"old")
    streams = [server.stream(b"/get/many?from=2") for _ in range(3)]
    log = server.store._logs["many"]
    # One wait of the log serves the three streams.
    assert log.waiting == 1
    server.put("many", b"new")
    for c in streams:
        assert read_back(dechunk(c.body())) == [(2, b"new")]
    assert log.waiting == 1
    # One leaves: the others still get the next put.
    streams[0].close()
    server.put("many", b"newer")
    for c in streams[1:]:
        assert read_back(dechunk(c.body())) == [(2, b"new"), (3, b"newer")]
    assert b"newer" not in streams[0].body()
    for c in streams[1:]:
        c.close()
    assert log.waiting == 0
    assert sse._followers == {}


def test_a_stream_ends_when_the_server_stops(server: Server) -> None:
    server.put("ev", b"x")
    c = server.stream(b"/get/ev?from=1")
    server.store.close()
    server.clock.advance(0)
    assert c.body().endswith(b"0\r\n\r\n")


def dechunk(body: bytes) -> bytes:
    """The data of a chunked body (as much as has come)."""
    out = []
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2:]
    return b"".join(out)
