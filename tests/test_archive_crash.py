"""
SPEC 3.3: a crash at any moment of an archive leaves every message in the
live log or in an archive file, with the live log present; start-up tidies
what a half-made archive left.  A crash is simulated by making each file
operation of the archive fail in turn (the process stops there).
"""
from __future__ import annotations

import os
import types
from typing import Any, Dict, List

import pytest

from kaf import _format
from kaf.engines.file import logfile
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.store import Store

from conftest import sync_runner

OPERATIONS = ["open", "write", "fsync", "link", "rename", "pread"]
MESSAGES = [b"message %d " % (i,) * (i % 5 + 1) for i in range(1, 21)]


class Crash(Exception):
    """The process died here."""


class FailingOs(types.ModuleType):
    """The os module, except that the Nth call of one operation fails."""

    def __init__(self, operation: str, nth: int) -> None:
        super().__init__("os")
        self._operation = operation
        self._nth = nth
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name != self._operation:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self._nth:
                raise Crash("%s #%d" % (name, self._nth))
            return real(*args, **kwargs)

        return call


def make_log(folder: str) -> None:
    log = LogFile.create(folder, "log")
    at = log.append(_format.records(1, MESSAGES))
    log.published(1, at, [len(m) for m in MESSAGES])
    log.close()


def every_message(folder: str) -> Dict[int, bytes]:
    """Messages found in the live log and every archive file, by number."""
    found: Dict[int, bytes] = {}
    for entry in os.listdir(folder):
        if entry != "log" and not entry.startswith("--log--"):
            continue
        f = LogFile(folder, entry)
        f.open(0)
        assert f.error is None, entry
        if len(f.index):
            s = f.read(0, len(f.index))
            for num, data in zip(s.nums, s.messages()):
                assert found.setdefault(num, data) == data, "message %d differs" % num
        f.close()
    return found


def crash_points() -> List[Any]:
    points = []
    for op in OPERATIONS:
        for nth in range(1, 4):
            points.append(pytest.param(op, nth, id="%s-%d" % (op, nth)))
    return points


@pytest.mark.parametrize("operation,nth", crash_points())
def test_archive_crash_loses_nothing_and_keeps_live_log(
        tmp_path: Any, clock: Any, monkeypatch: Any, operation: str, nth: int) -> None:
    folder = str(tmp_path)
    make_log(folder)
    live = LogFile(folder, "log")
    live.open(0)
    failing = FailingOs(operation, nth)
    monkeypatch.setattr(logfile, "os", failing)
    try:
        live.archive(12, 1000.0)
        crashed = False
    except Crash:
        crashed = True
    monkeypatch.undo()
    live.close()

    # Restart: the store tidies up and serves the live log.
    store = Store(folder, clock, sync_runner)
    store.load()
    assert os.path.isfile(os.path.join(folder, "log"))
    assert not any(e.endswith(".archive-tmp") for e in os.listdir(folder))
    log = store.get("log")
    assert log is not None
    log.described()
    assert log.file.error is None
    assert every_message(folder) == {i + 1: m for i, m in enumerate(MESSAGES)}
    if not crashed:
        # The failure point lay beyond the archive's operations.
        assert log.file.index.nums[0] == 13
    # Numbering continues whatever happened.
    assert log.last == 20


def test_archive_that_completes_moves_old_messages_out(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_log(folder)
    live = LogFile(folder, "log")
    live.open(0)
    name, used, kept, after = live.archive(12, 0.0)
    live.close()
    assert (name, used, kept) == ("--log--1970-01-01T00_00_00Z", 12, 8)
    with open(os.path.join(folder, "log"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|12" + _format.records(13, MESSAGES[12:])
    assert every_message(folder) == {i + 1: m for i, m in enumerate(MESSAGES)}
    after.close()
