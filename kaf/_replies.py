"""
The C{raw} and C{json} reply bodies (SPEC 3.2), built from a run of
canonical records, and what a log keeps to build its json replies fast:
which of its messages are JSON.  Pure functions and data, no I/O.

A reply holds up to 10,000 messages: each body is built by a few calls
that run over all of them in C (split, join, one decode, one json.dumps),
not by Python code a message; where the optional C module kaf._records is
built, a raw body, and a json body of messages known to be JSON, is one
call that makes no object a message (L{join_records}).
"""
from __future__ import annotations

import json
import re
import sys
from itertools import accumulate, chain, compress, repeat
from json.decoder import WHITESPACE as _JSON_SPACE
from operator import add, is_not, itemgetter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# -- the data of records ----------------------------------------------------------

try:
    from kaf._records import join_data as _join_data
except ImportError:  # not built: PyPy, or no C compiler at install
    _join_data = None

#: Built where the C module is (see setup.py).
JOIN_IN_C = _join_data is not None


def join_records(span: bytes, count: int, sep: bytes, head: bytes, tail: bytes
                 ) -> Optional[bytes]:
    """
    C{head} + the data of the C{count} canonical records that fill C{span},
    joined by C{sep}, + C{tail}, in one C call; None when the C module is
    not built, or C{span} is not exactly such records (the callers then
    find the messages in Python).
    """
    if _join_data is None:
        return None
    return _join_data(span, count, sep, head, tail)  # type: ignore[no-any-return]


#: A record header, for splitting records whose data hold no such text.
_HEADER = re.compile(rb"\nKAF_MSG\|\d+\|\d+\n")
#: CPython splits a reply's records faster than it finds each one's data
#: from their ends (L{data_of_records}, a few C calls a message); PyPy,
#: whose JIT compiles those calls, the other way round.
_SPLIT_FIRST = sys.implementation.name != "pypy"


def split_records(span: bytes, count: int) -> Optional[List[bytes]]:
    """
    The data of the C{count} canonical records that fill C{span} one after
    the other, found by splitting C{span} at its headers; None when data
    hold text that could be taken for a header.
    """
    # A header holds two newlines and no other: when the span holds no
    # more than those, data hold none, and every second piece is data.
    parts = span.split(b"\n")
    if len(parts) == 2 * count + 1:
        return parts[2::2]
    # Data with newlines: when "KAF_MSG|" is in no message, the pattern of
    # a header (from the newline before it) matches only headers.
    if span.count(b"KAF_MSG|") == count:
        parts = _HEADER.split(span)
        del parts[0]
        return parts
    return None


def data_of_records(span: bytes, ends: Sequence[int]) -> List[bytes]:
    """
    The data of the canonical records that fill C{span} one after the
    other, given where each ends in it.  A record's data begins after the
    newline that ends its header, the first one after its first byte.
    """
    starts = chain((0,), ends[:-1])
    heads = map(span.find, repeat(b"\n"), map(add, starts, repeat(1)))
    return list(map(span.__getitem__, map(slice, map(add, heads, repeat(1)), ends)))


def messages_of_records(span: bytes, count: int,
                        ends: Callable[[], Sequence[int]]) -> List[bytes]:
    """
    The data of the C{count} canonical records that fill C{span} one after
    the other; C{ends()} gives where each ends in it, asked for only when
    it is needed.
    """
    if _SPLIT_FIRST:
        found = split_records(span, count)
        if found is not None:
            return found
    return data_of_records(span, ends())


# -- raw -----------------------------------------------------------------------------

def raw_body(messages: Sequence[bytes]) -> bytes:
    """A C{raw} reply: each message followed by a newline."""
    return b"\n".join([*messages, b""]) if messages else b""


def raw_of_records(span: bytes, count: int, messages: Callable[[], Sequence[bytes]]) -> bytes:
    """
    L{raw_body} of the C{count} canonical records that fill C{span};
    C{messages()} gives their data, asked for only when it is needed.
    """
    if count:
        joined = join_records(span, count, b"\n", b"", b"\n")
        if joined is not None:
            return joined
    return raw_body(messages())


# -- json ----------------------------------------------------------------------------

