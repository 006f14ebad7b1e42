"""
The client library (kaf.client) against the real KafWeb, in memory through
StubTreq, with a task.Clock for long polls, timeouts and retry delays.
"""
from __future__ import annotations

import os

import json
from typing import Any, List, Optional, Tuple, Type

import pytest
from hypothesis import given, settings, strategies as st
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from kaf import _format
from kaf import client as kc
from kaf.client import KafClient
from kaf.engines.file.store import Store
from kaf.api.web import KafWeb

from conftest import fired as _fired
from conftest import copy_fixture, sync_runner

URL = "http://kaf.test"


class Server:
    """A real store and web app, reached through StubTreq."""

    def __init__(self, folder: str, clock: Clock, max_message_size: int = 1000) -> None:
        self.clock = clock
        self.folder = folder
        self.store = Store(folder, clock, sync_runner)
        self.store.load()
        self.web = KafWeb(self.store, max_message_size=max_message_size, max_wait=60)
        self.stub = StubTreq(self.web.resource())

    def client(self, treq: Any = None, timeout: Optional[float] = 300.0) -> KafClient:
        return KafClient(URL, treq=treq or self.stub, reactor=self.clock, timeout=timeout)

    def result(self, d: "Deferred[Any]") -> Any:
        """What C{d} fired with, once the in-memory connections are pumped."""
        self.stub.flush()
        return _fired(d)

    def failure(self, d: "Deferred[Any]", kind: Type[BaseException]) -> Any:
        """The exception C{d} failed with, which must be a C{kind}."""
        with pytest.raises(kind) as info:
            self.result(d)
        return info.value


@pytest.fixture
def server(tmp_path: Any, clock: Clock) -> Server:
    return Server(str(tmp_path / "data"), clock)


@pytest.fixture
def client(server: Server) -> KafClient:
    return server.client()


