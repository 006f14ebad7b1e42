"""
Live streams of a log as Server-Sent Events: the stored messages from a
number on, then each new one as it is put.  The event framing is pure
(L{events}); L{LogStream} is the producer that feeds one HTTP reply,
reading the log only while the client's socket takes what it is sent.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

from kaf.engine import ILog, Reply

#: How long a stream may stay silent: a comment line keeps proxies from
#: closing it.
KEEPALIVE = 15.0

#: Messages and bytes read for one write of a stream.
BATCH = 1000
BATCH_BYTES = 1 << 20

CONTENT_TYPE = b"text/event-stream"
KEEPALIVE_LINE = b": keep-alive\n\n"


def event(num: int, message: bytes) -> bytes:
    """
    One event: C{id:} the message number, the message in C{data:} lines.  A
    line break in a message starts a new C{data:} line, which an SSE parser
    joins back with a newline.  A message that is not UTF-8, or holds a
    carriage return (which a parser takes for a line break too), is sent
    as C{event: base64}, its data base64 on one line.
    """
    if b"\r" not in message:
        try:
            message.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return b"id: %d\ndata: %s\n\n" % (num, message.replace(b"\n", b"\ndata: "))
    return b"id: %d\nevent: base64\ndata: %s\n\n" % (num, base64.b64encode(message))


def events(nums: Sequence[int], messages: Sequence[bytes]) -> bytes:
    return b"".join([event(n, m) for n, m in zip(nums, messages)])


#: The events last read by any stream, shared by the streams that follow: a
#: put wakes all the streams of its log, one after the other, at one number,
#: and one read and encoding serves every one.  (The log, its file, the
#: number read from, the log's last number then, the number after the
#: events, and the events; one batch at most is kept.)
_Shared = Tuple[ILog, object, int, int, int, bytes]
_shared: List[Optional[_Shared]] = [None]


class _Followers:
    """
    The streams of one log caught up at one number: the log is waited on
    once for all of them, so a put wakes one Deferred, not one a stream,
    and the streams are called in the order they began to wait.
    """

    __slots__ = ("key", "streams", "waiting")

    def __init__(self, key: Tuple[ILog, int]) -> None:
        self.key = key
        self.streams: Dict["LogStream", None] = {}
        self.waiting: Optional["Deferred[None]"] = None

    def woken(self, _: None) -> None:
        self._forget()
        for stream in list(self.streams):
            stream._woken(None)

    def failed(self, failure: Failure) -> None:
        self._forget()
        for stream in list(self.streams):
            stream._failed(failure)

    def leave(self, stream: "LogStream") -> None:
        self.streams.pop(stream, None)
        if not self.streams and self.waiting is not None:
            self._forget()
            waiting, self.waiting = self.waiting, None
            # The log forgets the wait: nothing of it is left behind.
            waiting.cancel()

    def _forget(self) -> None:
        if _followers.get(self.key) is self:
            del _followers[self.key]


#: The groups of streams waiting, by log and number.
_followers: Dict[Tuple[ILog, int], _Followers] = {}


@implementer(IPushProducer)
class LogStream:
    """
    Streams one log into one request, from message C{from_num} on.  The
    transport pauses it while the socket's buffer is full; it reads the next
    batch only when resumed, so a reader that does not read costs one
    batch at most.  It ends when the client goes away or the log closes.
    """

    log = Logger()

    def __init__(self, request: IRequest, log: ILog, from_num: int,
                 done: Callable[[], None]) -> None:
        """C{done} is called once when the stream ends, however it ends."""
        self._request = request
        self._log = log
        self._next = from_num
        self._done = done
        self._paused = False
        self._busy = False          # a read or a wait is under way
        self._waiting: Optional[_Followers] = None
        self._stopped = False
        self._clock = log.clock
        self._wrote = self._clock.seconds()
        self._keepalive: Optional[IDelayedCall] = None

    def start(self) -> None:
        request = self._request
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache")
        # Proxies that buffer replies (nginx) pass this one on as it comes.
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._gone)
        # The headers go out at once: the client knows the stream is open.
        request.write(b": kaf stream from %d\n\n" % (self._next,))
        # One timer a stream, not one a wait: a put wakes every stream.
        self._keepalive = self._clock.callLater(KEEPALIVE, self._keep_alive)
        self._step()

    # -- IPushProducer ---------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._step()

    def stopProducing(self) -> None:
        self._stop()

    # -- the loop ----------------------------------------------------------------

    def _step(self) -> None:
        if self._stopped or self._paused or self._busy:
            return
        log = self._log
        f = log.generation
        shared = _shared[0]
        if (shared is not None and shared[0] is log and shared[1] is f
                and shared[2] == self._next and shared[3] == log.last):
            self._send(shared[4], shared[5])
            return
        self._busy = True
        d = maybeDeferred(log.get, self._next, BATCH, BATCH_BYTES)
        d.addCallbacks(self._read, self._failed, callbackArgs=(f, self._next))

    def _read(self, reply: Reply, f: object, from_num: int) -> None:
        self._busy = False
        if self._stopped:
            return
        s = reply.slice
        if len(s):
            after = s.nums[-1] + 1
            data = events(s.nums, s.messages())
            _shared[0] = (self._log, f, from_num, reply.last, after, data)
            self._send(after, data)
            return
        if self._log.closing:
            self._finish()
            return
        self._wait()

    def _send(self, after: int, data: bytes) -> None:
        self._next = after
        self._wrote = self._clock.seconds()
        self._request.write(data)
        if self._next > self._log.last and not self._log.closing:
            # Caught up: no read would find more.
            if not self._paused:
                self._wait()
            return
        self._step()

    def _wait(self) -> None:
        self._busy = True
        key = (self._log, self._next)
        group = _followers.get(key)
        if group is None:
            group = _followers[key] = _Followers(key)
            group.streams[self] = None
            self._waiting = group
            d = group.waiting = self._log.wait(self._next, None)
            d.addCallbacks(group.woken, group.failed)
            return
        group.streams[self] = None
        self._waiting = group

    def _woken(self, _: None) -> None:
        self._waiting = None
        self._busy = False
        if self._stopped:
            return
        self._step()

    def _keep_alive(self) -> None:
        """Send a comment when the stream has been quiet for L{KEEPALIVE} seconds."""
        now = self._clock.seconds()
        quiet = now - self._wrote
        if quiet >= KEEPALIVE:
            self._request.write(KEEPALIVE_LINE)
            self._wrote, quiet = now, 0.0
        self._keepalive = self._clock.callLater(KEEPALIVE - quiet, self._keep_alive)

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        self._waiting = None
        if self._stopped:
            return
        # The headers are sent: all a stream can do is end.
        self.log.warn("stream of log {name} ended: {reason}", name=self._log.name,
                      reason=failure.getErrorMessage())
        self._finish()

    def _finish(self) -> None:
        if self._stopped:
            return
        self._stop()
        self._request.unregisterProducer()
        self._request.finish()

    def _gone(self, result: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None and keepalive.active():
            keepalive.cancel()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.leave(self)
        self._done()


def wants_events(accept: Optional[bytes]) -> bool:
    """Does the Accept header ask for an event stream?"""
    return accept is not None and CONTENT_TYPE in accept


def resume_from(last_event_id: Optional[bytes]) -> Optional[int]:
    """The number after a C{Last-Event-ID}, when it is one."""
    if last_event_id is None:
        return None
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 19:
        return None
    return int(value) + 1


__all__: List[str] = ["event", "events", "LogStream", "wants_events", "resume_from"]
