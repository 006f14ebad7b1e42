"""
Retention (C{--retain}, C{--archive-keep}): the archive of SPEC 3.3 run by
Kaf itself when a log passes a limit, through a real store and web app in
memory (StubTreq), passes run by a LoopingCall on a task.Clock.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, List, Optional

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.usage import UsageError

from kaf import client as kc
from kaf.engines.file.retention import (DEFAULT_INTERVAL, Retention, RetentionService, Rule,
                                        archive_files, duration, parse_rule, size)
from kaf.stats import Stats
from kaf.engines.file.store import Store

from conftest import sync_runner
from test_log import outcome
from test_web import Kaf, data, db_file, unexpected_errors  # noqa: F401 (fixtures)

ARCHIVE = re.compile(r"--ev--\d{4}-\d\d-\d\dT\d\d_\d\d_\d\dZ(_\d+)?\Z")


class Retained:
    """Kaf with retention rules, passes every DEFAULT_INTERVAL on the clock."""

    def __init__(self, folder: str, clock: Clock, *rules: str,
                 archive_keep: Optional[int] = None) -> None:
        self.clock = clock
        self.kaf = Kaf(folder, clock)
        self.retention = Retention(self.kaf.store, [parse_rule(r) for r in rules], clock,
                                   sync_runner, archive_keep=archive_keep)
        self.kaf.store.watch = self.retention.written
        self.service = RetentionService(self.retention, clock)
        self.service.startService()

    def put(self, name: str, *messages: bytes) -> int:
        last = 0
        for m in messages:
            last = self.kaf.put(name, m)
        return last

    def passes(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(DEFAULT_INTERVAL)

    def messages(self, name: str) -> List[int]:
        return [n for n, _ in kc.parse_kaf_reply(self.kaf.get("/get/%s?from=1" % (name,)).body)]

    def archives(self, name: str = "ev") -> List[str]:
        return archive_files(self.kaf.folder, name)


def numbered(count: int) -> List[bytes]:
    return [b"m%02d" % (i,) for i in range(1, count + 1)]


# -- the rules -----------------------------------------------------------------------

def test_a_rule_has_a_glob_and_limits() -> None:
    assert parse_rule("orders-*:max-messages=1000,max-bytes=10MB,max-age=7d") == Rule(
        "orders-*", 1000, 10_000_000, 7 * 86400)
    assert parse_rule("*:max-age=90m") == Rule("*", None, None, 5400)


@pytest.mark.parametrize("text,unit", [("500", 500), ("500B", 500), ("10kB", 10_000),
                                       ("10MB", 10_000_000), ("2GB", 2_000_000_000),
                                       ("1KiB", 1024), ("1GiB", 1 << 30), ("1.5MiB", 3 << 19)])
def test_sizes_take_decimal_and_binary_units(text: str, unit: int) -> None:
    assert size(text) == unit


@pytest.mark.parametrize("text,seconds", [("45", 45), ("45s", 45), ("30m", 1800),
                                          ("12h", 43200), ("7d", 604800)])
def test_durations_take_s_m_h_d(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["ev", ":max-messages=3", "ev:", "ev:max-messages=0",
                                  "ev:max-messages=x", "ev:max-bytes=10XB", "ev:max-age=3w",
                                  "ev:max-size=3", "ev:max-age=1d,max-age=2d"])
def test_a_bad_rule_is_refused_with_one_line(text: str) -> None:
    from test_tap import parse
    with pytest.raises(UsageError) as info:
        parse("--retain", text)
    assert str(info.value).startswith("--retain ") and "\n" not in str(info.value)


def test_retain_is_repeatable_and_archive_keep_is_a_number() -> None:
    from test_tap import parse
    config = parse("--retain", "a*:max-messages=5", "--retain", "*:max-age=1h",
                   "--archive-keep", "3")
    assert [r.glob for r in config["retain"]] == ["a*", "*"]
    assert config["archive-keep"] == 3
    with pytest.raises(UsageError):
        parse("--archive-keep", "0")


# -- limits ----------------------------------------------------------------------------

def test_max_messages_keeps_the_newest_messages(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev*:max-messages=4")
    r.put("ev", *numbered(10))
    assert r.archives() == []
    r.passes()
    assert r.messages("ev") == [7, 8, 9, 10]
    assert len(r.archives()) == 1 and ARCHIVE.match(r.archives()[0])
    assert r.kaf.file("ev") == db_file(6, numbered(10)[6:])
    assert r.kaf.put("ev", b"next") == 11
    r.passes()
    assert r.messages("ev") == [8, 9, 10, 11]


def test_a_log_within_its_limits_or_under_no_rule_is_left_alone(
        data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-messages=4")
    r.put("ev", *numbered(4))
    r.put("other", *numbered(10))
    r.passes(3)
    assert r.messages("ev") == [1, 2, 3, 4]
    assert r.messages("other") == list(range(1, 11))
    assert r.archives("ev") == r.archives("other") == []


def test_max_bytes_keeps_the_newest_messages_that_fit(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-bytes=100")
    r.put("ev", *[b"x" * 20] * 10)  # records of 34 bytes
    r.passes()
    live = r.kaf.file("ev")
    assert len(live) <= 100
    assert live == db_file(8, [b"x" * 20] * 2)
    assert r.messages("ev") == [9, 10]


def test_the_first_matching_rule_counts(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-messages=2", "*:max-messages=5")
    r.put("ev", *numbered(6))
    r.put("evx", *numbered(6))
    r.passes()
    assert r.messages("ev") == [5, 6]
    assert r.messages("evx") == [2, 3, 4, 5, 6]


def test_max_age_archives_messages_once_they_are_older(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-age=100s")
    r.put("ev", *numbered(3))
    clock.advance(50)
    r.put("ev", b"m04", b"m05")
    clock.advance(49)
    r.passes()  # t = 104: 1-3 are 104 s old, 4-5 54 s
    assert r.messages("ev") == [4, 5]
    clock.advance(45)
    r.passes()  # t = 154
    assert r.messages("ev") == []
    assert r.kaf.file("ev") == b"KAF_DB|v1|5"
    assert len(r.archives()) == 2
    assert r.kaf.put("ev", b"new") == 6


def test_max_age_of_an_idle_log_after_a_start_counts_from_its_file_time(
        data: str, clock: Clock) -> None:
    os.makedirs(data)
    with open(os.path.join(data, "ev"), "wb") as f:
        f.write(db_file(0, numbered(3)))
    clock.advance(10_000)
    os.utime(os.path.join(data, "ev"), (9_000, 9_000))
    r = Retained(data, clock, "ev:max-age=30m")
    r.passes()
    assert r.messages("ev") == [1, 2, 3]
    clock.advance(1800 - 1000)
    r.passes()
    assert r.messages("ev") == []


def test_a_log_over_its_limit_at_start_is_archived_on_the_first_pass(
        data: str, clock: Clock) -> None:
    os.makedirs(data)
    with open(os.path.join(data, "ev"), "wb") as f:
        f.write(db_file(0, numbered(10)))
    r = Retained(data, clock, "ev:max-messages=3")
    r.passes()
    assert r.messages("ev") == [8, 9, 10]


def test_archive_keep_deletes_the_oldest_archive_files(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-messages=1", archive_keep=2)
    for i in range(4):
        r.put("ev", b"a%d" % (i,), b"b%d" % (i,))
        r.passes()
        clock.advance(1)
    archives = r.archives()
    assert len(archives) == 2
    # The newest two are kept: they hold messages 4-5 and 6-7.
    with open(os.path.join(data, archives[0]), "rb") as f:
        assert f.read().startswith(b"KAF_DB|v1|3")
    assert r.archives("other") == []


def test_retention_archives_are_counted_in_kaf(data: str, clock: Clock) -> None:
    r = Retained(data, clock, "ev:max-messages=2")
    r.put("ev", *numbered(5))
    r.passes()
    r.kaf.post("/archive/ev?upto=4")
    record = Stats(r.kaf.store, clock).record()
    assert record is not None
    assert record["logs"] == [{"name": "ev", "last": 5, "gets": 0, "puts": 5,
                               "archived": 2}]


def test_a_pass_blocks_only_the_log_it_archives(data: str, clock: Clock) -> None:
    held: List[Deferred] = []
    calls: List[Any] = []

    def runner(f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        if getattr(f, "__name__", "") == "archive":
            d: "Deferred[Any]" = Deferred()
            held.append(d)
            calls.append((f, args))
            return d
        return maybeDeferred(f, *args)

    store = Store(data, clock, runner, fsync=False)
    store.load()
    retention = Retention(store, [parse_rule("a:max-messages=1")], clock, runner)
    store.watch = retention.written
    for m in numbered(3):
        store.get_or_create("a").put([m])
    pass_ = outcome(retention.run())
    assert len(held) == 1 and pass_ == []
    other = outcome(store.get_or_create("b").put([b"meanwhile"]))
    assert other == [1]
    waiting = outcome(store.get_or_create("a").put([b"after"]))
    assert waiting == []
    f, args = calls[0]
    held[0].callback(f(*args))
    assert pass_ == [None] and waiting == [4]
    assert store.get("a").file.index.nums[0] == 3  # type: ignore[union-attr]
