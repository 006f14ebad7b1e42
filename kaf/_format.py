"""
Record framing: encoding records and replies, the tolerant scan of a log
file's bytes (SPEC sections 3.2, 4 and 6), and the compact index the scan
builds.  Pure functions and data, no I/O.  (The raw and json reply bodies
are L{kaf._replies}'.)
"""
from __future__ import annotations

import re
import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, islice, repeat
from mmap import mmap
from operator import add
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union, overload

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


#: An Index keeps an absolute offset every 2 ** _SHIFT messages: a lookup
#: sums at most that many steps.
_SHIFT = 6
_SPAN = 1 << _SHIFT
#: Step arrays from narrow to wide, with the first value each cannot hold.
_WIDTHS = (("B", 1 << 8), ("H", 1 << 16), ("I", 1 << 32), ("q", 1 << 63))
_LIMIT = dict(_WIDTHS)


class Index:
    """
    Where each message of a log lies in its file, in little memory: for a
    clean file about 1.2 bytes a message when records are under 256 bytes,
    2.2 under 64 KiB, 4.2 under 4 GiB (24 for three plain arrays).
    Message C{i}'s record begins at C{start(i)} (the newline of its header)
    and ends at C{end(i)} (after its data); C{num(i)} is its number.

    A log file is mostly records one after the other, numbered one after
    the other, so the index keeps only what does not follow from that:
      - steps: C{end(i) - end(i - 1)}, in the narrowest array that holds
        them, with C{end(i)} itself every C{_SPAN} messages (marks);
      - gaps: the positions (and starts) of records that do not begin at
        the end of the one before, such as after an editor's blank lines;
        position 0 is always one;
      - runs: the positions where numbering does not go on by one, and
        the number there.
    The columns also read as sequences (C{nums}, C{starts}, C{ends}), and
    a range of numbers as a C{range}: a reply copies no offsets.
    C{dirty} lists (in order) the messages whose bytes are not a canonical
    record directly after the one before: a reply spanning one of those is
    re-encoded instead of copied.
    """

    __slots__ = ("_steps", "_marks", "_gap_pos", "_gap_start", "_run_pos", "_run_num",
                 "_last_end", "dirty")

    def __init__(self) -> None:
        self._steps = array("B")
        self._marks = array("q")
        self._gap_pos = array("q")
        self._gap_start = array("q")
        self._run_pos = array("q")
        self._run_num = array("q")
        self._last_end = 0
        self.dirty: List[int] = []

    def __len__(self) -> int:
        return len(self._steps)

    # -- lookups ----------------------------------------------------------

    def num(self, i: int) -> int:
        """The number of the message at position C{i}."""
        k = bisect_right(self._run_pos, i) - 1
        return self._run_num[k] + i - self._run_pos[k]

    def end(self, i: int) -> int:
        """The offset after the data of the message at position C{i}."""
        if i == len(self._steps) - 1:
            return self._last_end
        b = i >> _SHIFT
        return self._marks[b] + sum(self._steps[(b << _SHIFT) + 1:i + 1])

    def start(self, i: int) -> int:
        """The offset of the newline that begins message C{i}'s record."""
        k = bisect_left(self._gap_pos, i)
        if k < len(self._gap_pos) and self._gap_pos[k] == i:
            return self._gap_start[k]
        # The end before it; found from its own end, which the last
        # message (the one a reader tailing the log asks for) has at hand.
        return self.end(i) - self._steps[i]

    def reaching(self, offset: int, i: int, j: int) -> int:
        """The first position in C{i} … C{j-1} whose end is C{offset} or after, or C{j}."""
        if i >= j or self.end(j - 1) < offset:
            return j
        # The marks narrow it to one span, whose ends alone are summed.
        b = bisect_left(self._marks, offset)
        lo = max(i, ((b - 1) << _SHIFT) + 1 if b else 0)
        hi = min(j - 1, b << _SHIFT)
        return lo + bisect_left(self.ends_of(lo, hi + 1), offset)

    def position(self, num: int) -> int:
        """The position of the first message numbered C{num} or after."""
        k = bisect_right(self._run_num, num) - 1
        if k < 0:
            return 0
        at = self._run_pos[k] + num - self._run_num[k]
        stop = self._run_pos[k + 1] if k + 1 < len(self._run_pos) else len(self._steps)
        return min(at, stop)

    def nums_of(self, i: int, j: int) -> Sequence[int]:
        """The numbers of the messages at positions C{i} … C{j-1}."""
        if i >= j:
            return range(0)
        runs, firsts = self._run_pos, self._run_num
        k = bisect_right(runs, i) - 1
        first = firsts[k] + i - runs[k]
        if k + 1 == len(runs) or runs[k + 1] >= j:
            # Numbered one after the other: no copy at all.
            return range(first, first + j - i)
        out = array("q", range(first, firsts[k] + runs[k + 1] - runs[k]))
        k += 1
        while k < len(runs) and runs[k] < j:
            stop = min(j, runs[k + 1] if k + 1 < len(runs) else j)
            out.extend(range(firsts[k], firsts[k] + stop - runs[k]))
            k += 1
        return out

    def ends_of(self, i: int, j: int) -> List[int]:
        """The ends of the messages at positions C{i} … C{j-1}."""
        if i >= j:
            return []
        # One pass in C, however many messages.
        return list(accumulate(self._steps[i + 1:j], initial=self.end(i)))

    def starts_of(self, i: int, j: int) -> List[int]:
        """The starts of the messages at positions C{i} … C{j-1}."""
        if i >= j:
            return []
        out = [self.start(i)]
        out += self.ends_of(i, j - 1)
        gaps = self._gap_pos
        k = bisect_right(gaps, i)
        while k < len(gaps) and gaps[k] < j:
            out[gaps[k] - i] = self._gap_start[k]
            k += 1
        return out

    @property
    def nums(self) -> "Column":
        return Column(self.num, self.nums_of, 0, len(self))

    @property
    def starts(self) -> "Column":
        return Column(self.start, self.starts_of, 0, len(self))

    @property
    def ends(self) -> "Column":
        return Column(self.end, self.ends_of, 0, len(self))

    @property
    def nbytes(self) -> int:
        """
        The memory the index holds, in bytes (over-allocation included
        where the Python tells it; PyPy does not: there, the items' size).
        """
        arrays = (self._steps, self._marks, self._gap_pos, self._gap_start,
                  self._run_pos, self._run_num)
        return (sum(sys.getsizeof(a, len(a) * a.itemsize) for a in arrays)
                + sys.getsizeof(self.dirty, 8 * len(self.dirty)))

    # -- changes ----------------------------------------------------------

    def add(self, num: int, start: int, end: int, clean: bool) -> None:
        p = len(self._steps)
        follows = p > 0 and self._last_end == start
        if not clean or (p and not follows):
            self.dirty.append(p)
        if not follows:
            self._gap_pos.append(p)
            self._gap_start.append(start)
        self._number(p, num)
        step = end - (self._last_end if p else start)
        self._fit(step)
        self._steps.append(step)
        if not p & (_SPAN - 1):
            self._marks.append(end)
        self._last_end = end

    def extend_clean(self, first: int, start: int, sizes: Sequence[int],
                     lengths: Optional[Sequence[int]] = None) -> None:
        """
        Add consecutive canonical records written at C{start}, given the
        sizes of their data (and, when the writer knows them, of the whole
        records).
        """
        if lengths is None:
            # 11 bytes of framing, the digits of number and size, the data;
            # iterators that run in C, for batches of thousands.
            n = len(sizes)
            lengths = list(map(add, map(add, map(len, map(str, range(first, first + n))),
                                        map(len, map(str, sizes))),
                               map(add, sizes, repeat(11))))
        n = len(lengths)
        if n > 1 and lengths.count(lengths[0]) == n:
            # Records of one length (a batch of messages of one size, most
            # often): no list of steps to widen, check and add up.
            self.extend_uniform(start, lengths[0], n, first)
            return
        self.extend(start, lengths, (0,), (first,))

    def extend(self, start: int, lengths: Sequence[int],
               run_at: Sequence[int], run_num: Sequence[int]) -> None:
        """
        Add records one after the other, the first at C{start}, given their
        lengths.  Their numbers go on by one except at the C{run_at}
        positions (the first is 0), where they are C{run_num}.
        """
        n = len(lengths)
        if not n:
            return
        p = len(self._steps)
        lead = start - self._last_end if p else 0
        if p and lead:
            self.dirty.append(p)
        if not p or lead:
            self._gap_pos.append(p)
            self._gap_start.append(start)
        self._number(p, run_num[0])
        if len(run_at) > 1:
            self._run_pos.extend(map(add, run_at[1:], repeat(p)))
            self._run_num.extend(run_num[1:])
        self._fit(max(lengths) + lead)
        steps = self._steps
        if isinstance(lengths, array) and lengths.typecode != steps.typecode:
            steps.extend(iter(lengths))
        else:
            steps.extend(lengths)
        if lead:
            steps[p] += lead
        due = (-p) & (_SPAN - 1)
        if due < n:
            self._marks.extend(islice(accumulate(lengths, initial=start),
                                      due + 1, None, _SPAN))
        self._last_end = start + sum(lengths)

    def extend_uniform(self, start: int, length: int, count: int, num: int) -> None:
        """
        Add C{count} records one after the other, each C{length} bytes, the
        first at C{start} and numbered C{num}, the others on by one: the
        same as L{extend} with C{[length] * count}, without the list.
        """
        if not count:
            return
        p = len(self._steps)
        lead = start - self._last_end if p else 0
        if p and lead:
            self.dirty.append(p)
        if not p or lead:
            self._gap_pos.append(p)
            self._gap_start.append(start)
        self._number(p, num)
        self._fit(length + lead)
        steps = self._steps
        steps.extend(array(steps.typecode, [length]) * count)
        if lead:
            steps[p] += lead
        # A mark every _SPAN positions, at the end of the record there.
        due = (-p) & (_SPAN - 1)
        self._marks.extend(range(start + (due + 1) * length, start + count * length + 1,
                                 _SPAN * length))
        self._last_end = start + count * length

    def trim(self) -> None:
        """Give back the room the steps' array grew by (a scan extends it many times)."""
        self._steps = self._steps[:]

    def _number(self, p: int, num: int) -> None:
        """Start a run at position C{p} unless C{num} goes on from the one before."""
        runs = self._run_pos
        if not runs or self._run_num[-1] + p - runs[-1] != num:
            runs.append(p)
            self._run_num.append(num)

    def _fit(self, step: int) -> None:
        """Widen the steps' array to hold C{step}."""
        steps = self._steps
        if step < _LIMIT[steps.typecode]:
            return
        code = next(code for code, limit in _WIDTHS if step < limit)
        self._steps = array(code, steps)

    def truncate(self, count: int) -> None:
        """Forget every message from position C{count} on."""
        if count >= len(self._steps):
            return
        last_end = self.end(count - 1) if count else 0
        del self._steps[count:]
        del self._marks[(count + _SPAN - 1) >> _SHIFT:]
        k = bisect_left(self._gap_pos, count)
        del self._gap_pos[k:]
        del self._gap_start[k:]
        k = bisect_left(self._run_pos, count)
        del self._run_pos[k:]
        del self._run_num[k:]
        self._last_end = last_end
        while self.dirty and self.dirty[-1] >= count:
            self.dirty.pop()

    def copy(self) -> "Index":
        new = Index()
        new._steps = self._steps[:]
        new._marks = self._marks[:]
        new._gap_pos = self._gap_pos[:]
        new._gap_start = self._gap_start[:]
        new._run_pos = self._run_pos[:]
        new._run_num = self._run_num[:]
        new._last_end = self._last_end
        new.dirty = self.dirty[:]
        return new

    def tail(self, k: int, delta: int) -> "Index":
        """
        A new index of the messages from position C{k} on, their offsets
        moved by C{delta}.
        """
        new = Index()
        n = len(self)
        # Stretches of records one after the other, numbered one after the
        # other: each is added at once, its steps copied as they are.
        cuts = {k, n}
        for positions in (self._gap_pos, self._run_pos):
            cuts.update(positions[bisect_right(positions, k):])
        bounds = sorted(cuts)
        for a, b in zip(bounds, bounds[1:]):
            start = self.start(a)
            lengths = array(self._steps.typecode, [self.end(a) - start])
            lengths += self._steps[a + 1:b]
            new.extend(start + delta, lengths, (0,), (self.num(a),))
        # The first kept message stays marked: its record may not be
        # canonical (size disagrees), and a read checks it before copying.
        new.dirty = [d - k for d in self.dirty if d >= k]
        return new


