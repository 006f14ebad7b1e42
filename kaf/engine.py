"""
The storage-engine seam: what the HTTP layer, the C{_kaf} stats and the
metrics ask of the place where logs live, and the values that cross it.

The HTTP layer (the package L{kaf.api}: L{kaf.api.web}, L{kaf.api.sse},
L{kaf.api.streamed}, L{kaf.api.metrics}) and L{kaf.stats} import this
module, never an engine's; an engine, under L{kaf.engines}, imports this
module and declares what it implements, and nothing of L{kaf.api}.  Only
L{kaf.tap} wires the two together (tests/test_layout.py keeps the arrows
one way).  The file engine is L{kaf.engines.file.store.Store}
(L{IEngine}) with L{kaf.engines.file.log.Log} (L{ILog}): the Go version's
data folder, one file a log; the NATS JetStream engine is
L{kaf.engines.nats.engine.NatsEngine}, one stream a log.  The contract of
every operation is SPEC.md's, byte for byte; what is said here is how it
is asked.

Values that cross the seam are plain: a L{Slice} of canonical records and
its numbers, a L{Reply}, a L{Duplicate} number, L{Summary} of a log.
Errors are the named values of L{kaf.errors}, each with its status.
"""
from __future__ import annotations

import re
from itertools import repeat
from operator import sub
from typing import Any, List, NamedTuple, Optional, Sequence

from zope.interface import Attribute, Interface

from kaf import _format, _replies
from kaf._replies import JsonKinds
from kaf.errors import BadRequest, InvalidName, ReservedName


class Slice(NamedTuple):
    """
    Messages read from a log: C{span} holds the log's bytes from C{base};
    C{nums}, C{starts}, C{ends} locate each message's record in it.  When
    C{clean}, C{span} is exactly the records of a kaf reply.  C{kinds},
    when the engine keeps them, are which of the log's messages are JSON,
    the first of these at position C{at} there (see L{JsonKinds}).
    """

    span: bytes
    base: int
    nums: Sequence[int]
    starts: Sequence[int]
    ends: Sequence[int]
    clean: bool
    kinds: Optional[JsonKinds] = None
    at: int = 0

    def __len__(self) -> int:
        return len(self.nums)

    def messages(self) -> List[bytes]:
        """Each message's data, in order."""
        span, base = self.span, self.base
        if self.clean:
            # Canonical records one after the other: found a few calls for
            # all of them, not a few a message.
            if base:
                return _replies.messages_of_records(
                    span, len(self), lambda: list(map(sub, self.ends, repeat(base))))
            return _replies.messages_of_records(span, len(self), lambda: self.ends)
        out = []
        for s, e in zip(self.starts, self.ends):
            out.append(span[_format.data_offset(span, s - base):e - base])
        return out

    def kaf_records(self) -> bytes:
        """The records of a kaf reply for these messages."""
        if self.clean:
            return self.span
        return _format.records_of(self.nums, self.messages())

    def raw_body(self) -> bytes:
        """The body of a raw reply of these messages."""
        if self.clean:
            return _replies.raw_of_records(self.span, len(self), self.messages)
        return _replies.raw_body(self.messages())

    def json_body(self) -> bytes:
        """The body of a json reply of these messages."""
        if self.clean:
            return _replies.json_of_records(self.span, len(self), self.messages,
                                            self.kinds, self.at)
        return _replies.json_body(self.messages(), self.kinds, self.at)


#: No message.
EMPTY = Slice(b"", 0, [], [], [], True)


class IPieces(Interface):
    """
    The records of a large reply, still to be read: the HTTP layer reads
    them a piece at a time as the client's socket drains.
    """

    name = Attribute("The log's name (for messages).")
    length = Attribute("Bytes of records in all.")
    done = Attribute("True once every byte was read.")

    def read(size: int) -> bytes:
        """Up to C{size} of the next bytes (blocking I/O is allowed)."""

    def close() -> None:
        """Release what holds the records; called once, read or not."""


class Reply:
    """The messages for one get, and the log's numbers to report with them."""

    __slots__ = ("slice", "last", "exists", "pieces")

    def __init__(self, slice_: Slice, last: int, exists: bool,
                 pieces: Optional[Any] = None) -> None:
        self.slice = slice_
        self.last = last
        self.exists = exists
        #: The records, still to be read (an L{IPieces}), when the slice
        #: holds no bytes.
        self.pieces = pieces


class Duplicate(int):
    """The reply to a repeated id: the original last number, and its count."""

    count: int

    def __new__(cls, last: int, count: int) -> "Duplicate":
        self = int.__new__(cls, last)
        self.count = count
        return self


_ID = re.compile(rb"[\x20-\x7e]{1,128}\Z")


def check_id(value: bytes, op: str = "put") -> str:
    """The id of a C{Kaf-Msg-Id} header; L{BadRequest} if it is not one."""
    if not _ID.match(value):
        raise BadRequest("%s: invalid Kaf-Msg-Id (must be 1 to 128 printable ASCII characters)"
                         % (op,))
    return value.decode("ascii")