class _NoConstants(ValueError):
    """NaN, Infinity and -Infinity, which JSON has not: such a message is text."""


def _no_constants(name: str) -> None:
    raise _NoConstants(name)


#: What a JSON parser raises on a value nested deeper than its stack: on
#: PyPy, when the stack is near its limit already, the RecursionError of
#: its scanner comes out as a TypeError ("couldn't record exception
#: context").  Parsing text never raises TypeError otherwise.
TOO_DEEP = (RecursionError, TypeError)

_DECODER = json.JSONDecoder(parse_constant=_no_constants)
#: The decoder's scanner: (text, offset) -> (value, end offset).  In C on
#: CPython, so a value is checked where it lies in a whole reply's text.
_SCAN = _DECODER.scan_once
_SECOND = itemgetter(1)
#: The first character of a JSON value, or of the blank before one.
_MAY_BEGIN_JSON = re.compile(r'[\[{"\-0-9tfn \t\n\r]')
#: A first character that is not one of a JSON value's (blanks included).
_NOT_VALUE_START = re.compile(r'[^\[{"\-0-9tfn]')
_JSON_BLANKS = " \t\n\r"
#: Checked by the scanner in the reply's text (CPython's is in C); PyPy's
#: json.loads is its own fast one, which the scanner is not.
_SCAN_IN_PLACE = json.scanner.c_make_scanner is not None  # type: ignore[attr-defined]


def json_item(message: bytes) -> bytes:
    """A message as it is when it is valid JSON, else as a JSON string."""
    try:
        text = message.decode("utf-8")
        json.loads(text, parse_constant=_no_constants)
        return message
    except (ValueError, *TOO_DEEP):
        # Nested too deep to check (a JSON parser would fail on it too):
        # sent as a string, so that the reply is still valid JSON.
        text = message.decode("utf-8", "replace")
        return json.dumps(text).encode("utf-8")


def json_body(messages: Sequence[bytes], kinds: Optional["JsonKinds"] = None,
              at: int = 0) -> bytes:
    """
    A C{json} reply: C{[} + the messages joined by C{,\\n} + C{]}, a
    message that is valid JSON as it is, any other as a JSON string of its
    text (invalid UTF-8 replaced).  The same bytes as L{json_item} for each
    message joined, with the messages decoded together and those that are
    text encoded together.

    With C{kinds}, what is known of the log's messages (the first of these
    at position C{at}): when the kind of each is known, none is checked;
    otherwise all are, and what is found is kept there.
    """
    n = len(messages)
    if kinds is not None:
        texts = kinds.texts(at, at + n)
        if texts is not None:
            return _json_of_kinds(messages, texts)
    return _json_learning(messages, kinds, at)


def json_of_records(span: bytes, count: int, messages: Callable[[], Sequence[bytes]],
                    kinds: Optional["JsonKinds"] = None, at: int = 0) -> bytes:
    """
    L{json_body} of the C{count} canonical records that fill C{span};
    C{messages()} gives their data, asked for only when it is needed: not
    when all are known to be JSON (one L{join_records}).
    """
    if kinds is None or not count:
        return json_body(messages(), kinds, at)
    texts = kinds.texts(at, at + count)
    if texts is None:
        return _json_learning(messages(), kinds, at)
    if not texts:
        joined = join_records(span, count, b",\n", b"[", b"]")
        if joined is not None:
            return joined
    return _json_of_kinds(messages(), texts)


def _json_learning(messages: Sequence[bytes], kinds: Optional["JsonKinds"], at: int) -> bytes:
    """L{json_body}, each message checked, and what is found kept in C{kinds}."""
    body, found = _json_checked(messages)
    if kinds is not None:
        kinds.learn(at, len(messages), found)
    return body