class FaultyTreq:
    """
    A fault injector in front of a treq-like object: requests go through
    to it, except that the next C{fail_next} requests either fail before
    they are sent (C{when="before"}) or lose their reply after the server
    answered (C{when="after"}) with a dropped connection.  It records the
    URLs asked for.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail_next = 0
        self.when = "before"
        self.urls: List[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
        self.urls.append(url)
        if self.fail_next:
            self.fail_next -= 1
            lost = ResponseFailed([Failure(ConnectionLost("connection dropped"))])
            if self.when == "before":
                return fail(lost)
            return self.inner.request(method, url, **kwargs).addCallback(
                lambda response: fail(lost))
        return self.inner.request(method, url, **kwargs)

    def content(self, response: Any) -> "Deferred[bytes]":
        return self.inner.content(response)


class RefusingTreq:
    """A treq-like object for a server that is not there."""

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
        return fail(ConnectionRefusedError())


class SilentTreq:
    """A treq-like object for a server that never answers."""

    def __init__(self) -> None:
        self.cancelled = 0

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
        def cancel(d: "Deferred[Any]") -> None:
            self.cancelled += 1

        return Deferred(cancel)


# -- put ------------------------------------------------------------------------

def test_put_returns_the_new_message_number(server: Server, client: KafClient) -> None:
    assert server.result(client.put("ev", b"one")) == 1
    assert server.result(client.put("ev", b"two")) == 2
    got = server.result(client.get("ev", 1))
    assert got.messages == [(1, b"one"), (2, b"two")]


def test_put_with_matching_expect_appends(server: Server, client: KafClient) -> None:
    assert server.result(client.put("ev", b"first", expect=0)) == 1
    assert server.result(client.put("ev", b"second", expect=1)) == 2


def test_put_with_wrong_expect_raises_expect_failed_with_last(
        server: Server, client: KafClient) -> None:
    server.result(client.put("ev", b"a"))
    server.result(client.put("ev", b"b"))
    error = server.failure(client.put("ev", b"c", expect=1), kc.ExpectFailed)
    assert error.status == 409
    assert error.last == 2
    assert "put:" in error.reason and "2" in error.reason
    assert server.result(client.last_number("ev")) == 2


def test_put_batch_numbers_messages_consecutively_and_keeps_any_bytes(
        server: Server, client: KafClient) -> None:
    messages = [b"plain", b"two\nlines\n", b"\nKAF_MSG|9|3\nfake", b"\x00\xff" * 10, b"\n"]
    server.result(client.put("ev", b"before"))
    assert server.result(client.put_batch("ev", messages)) == 6
    got = server.result(client.get("ev", 2))
    assert got.messages == list(zip(range(2, 7), messages))


def test_put_batch_splits_big_lists_into_several_requests(server: Server) -> None:
    spy = FaultyTreq(server.stub)
    client = server.client(spy)
    messages = [b"m%d" % (i,) for i in range(kc.MAX_BATCH_COUNT * 2 + 5)]
    assert server.result(client.put_batch("ev", messages)) == len(messages)
    assert len([u for u in spy.urls if "/put/" in u]) == 3
    got = server.result(client.get("ev", kc.MAX_BATCH_COUNT - 1, limit=3))
    assert got.messages == [(n, b"m%d" % (n - 1,)) for n in range(
        kc.MAX_BATCH_COUNT - 1, kc.MAX_BATCH_COUNT + 2)]


def test_batches_stay_under_the_byte_and_count_limits() -> None:
    messages = [b"x" * 100] * 25
    runs = kc.batches(messages, max_bytes=1000, max_count=4)
    assert [len(r) for r in runs] == [4, 4, 4, 4, 4, 4, 1]
    runs = kc.batches(messages, max_bytes=400, max_count=100)
    assert [len(r) for r in runs] == [2] * 12 + [1]
    assert kc.batches([b"huge" * 1000, b"a"], max_bytes=100) == [[b"huge" * 1000], [b"a"]]


def test_put_batch_with_expect_fails_as_a_whole_when_expect_is_wrong(
        server: Server, client: KafClient) -> None:
    server.result(client.put("ev", b"a"))
    error = server.failure(client.put_batch("ev", [b"x", b"y"], expect=0), kc.ExpectFailed)
    assert error.last == 1
    assert server.result(client.last_number("ev")) == 1


def test_put_batch_with_expect_continues_the_expect_across_requests(
        server: Server) -> None:
    spy = FaultyTreq(server.stub)
    client = server.client(spy)
    messages = [b"%d" % (i,) for i in range(kc.MAX_BATCH_COUNT + 1)]
    assert server.result(client.put_batch("ev", messages, expect=0)) == len(messages)
    puts = [u for u in spy.urls if "/put/" in u]
    assert "expect=0" in puts[0]
    assert "expect=%d" % (kc.MAX_BATCH_COUNT,) in puts[1]


def test_put_batch_of_no_messages_is_refused(client: KafClient) -> None:
    with pytest.raises(ValueError):
        client.put_batch("ev", [])


# -- get --------------------------------------------------------------------------

def test_get_returns_numbered_messages_and_the_header_numbers(
        server: Server, client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"a", b"b", b"c", b"d"]))
    got = server.result(client.get("ev", 2, limit=2))
    assert got.messages == [(2, b"b"), (3, b"c")]
    assert (got.first, got.last_sent, got.last) == (2, 3, 4)


def test_get_of_a_missing_log_holds_no_messages_and_no_numbers(
        server: Server, client: KafClient) -> None:
    got = server.result(client.get("nothing", 1))
    assert got.messages == []
    assert (got.first, got.last_sent, got.last) == (None, None, None)


def test_get_past_the_end_gives_the_logs_last_number(server: Server,
                                                     client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"a", b"b"]))
    got = server.result(client.get("ev", 3))
    assert got.messages == []
    assert (got.last_sent, got.last) == (None, 2)


def test_get_with_wait_answers_when_a_message_is_put(server: Server,
                                                     client: KafClient) -> None:
    waiting = client.get("ev", 1, wait=30)
    server.stub.flush()
    assert not waiting.called
    server.result(client.put("ev", b"news"))
    got = server.result(waiting)
    assert got.messages == [(1, b"news")]


def test_get_with_wait_answers_empty_when_the_wait_is_over(server: Server,
                                                           client: KafClient) -> None:
    waiting = client.get("ev", 1, wait=5)
    server.clock.advance(4.9)
    server.stub.flush()
    assert not waiting.called
    server.clock.advance(0.2)
    assert server.result(waiting).messages == []


def test_fetch_keeps_raw_and_json_bodies(server: Server, client: KafClient) -> None:
    server.result(client.put_batch("ev", [b'{"a": 1}', b"text"]))
    raw = server.result(client.fetch("ev", 1, "raw"))
    assert raw.body == b'{"a": 1}\ntext\n'
    assert (raw.first, raw.last_sent, raw.messages) == (1, 2, [])
    js = server.result(client.fetch("ev", 1, "json"))
    assert json.loads(js.body) == [{"a": 1}, "text"]


def test_last_number_is_zero_for_a_missing_log_and_continues_after_archive(
        server: Server, client: KafClient) -> None:
    assert server.result(client.last_number("ev")) == 0
    server.result(client.put_batch("ev", [b"a", b"b", b"c"]))
    server.result(client.archive("ev", 3))
    assert server.result(client.last_number("ev")) == 3


# -- archive and logs ---------------------------------------------------------------

def test_archive_returns_the_servers_result_and_keeps_later_messages(
        server: Server, client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"%d" % (i,) for i in range(1, 11)]))
    result = server.result(client.archive("ev", 4))
    assert result["log"] == "ev" and result["upto"] == 4 and result["kept"] == 6
    assert result["archive"].startswith("--ev--")
    assert server.result(client.get("ev", 1)).messages[0] == (5, b"5")
    again = server.result(client.archive("ev", 4))
    assert again["archive"] is None


def test_archive_of_an_unknown_log_raises_not_found(server: Server,
                                                    client: KafClient) -> None:
    error = server.failure(client.archive("nope", 1), kc.NotFound)
    assert error.status == 404 and error.reason.startswith("archive:")


def test_logs_lists_every_log_with_its_numbers(server: Server, client: KafClient) -> None:
    server.result(client.put_batch("b", [b"1", b"2"]))
    server.result(client.put("a", b"x"))
    logs = server.result(client.logs())
    assert [(log["name"], log["first"], log["last"], log["count"]) for log in logs] == [
        ("a", 1, 1, 1), ("b", 1, 2, 2)]


# -- errors ---------------------------------------------------------------------------

def test_a_bad_log_name_raises_bad_request_with_the_servers_reason(
        server: Server, client: KafClient) -> None:
    error = server.failure(client.put("bad name", b"x"), kc.BadRequest)
    assert error.status == 400
    assert error.reason == "put: log name may only hold A-Z a-z 0-9 _ . -"
    error = server.failure(client.get("a/b", 1), kc.BadRequest)
    assert error.reason.startswith("get:")


def test_writing_a_kaf_log_raises_forbidden(server: Server, client: KafClient) -> None:
    error = server.failure(client.put("_kaf", b"x"), kc.Forbidden)
    assert error.status == 403


def test_an_empty_message_raises_bad_request(server: Server, client: KafClient) -> None:
    error = server.failure(client.put("ev", b""), kc.BadRequest)
    assert error.reason == "put: empty message"


def test_a_message_over_the_limit_raises_too_large(server: Server,
                                                   client: KafClient) -> None:
    error = server.failure(client.put("ev", b"x" * 1001), kc.TooLarge)
    assert error.status == 413
    error = server.failure(client.put_batch("ev", [b"ok", b"x" * 1001]), kc.TooLarge)
    assert server.result(client.last_number("ev")) == 0


def test_an_unreadable_log_raises_server_error(tmp_path: Any, clock: Clock) -> None:
    data = copy_fixture("edited/bad-db-header", str(tmp_path / "data"))
    server = Server(data, clock)
    error = server.failure(server.client().get("log", 1), kc.ServerError)
    assert error.status == 500 and error.reason.startswith("get:")


def test_a_refused_connection_raises_connection_error(clock: Clock) -> None:
    client = KafClient("127.0.0.1:1", treq=RefusingTreq(), reactor=clock)
    assert client.url == "http://127.0.0.1:1"
    with pytest.raises(kc.KafConnectionError) as info:
        _fired(client.put("ev", b"x"))
    assert info.value.reason == "cannot connect to http://127.0.0.1:1: connection refused"


def test_a_dropped_connection_raises_connection_error(server: Server) -> None:
    faulty = FaultyTreq(server.stub)
    faulty.fail_next = 1
    error = server.failure(server.client(faulty).get("ev", 1), kc.KafConnectionError)
    assert "connection dropped" in error.reason


def test_a_request_with_no_reply_times_out(clock: Clock) -> None:
    silent = SilentTreq()
    client = KafClient(URL, treq=silent, reactor=clock, timeout=10)
    d = client.get("ev", 1, wait=20)
    clock.advance(29)
    assert not d.called
    clock.advance(2)
    with pytest.raises(kc.KafConnectionError) as info:
        _fired(d)
    assert "no reply" in info.value.reason
    assert silent.cancelled == 1


# -- the kaf reply parser ------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.binary(max_size=30)), max_size=8))
def test_parse_kaf_reply_returns_the_numbers_and_exact_data(
        steps: List[Tuple[int, bytes]]) -> None:
    nums, num = [], 0
    for step, _ in steps:
        num += step
        nums.append(num)
    messages = [m for _, m in steps]
    body = _format.reply_header(len(messages)) + _format.records_of(nums, messages)
    assert kc.parse_kaf_reply(body) == list(zip(nums, messages))


@pytest.mark.parametrize("body", [
    b"",
    b"KAF_MSGS|v1|",
    b"KAF_MSGS|v1|2\nKAF_MSG|1|1\na",                   # fewer than the count
    b"KAF_MSGS|v1|1\nKAF_MSG|1|5\nabc",                 # data cut short
    b"KAF_MSGS|v1|1\nKAF_MSG|1|1\nabc",                 # bytes after the data
    b"KAF_MSGS|v1|2\nKAF_MSG|2|1\na\nKAF_MSG|2|1\nb",   # numbers must increase
    b"KAF_MSGS|v1|1\n\nKAF_MSG|1|1\na",                 # no blank lines
])
def test_parse_kaf_reply_refuses_anything_not_exact(body: bytes) -> None:
    with pytest.raises(kc.KafProtocolError):
        kc.parse_kaf_reply(body)


# -- follow -----------------------------------------------------------------------------

class Received:
    """Collects what a follower delivers."""

    def __init__(self) -> None:
        self.messages: List[Tuple[int, bytes]] = []

    def __call__(self, num: int, data: bytes) -> None:
        self.messages.append((num, data))


def test_follow_delivers_existing_messages_then_those_put_later(
        server: Server, client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"a", b"b"]))
    received = Received()
    follower = client.follow("ev", 1, received, wait=30)
    server.stub.flush()
    assert received.messages == [(1, b"a"), (2, b"b")]
    server.result(client.put("ev", b"c"))
    server.stub.flush()
    server.result(client.put_batch("ev", [b"d", b"e"]))
    server.stub.flush()
    assert received.messages == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")]
    assert server.result(follower.stop()) == 6


def test_follow_waits_for_a_log_that_does_not_exist_yet(server: Server,
                                                        client: KafClient) -> None:
    received = Received()
    follower = client.follow("later", 1, received, wait=30)
    server.stub.flush()
    server.clock.advance(30)   # one empty long poll, then another
    server.stub.flush()
    server.result(client.put("later", b"first"))
    server.stub.flush()
    assert received.messages == [(1, b"first")]
    follower.stop()


def test_follow_resumes_after_a_dropped_connection_without_loss_or_repeat(
        server: Server) -> None:
    faulty = FaultyTreq(server.stub)
    client = server.client(faulty)
    server.result(client.put_batch("ev", [b"a", b"b"]))
    received = Received()
    retries: List[float] = []
    # The server answers the first get, but the reply is lost on the way.
    faulty.fail_next, faulty.when = 1, "after"
    follower = client.follow("ev", 1, received, wait=30,
                             on_retry=lambda error, delay: retries.append(delay))
    server.stub.flush()
    assert received.messages == [] and retries == [kc.Follower.MIN_BACKOFF]
    server.result(client.put("ev", b"c"))
    server.clock.advance(kc.Follower.MIN_BACKOFF)
    server.stub.flush()
    assert received.messages == [(1, b"a"), (2, b"b"), (3, b"c")]
    gets = [u for u in faulty.urls if "/get/" in u]
    assert "from=1&" in gets[0] and "from=1&" in gets[1] and "from=4&" in gets[2]
    follower.stop()


def test_follow_backs_off_longer_after_each_failure_then_resets(server: Server) -> None:
    faulty = FaultyTreq(server.stub)
    client = server.client(faulty)
    faulty.fail_next = 3
    retries: List[float] = []
    received = Received()
    follower = client.follow("ev", 1, received, wait=30,
                             on_retry=lambda error, delay: retries.append(delay))
    for delay in (0.5, 1.0, 2.0):
        server.stub.flush()
        server.clock.advance(delay)
    server.stub.flush()
    assert retries == [0.5, 1.0, 2.0]
    server.result(client.put("ev", b"ok"))
    server.stub.flush()
    assert received.messages == [(1, b"ok")]
    faulty.fail_next = 1
    server.clock.advance(30)
    server.stub.flush()
    assert retries == [0.5, 1.0, 2.0, 0.5]
    follower.stop()


def test_follow_retries_a_server_error(tmp_path: Any, clock: Clock) -> None:
    data = copy_fixture("edited/bad-db-header", str(tmp_path / "data"))
    server = Server(data, clock)
    errors: List[kc.KafClientError] = []
    follower = server.client().follow("log", 1, Received(),
                                      on_retry=lambda e, delay: errors.append(e))
    server.stub.flush()
    clock.advance(0.5)
    server.stub.flush()
    assert len(errors) == 2 and isinstance(errors[0], kc.ServerError)
    assert server.result(follower.stop()) == 1


def test_stop_ends_a_waiting_follower_with_the_number_to_resume_from(
        server: Server, client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"a", b"b", b"c"]))
    follower = client.follow("ev", 2, Received(), wait=30)
    server.stub.flush()
    assert not follower.done.called
    assert server.result(follower.stop()) == 4
    assert follower.next == 4
    # The abandoned long poll leaves nothing behind, on either side.
    server.stub.flush()
    assert server.clock.getDelayedCalls() == []
    assert server.store.get("ev").waiting == 0


def test_stop_during_a_retry_delay_ends_the_follower(server: Server) -> None:
    faulty = FaultyTreq(server.stub)
    faulty.fail_next = 1
    follower = server.client(faulty).follow("ev", 7, Received())
    server.stub.flush()
    assert not follower.done.called
    assert server.result(follower.stop()) == 7
    assert server.clock.getDelayedCalls() == []


def test_stop_from_on_message_delivers_nothing_after_it(server: Server,
                                                        client: KafClient) -> None:
    received: List[int] = []
    followers: List[kc.Follower] = []

    def on_message(num: int, data: bytes) -> None:
        received.append(num)
        if num == 2:
            followers[0].stop()

    followers.append(client.follow("ev", 1, on_message, wait=30))
    server.stub.flush()
    server.result(client.put_batch("ev", [b"a", b"b", b"c"]))
    server.stub.flush()
    assert received == [1, 2]
    assert server.result(followers[0].done) == 3


def test_follow_waits_for_a_deferred_from_on_message(server: Server,
                                                     client: KafClient) -> None:
    server.result(client.put_batch("ev", [b"a", b"b"]))
    received: List[int] = []

    def slow(num: int, data: bytes) -> "Deferred[None]":
        received.append(num)
        return deferLater(server.clock, 1.0)

    follower = client.follow("ev", 1, slow)
    server.stub.flush()
    assert received == [1]
    server.clock.advance(1.0)
    assert received == [1, 2]
    server.clock.advance(1.0)
    follower.stop()


def test_follow_fails_when_the_server_refuses_the_request(server: Server,
                                                          client: KafClient) -> None:
    follower = client.follow("bad name", 1, Received())
    error = server.failure(follower.done, kc.BadRequest)
    assert error.reason.startswith("get:")


def test_follow_fails_when_on_message_raises(server: Server, client: KafClient) -> None:
    server.result(client.put("ev", b"a"))

    def broken(num: int, data: bytes) -> None:
        raise RuntimeError("consumer broke")

    follower = client.follow("ev", 1, broken)
    server.failure(follower.done, RuntimeError)


# -- copy ----------------------------------------------------------------------------------

@pytest.fixture
def two_servers(tmp_path: Any, clock: Clock) -> Tuple[Server, Server]:
    return (Server(str(tmp_path / "source"), clock),
            Server(str(tmp_path / "dest"), clock))


def _messages(n: int) -> List[bytes]:
    return [b"message %d\n\x00" % (i,) for i in range(1, n + 1)]


def test_copy_log_copies_every_message_with_its_number(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(25)))
    progress: List[Tuple[int, int]] = []
    d = kc.copy_log(src, "ev", dst, "copy", lambda n, size: progress.append((n, size)),
                    limit=10)
    source.stub.flush()
    result = dest.result(d)
    assert (result.messages, result.last) == (25, 25)
    assert result.bytes == sum(len(m) for m in _messages(25))
    assert [n for n, _ in progress] == [10, 20, 25]
    copied = dest.result(dst.get("copy", 1)).messages
    assert copied == list(zip(range(1, 26), _messages(25)))


def test_copy_log_resumes_after_the_destinations_last_message(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(30)))
    dest.result(dst.put_batch("ev", _messages(12)))   # an interrupted copy
    spy = FaultyTreq(source.stub)
    d = kc.copy_log(source.client(spy), "ev", dst, "ev", limit=10)
    source.stub.flush()
    result = dest.result(d)
    assert (result.messages, result.last) == (18, 30)
    assert "from=13&" in [u for u in spy.urls if "limit=10" in u][0]
    assert dest.result(dst.get("ev", 1)).messages == list(zip(range(1, 31), _messages(30)))


def test_copy_log_refuses_when_the_destination_is_ahead(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(3)))
    dest.result(dst.put_batch("ev", _messages(5)))
    error = dest.failure(kc.copy_log(src, "ev", dst, "ev"), kc.CopyRefused)
    assert "ahead" in error.reason and "(5)" in error.reason and "(3)" in error.reason
    assert dest.result(dst.last_number("ev")) == 5


def test_copy_log_of_an_archived_source_keeps_its_numbers_in_an_empty_destination(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(10)))
    source.result(src.archive("ev", 4))
    d = kc.copy_log(src, "ev", dst, "ev", limit=3)
    source.stub.flush()
    result = dest.result(d)
    assert (result.messages, result.last) == (6, 10)
    assert dest.result(dst.get("ev", 1)).messages == list(zip(range(5, 11), _messages(10)[4:]))
    with open(os.path.join(dest.folder, "ev"), "rb") as f:
        assert f.read().startswith(b"KAF_DB|v1|4\nKAF_MSG|5|")


def test_copy_log_of_an_archived_source_resumes_after_an_interruption(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(20)))
    source.result(src.archive("ev", 7))
    flaky = FaultyTreq(source.stub)

    def drop_the_connection_after_two_batches(copied: int, size: int) -> None:
        if copied >= 6:
            flaky.fail_next = 100

    d = kc.copy_log(source.client(flaky), "ev", dst, "ev",
                    drop_the_connection_after_two_batches, limit=3)
    source.stub.flush()
    dest.failure(d, kc.KafConnectionError)
    interrupted_at = dest.result(dst.last_number("ev"))
    assert 13 <= interrupted_at < 20
    result = dest.result(kc.copy_log(src, "ev", dst, "ev", limit=3))
    assert (result.messages, result.last) == (20 - interrupted_at, 20)
    assert dest.result(dst.get("ev", 1)).messages == list(zip(range(8, 21), _messages(20)[7:]))


def test_copy_log_refuses_an_archived_source_after_a_destination_holding_messages(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(10)))
    source.result(src.archive("ev", 4))
    dest.result(dst.put_batch("ev", _messages(2)))
    error = dest.failure(kc.copy_log(src, "ev", dst, "ev"), kc.CopyRefused)
    assert "begins at message 5" in error.reason and "up to 2" in error.reason
    assert dest.result(dst.get("ev", 1)).messages == list(zip([1, 2], _messages(2)))


def test_copy_log_copies_up_to_a_gap_in_the_source(tmp_path: Any, clock: Clock) -> None:
    # A hand-edited source: message 3 is missing.
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "ev").write_bytes(_format.db_header(0) + _format.records_of(
        [1, 2, 4], [b"a", b"b", b"d"]))
    source, dest = Server(str(folder), clock), Server(str(tmp_path / "dest"), clock)
    dst = dest.client()
    error = dest.failure(kc.copy_log(source.client(), "ev", dst, "ev"), kc.CopyRefused)
    assert "no message 3" in error.reason and "after 2" in error.reason
    assert dest.result(dst.get("ev", 1)).messages == [(1, b"a"), (2, b"b")]


def test_copy_log_stops_when_another_writer_changes_the_destination(
        two_servers: Tuple[Server, Server]) -> None:
    source, dest = two_servers
    src, dst = source.client(), dest.client()
    source.result(src.put_batch("ev", _messages(20)))

    class Intruder(FaultyTreq):
        """Puts a message of its own just before the copy's second batch."""

        puts = 0

        def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
            if "/put/" in url:
                self.puts += 1
                if self.puts == 2:
                    dest.result(dst.put("ev", b"intruder"))
            return FaultyTreq.request(self, method, url, **kwargs)

    d = kc.copy_log(src, "ev", dest.client(Intruder(dest.stub)), "ev", limit=10)
    source.stub.flush()
    error = dest.failure(d, kc.ExpectFailed)
    assert error.last == 11
    assert dest.result(dst.get("ev", 10)).messages == [(10, _messages(20)[9]),
                                                       (11, b"intruder")]


