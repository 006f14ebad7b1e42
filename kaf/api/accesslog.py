"""
C{--access-log FILE}: one line a request in the combined log format, as
Apache and nginx write it, so the usual tools read it::

    127.0.0.1 - - [06/Dec/2026:14:00:05 +0000] "POST /put/orders HTTP/1.1" 200 1 "-" "curl/7.88.1"

Lines gather in memory and go to the file once a second, when 64 KiB are
waiting, and at shutdown, so a request costs no system call.  The file is
opened again on SIGHUP (after logrotate has moved it).  What a client
sent is written escaped (C{\\"}, C{\\\\}, C{\\xHH} for control and
non-ASCII bytes): no request can break a line or forge one.
"""
from __future__ import annotations

import re
import time
from typing import Any, List, Optional

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: Bytes of lines waiting before they are written without waiting a second.
FLUSH_BYTES = 1 << 16

_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _escape_one(m: "re.Match[bytes]") -> bytes:
    c = m.group()
    if c in (b'"', b"\\"):
        return b"\\" + c
    return b"\\x%02x" % (c[0],)


def escape(value: Optional[bytes]) -> bytes:
    """A client's bytes as they may stand in a line: C{-} for none."""
    if not value:
        return b"-"
    return _UNSAFE.sub(_escape_one, value)


class AccessLog:
    """
    The combined-format lines of the requests answered; L{request_done} is
    an L{kaf.api.http.HTTPFactory} watcher.
    """

    log = Logger()

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._lines: List[bytes] = []
        self._waiting = 0
        self._file: Any = None
        self._failed: Optional[str] = None
        # The time stamp changes once a second: made once a second.
        self._stamp_at = -1
        self._stamp = b""
        self.open()

    def open(self) -> None:
        """Open (again) the file, appending; raises OSError when it cannot."""
        new = open(self.path, "ab", buffering=0)
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def _time(self) -> bytes:
        now = int(self._reactor.seconds())
        if now != self._stamp_at:
            self._stamp_at = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000",
                                        time.gmtime(now)).encode("ascii")
        return self._stamp

    def line(self, request: Any) -> bytes:
        peer = request.getPeer()
        host = getattr(peer, "host", None)
        if request.uri:
            asked = b"%s %s %s" % (escape(request.method), escape(request.uri),
                                   escape(request.clientproto))
        else:
            # Refused before its request line could be read.
            asked = b"-"
        return b'%s - - [%s] "%s" %d %s "%s" "%s"\n' % (
            host.encode("ascii", "replace") if host else b"-",
            self._time(), asked, request.code,
            b"%d" % (request.sentLength,) if request.sentLength else b"-",
            escape(request.getHeader(b"Referer")), escape(request.getHeader(b"User-Agent")))

    def request_done(self, request: Any) -> None:
        line = self.line(request)
        self._lines.append(line)
        self._waiting += len(line)
        if self._waiting >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines = []
        self._waiting = 0
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]
        except OSError as e:
            # A full disk must not stop the service; say so once a reason.
            reason = "%s: %s" % (self.path, e.strerror or e)
            if reason != self._failed:
                self._failed = reason
                self.log.warn("access log: lines lost, {reason}", reason=reason)
        else:
            self._failed = None

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


class AccessLogService(Service):
    """Writes the waiting lines every second and at shutdown."""

    log = Logger()

    def __init__(self, access: AccessLog, reactor: Any, interval: float = 1.0) -> None:
        self.access = access
        self._loop = LoopingCall(access.flush)
        self._loop.clock = reactor
        self._interval = interval

    def startService(self) -> None:
        Service.startService(self)
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        self.access.close()

    def reopen(self) -> None:
        """After SIGHUP: write what waits, then open the file again by its name."""
        self.access.flush()
        try:
            self.access.open()
            self.log.info("access log: {path} opened again", path=self.access.path)
        except OSError as e:
            self.log.warn("access log: {path} not opened again, still writing the old "
                          "file: {reason}", path=self.access.path, reason=e.strerror or e)