def _json_checked(messages: Sequence[bytes]) -> Tuple[bytes, Sequence[int]]:
    """L{json_body}, each message checked; and where those sent as text are."""
    n = len(messages)
    if not n:
        return b"[]", ()
    joined = b",\n".join(messages)
    try:
        # ',' and '\n' cannot be part of a UTF-8 sequence: the whole is
        # valid UTF-8 exactly when every message is.
        text = joined.decode("utf-8")
    except UnicodeDecodeError:
        return _json_by_item(messages)
    if len(text) == len(joined):
        lengths = list(map(len, messages))
    else:
        lengths = list(map(len, map(bytes.decode, messages)))
    if not min(lengths):
        return _json_by_item(messages)
    # Where each message lies in the text.
    starts = list(accumulate(map(add, lengths[:-1], repeat(2)), initial=0))
    ends = list(map(add, starts, lengths))
    firsts = "".join(map(text.__getitem__, starts))
    if _MAY_BEGIN_JSON.search(firsts) is None:
        # No message can be JSON: they are all text, encoded at once.
        texts = list(map(text.__getitem__, map(slice, starts, ends)))
        return json.dumps(texts, separators=(",\n", ":")).encode("ascii"), range(n)
    if _SCAN_IN_PLACE and _NOT_VALUE_START.search(firsts) is None:
        # Every message begins as a value does: most often all are JSON.
        try:
            if list(map(_SECOND, map(_SCAN, repeat(text), starts))) == ends:
                return b"[" + joined + b"]", ()
        except (StopIteration, ValueError, *TOO_DEEP):
            pass
    # Message by message: which are JSON; the others encoded at once.
    may = _MAY_BEGIN_JSON.match
    valid = _valid_in if _SCAN_IN_PLACE else _valid_alone
    others = [i for i in range(n)
              if may(firsts, i) is None or not valid(text, starts[i], ends[i])]
    if not others:
        return b"[" + joined + b"]", ()
    encoded = json.dumps([text[starts[i]:ends[i]] for i in others], separators=(",\n", ":"))
    if len(others) == n:
        return encoded.encode("ascii"), others
    return _json_with_texts(messages, others, encoded), others


def _json_by_item(messages: Sequence[bytes]) -> Tuple[bytes, Sequence[int]]:
    """L{_json_checked} by L{json_item}, which gives back a message that is JSON itself."""
    items = list(map(json_item, messages))
    texts = list(compress(range(len(items)), map(is_not, items, messages)))
    return b"[" + b",\n".join(items) + b"]", texts


def _json_of_kinds(messages: Sequence[bytes], texts: Sequence[int]) -> bytes:
    """L{json_body} of messages whose kinds are known: those at C{texts} are text."""
    n = len(messages)
    if not texts:
        if n < 2:
            return b"[" + b"".join(messages) + b"]"
        # The brackets joined to the first and last messages, not around
        # the whole: two copies of the reply fewer.
        items = list(messages)
        items[0] = b"[" + items[0]
        items[-1] = items[-1] + b"]"
        return b",\n".join(items)
    encoded = json.dumps([messages[i].decode("utf-8", "replace") for i in texts],
                         separators=(",\n", ":"))
    if len(texts) == n:
        return encoded.encode("ascii")
    return _json_with_texts(messages, texts, encoded)


def _json_with_texts(messages: Sequence[bytes], texts: Sequence[int], encoded: str) -> bytes:
    """The messages, those at C{texts} replaced by the strings of the array C{encoded}."""
    # The strings are ASCII with their newlines escaped: ",\n" separates them.
    items = list(messages)
    for i, item in zip(texts, encoded[1:-1].split(",\n")):
        items[i] = item.encode("ascii")
    return b"[" + b",\n".join(items) + b"]"


def _valid_in(text: str, start: int, end: int) -> bool:
    """Is C{text[start:end]} one JSON value, blanks around it allowed?"""
    try:
        at = _JSON_SPACE.match(text, start, end).end()  # type: ignore[union-attr]
        _, stop = _SCAN(text, at)
    except (StopIteration, ValueError, *TOO_DEEP):
        return False
    # The value must end within the message, and only blanks may follow.
    return stop <= end and not text[stop:end].strip(_JSON_BLANKS)


def _valid_alone(text: str, start: int, end: int) -> bool:
    """L{_valid_in} by json.loads of the message alone."""
    try:
        json.loads(text[start:end], parse_constant=_no_constants)
    except (ValueError, *TOO_DEEP):
        return False
    return True


# -- which messages are JSON ----------------------------------------------------------

