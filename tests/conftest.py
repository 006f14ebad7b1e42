"""Shared test helpers: the Go fixtures, a synchronous runner, a store."""
from __future__ import annotations

import os
import shutil
import signal
from typing import Any, Callable, Iterator, List

import pytest
from hypothesis import settings
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from kaf import _format
from kaf.engines.file.logfile import LogFile

HERE = os.path.dirname(os.path.abspath(__file__))
# Copies of the Go version's data folder and of hand-edited logs: the
# tests read only what the repository holds.
FIXTURES = os.path.join(HERE, "fixtures")

# The property tests assert what is answered, not how fast: no per-example
# deadline (under PyPy an example that meets a JIT warm-up or a major
# collection took 311 ms once, 81 ms when Hypothesis ran it again).
settings.register_profile("kaf", deadline=None)
settings.load_profile("kaf")


def sync_runner(f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
    """Runs 'blocking' work at once: tests need no thread pool to flush."""
    return maybeDeferred(f, *args)


def copy_fixture(relative: str, dest: str) -> str:
    """Copy a fixture folder (the tests never write into their own) and make it writable."""
    src = os.path.join(FIXTURES, relative)
    shutil.copytree(src, dest)
    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return dest


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process ignores SIGINT, as under a shell's background job."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gokaf_data(tmp_path: Any) -> str:
    """A writable copy of the Go version's data folder."""
    return copy_fixture("gokaf-data", str(tmp_path / "gokaf-data"))


def fired(d: "Deferred[Any]") -> Any:
    """The result of a Deferred that has already fired (raised if a failure)."""
    box: List[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def put_messages(f: LogFile, messages: List[bytes]) -> int:
    """Append messages the way the log's service does: write, sync, publish."""
    first = f.last_num + 1
    at = f.append(_format.records(first, messages))
    f.sync(at)
    f.published(first, at, [len(m) for m in messages])
    return f.last_num