def test_split_log_url_separates_the_server_and_the_log() -> None:
    assert kc.split_log_url("http://h:7749/ev") == ("http://h:7749", "ev")
    assert kc.split_log_url("http://h/prefix/ev/") == ("http://h/prefix", "ev")
    for bad in ("http://h:7749", "http://h:7749/", "ev"):
        with pytest.raises(ValueError):
            kc.split_log_url(bad)


# -- a client written for the Go version ---------------------------------------------------

def test_go_version_polling_loop_reads_every_message_once(server: Server) -> None:
    """
    The loop from the Go version's README, unchanged: GET raw from N, read
    X-Kaf-LastMsgSent, ask again from that + 1, sleep when nothing is new.
    """
    treq = server.stub
    client = server.client()
    server.result(client.put_batch("ev", [b"m%d" % (i,) for i in range(1, 8)]))
    received: List[bytes] = []
    sleeps: List[int] = []

    def poll(from_: int) -> "Deferred[None]":
        url = "%s/get/ev?from=%d&format=raw" % (URL, from_)
        d = treq.get(url)

        def got(response: Any) -> "Deferred[None]":
            last_sent = response.headers.getRawHeaders(b"X-Kaf-LastMsgSent")

            def body(data: bytes) -> "Deferred[None]":
                if last_sent is None:
                    assert data == b""
                    sleeps.append(from_)
                    return deferLater(server.clock, 1.0, poll, from_)
                received.extend(data.split(b"\n")[:-1])
                return poll(int(last_sent[0]) + 1)

            return treq.content(response).addCallback(body)

        return d.addCallback(got)

    loop = poll(1)
    server.stub.flush()
    assert received == [b"m%d" % (i,) for i in range(1, 8)]
    assert sleeps == [8]
    server.result(client.put_batch("ev", [b"m8", b"m9"]))
    server.clock.advance(1.0)
    server.stub.flush()
    assert received == [b"m%d" % (i,) for i in range(1, 10)]
    assert sleeps == [8, 10]
    server.clock.advance(1.0)
    server.stub.flush()
    assert sleeps == [8, 10, 10]
    loop.cancel()
    loop.addErrback(lambda f: None)


