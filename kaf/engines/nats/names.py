"""
Log names as stream names and subjects.

A log name (SPEC 2) holds A-Z a-z 0-9 _ . - and up to 200 characters; a
stream name may not hold '.', and a subject token neither.  The mapping is
one to one: '_' is written '__' and '.' is written '_d', so no two log
names give one stream.  Archive logs (C{--<log>--<time>}) map the same way.
"""
from __future__ import annotations

from typing import Optional

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


def stream(name: str) -> str:
    """The stream of the log C{name}."""
    return STREAM_PREFIX + escape(name)


def subject(name: str) -> str:
    """The subject the messages of the log C{name} are published on."""
    return SUBJECT_PREFIX + escape(name)


def log_of(stream_name: str) -> Optional[str]:
    """The log a stream holds, or None when it is not a Kaf stream."""
    if not stream_name.startswith(STREAM_PREFIX):
        return None
    return unescape(stream_name[len(STREAM_PREFIX):])