class Column(Sequence[int]):
    """
    One column of an index (numbers, starts or ends) for positions C{lo} …
    C{hi-1}, read as a sequence: values are found when they are asked for.
    """

    __slots__ = ("_one", "_many", "_lo", "_hi")

    def __init__(self, one: Callable[[int], int], many: Callable[[int, int], Sequence[int]],
                 lo: int, hi: int) -> None:
        self._one = one
        self._many = many
        self._lo = lo
        self._hi = hi

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[int, Sequence[int]]:
        n = self._hi - self._lo
        if isinstance(i, slice):
            a, b, step = i.indices(n)
            if step != 1:
                return self._many(self._lo, self._hi)[i]
            return self._many(self._lo + a, self._lo + max(a, b))
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("index position out of range")
        return self._one(self._lo + i)

    def __iter__(self) -> Iterator[int]:
        return iter(self._many(self._lo, self._hi))


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
        at = index.start(i)
        before = index.num(i - 1) if i > first else last_num
        index.truncate(i)
        again = _scan(buf, at, result.torn_at, index, before)
        if again.torn_at is None:
            result.last_num = again.last_num
            break
        result.problems.extend(again.problems)
        result.torn_at = result.end = again.torn_at
        result.last_num = again.last_num
    index.trim()
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
    while True:
        # Fast path: a canonical record followed directly by another header.
        # The records' lengths, and where numbering skips, are gathered and
        # indexed at once.
        last = result.last_num
        if m is not None and m.start(1) - 9 == m.start():
            at = run_start = m.start()
            run = array("q")
            grow = run.append
            run_at, run_num = array("q", [0]), array("q", [last + 1])
            canonical = _CANONICAL.match
            # Records of one length numbered one after the other, seen in a
            # row: after _UNIFORM_AFTER of them, the ones ahead are checked
            # a block at a time (_uniform), not one by one.
            alike, length, block = 0, 0, _BLOCK_LEAST
            while True:
                num_text, size_text = m.groups()
                num = int(num_text)
                data_end = m.end() + int(size_text)
                nxt = canonical(buf, data_end, size)
                if nxt is None or num <= last:
                    break
                if num != last + 1:
                    alike = 0
                    if run:
                        run_at.append(len(run))
                        run_num.append(num)
                    else:
                        run_num[0] = num
                if data_end - at == length:
                    alike += 1
                else:
                    alike, length = 0, data_end - at
                grow(length)
                last = num
                at = data_end
                m = nxt
                if alike < _UNIFORM_AFTER:
                    continue
                count, span = _uniform(buf, at, size, m, last + 1, block)
                if not count:
                    # Not alike after all: one by one for a while.
                    alike, block = 0, max(block >> 1, _BLOCK_LEAST)
                    continue
                block = min(block << 1, _BLOCK_MOST)
                index.extend(run_start, run, run_at, run_num)
                index.extend_uniform(at, span, count, last + 1)
                last += count
                at = run_start = at + count * span
                run = array("q")
                grow = run.append
                run_at, run_num = array("q", [0]), array("q", [last + 1])
                m = canonical(buf, at, size)
                assert m is not None, "_uniform checked the header after the block"
            index.extend(run_start, run, run_at, run_num)
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