class BusyTreq:
    """
    A server that answers the next C{busy} requests 503 (as a NATS engine
    does while a stream elects its leader) before they reach Kaf; it
    records each request's Kaf-Msg-Id.
    """

    def __init__(self, inner: Any, busy: int) -> None:
        from twisted.web.resource import Resource

        class Busy(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setResponseCode(503)
                request.setHeader(b"Retry-After", b"1")
                return b"put: the NATS cluster did not answer in 2 s; try again\n"

        self.inner = inner
        self.busy = busy
        self.refuser = StubTreq(Busy())
        self.ids: List[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
        self.ids.append(kwargs["headers"][b"Kaf-Msg-Id"][0].decode())
        if self.busy:
            self.busy -= 1
            d = self.refuser.request(method, url, **kwargs)
            self.refuser.flush()
            return d
        return self.inner.request(method, url, **kwargs)

    def content(self, response: Any) -> "Deferred[bytes]":
        d = self.refuser.content(response) if response.code == 503 else \
            self.inner.content(response)
        self.refuser.flush()
        return d


def test_a_put_answered_503_is_sent_again_with_the_same_id(server: Server) -> None:
    busy = BusyTreq(server.stub, busy=2)
    d = server.client(busy).put("ev", b"once")
    server.stub.flush()
    server.clock.advance(0.5)
    server.stub.flush()
    server.clock.advance(1.0)
    assert server.result(d) == 1
    assert len(busy.ids) == 3 and len(set(busy.ids)) == 1
    assert server.result(server.client().get("ev", 1)).messages == [(1, b"once")]


def test_a_put_answered_503_too_often_raises_server_error(server: Server) -> None:
    busy = BusyTreq(server.stub, busy=10)
    d = server.client(busy).put("ev", b"never")
    for delay in (0.5, 1.0, 2.0):
        server.stub.flush()
        server.clock.advance(delay)
    error = server.failure(d, kc.ServerError)
    assert error.status == 503 and len(busy.ids) == 4
