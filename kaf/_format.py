"""
Record framing: encoding records and replies, and the tolerant scan of a
log file's bytes (SPEC sections 3.2, 4 and 6).  Pure functions, no I/O.
"""
from __future__ import annotations

import re
from mmap import mmap
from array import array
from typing import List, Optional, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview, mmap]

DB_PREFIX = b"KAF_DB|v1|"
REPLY_PREFIX = b"KAF_MSGS|v1|"
#: The bytes of a record header before the number: "\nKAF_MSG|".
RECORD_LEAD = b"\nKAF_MSG|"

_DB_HEADER = re.compile(rb"KAF_DB\|v1\|(\d{1,19})(?=\n|\Z)")
# A record header, with any number of blank lines before it (rule 2).
_RECORD = re.compile(rb"\n+KAF_MSG\|(\d{1,19})\|(\d{1,19})\n")
# The start of a record header cut short by a crash (rule 6).
_TORN_HEADER = re.compile(rb"\n+(?:K(?:A(?:F(?:_(?:M(?:S(?:G(?:\|(?:\d+(?:\|\d*)?)?)?)?)?)?)?)?)?)?\Z")


def db_header(start: int) -> bytes:
    """The first bytes of a log file that continues from C{start}."""
    return b"KAF_DB|v1|%d" % (start,)


def record(num: int, data: bytes) -> bytes:
    """One record, exactly as it is stored on disk and sent in a reply."""
    return b"\nKAF_MSG|%d|%d\n%s" % (num, len(data), data)


def records(first: int, messages: List[bytes]) -> bytes:
    """Consecutive records numbered from C{first}."""
    return b"".join(
        [b"\nKAF_MSG|%d|%d\n%s" % (first + i, len(m), m) for i, m in enumerate(messages)]
    )


def reply_header(count: int) -> bytes:
    """The start of a C{kaf} reply holding C{count} messages."""
    return b"KAF_MSGS|v1|%d" % (count,)


def parse_db_header(buf: Buffer) -> Optional[Tuple[int, int]]:
    """
    Return C{(start, end offset)} of the file header, or C{None} when the
    bytes do not begin a Kaf log (rule 1).
    """
    m = _DB_HEADER.match(buf)
    if m is None:
        return None
    return int(m.group(1)), m.end()


class Index:
    """
    Where each message of a log lies in its file, in compact arrays: 24
    bytes a message.  C{starts[i]} is the offset of the newline that begins
    message C{i}'s record header, C{ends[i]} the offset after its data.
    C{dirty} lists (in order) the messages whose bytes are not a canonical
    record directly after the one before: a reply spanning one of those is
    re-encoded instead of copied.
    """

    __slots__ = ("nums", "starts", "ends", "dirty")

    def __init__(self) -> None:
        self.nums = array("q")
        self.starts = array("q")
        self.ends = array("q")
        self.dirty: List[int] = []

    def __len__(self) -> int:
        return len(self.nums)

    def add(self, num: int, start: int, end: int, clean: bool) -> None:
        if not clean or (self.ends and self.ends[-1] != start):
            self.dirty.append(len(self.nums))
        self.nums.append(num)
        self.starts.append(start)
        self.ends.append(end)

    def extend_clean(self, first: int, start: int, sizes: List[int]) -> None:
        """Add consecutive canonical records written at C{start}."""
        if self.ends and self.ends[-1] != start:
            self.dirty.append(len(self.nums))
        pos = start
        nums, starts, ends = self.nums, self.starts, self.ends
        for i, size in enumerate(sizes):
            num = first + i
            nums.append(num)
            starts.append(pos)
            pos += 11 + len(str(num)) + len(str(size)) + size
            ends.append(pos)

    def truncate(self, count: int) -> None:
        """Forget every message from position C{count} on."""
        del self.nums[count:]
        del self.starts[count:]
        del self.ends[count:]
        while self.dirty and self.dirty[-1] >= count:
            self.dirty.pop()


class Problem:
    """Something the scan found wrong, to be logged."""

    __slots__ = ("offset", "text")

    def __init__(self, offset: int, text: str) -> None:
        self.offset = offset
        self.text = text

    def __repr__(self) -> str:
        return "Problem(%d, %r)" % (self.offset, self.text)


class ScanResult:
    """What a scan found: messages, where the whole records end, problems."""

    __slots__ = ("index", "last_num", "end", "torn_at", "problems")

    def __init__(self, index: Index, last_num: int) -> None:
        self.index = index
        self.last_num = last_num
        #: Offset after the last whole record (and any newlines after it).
        self.end = 0
        #: Offset where a torn tail begins, or None (rule 6).
        self.torn_at: Optional[int] = None
        self.problems: List[Problem] = []


