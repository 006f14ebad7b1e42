"""
Exactly-once puts: C{Kaf-Msg-Id}, the dedupe window, its side file and its
recovery at start, driven in memory through StubTreq with a task.Clock;
the log service held mid-write; the client's retries with the same id.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kaf import client as kc
from kaf.engines.file.log import Log
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.msgids import SIDE, Dedupe, Duplicate
from kaf.engines.file.store import Store

from conftest import sync_runner
from test_client import FaultyTreq, Server
from test_log import outcome
from test_web import Answer, Kaf, data, unexpected_errors  # noqa: F401 (fixtures)


@pytest.fixture
def kaf(data: str, clock: Clock) -> Kaf:
    return Kaf(data, clock)


def put(kaf: Kaf, path: str, body: bytes, msg_id: Optional[str]) -> Answer:
    headers = {} if msg_id is None else {"Kaf-Msg-Id": msg_id}
    return kaf.answer(kaf.start("POST", path, body, headers=headers))


def messages(kaf: Kaf, name: str) -> List[bytes]:
    return [m for _, m in kc.parse_kaf_reply(kaf.get("/get/%s?from=1" % (name,)).body)]


def side(kaf: Kaf, name: str) -> bytes:
    return kaf.file(SIDE % (name,))


# -- the window ------------------------------------------------------------------

def test_a_repeated_id_writes_nothing_and_answers_the_first_number(kaf: Kaf) -> None:
    assert put(kaf, "/put/ev", b"zero", None).body == b"1"
    first = put(kaf, "/put/ev", b"one", "id-1")
    assert (first.code, first.body, first.header("Kaf-Duplicate")) == (200, b"2", None)
    again = put(kaf, "/put/ev", b"one", "id-1")
    assert (again.code, again.body, again.header("Kaf-Duplicate")) == (200, b"2", "true")
    assert put(kaf, "/put/ev", b"two", "id-2").body == b"3"
    assert messages(kaf, "ev") == [b"zero", b"one", b"two"]


def test_a_repeated_batch_answers_the_first_last_number_and_count(kaf: Kaf) -> None:
    first = put(kaf, "/put/ev?batch=lines", b"a\nb\nc\n", "batch-1")
    assert (first.body, first.header("X-Kaf-Count")) == (b"3", "3")
    again = put(kaf, "/put/ev?batch=lines", b"a\nb\nc\n", "batch-1")
    assert (again.body, again.header("X-Kaf-Count"), again.header("Kaf-Duplicate")) == (
        b"3", "3", "true")
    assert messages(kaf, "ev") == [b"a", b"b", b"c"]


def test_the_same_id_on_another_log_is_another_put(kaf: Kaf) -> None:
    assert put(kaf, "/put/a", b"x", "same").body == b"1"
    other = put(kaf, "/put/b", b"y", "same")
    assert (other.body, other.header("Kaf-Duplicate")) == (b"1", None)
    assert messages(kaf, "b") == [b"y"]


def test_a_repeat_answers_the_first_even_with_a_wrong_expect(kaf: Kaf) -> None:
    assert put(kaf, "/put/ev?expect=0", b"x", "e1").body == b"1"
    again = put(kaf, "/put/ev?expect=0", b"x", "e1")
    assert (again.code, again.body, again.header("Kaf-Duplicate")) == (200, b"1", "true")


def test_an_id_is_forgotten_after_the_window(kaf: Kaf, clock: Clock) -> None:
    assert put(kaf, "/put/ev", b"x", "w").body == b"1"
    clock.advance(119)
    assert put(kaf, "/put/ev", b"x", "w").header("Kaf-Duplicate") == "true"
    clock.advance(2)
    later = put(kaf, "/put/ev", b"x", "w")
    assert (later.body, later.header("Kaf-Duplicate")) == (b"2", None)


def test_a_window_of_zero_turns_dedupe_off(data: str, clock: Clock) -> None:
    kaf = Kaf(data, clock)
    kaf.store.dedupe.window = 0
    assert put(kaf, "/put/ev", b"x", "off").body == b"1"
    assert put(kaf, "/put/ev", b"x", "off").body == b"2"
    assert not os.path.exists(os.path.join(data, SIDE % ("ev",)))


@pytest.mark.parametrize("bad", ["", "x" * 129, "caf\u00e9", "tab\there", "del\x7f"])
def test_an_invalid_id_is_refused_and_nothing_is_written(kaf: Kaf, bad: str) -> None:
    answer = put(kaf, "/put/ev", b"x", bad.encode("latin-1"))  # type: ignore[arg-type]
    answer.assert_error(400, "put: invalid Kaf-Msg-Id")
    assert kaf.files() == []


def test_the_longest_printable_id_is_taken(kaf: Kaf) -> None:
    longest = "".join(chr(32 + i % 95) for i in range(128)).strip() + "~"
    longest = longest[:128]
    assert put(kaf, "/put/ev", b"x", longest).body == b"1"
    assert put(kaf, "/put/ev", b"x", longest).header("Kaf-Duplicate") == "true"


# -- the side file ------------------------------------------------------------------

def test_a_log_without_ids_has_no_side_file(kaf: Kaf) -> None:
    kaf.put("ev", b"x")
    assert kaf.files() == ["ev"]


def test_ids_are_kept_in_a_hidden_side_file_and_the_log_stays_in_the_go_format(
        kaf: Kaf, clock: Clock) -> None:
    clock.advance(1000)
    put(kaf, "/put/ev", b"hello", "abc")
    assert kaf.files() == [SIDE % ("ev",), "ev"]
    assert kaf.file("ev") == b"KAF_DB|v1|0\nKAF_MSG|1|5\nhello"
    assert side(kaf, "ev") == b"1|1|1000.000|abc\n"
    listed = kaf.get("/logs").json()
    assert [entry["name"] for entry in listed] == ["ev"]


def test_ids_are_recovered_at_start(data: str, clock: Clock) -> None:
    kaf = Kaf(data, clock)
    put(kaf, "/put/ev", b"one", "r1")
    put(kaf, "/put/ev?batch=lines", b"a\nb\n", "r2")
    clock.advance(60)
    restarted = Kaf(data, clock)
    again = put(restarted, "/put/ev", b"one", "r1")
    assert (again.body, again.header("Kaf-Duplicate")) == (b"1", "true")
    batch = put(restarted, "/put/ev?batch=lines", b"a\nb\n", "r2")
    assert (batch.body, batch.header("X-Kaf-Count")) == (b"3", "2")
    assert messages(restarted, "ev") == [b"one", b"a", b"b"]


def test_ids_past_the_window_are_not_recovered(data: str, clock: Clock) -> None:
    put(Kaf(data, clock), "/put/ev", b"one", "old")
    clock.advance(121)
    assert put(Kaf(data, clock), "/put/ev", b"one", "old").body == b"2"


def test_an_id_of_a_message_the_log_does_not_hold_is_dropped_at_start(
        data: str, clock: Clock) -> None:
    """A crash between the two files' syncs can leave an id without its message."""
    kaf = Kaf(data, clock)
    put(kaf, "/put/ev", b"one", "kept")
    with open(os.path.join(data, SIDE % ("ev",)), "ab") as f:
        f.write(b"2|1|0.000|lost\n3|1|0.000|torn-li")
    restarted = Kaf(data, clock)
    # A put without an id comes first: number 2 goes to it, not to "lost".
    assert restarted.put("ev", b"two") == 2
    retry = put(restarted, "/put/ev", b"lost message", "lost")
    assert (retry.body, retry.header("Kaf-Duplicate")) == (b"3", None)
    assert put(restarted, "/put/ev", b"one", "kept").header("Kaf-Duplicate") == "true"
    assert side(restarted, "ev") == b"1|1|0.000|kept\n3|1|0.000|lost\n"


