"""
The epoll reactor's events, handed to their descriptors directly.

Twisted's EPollReactor wraps each event's C{doRead} or C{doWrite} in
C{log.callWithLogger}: the descriptor's C{logPrefix()}, a context dict
copied and pushed for the legacy log's "system" field, popped after.  A
put is one read event, so that wrapping is paid once a put: measured over
wrk (64 connections, --fsync always, CPython, 6 interleaved rounds), the
server's CPU a put fell from 35.8 to 30.4 us without it.

C{direct_dispatch(reactor)} replaces that one step of an EPollReactor (its
C{doIteration}) with the same poll and the same C{_doReadOrWrite} of each
event, without the wrapping.  What is lost: a legacy C{log.msg} made while
handling an event names the system "-" instead of the descriptor's prefix
(Kaf's own logs use twisted.logger and never read it).  What is kept: an
error raised while handling one event is logged, as callWithLogger logs it,
and the other events of the poll are handled.
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from twisted.python import log


def direct_dispatch(reactor: Any) -> bool:
    """
    Make C{reactor} (an EPollReactor, exactly) hand its events to their
    descriptors directly; False, and nothing changed, for any other reactor.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return False
    if type(reactor) is not EPollReactor:
        return False
    poll = reactor._poller.poll
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def doIteration(timeout: Optional[float]) -> None:
        try:
            # As many events as descriptors, as EPollReactor.doPoll asks.
            events = poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by an earlier event of this poll
            try:
                handle(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(None, "error handling an event of %r" % (selectable,))

    reactor.doIteration = doIteration
    return True
