"""
Health and readiness (production surface, section 2): C{/health} and
C{/ready} through C{StubTreq}, with a ping of the fsync helpers the test
controls and time from a C{task.Clock}.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable, List, Optional

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kaf.api.health import Ping, Readiness
from kaf.stats import Stats
from kaf.api.web import KafWeb
from test_web import Kaf, data, unexpected_errors  # noqa: F401 (fixtures)


def served(data: str, clock: Clock, ping: Optional[Ping]) -> Kaf:
    kaf = Kaf(data, clock)
    kaf.web = KafWeb(kaf.store, readiness=Readiness(data, clock, ping))
    kaf.treq = StubTreq(kaf.web.resource())
    return kaf


def answering(fd: int) -> "Deferred[None]":
    os.fstat(fd)  # the descriptor is open while it is sent
    return succeed(None)


def test_health_is_200_ok(data: str, clock: Clock) -> None:
    answer = served(data, clock, answering).get("/health")
    assert (answer.code, answer.body) == (200, b"ok\n")
    assert answer.header("Content-Type") == "text/plain; charset=utf-8"


def test_ready_is_200_when_the_folder_is_writable_and_the_helpers_answer(
        data: str, clock: Clock) -> None:
    answer = served(data, clock, answering).get("/ready")
    assert (answer.code, answer.body) == (200, b"ready\n")


def test_ready_is_503_with_a_reason_when_the_data_folder_is_gone(
        data: str, clock: Clock) -> None:
    kaf = served(data, clock, answering)
    shutil.rmtree(data)
    kaf.get("/ready").assert_error(503, "not ready: the data folder")
    # The process still serves.
    assert kaf.get("/health").code == 200


def test_ready_is_503_when_the_fsync_helpers_fail(data: str, clock: Clock) -> None:
    def broken(fd: int) -> "Deferred[None]":
        return fail(OSError(32, "the fsync process has ended"))

    answer = served(data, clock, broken).get("/ready")
    assert "the fsync helpers do not answer" in answer.assert_error(503, "not ready:")


def test_ready_is_503_when_the_fsync_helpers_hang(data: str, clock: Clock) -> None:
    asked: List[Deferred] = []

    def hanging(fd: int) -> "Deferred[None]":
        asked.append(Deferred())
        return asked[-1]

    kaf = served(data, clock, hanging)
    d = kaf.start("GET", "/ready")
    assert asked
    clock.advance(2.0)
    kaf.answer(d).assert_error(503, "not ready: the fsync helpers do not answer")


def test_probes_are_not_counted_in_kaf(data: str, clock: Clock) -> None:
    kaf = served(data, clock, answering)
    for path in ("/health", "/ready") * 3:
        assert kaf.get(path).code == 200
    assert Stats(kaf.store, clock).record() is None
    assert kaf.store.logs() == []


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_refuse_post_with_a_hint(data: str, clock: Clock, path: str) -> None:
    answer = served(data, clock, answering).post(path, b"x")
    answer.assert_error(405, path[1:] + ": use GET")