def test_the_side_file_is_compacted_once_its_ids_expire(kaf: Kaf, clock: Clock) -> None:
    body = b"".join(b"m%d\n" % (i,) for i in range(3))
    for i in range(1100):
        put(kaf, "/put/ev", body[:3], "id-%d" % (i,))
    assert side(kaf, "ev").count(b"\n") == 1100
    clock.advance(200)
    put(kaf, "/put/ev", b"new", "fresh")
    assert side(kaf, "ev") == b"1101|1|200.000|fresh\n"
    log = kaf.store.get("ev")
    assert log is not None and kaf.store.dedupe.count == 1


def test_ids_keep_working_across_an_archive(kaf: Kaf) -> None:
    for i in range(1, 4):
        put(kaf, "/put/ev", b"m%d" % (i,), "a%d" % (i,))
    assert kaf.post("/archive/ev?upto=2").json()["kept"] == 1
    again = put(kaf, "/put/ev", b"m1", "a1")
    assert (again.body, again.header("Kaf-Duplicate")) == (b"1", "true")
    assert put(kaf, "/put/ev", b"m4", "a4").body == b"4"
    assert messages(kaf, "ev") == [b"m3", b"m4"]


# -- the cap ---------------------------------------------------------------------------

def test_new_ids_beyond_the_cap_are_refused_until_old_ones_expire(
        data: str, clock: Clock) -> None:
    kaf = Kaf(data, clock)
    kaf.store.dedupe.max_ids = 2
    put(kaf, "/put/a", b"x", "1")
    put(kaf, "/put/b", b"x", "2")
    refused = put(kaf, "/put/a", b"x", "3")
    refused.assert_error(503, "put: the dedupe window holds 2 message ids")
    assert refused.header("Retry-After") == "1"
    assert messages(kaf, "a") == [b"x"]
    # Repeats are still answered, and puts without an id still written.
    assert put(kaf, "/put/b", b"x", "2").header("Kaf-Duplicate") == "true"
    assert kaf.put("a", b"plain") == 2
    clock.advance(121)
    assert put(kaf, "/put/a", b"x", "3").body == b"3"
    # Expired ids of other logs are dropped once the cap is reached.
    assert put(kaf, "/put/a", b"x", "4").body == b"4"
    assert kaf.store.dedupe.count == 2