_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}\Z")


def name_problem(name: str) -> Optional[str]:
    """Why C{name} is not a log name (SPEC 2), or None: the same for every engine."""
    if name == "":
        return "empty log name"
    if len(name) > 200:
        return "log name longer than 200 characters"
    if not _NAME.match(name):
        return "log name may only hold A-Z a-z 0-9 _ . -"
    if name.startswith("."):
        return "log name may not begin with '.'"
    if name.startswith("--"):
        return "log name may not begin with '--'"
    return None


def check_name(name: str, op: str, write: bool = False) -> None:
    """
    Raise L{InvalidName} for a name outside SPEC 2, and L{ReservedName} for
    a write to a log of Kaf's own (C{_kaf}): every engine's L{IEngine.check}.
    """
    problem = name_problem(name)
    if problem is not None:
        raise InvalidName("%s: %s" % (op, problem))
    if write and name.startswith("_"):
        raise ReservedName("%s: logs whose names begin with '_' belong to Kaf" % (op,))


class Summary(NamedTuple):
    """A log as C{GET /logs} lists it (SPEC 3.4)."""

    first: int
    last: int
    count: int
    size: int
    error: Optional[str]


class ILog(Interface):
    """
    One log: its numbers, its writes (one write path: puts are numbered in
    the order they are accepted), its reads and its waiters.
    """

    name = Attribute("The log's name.")
    last = Attribute("The last number (SPEC 3.1): of its last message, or the one it "
                     "continues from.")
    closing = Attribute("True once the engine is shutting down.")
    clock = Attribute("The IReactorTime the log's timers run on.")
    generation = Attribute(
        "An object that changes when the log's messages are renumbered away (an archive): "
        "a reader that cached a read of the log compares it.")
    waiting = Attribute("How many waits (long polls) wait now.")
    known = Attribute("True when L{summary} is known without a read (see L{described}).")
    archived = Attribute("Archives made since the stats last counted them (the stats reset it).")
    served = Attribute("Messages read by gets since start-up.")
    bytes_in = Attribute("Bytes of records written since start-up.")
    bytes_out = Attribute("Bytes of records read by gets since start-up.")

    def put(messages: List[bytes], expect: Optional[int] = None, first: Optional[int] = None,
            msg_id: Optional[str] = None) -> Any:
        """
        Append C{messages}, numbered consecutively, all or none: a Deferred
        of the last number, once they are durable (as the engine defines
        it).  C{expect}: only if the log's last number is C{expect}, else
        L{kaf.errors.ExpectMismatch}.  C{first}: number from C{first} (the
        next number, or any later one while the log holds no message).
        C{msg_id}: a repeat within the dedupe window writes nothing and
        fires with a L{Duplicate} of the first reply.
        """

    def get(from_num: int, limit: int, max_bytes: int, pieces: bool = False) -> Any:
        """
        A Deferred of the L{Reply} of messages C{from_num} and after: at
        most C{limit}, no more once C{max_bytes} are reached, at least one
        when one exists.  With C{pieces}, a large reply may come as
        L{IPieces} to be read as the client drains.
        """

    def wait(from_num: int, timeout: Optional[float]) -> Any:
        """
        A Deferred that fires (with None) once message C{from_num} or a
        later one exists, or after C{timeout} seconds (None: none), or when
        the log closes.  Cancelling it leaves nothing behind.
        """

    def archive(upto: int) -> Any:
        """
        Move the messages numbered <= C{upto} out of the live log (SPEC
        3.3): a Deferred of (archive name or None, the upto used, how many
        messages stay).
        """

    def described() -> Any:
        """A Deferred that fires once L{summary} is known (the log was read)."""

    def summary() -> Summary:
        """The log's numbers and size now (after L{described})."""

    def reset_counters() -> Any:
        """The (gets, puts, errors) of the stats interval ending now."""

    def totals() -> Any:
        """The (gets, puts, errors) since start-up."""


class IEngine(Interface):
    """The logs of one Kaf: found by name, listed, created on first put."""

    def load() -> None:
        """Find the logs there are (at start-up, before serving)."""

    def check(name: str, op: str, write: bool = False) -> None:
        """Raise L{kaf.errors.InvalidName} or L{kaf.errors.ReservedName} for a bad name."""

    def get(name: str) -> Optional[ILog]:
        """The log named C{name}, or None when it does not exist."""

    def get_or_create(name: str) -> ILog:
        """The log named C{name}, made (empty) when it does not exist."""

    def release(log: ILog) -> None:
        """Forget a log made by L{get_or_create} that got no message and has no waiter."""

    def logs() -> List[ILog]:
        """Every existing log, sorted by name (their numbers may need L{ILog.described})."""

    def refresh() -> Any:
        """
        A Deferred that fires once L{logs} holds every log there is now,
        made here or elsewhere (another front end of a shared engine).
        """

    def used() -> List[ILog]:
        """The logs used since start-up, sorted by name (what stats and metrics count)."""

    def close() -> Any:
        """A Deferred that fires once pending writes are done and the logs are closed."""
