"""
Log names as stream names and subjects.

A log name (SPEC 2) holds A-Z a-z 0-9 _ . - and up to 200 characters; a
stream name may not hold '.', and a subject token neither.  The mapping is
one to one: '_' is written '__' and '.' is written '_d', so no two log
names give one stream.  Archive logs (C{--<log>--<time>}) map the same way.

A stream name holds at most 255 characters: a name whose escaped form is
longer than L{MAX_ESCAPED} is named by its SHA-256 instead, after C{_x},
which no escaped name holds; the stream's metadata keeps the log's name.
"""
from __future__ import annotations

import hashlib
from typing import Optional

#: The longest escaped name used as it is.
MAX_ESCAPED = 200

#: Every Kaf stream's name begins with this; other streams are not logs.
STREAM_PREFIX = "KAF_"
#: Every Kaf stream's subject begins with this.
SUBJECT_PREFIX = "kaf.log."


def escape(name: str) -> str:
    return name.replace("_", "__").replace(".", "_d")


def unescape(text: str) -> Optional[str]:
    """The log name C{escape} made C{text} from, or None if it made none."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "_":
            nxt = text[i + 1:i + 2]
            if nxt == "_":
                out.append("_")
            elif nxt == "d":
                out.append(".")
            else:
                return None
            i += 2
            continue
        if c == ".":
            return None
        out.append(c)
        i += 1
    return "".join(out)


def _token(name: str) -> str:
    escaped = escape(name)
    if len(escaped) <= MAX_ESCAPED:
        return escaped
    return "_x" + hashlib.sha256(name.encode("utf-8")).hexdigest()


def stream(name: str) -> str:
    """The stream of the log C{name}."""
    return STREAM_PREFIX + _token(name)


def subject(name: str) -> str:
    """The subject the messages of the log C{name} are published on."""
    return SUBJECT_PREFIX + _token(name)


def id_subject(name: str, msg_id: str) -> str:
    """
    The subject of a batch that carries a message id: the log's subject and
    a hash of the id, so the batch is found again by it (its last message
    is the last one on that subject).
    """
    digest = hashlib.sha256(msg_id.encode("utf-8")).hexdigest()[:32]
    return "%s.i.%s" % (subject(name), digest)


def log_of(stream_name: str) -> Optional[str]:
    """The log a stream holds, or None when it is not a Kaf stream."""
    if not stream_name.startswith(STREAM_PREFIX):
        return None
    return unescape(stream_name[len(STREAM_PREFIX):])