#: A message's kind in L{JsonKinds}: not checked yet, JSON, or text.
UNKNOWN, JSON, TEXT = 0, 1, 2
#: L{JsonKinds} keeps the kinds of 2 ** KIND_SHIFT consecutive positions a
#: block, and at most KIND_BLOCKS blocks (1 MiB, a million messages) a log.
KIND_SHIFT = 12
KIND_BLOCK = 1 << KIND_SHIFT
KIND_BLOCKS = 256
#: The most blocks kept by all logs together (64 MiB): the open logs are
#: many (see kaf.engines.file.openfiles), and a client reading every one
#: as json must not make each keep a megabyte.
ALL_KIND_BLOCKS = 16384
_JSON_RUN = bytes([JSON]) * KIND_BLOCK


class JsonKinds:
    """
    Which messages of a log json replies found to be JSON, and which text,
    by their position in the log's index.  A message never changes (an
    edit of the file makes a new index, and new kinds), so it is checked
    once, and a reply of messages whose kinds are all known costs a few
    calls, however many they are.  One byte a message, in blocks of
    consecutive positions; beyond L{KIND_BLOCKS}, the block used least
    recently is forgotten.  All logs together keep at most
    L{ALL_KIND_BLOCKS}: at that cap a log trades its own least recent block
    for a new one, and a log that keeps none learns nothing (its json
    replies check every message, as they would with no kinds at all).
    """

    __slots__ = ("_blocks",)

    #: Blocks kept by every L{JsonKinds} alive, against L{ALL_KIND_BLOCKS}.
    in_use = 0

    def __init__(self) -> None:
        # In the order they were last used.
        self._blocks: Dict[int, bytearray] = {}

    def release(self) -> None:
        """Forget every kind now, giving the blocks back to the cap."""
        JsonKinds.in_use -= len(self._blocks)
        self._blocks.clear()

    # (A reply under way may still learn into it: what it adds is counted.)
    __del__ = release

    @property
    def nbytes(self) -> int:
        """The bytes of kinds kept."""
        return len(self._blocks) * KIND_BLOCK

    def texts(self, i: int, j: int) -> Optional[List[int]]:
        """
        Where the text messages are among positions C{i} … C{j-1} (counted
        from C{i}), or None when the kind of one of them is not known.
        """
        out: List[int] = []
        blocks = self._blocks
        for b in range(i >> KIND_SHIFT, ((j - 1) >> KIND_SHIFT) + 1 if j > i else 0):
            block = blocks.pop(b, None)
            if block is None:
                return None
            blocks[b] = block
            origin = b << KIND_SHIFT
            lo, hi = max(i - origin, 0), min(j - origin, KIND_BLOCK)
            if block.find(UNKNOWN, lo, hi) >= 0:
                return None
            k = block.find(TEXT, lo, hi)
            while k >= 0:
                out.append(origin + k - i)
                k = block.find(TEXT, k + 1, hi)
        return out

    def learn(self, i: int, count: int, texts: Sequence[int]) -> None:
        """
        Positions C{i} … C{i+count-1} were checked: those at C{texts}
        (counted from C{i}) are text, the others JSON.
        """
        blocks = self._blocks
        for b in range(i >> KIND_SHIFT, ((i + count - 1) >> KIND_SHIFT) + 1 if count else 0):
            block = blocks.pop(b, None)
            if block is None:
                if len(blocks) >= KIND_BLOCKS or (
                        blocks and JsonKinds.in_use >= ALL_KIND_BLOCKS):
                    del blocks[next(iter(blocks))]  # this log's least recent
                elif JsonKinds.in_use >= ALL_KIND_BLOCKS:
                    continue  # no room left: these stay unknown
                else:
                    JsonKinds.in_use += 1
                block = bytearray(KIND_BLOCK)
            blocks[b] = block
            origin = b << KIND_SHIFT
            lo, hi = max(i - origin, 0), min(i + count - origin, KIND_BLOCK)
            block[lo:hi] = _JSON_RUN[:hi - lo]
        for t in texts:
            p = i + t
            # (A block forgotten meanwhile is checked again when asked for.)
            block = blocks.get(p >> KIND_SHIFT)
            if block is not None:
                block[p & (KIND_BLOCK - 1)] = TEXT