def scan(buf: Buffer, pos: int, size: int, index: Index, last_num: int) -> ScanResult:
    """
    Index the records in C{buf[pos:size]} by the rules of SPEC section 6,
    appending to C{index}.  C{last_num} is the number of the last message
    before C{pos} (records numbered no higher are skipped, rule 5).

    Sizes are trusted when they agree with what follows (rule 3), so the
    scan jumps from header to header without looking at the data.
    """
    result = ScanResult(index, last_num)
    match = _RECORD.match
    m = match(buf, pos)
    nums, starts, ends, dirty = index.nums, index.starts, index.ends, index.dirty
    while True:
        # Fast path: a canonical record followed directly by another header.
        prev = ends[-1] if len(ends) else -1
        last = result.last_num
        while m is not None:
            at = m.start()
            num_text, size_text = m.groups()
            num = int(num_text)
            data_end = m.end() + int(size_text)
            nxt = match(buf, data_end)
            if nxt is None or num <= last or m.start(1) - 9 != at:
                break
            if prev != at and prev != -1:
                dirty.append(len(nums))
            nums.append(num)
            starts.append(at)
            ends.append(data_end)
            prev, last = data_end, num
            m = nxt
        result.last_num = last
        if m is not None:
            pos = m.start()
        if m is None:
            rest = bytes(buf[pos:size])
            if rest.strip(b"\n") == b"":
                result.end = size
            elif _TORN_HEADER.match(rest):
                result.torn_at = pos
                result.end = pos
            else:
                # Only possible right after the file header: bytes that are
                # no record at all.  Keep them (never lose a person's bytes)
                # and serve nothing from them.
                result.problems.append(Problem(pos, "bytes that are not a record"))
                result.end = size
            return result
        num = int(m.group(1))
        length = int(m.group(2))
        start = m.start(1) - 9
        data_start = m.end()
        data_end = data_start + length
        # Canonical: no blank lines before the header (checked by the index
        # against the previous record's end) and the size is the data's.
        clean = True
        nxt = match(buf, data_end) if data_end <= size else None
        if nxt is None and not (data_end <= size and _only_newlines(buf, data_end, size)):
            clean = False
            cand = _next_larger(buf, data_start, num)
            if cand is not None:
                # Rule 4: data runs up to the next header with a larger
                # number (blank lines before that header are not data).
                data_end = cand.start()
                nxt = cand
            elif data_end > size:
                # Rule 6: a header with fewer data bytes than its size.
                result.torn_at = start
                result.end = start
                return result
            elif _TORN_HEADER.match(bytes(buf[data_end:size])):
                # Rule 6: whole data, then a header cut short.
                _add(result, num, start, data_start, data_end, True)
                result.torn_at = data_end
                result.end = data_end
                return result
            else:
                # Rule 4, last record: data runs to the end of the file,
                # less one final newline that an editor added.
                data_end = size - 1 if buf[size - 1:size] == b"\n" else size
            result.problems.append(Problem(
                start, "message %d: size %d disagrees with its data (%d bytes)"
                % (num, length, data_end - data_start)))
        _add(result, num, start, data_start, data_end, clean)
        if nxt is None:
            result.end = size
            return result
        m = nxt


def _only_newlines(buf: Buffer, pos: int, size: int) -> bool:
    return pos == size or bytes(buf[pos:size]).strip(b"\n") == b""


def _next_larger(buf: Buffer, pos: int, num: int) -> Optional["re.Match[bytes]"]:
    """The next record header after C{pos} numbered above C{num}."""
    while True:
        cand = _RECORD.search(buf, pos)
        if cand is None or int(cand.group(1)) > num:
            return cand
        pos = cand.start(1)


def _add(result: ScanResult, num: int, start: int, data_start: int, data_end: int,
         clean: bool) -> None:
    if num <= result.last_num:
        result.problems.append(
            Problem(start, "message %d does not follow %d: skipped" % (num, result.last_num))
        )
        return
    result.index.add(num, start, data_end, clean)
    result.last_num = num


def data_offset(buf: Buffer, rel: int) -> int:
    """Offset in C{buf} of the data of the record whose header is at C{rel}."""
    m = _RECORD.match(buf, rel)
    if m is None:
        raise ValueError("no record header at %d" % (rel,))
    return m.end()


class MalformedBatch(ValueError):
    """A C{batch=kaf} body that is not a run of kaf records."""


def parse_kaf_body(body: bytes) -> List[bytes]:
    """
    The messages of a body in the C{kaf} reply framing, strictly: every
    record's size must be exact.  The numbers in it are ignored.
    """
    if not body.startswith(REPLY_PREFIX):
        raise MalformedBatch("body does not begin with KAF_MSGS|v1|<count>")
    m = re.compile(rb"KAF_MSGS\|v1\|(\d{1,19})").match(body)
    if m is None:
        raise MalformedBatch("bad KAF_MSGS header")
    count = int(m.group(1))
    pos = m.end()
    out: List[bytes] = []
    match = _RECORD.match
    n = len(body)
    while pos < n:
        r = match(body, pos)
        if r is None or r.start(1) - 9 != pos:
            raise MalformedBatch("expected a KAF_MSG header at byte %d" % (pos,))
        end = r.end() + int(r.group(2))
        if end > n:
            raise MalformedBatch("message at byte %d is cut short" % (pos,))
        out.append(body[r.end():end])
        pos = end
    if len(out) != count:
        raise MalformedBatch("header says %d messages, body holds %d" % (count, len(out)))
    return out


def data_offset_or_none(buf: Buffer) -> Optional[int]:
    """Offset of the data of a record whose header begins C{buf}, or None."""
    m = _RECORD.match(buf)
    return None if m is None else m.end()


def is_canonical(buf: Buffer, rel: int, end: int) -> bool:
    """Is C{buf[rel:end]} exactly the canonical record it holds?"""
    m = _RECORD.match(buf, rel)
    return m is not None and m.start() == rel and int(m.group(2)) == end - m.end()


def records_of(nums: List[int], messages: List[bytes]) -> bytes:
    """Canonical records for the given numbers and data."""
    return b"".join([b"\nKAF_MSG|%d|%d\n%s" % (n, len(m), m) for n, m in zip(nums, messages)])


def shifted(offsets: "array[int]", delta: int) -> "array[int]":
    """The offsets moved by C{delta}."""
    return array("q", [o + delta for o in offsets])