# -- the write path ----------------------------------------------------------------------

class HeldSyncs:
    """A syncer whose fsyncs complete (or fail) when the test says."""

    def __init__(self) -> None:
        self.held: List[Any] = []

    def __call__(self, f: Any, undo_to: int) -> "Deferred[None]":
        d: "Deferred[None]" = Deferred()
        self.held.append((f, undo_to, d))
        return d

    def release_all(self) -> None:
        held, self.held = self.held, []
        for _, _, d in held:
            d.callback(None)


def make_log(folder: str, clock: Clock, syncing: Any, gather: bool = False) -> Log:
    f = LogFile(folder, "ev")
    f.missing = True
    return Log(f, clock, sync_runner, fsync=True, gather=gather, syncing=syncing,
               dedupe=Dedupe())


def test_a_repeat_during_the_first_write_waits_for_it_to_be_durable(
        data: str, clock: Clock) -> None:
    os.makedirs(data)
    syncs = HeldSyncs()
    log = make_log(data, clock, syncs)
    first = outcome(log.put([b"one"], msg_id="x"))
    assert len(syncs.held) == 2  # the log file and the side file
    repeat = outcome(log.put([b"one"], msg_id="x"))
    assert first == [] and repeat == []
    syncs.release_all()
    assert first == [1] and not isinstance(first[0], Duplicate)
    assert repeat == [1] and isinstance(repeat[0], Duplicate)
    with open(os.path.join(data, "ev"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|0\nKAF_MSG|1|3\none"


def test_repeats_in_one_gathered_write_are_written_once(data: str, clock: Clock) -> None:
    os.makedirs(data)
    log = make_log(data, clock, lambda f, at: succeed(None), gather=True)
    answers = [outcome(log.put([b"m"], msg_id="same")) for _ in range(3)]
    answers.append(outcome(log.put([b"other"], msg_id="other")))
    clock.advance(0)
    clock.advance(0)
    assert [a[0] for a in answers] == [1, 1, 1, 2]
    assert [isinstance(a[0], Duplicate) for a in answers] == [False, True, True, False]
    assert log.last == 2


def test_a_failed_sync_of_the_side_file_undoes_the_message_too(
        data: str, clock: Clock) -> None:
    os.makedirs(data)

    def syncing(f: Any, at: int) -> "Deferred[None]":
        if isinstance(f, LogFile):
            return succeed(None)
        try:
            f.sync_failed(at, OSError(5, "Input/output error"))
        except Exception as e:
            return fail(e)
        return succeed(None)

    log = make_log(data, clock, syncing)
    failed = outcome(log.put([b"one"], msg_id="x"))
    assert failed[0].value.status == 500
    with open(os.path.join(data, "ev"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|0"
    with open(os.path.join(data, SIDE % ("ev",)), "rb") as f:
        assert f.read() == b""
    assert log.last == 0
    # The id was not remembered: a retry is a new put.
    log._syncing = lambda f, at: succeed(None)
    retry = outcome(log.put([b"one"], msg_id="x"))
    assert retry == [1] and not isinstance(retry[0], Duplicate)


def test_the_side_file_is_open_only_during_a_write(data: str, clock: Clock) -> None:
    kaf = Kaf(data, clock)
    put(kaf, "/put/ev", b"x", "fd")
    log = kaf.store.get("ev")
    assert log is not None and log._ids is not None and log._ids.fd is None
    assert kaf.store.files._opening == 0 and len(kaf.store.files) == 1


# -- the client ----------------------------------------------------------------------------

def test_the_client_sends_an_id_and_retries_a_dropped_put_with_it(
        tmp_path: Any, clock: Clock) -> None:
    server = Server(str(tmp_path / "data"), clock)
    faulty = FaultyTreq(server.stub)
    faulty.when = "after"  # the server wrote the put; its reply is lost
    faulty.fail_next = 1
    d = server.client(faulty).put("ev", b"once")
    server.stub.flush()
    clock.advance(kc.KafClient.PUT_RETRY_DELAY)
    assert server.result(d) == 1
    assert len(faulty.urls) == 2
    got = server.result(server.client().get("ev", 1))
    assert got.messages == [(1, b"once")]


def test_the_client_gives_up_after_its_retries(tmp_path: Any, clock: Clock) -> None:
    server = Server(str(tmp_path / "data"), clock)
    faulty = FaultyTreq(server.stub)
    faulty.fail_next = 10
    d = server.client(faulty).put("ev", b"x")
    for _ in range(kc.KafClient.PUT_RETRIES):
        server.stub.flush()
        clock.advance(10)
    server.failure(d, kc.KafConnectionError)
    assert len(faulty.urls) == kc.KafClient.PUT_RETRIES + 1


def test_each_client_put_has_its_own_id(tmp_path: Any, clock: Clock) -> None:
    server = Server(str(tmp_path / "data"), clock)
    client = server.client()
    assert [server.result(client.put("ev", b"same")) for _ in range(3)] == [1, 2, 3]
    assert server.result(client.put_batch("ev", [b"a", b"b"])) == 5
    with open(os.path.join(server.folder, SIDE % ("ev",)), "rb") as f:
        lines = f.read().splitlines()
    assert len(lines) == 4 and len({line.rsplit(b"|", 1)[1] for line in lines}) == 4


# -- the options -------------------------------------------------------------------------

def test_the_dedupe_window_takes_durations() -> None:
    from test_tap import parse
    assert parse()["dedupe-window"] == 120
    assert parse("--dedupe-window", "45s")["dedupe-window"] == 45
    assert parse("--dedupe-window", "1h")["dedupe-window"] == 3600
    assert parse("--dedupe-window", "0")["dedupe-window"] == 0
    assert parse("--dedupe-max-ids", "10")["dedupe-max-ids"] == 10


@pytest.mark.parametrize("args", [["--dedupe-window", "2 weeks"], ["--dedupe-window", "-1"],
                                  ["--dedupe-max-ids", "0"], ["--dedupe-max-ids", "x"]])
def test_bad_dedupe_options_are_refused(args: List[str]) -> None:
    from test_tap import parse
    from twisted.python.usage import UsageError
    with pytest.raises(UsageError) as info:
        parse(*args)
    assert args[0] in str(info.value) and "\n" not in str(info.value)


def test_the_service_passes_the_dedupe_options_to_the_store(tmp_path: Any) -> None:
    from test_tap import parse
    from twisted.internet.testing import MemoryReactorClock
    from kaf.tap import StoreService, makeService
    config = parse("--data", str(tmp_path), "--dedupe-window", "30s",
                   "--dedupe-max-ids", "7")
    service = makeService(config, MemoryReactorClock())
    store = next(s for s in service if isinstance(s, StoreService)).store
    assert (store.dedupe.window, store.dedupe.max_ids) == (30, 7)
