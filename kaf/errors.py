"""
Kaf's domain errors.  Each carries the HTTP status it is answered with, so
the web layer maps them in one place; the message is the one-line reason.
"""
from __future__ import annotations


class KafError(Exception):
    """A request Kaf refuses, with the reason given to the client."""

    status = 400

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
