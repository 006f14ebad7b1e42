"""
Record framing: encoding records and replies, and the tolerant scan of a
log file's bytes (SPEC sections 3.2, 4 and 6).  Pure functions, no I/O.
"""
from __future__ import annotations

import re
from mmap import mmap
from array import array
from itertools import accumulate, repeat
from operator import add
from typing import Iterable, List, Optional, Sequence, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview, mmap]

DB_PREFIX = b"KAF_DB|v1|"
REPLY_PREFIX = b"KAF_MSGS|v1|"
#: The bytes of a record header before the number: "\nKAF_MSG|".
RECORD_LEAD = b"\nKAF_MSG|"

_DB_HEADER = re.compile(rb"KAF_DB\|v1\|(\d{1,19})(?=\n|\Z)")
# A record header exactly (no blank lines before it).
_CANONICAL = re.compile(rb"\nKAF_MSG\|(\d{1,19})\|(\d{1,19})\n")
# A record header, with any number of blank lines before it (rule 2).
_RECORD = re.compile(rb"\n+KAF_MSG\|(\d{1,19})\|(\d{1,19})\n")
# A record header cut short by a crash at the end of the file (rule 6).
_TORN_TAIL = re.compile(
    rb"\n+K(?:A(?:F(?:_(?:M(?:S(?:G(?:\|(?:\d+(?:\|\d*)?)?)?)?)?)?)?)?)?\Z")
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
    if len(messages) == 1:
        return b"\nKAF_MSG|%d|%d\n%s" % (first, len(messages[0]), messages[0])
    return records_of(range(first, first + len(messages)), messages)


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

    def extend_clean(self, first: int, start: int, sizes: Sequence[int],
                     lengths: Optional[Iterable[int]] = None) -> None:
        """
        Add consecutive canonical records written at C{start}, given the
        sizes of their data (and, when the writer knows them, of the whole
        records).
        """
        if self.ends and self.ends[-1] != start:
            self.dirty.append(len(self.nums))
        n = len(sizes)
        if lengths is None:
            # 11 bytes of framing, the digits of number and size, the data;
            # iterators that run in C, for batches of thousands.
            lengths = map(add, map(add, map(len, map(str, range(first, first + n))),
                                   map(len, map(str, sizes))),
                          map(add, sizes, repeat(11)))
        offsets = list(accumulate(lengths, initial=start))
        self.nums.extend(range(first, first + n))
        self.starts.extend(offsets[:-1])
        self.ends.extend(offsets[1:])

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

    When a torn tail is found, the file is read again as it will be once
    the tail is cut, from the last record on, until that reads the same:
    what a start-up serves, the next start-up serves too.
    """
    first = len(index)
    result = _scan(buf, pos, size, index, last_num)
    while result.torn_at is not None and len(index) > first:
        i = len(index) - 1
        at = index.starts[i]
        before = index.nums[i - 1] if i > first else last_num
        index.truncate(i)
        again = _scan(buf, at, result.torn_at, index, before)
        if again.torn_at is None:
            result.last_num = again.last_num
            break
        result.problems.extend(again.problems)
        result.torn_at = result.end = again.torn_at
        result.last_num = again.last_num
    return result


def _scan(buf: Buffer, pos: int, size: int, index: Index, last_num: int) -> ScanResult:
    """
    Index the records in C{buf[pos:size]} by the rules of SPEC section 6,
    appending to C{index}.  C{last_num} is the number of the last message
    before C{pos} (records numbered no higher are skipped, rule 5).

    Sizes are trusted when they agree with what follows (rule 3), so the
    scan jumps from header to header without looking at the data.
    """
    result = ScanResult(index, last_num)
    match = _RECORD.match
    m = match(buf, pos, size)
    nums, starts, ends, dirty = index.nums, index.starts, index.ends, index.dirty
    while True:
        # Fast path: a canonical record followed directly by another header.
        last = result.last_num
        if m is not None and m.start(1) - 9 == m.start():
            at = m.start()
            if len(ends) and ends[-1] != at:
                dirty.append(len(nums))
            add_num, add_start, add_end = nums.append, starts.append, ends.append
            canonical = _CANONICAL.match
            while True:
                num_text, size_text = m.groups()
                num = int(num_text)
                data_end = m.end() + int(size_text)
                nxt = canonical(buf, data_end, size)
                if nxt is None or num <= last:
                    break
                add_num(num)
                add_start(at)
                add_end(data_end)
                last = num
                at = data_end
                m = nxt
        result.last_num = last
        if m is not None:
            pos = m.start()
        if m is None:
            rest = bytes(buf[pos:size])
            if rest.strip(b"\n") == b"":
                result.end = size
            elif _TORN_HEADER.match(rest):
                return _torn(result, pos)
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
        nxt = match(buf, data_end, size) if data_end <= size else None
        if nxt is None and not (data_end <= size and _only_newlines(buf, data_end, size)):
            clean = False
            cand = _next_larger(buf, data_start, size, num)
            if cand is not None:
                # Rule 4: data runs up to the next header with a larger
                # number (blank lines before that header are not data).
                data_end = cand.start()
                nxt = cand
            else:
                cut = _torn_tail(buf, data_start, size)
                if data_end > size and cut is None:
                    # Rule 6: a header with fewer data bytes than its size.
                    return _torn(result, m.start())
                if cut is not None:
                    # Rule 6: a header cut short at the end of the file.
                    if cut - data_start < length:
                        # ...after fewer data bytes than the size: this
                        # record is torn too.
                        return _torn(result, m.start())
                    _add(result, num, start, data_start, cut, cut - data_start == length)
                    return _torn(result, cut)
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


def _torn(result: ScanResult, at: int) -> ScanResult:
    """End the scan with a torn tail from C{at} (rule 6)."""
    result.torn_at = at
    result.end = at
    return result


def _torn_tail(buf: Buffer, data_start: int, size: int) -> Optional[int]:
    """
    Where a record header cut short at the end of the file begins, or None.
    Cut there, the data could end in what looks like another one: that is
    cut too, so that the next start-up finds the same.
    """
    cut = None
    while True:
        t = _TORN_TAIL.search(buf, max(data_start, size - 64), size)
        if t is None:
            return cut
        size = t.start()
        while size > data_start and buf[size - 1:size] == b"\n":
            size -= 1
        cut = size


def _only_newlines(buf: Buffer, pos: int, size: int) -> bool:
    return pos == size or bytes(buf[pos:size]).strip(b"\n") == b""


def _next_larger(buf: Buffer, pos: int, size: int, num: int) -> Optional["re.Match[bytes]"]:
    """The next record header after C{pos} numbered above C{num}."""
    while True:
        cand = _RECORD.search(buf, pos, size)
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
    """A body in the C{kaf} framing that is not a run of kaf records."""


_REPLY = re.compile(rb"KAF_MSGS\|v1\|(\d{1,19})")


def parse_kaf_records(body: bytes, increasing: bool = False) -> List[Tuple[int, bytes]]:
    """
    The numbers and messages of a body in the C{kaf} reply framing,
    strictly: the header, every record's place and size and the count must
    be exact (and, if C{increasing}, the numbers must increase).
    """
    m = _REPLY.match(body)
    if m is None:
        raise MalformedBatch("body does not begin with KAF_MSGS|v1|<count>")
    count = int(m.group(1))
    pos = m.end()
    out: List[Tuple[int, bytes]] = []
    match = _CANONICAL.match
    n = len(body)
    previous = -1
    while pos < n:
        r = match(body, pos)
        if r is None:
            raise MalformedBatch("expected a KAF_MSG header at byte %d" % (pos,))
        num = int(r.group(1))
        end = r.end() + int(r.group(2))
        if end > n:
            raise MalformedBatch("message %d is cut short" % (num,))
        if increasing and num <= previous:
            raise MalformedBatch("message %d follows %d" % (num, previous))
        out.append((num, body[r.end():end]))
        previous = num
        pos = end
    if len(out) != count:
        raise MalformedBatch("header says %d messages, body holds %d" % (count, len(out)))
    return out


def parse_kaf_body(body: bytes) -> List[bytes]:
    """The messages of a C{batch=kaf} body; the numbers in it are ignored."""
    return [data for _, data in parse_kaf_records(body)]


_BEGINS_RECORD = re.compile(rb"\n+KAF_MSG\|")


def begins_record(buf: Buffer) -> bool:
    """Do the bytes begin a record header (blank lines allowed)?"""
    return _BEGINS_RECORD.match(buf) is not None


def is_canonical(buf: Buffer, rel: int, end: int) -> bool:
    """Is C{buf[rel:end]} exactly the canonical record it holds?"""
    m = _RECORD.match(buf, rel)
    return m is not None and m.start() == rel and int(m.group(2)) == end - m.end()


def records_of(nums: Sequence[int], messages: Sequence[bytes]) -> bytes:
    """Canonical records for the given numbers and data."""
    return records_and_lengths(nums, messages)[0]


def records_and_lengths(nums: Sequence[int], messages: Sequence[bytes]
                        ) -> Tuple[bytes, List[int]]:
    """Canonical records for the given numbers and data, and their lengths."""
    # Headers and data interleaved and joined once: formatting each record
    # with its data would copy every message twice.
    heads = [b"\nKAF_MSG|%d|%d\n" % (n, len(m)) for n, m in zip(nums, messages)]
    parts: List[bytes] = [b""] * (2 * len(messages))
    parts[::2] = heads
    parts[1::2] = messages
    return b"".join(parts), list(map(add, map(len, heads), map(len, messages)))


def shifted(offsets: "array[int]", delta: int) -> "array[int]":
    """The offsets moved by C{delta}."""
    return array("q", [o + delta for o in offsets])
