"""
A large reply sent from the log's file a piece at a time, as the client's
socket takes it: a client that does not read holds one piece of the
server's memory, not the reply (up to 1 MiB, or one message however large).
"""
from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

from kaf.errors import KafError
from kaf.engine import IPieces

#: Bytes read from the file for one write to the socket.
PIECE = 1 << 16


@implementer(IPushProducer)
class PiecesProducer:
    """Writes C{pieces} to C{request} while the transport does not pause it, then finishes."""

    log = Logger()

    def __init__(self, request: IRequest, pieces: IPieces) -> None:
        self._request = request
        self._pieces = pieces
        self._paused = False
        self._writing = False
        self._stopped = False

    def start(self) -> None:
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addErrback(self._gone)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        # A write may pause and resume us within it: one loop at a time.
        if self._writing:
            return
        self._writing = True
        try:
            while not self._paused and not self._stopped:
                if self._pieces.done:
                    self._finish()
                    return
                try:
                    data = self._pieces.read(PIECE)
                except (KafError, OSError) as e:
                    # The headers promised a length the file no longer has:
                    # all that is left is to cut the connection.
                    self.log.warn("reply of log {name} cut off: {reason}",
                                  name=self._pieces.name, reason=str(e))
                    self._stop()
                    self._request.channel.transport.abortConnection()  # type: ignore
                    return
                self._request.write(data)
        finally:
            self._writing = False

    def stopProducing(self) -> None:
        self._stop()

    def _finish(self) -> None:
        self._stop()
        self._request.unregisterProducer()
        self._request.finish()

    def _gone(self, reason: Failure) -> None:
        self._stop()

    def _stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._pieces.close()
