"""
The C{raw} and C{json} reply bodies (SPEC 3.2), built from a run of
canonical records.  Pure functions, no I/O.

A reply holds up to 10,000 messages: each body is built by a few calls
that run over all of them in C (split, join, one decode, one json.dumps),
not by Python code a message.
"""
from __future__ import annotations

import json
import re
import sys
from itertools import accumulate, chain, repeat
from json.decoder import WHITESPACE as _JSON_SPACE
from operator import add, itemgetter
from typing import Callable, List, Optional, Sequence

# -- the data of records ----------------------------------------------------------

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


# -- json ----------------------------------------------------------------------------

class _NoConstants(ValueError):
    """NaN, Infinity and -Infinity, which JSON has not: such a message is text."""


def _no_constants(name: str) -> None:
    raise _NoConstants(name)


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
    except (ValueError, RecursionError):
        # Nested too deep to check (a JSON parser would fail on it too):
        # sent as a string, so that the reply is still valid JSON.
        text = message.decode("utf-8", "replace")
        return json.dumps(text).encode("utf-8")


def json_body(messages: Sequence[bytes]) -> bytes:
    """
    A C{json} reply: C{[} + the messages joined by C{,\\n} + C{]}, a
    message that is valid JSON as it is, any other as a JSON string of its
    text (invalid UTF-8 replaced).  The same bytes as L{json_item} for each
    message joined, with the messages decoded together and those that are
    text encoded together.
    """
    n = len(messages)
    if not n:
        return b"[]"
    joined = b",\n".join(messages)
    try:
        # ',' and '\n' cannot be part of a UTF-8 sequence: the whole is
        # valid UTF-8 exactly when every message is.
        text = joined.decode("utf-8")
    except UnicodeDecodeError:
        return b"[" + b",\n".join(map(json_item, messages)) + b"]"
    if len(text) == len(joined):
        lengths = list(map(len, messages))
    else:
        lengths = list(map(len, map(bytes.decode, messages)))
    if not min(lengths):
        return b"[" + b",\n".join(map(json_item, messages)) + b"]"
    # Where each message lies in the text.
    starts = list(accumulate(map(add, lengths[:-1], repeat(2)), initial=0))
    ends = list(map(add, starts, lengths))
    firsts = "".join(map(text.__getitem__, starts))
    if _MAY_BEGIN_JSON.search(firsts) is None:
        # No message can be JSON: they are all text, encoded at once.
        texts = list(map(text.__getitem__, map(slice, starts, ends)))
        return json.dumps(texts, separators=(",\n", ":")).encode("ascii")
    if _SCAN_IN_PLACE and _NOT_VALUE_START.search(firsts) is None:
        # Every message begins as a value does: most often all are JSON.
        try:
            if list(map(_SECOND, map(_SCAN, repeat(text), starts))) == ends:
                return b"[" + joined + b"]"
        except (StopIteration, ValueError, RecursionError):
            pass
    # Message by message: which are JSON; the others encoded at once.
    may = _MAY_BEGIN_JSON.match
    valid = _valid_in if _SCAN_IN_PLACE else _valid_alone
    others = [i for i in range(n)
              if may(firsts, i) is None or not valid(text, starts[i], ends[i])]
    if not others:
        return b"[" + joined + b"]"
    texts = [text[starts[i]:ends[i]] for i in others]
    encoded = json.dumps(texts, separators=(",\n", ":"))
    if len(others) == n:
        return encoded.encode("ascii")
    # The strings are ASCII with their newlines escaped: ",\n" separates them.
    items = list(messages)
    for i, item in zip(others, encoded[1:-1].split(",\n")):
        items[i] = item.encode("ascii")
    return b"[" + b",\n".join(items) + b"]"


def _valid_in(text: str, start: int, end: int) -> bool:
    """Is C{text[start:end]} one JSON value, blanks around it allowed?"""
    try:
        at = _JSON_SPACE.match(text, start, end).end()  # type: ignore[union-attr]
        _, stop = _SCAN(text, at)
    except (StopIteration, ValueError, RecursionError):
        return False
    # The value must end within the message, and only blanks may follow.
    return stop <= end and not text[stop:end].strip(_JSON_BLANKS)


def _valid_alone(text: str, start: int, end: int) -> bool:
    """L{_valid_in} by json.loads of the message alone."""
    try:
        json.loads(text[start:end], parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False
    return True