#: Records alike in a row (one length, numbered one after the other) after
#: which the scan checks those ahead a block at a time; blocks grow from
#: the least to the most records while they hold, and shrink when not.
_UNIFORM_AFTER = 16
_BLOCK_LEAST = 64
_BLOCK_MOST = 1 << 14
#: The digits of a place (ones, tens, ...) over one period of it, by place.
_DIGIT_CYCLES: List[bytes] = []


def _uniform(buf: Buffer, at: int, size: int, m: "re.Match[bytes]", first: int,
             most: int) -> Tuple[int, int]:
    """
    How many canonical records, at most C{most}, begin at C{at} (where C{m}
    matched a canonical header) and follow one another, each as long as the
    first, numbered from C{first} on, with their numbers and sizes written
    as the first's are (same digits), each followed by the header of the
    next: C{(count, length)}, or C{(0, 0)} when they are not alike.  Fewer
    than C{most} where the file, or the numbers of as many digits, end.

    Such records differ only in the digits of their numbers, so each byte
    of a header is one column of the file taken every C{length} bytes,
    checked in a comparison of C{bytes}: no Python code a record.  This is
    what the record by record scan accepts (rule 3), and finds the same.
    """
    num_text, size_text = m.groups()
    digits = len(num_text)
    head = m.end() - at
    length = head + int(size_text)
    # The headers checked: the block's and the one after it, all whole in
    # buf[:size], all with as many digits.
    count = min(most, (size - at - head) // length, 10 ** digits - 1 - first)
    if count < 1:
        return 0, 0
    n = count + 1
    stop = at + count * length + 1
    header = bytes(buf[at:at + head])
    for j in range(head):
        column = buf[at + j:stop + j:length]
        if 9 <= j < 9 + digits:
            expected = _digit_column(first, n, digits - 1 - (j - 9))
        else:
            expected = header[j:j + 1] * n
        if column != expected:
            return 0, 0
    return count, length


def _digit_column(first: int, n: int, place: int) -> bytes:
    """The digits at C{place} (0: ones) of C{first} … C{first + n - 1}, zeros above them."""
    unit = 10 ** place
    period = 10 * unit
    skip = first % period
    if period <= 4 * n:
        while len(_DIGIT_CYCLES) <= place:
            p = 10 ** len(_DIGIT_CYCLES)
            _DIGIT_CYCLES.append(b"".join(b"%d" % (d,) * p for d in range(10)))
        return (_DIGIT_CYCLES[place] * ((skip + n) // period + 1))[skip:skip + n]
    # A place that changes less often than every n / 4 numbers: a few runs.
    parts = []
    num, left = first, n
    while left:
        run = min(unit - num % unit, left)
        parts.append(b"%d" % ((num // unit) % 10,) * run)
        num += run
        left -= run
    return b"".join(parts)


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


try:
    from kaf._records import records as _records_in_c
except ImportError:  # not built: PyPy, or no C compiler at install (see setup.py)
    _records_in_c = None


def records_and_lengths(nums: Sequence[int], messages: Sequence[bytes]
                        ) -> Tuple[bytes, List[int]]:
    """Canonical records for the given numbers and data, and their lengths."""
    if (_records_in_c is not None and type(nums) is range and nums.step == 1
            and type(messages) is list and len(nums) == len(messages)):
        # Numbered on by one (every write's): one C call, no header objects.
        try:
            return _records_in_c(nums.start, messages)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError):
            pass  # not all bytes, say: as below
    # Headers and data interleaved and joined once: formatting each record
    # with its data would copy every message twice.
    heads = [b"\nKAF_MSG|%d|%d\n" % (n, len(m)) for n, m in zip(nums, messages)]
    parts: List[bytes] = [b""] * (2 * len(messages))
    parts[::2] = heads
    parts[1::2] = messages
    return b"".join(parts), list(map(add, map(len, heads), map(len, messages)))
