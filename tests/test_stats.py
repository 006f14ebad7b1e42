"""
The _kaf statistics log (kaf/stats.py, SPEC 5): one JSON record a tick
when other logs were busy, driven by a task.Clock.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterator, List

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from conftest import fired as result
from conftest import sync_runner
from kaf.errors import ExpectMismatch
from kaf.stats import Stats, StatsService
from kaf.engines.file.store import Store

INTERVAL = 300
#: 2023-11-14T22:13:20Z
START = 1_700_000_000
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


class Kaf:
    """A store with its stats service running on a clock."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.clock = Clock()
        self.clock.advance(START)
        self.store = Store(folder, self.clock, sync_runner)
        self.store.load()
        self.stats = Stats(self.store, self.clock)
        self.service = StatsService(self.stats, INTERVAL, self.clock)
        self.service.startService()

    def tick(self) -> None:
        self.clock.advance(INTERVAL)

    def put(self, name: str, data: bytes = b"x", expect: Any = None) -> Any:
        return result(self.store.get_or_create(name).put([data], expect=expect))

    def get(self, name: str, from_num: int = 1) -> Any:
        log = self.store.get(name)
        assert log is not None
        return result(log.get(from_num, 1000, 1 << 20))

    def records(self) -> List[Dict[str, Any]]:
        log = self.store.get("_kaf")
        if log is None:
            return []
        return [json.loads(m) for m in self.get("_kaf").slice.messages()]


@pytest.fixture
def kaf(tmp_path: Any) -> Iterator[Kaf]:
    k = Kaf(str(tmp_path))
    yield k
    if k.service.running:
        k.service.stopService()


def by_name(record: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {entry["name"]: entry for entry in record["logs"]}


def test_the_first_tick_comes_one_interval_after_start(kaf: Kaf) -> None:
    kaf.put("a")
    kaf.clock.advance(INTERVAL - 1)
    assert kaf.stats.statno == 0
    assert kaf.records() == []
    kaf.clock.advance(1)
    assert kaf.stats.statno == 1
    assert len(kaf.records()) == 1


def test_idle_ticks_write_nothing_but_are_counted(kaf: Kaf) -> None:
    for _ in range(3):
        kaf.tick()
    assert kaf.stats.statno == 3
    assert kaf.store.get("_kaf") is None
    assert not os.path.exists(os.path.join(kaf.folder, "_kaf"))

    kaf.put("a")
    kaf.tick()
    [record] = kaf.records()
    assert record["statno"] == 4


def test_a_record_lists_active_logs_with_last_gets_and_puts(kaf: Kaf) -> None:
    kaf.put("idle")
    kaf.put("reader")
    kaf.tick()
    kaf.put("writer", b"1")
    kaf.put("writer", b"2")
    kaf.put("writer", b"3")
    kaf.get("writer")
    kaf.get("writer", 4)
    kaf.get("reader")
    kaf.tick()
    first, second = kaf.records()
    assert set(second) == {"beg", "end", "statno", "logs"}
    assert second["statno"] == 2
    assert by_name(second) == {
        "writer": {"name": "writer", "last": 3, "gets": 2, "puts": 3},
        "reader": {"name": "reader", "last": 1, "gets": 1, "puts": 0},
    }


def test_beg_and_end_are_the_interval_in_iso_8601_utc(kaf: Kaf) -> None:
    kaf.put("a")
    kaf.tick()
    kaf.put("a")
    kaf.tick()
    first, second = kaf.records()
    for record in (first, second):
        assert ISO_UTC.match(record["beg"]) and ISO_UTC.match(record["end"])
    assert first["beg"] == "2023-11-14T22:13:20Z"
    assert first["end"] == "2023-11-14T22:18:20Z"
    assert second["beg"] == first["end"]
    assert second["end"] == "2023-11-14T22:23:20Z"


def test_errs_is_present_only_when_not_zero(kaf: Kaf) -> None:
    kaf.put("calm")
    kaf.put("clash")
    with pytest.raises(ExpectMismatch):
        kaf.put("clash", expect=5)
    kaf.tick()
    [record] = kaf.records()
    logs = by_name(record)
    assert "errs" not in logs["calm"]
    assert logs["clash"] == {"name": "clash", "last": 1, "gets": 0, "puts": 1, "errs": 1}


def test_counters_restart_after_each_record(kaf: Kaf) -> None:
    kaf.put("a")
    kaf.put("a")
    kaf.put("b")
    kaf.tick()
    kaf.put("b")
    kaf.tick()
    first, second = kaf.records()
    assert by_name(first) == {"a": {"name": "a", "last": 2, "gets": 0, "puts": 2},
                              "b": {"name": "b", "last": 1, "gets": 0, "puts": 1}}
    assert by_name(second) == {"b": {"name": "b", "last": 2, "gets": 0, "puts": 1}}


def test_one_json_message_per_busy_tick(kaf: Kaf) -> None:
    for i in range(4):
        kaf.put("a")
        kaf.tick()
    messages = kaf.get("_kaf").slice.messages()
    assert len(messages) == 4
    assert [json.loads(m)["statno"] for m in messages] == [1, 2, 3, 4]


def test_kafs_own_reads_and_writes_trigger_no_record(kaf: Kaf) -> None:
    kaf.put("a")
    kaf.tick()
    assert len(kaf.records()) == 1
    # The record's own put, and reading _kaf, are not activity.
    kaf.get("_kaf")
    kaf.tick()
    kaf.tick()
    assert len(kaf.records()) == 1
    assert kaf.stats.statno == 3


def test_the_kaf_log_is_not_listed_in_records(kaf: Kaf) -> None:
    kaf.put("a")
    kaf.tick()
    kaf.get("_kaf")
    kaf.put("a")
    kaf.tick()
    for record in kaf.records():
        assert "_kaf" not in by_name(record)


def test_a_failing_tick_is_logged_and_the_next_tick_still_writes(kaf: Kaf) -> None:
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    # A folder where the new _kaf file would be made: the write fails.
    blocker = os.path.join(kaf.folder, "._kaf.new")
    os.mkdir(blocker)
    try:
        kaf.put("a")
        kaf.tick()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert kaf.records() == []
    assert any("could not write stats" in e.get("log_format", "") and "log_failure" in e
               for e in events)

    os.rmdir(blocker)
    kaf.put("a")
    kaf.tick()
    [record] = kaf.records()
    assert record["statno"] == 2
    assert by_name(record)["a"]["puts"] == 1


def test_stopping_the_service_stops_the_ticks(kaf: Kaf) -> None:
    kaf.service.stopService()
    kaf.put("a")
    kaf.tick()
    assert kaf.stats.statno == 0
    assert kaf.records() == []
    assert kaf.clock.getDelayedCalls() == []
