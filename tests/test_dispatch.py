"""
kaf.dispatch: an EPollReactor that hands its events to their descriptors
directly does what its own doPoll does: reads and writes are delivered,
a failing descriptor is logged and lost while the others go on, and any
other reactor is left alone.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from kaf.dispatch import direct_dispatch

epollreactor = pytest.importorskip("twisted.internet.epollreactor")


class End:
    """One end of a socketpair, as a reactor's reader and writer."""

    def __init__(self, sock: socket.socket, fail: bool = False,
                 lost_fails: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.lost_fails = lost_fails
        self.read: List[bytes] = []
        self.writes = 0
        self.lost: List[Failure] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "End"

    def doRead(self) -> None:
        if self.fail:
            raise ValueError("a descriptor's own bug")
        self.read.append(self.sock.recv(100))

    def doWrite(self) -> None:
        self.writes += 1

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)
        if self.lost_fails:
            raise RuntimeError("and its connectionLost's bug")


@pytest.fixture
def reactor() -> Iterator[Any]:
    r = epollreactor.EPollReactor()
    yield r
    r._poller.close()
    if r.waker is not None:
        r.waker.connectionLost(None)


def pair() -> List[socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    return [a, b]


def test_an_epoll_reactor_is_changed_and_delivers_reads_and_writes(reactor: Any) -> None:
    a, b = pair()
    try:
        reader, writer = End(a), End(b)
        assert direct_dispatch(reactor) is True
        reactor.addReader(reader)
        reactor.addWriter(writer)
        b.send(b"hello")
        reactor.doIteration(1)
        assert reader.read == [b"hello"]
        assert writer.writes == 1
        assert not reader.lost and not writer.lost
        reactor.removeAll()
    finally:
        a.close()
        b.close()


def poll_broken_then_fine(reactor: Any, broken_end: Callable[[socket.socket], End]
                          ) -> Tuple[End, End, List[Any], List[dict]]:
    """
    One poll of a broken descriptor (added first) and a fine one, both
    readable: the two, the readers left after the poll, and what was logged.
    """
    a, b = pair()
    c, d = pair()
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        broken, fine = broken_end(a), End(c)
        direct_dispatch(reactor)
        reactor.addReader(broken)
        reactor.addReader(fine)
        b.send(b"x")
        d.send(b"y")
        reactor.doIteration(1)
        readers = reactor.getReaders()
        reactor.removeAll()
    finally:
        globalLogPublisher.removeObserver(events.append)
        for s in (a, b, c, d):
            s.close()
    return broken, fine, readers, events


def test_a_failing_descriptor_is_logged_and_lost_and_the_others_still_run(reactor: Any) -> None:
    broken, fine, readers, events = poll_broken_then_fine(
        reactor, lambda sock: End(sock, fail=True))
    assert fine.read == [b"y"]
    assert len(broken.lost) == 1 and broken.lost[0].check(ValueError)
    assert broken not in readers and fine in readers
    assert any(e.get("failure") is not None and e["failure"].check(ValueError)
               for e in events)


def test_an_error_escaping_the_reactors_own_handling_is_logged_and_the_poll_goes_on(
        reactor: Any) -> None:
    # A descriptor whose connectionLost fails too: the error leaves the
    # reactor's _doReadOrWrite, and is logged as callWithLogger logs it.
    broken, fine, readers, events = poll_broken_then_fine(
        reactor, lambda sock: End(sock, fail=True, lost_fails=True))
    assert fine.read == [b"y"]
    assert fine in readers
    assert any(e.get("failure") is not None and e["failure"].check(RuntimeError)
               and "error handling an event" in str(e.get("why")) for e in events)


def test_a_poll_with_nothing_ready_calls_no_descriptor(reactor: Any) -> None:
    a, b = pair()
    try:
        idle = End(a)
        direct_dispatch(reactor)
        reactor.addReader(idle)
        reactor.doIteration(0)
        reactor.doIteration(0.001)
        assert idle.read == [] and idle.lost == []
        assert idle in reactor.getReaders()
        reactor.removeAll()
    finally:
        a.close()
        b.close()


def test_other_reactors_are_left_alone() -> None:
    clock = Clock()
    assert direct_dispatch(clock) is False
    assert not hasattr(clock, "doIteration")
