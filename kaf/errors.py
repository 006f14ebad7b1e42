"""
Kaf's domain errors.  Each carries the HTTP status it is answered with, so
the web layer maps them in one place; the message is the one-line reason.
"""
from __future__ import annotations

from typing import Callable, Optional


class KafError(Exception):
    """A request Kaf refuses, with the reason given to the client."""

    status = 400
    #: Seconds a client should wait before trying again, or None.
    retry_after: Optional[int] = None

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(KafError):
    """A malformed parameter or body."""

    status = 400


class InvalidName(KafError):
    """A log name outside SPEC section 2."""

    status = 400


class ReservedName(KafError):
    """A client tried to write a log that belongs to Kaf (C{_kaf})."""

    status = 403


class UnknownLog(KafError):
    """The log does not exist."""

    status = 404


class ExpectMismatch(KafError):
    """C{expect=N} did not match the log's last number."""

    status = 409

    def __init__(self, reason: str, last: int) -> None:
        super().__init__(reason)
        self.last = last


class MessageTooLarge(KafError):
    """A body over the size limit."""

    status = 413


class UnreadableLog(KafError):
    """The log's file is not a Kaf log (SPEC 6 rule 1) or cannot be read."""

    status = 500


class StorageFull(KafError):
    """The disk is full: the write was undone."""

    status = 507


class WriteFailed(KafError):
    """An I/O error while writing: the write was undone."""

    status = 500


class ShuttingDown(KafError):
    """The server is stopping and takes no more writes."""

    status = 503


class EngineUnavailable(KafError):
    """The storage engine (a NATS cluster) did not answer in time: nothing is known
    to be written; try again soon."""

    status = 503
    retry_after = 1


class OutOfDescriptors(KafError):
    """The process has no file descriptor left: nothing was done; try again soon."""

    status = 503
    retry_after = 1


class DedupeFull(KafError):
    """The dedupe window holds as many message ids as it may: nothing was written."""

    status = 503
    retry_after = 1


class Repeats:
    """
    Logs refusals one line per distinct reason: a reason repeated is only
    counted, and its count logged at 10, 100, 1000 … repeats and when
    another reason comes.  A full disk refuses every put the same way, and
    a line (or a traceback) for each would fill the log in its turn.
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._reason: Optional[str] = None
        self._count = 0
        self._logged = 0

    def __call__(self, reason: str) -> None:
        if reason == self._reason:
            self._count += 1
            if self._count >= 10 * self._logged:
                self._emit_count()
            return
        if self._count > self._logged:
            self._emit_count()
        self._reason, self._count, self._logged = reason, 1, 1
        self._emit(reason)

    def _emit_count(self) -> None:
        self._emit("%s (%d times)" % (self._reason, self._count))
        self._logged = self._count
