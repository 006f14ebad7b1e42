"""
Tests of the pure record layer, L{kaf._format}: the byte-exact framing of
SPEC sections 3.2 and 4, the scan of clean files, the strict parser of
C{batch=kaf} bodies, and the compact Index.
"""
from __future__ import annotations

from bisect import bisect_left
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaf import _format
from kaf._format import Index, MalformedBatch, ScanResult

# Bytes a message may hold that look like Kaf's own framing: a scan that
# searched the data for headers instead of trusting the sizes would split them.
TRICKY = [
    b"\nKAF_MSG|1|2\n",
    b"\nKAF_MSG|99|0\n",
    b"\nKAF_MSG|",
    b"KAF_MSG|3|1\n",
    b"KAF_DB|v1|0",
    b"KAF_MSGS|v1|2",
    b"\n",
    b"\n\n",
    b"\r\n",
    b"|",
    b"\x00",
    b"\xff",
]

message = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.binary(max_size=4)),
             max_size=6).map(b"".join),
)


@st.composite
def numbered(draw: st.DrawFn) -> Tuple[int, List[int], List[bytes]]:
    """A start number, then strictly increasing message numbers (gaps allowed)."""
    start = draw(st.integers(0, 10 ** 12))
    messages = draw(st.lists(message, max_size=25))
    nums = []
    last = start
    for _ in messages:
        last += draw(st.one_of(st.just(1), st.integers(1, 10 ** 6)))
        nums.append(last)
    return start, nums, messages


def scan_file(buf: bytes) -> Tuple[Index, ScanResult]:
    head = _format.parse_db_header(buf)
    assert head is not None
    start, pos = head
    index = Index()
    return index, _format.scan(buf, pos, len(buf), index, start)


def served(buf: bytes, index: Index) -> List[Tuple[int, bytes]]:
    return [(n, buf[_format.data_offset(buf, s):e])
            for n, s, e in zip(index.nums, index.starts, index.ends)]


# -- byte-exact encoding (SPEC 4 and 3.2) ---------------------------------------


def test_new_log_file_is_the_11_bytes_kaf_db_v1_0() -> None:
    assert _format.db_header(0) == b"KAF_DB|v1|0"
    assert len(_format.db_header(0)) == 11


def test_file_header_carries_the_number_the_log_continues_from() -> None:
    assert _format.db_header(4) == b"KAF_DB|v1|4"
    assert _format.db_header(1234567890123) == b"KAF_DB|v1|1234567890123"


def test_record_is_newline_header_newline_then_the_raw_data() -> None:
    assert _format.record(1, b"s1") == b"\nKAF_MSG|1|2\ns1"
    assert _format.record(12, b"a\nb\x00") == b"\nKAF_MSG|12|4\na\nb\x00"


def test_records_are_numbered_consecutively_from_the_first() -> None:
    assert _format.records(5, [b"msg-5", b"msg-6"]) == (
        b"\nKAF_MSG|5|5\nmsg-5\nKAF_MSG|6|5\nmsg-6")
    assert _format.records(1, []) == b""


def test_records_of_uses_the_given_numbers() -> None:
    assert _format.records_of([2, 9], [b"x", b"yz"]) == b"\nKAF_MSG|2|1\nx\nKAF_MSG|9|2\nyz"


def test_empty_kaf_reply_is_the_13_bytes_kaf_msgs_v1_0() -> None:
    assert _format.reply_header(0) == b"KAF_MSGS|v1|0"
    assert len(_format.reply_header(0)) == 13


def test_kaf_reply_header_has_no_newline_of_its_own() -> None:
    body = _format.reply_header(2) + _format.records(1, [b"a", b"b"])
    assert body == b"KAF_MSGS|v1|2\nKAF_MSG|1|1\na\nKAF_MSG|2|1\nb"


def test_file_header_gives_start_and_where_records_begin() -> None:
    assert _format.parse_db_header(b"KAF_DB|v1|0") == (0, 11)
    assert _format.parse_db_header(b"KAF_DB|v1|2\nKAF_MSG|5|5\nmsg-5") == (2, 11)
    assert _format.parse_db_header(b"KAF_DB|v1|10\n") == (10, 12)


@pytest.mark.parametrize("head", [
    b"", b"KAF_DB|v2|0", b"KAF_DB|v1|", b"KAF_DB|v1|x", b"kaf_db|v1|0",
    b"KAF_DB|v1|0x", b"KAF_DB|v1|-1", b"\nKAF_DB|v1|0", b" KAF_DB|v1|0",
    b"KAF_MSGS|v1|0",
])
def test_file_not_beginning_with_kaf_db_header_is_not_a_log(head: bytes) -> None:
    assert _format.parse_db_header(head + b"\nKAF_MSG|1|1\na") is None


# -- the scan of a clean file gives back what was written -----------------------


@given(numbered())
@settings(max_examples=300, deadline=None)
def test_clean_file_scans_back_to_its_messages_numbers_and_offsets(
        case: Tuple[int, List[int], List[bytes]]) -> None:
    start, nums, messages = case
    buf = _format.db_header(start) + _format.records_of(nums, messages)
    index, result = scan_file(buf)
    starts, ends = [], []
    pos = len(_format.db_header(start))
    for n, m in zip(nums, messages):
        starts.append(pos)
        pos += len(_format.record(n, m))
        ends.append(pos)
    assert list(index.nums) == nums
    assert list(index.starts) == starts
    assert list(index.ends) == ends
    assert served(buf, index) == list(zip(nums, messages))
    assert index.dirty == []
    assert result.problems == []
    assert result.torn_at is None
    assert result.end == len(buf)
    assert result.last_num == (nums[-1] if nums else start)


@given(numbered(), st.data())
@settings(max_examples=200, deadline=None)
def test_scan_resumed_at_a_record_boundary_gives_the_same_index(
        case: Tuple[int, List[int], List[bytes]], data: st.DataObject) -> None:
    # A log grown by appends is indexed from where the last scan stopped.
    start, nums, messages = case
    buf = _format.db_header(start) + _format.records_of(nums, messages)
    whole, _ = scan_file(buf)
    cut = data.draw(st.integers(0, len(nums)))
    prefix = _format.db_header(start) + _format.records_of(nums[:cut], messages[:cut])
    part, first = scan_file(prefix)
    _format.scan(buf, len(prefix), len(buf), part, first.last_num)
    assert list(part.nums) == list(whole.nums)
    assert list(part.starts) == list(whole.starts)
    assert list(part.ends) == list(whole.ends)
    assert part.dirty == []


@given(st.integers(1, 10 ** 9), st.integers(0, 10 ** 6),
       st.lists(st.integers(0, 10 ** 7), max_size=30))
def test_extend_clean_locates_records_as_they_are_encoded(
        first: int, at: int, sizes: List[int]) -> None:
    index = Index()
    index.extend_clean(first, at, sizes)
    pos = at
    for i, size in enumerate(sizes):
        assert index.nums[i] == first + i
        assert index.starts[i] == pos
        pos += len(b"\nKAF_MSG|%d|%d\n" % (first + i, size)) + size
        assert index.ends[i] == pos
    assert index.dirty == []


@given(st.integers(1, 10 ** 9), st.lists(st.integers(0, 300), max_size=5),
       st.integers(0, 300), st.integers(0, 40), st.integers(0, 2))
def test_extend_clean_of_records_of_one_length_indexes_as_extend_does(
        first: int, before: List[int], size: int, count: int, gap: int) -> None:
    a, b = Index(), Index()
    for index in (a, b):
        index.extend_clean(first, 11, before)
    at = (a.end(len(a) - 1) if len(a) else 11) + gap
    num = first + len(before)
    lengths = [len(b"\nKAF_MSG|%d|%d\n" % (n, size)) + size for n in range(num, num + count)]
    a.extend(at, lengths, [0], [num])
    b.extend_clean(num, at, [size] * count, lengths)
    assert (list(b.nums), list(b.starts), list(b.ends), b.dirty) == (
        list(a.nums), list(a.starts), list(a.ends), a.dirty)


def test_records_written_after_a_gap_in_the_file_are_marked_dirty() -> None:
    index = Index()
    index.extend_clean(1, 11, [2])
    index.extend_clean(2, index.ends[-1] + 2, [2])
    assert index.dirty == [1]


def test_index_truncate_forgets_messages_from_a_position() -> None:
    index = Index()
    index.extend_clean(1, 11, [1, 1])
    index.extend_clean(3, 100, [1, 1])
    assert index.dirty == [2]
    index.truncate(2)
    assert list(index.nums) == [1, 2]
    assert len(index.starts) == len(index.ends) == 2
    assert index.dirty == []


@pytest.mark.parametrize("size, most", [(100, 1.25), (1000, 2.25), (10000, 2.25)])
def test_index_of_a_clean_log_costs_about_one_byte_a_message_under_256_bytes_two_under_64_kib(
        size: int, most: float) -> None:
    n = 100_000
    buf = _format.db_header(0) + _format.records(1, [b"m" * size] * n)
    index, _ = scan_file(buf)
    assert len(index) == n
    # Everything the index holds, over-allocation included.
    assert index.nbytes / n <= most
    # A clean log keeps no per-message list at all.
    assert index.dirty == []


@st.composite
def index_edits(draw: st.DrawFn) -> List[Tuple[str, int, int, int, bool]]:
    """
    Records added one at a time or in runs, with gaps before them, skipped
    numbers, dirty records, lengths of every width, and truncations.
    """
    lengths = st.one_of(st.integers(1, 300), st.integers(1, 70000),
                        st.integers(1, 5 * 10 ** 9))
    ops = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["add", "extend", "truncate"]))
        if kind == "truncate":
            ops.append((kind, draw(st.integers(0, 200)), 0, 0, True))
        else:
            count = 1 if kind == "add" else draw(st.integers(0, 150))
            gap = draw(st.one_of(st.just(0), st.integers(1, 3)))
            skip = draw(st.one_of(st.just(1), st.integers(2, 10 ** 6)))
            ops.append((kind, count, gap, skip, draw(st.booleans())))
            ops.extend(("length", draw(lengths), 0, 0, True) for _ in range(count))
    return ops


@given(index_edits(), st.data())
@settings(max_examples=300, deadline=None)
def test_index_reads_back_every_number_and_offset_it_was_given(
        ops: List[Tuple[str, int, int, int, bool]], data: st.DataObject) -> None:
    index = Index()
    nums: List[int] = []
    starts: List[int] = []
    ends: List[int] = []
    dirty: List[int] = []
    k = 0
    while k < len(ops):
        kind, count, gap, skip, clean = ops[k]
        k += 1
        if kind == "truncate":
            index.truncate(count)
            del nums[count:], starts[count:], ends[count:]
            dirty = [d for d in dirty if d < count]
            continue
        lengths = [op[1] for op in ops[k:k + count]]
        k += count
        if not lengths:
            continue
        first = (nums[-1] if nums else 0) + skip
        at = (ends[-1] if ends else 11) + gap
        if nums and (gap or (kind == "add" and not clean)):
            dirty.append(len(nums))
        elif kind == "add" and not clean:
            dirty.append(0)
        if kind == "add":
            index.add(first, at, at + lengths[0], clean)
        else:
            index.extend(at, lengths, [0], [first])
        for i, n in enumerate(lengths):
            nums.append(first + i)
            starts.append(at)
            at += n
            ends.append(at)
    assert len(index) == len(nums)
    assert (list(index.nums), list(index.starts), list(index.ends)) == (nums, starts, ends)
    assert index.dirty == dirty
    if nums:
        i = data.draw(st.integers(0, len(nums) - 1))
        j = data.draw(st.integers(i, len(nums)))
        assert (index.num(i), index.start(i), index.end(i)) == (nums[i], starts[i], ends[i])
        assert list(index.nums_of(i, j)) == nums[i:j]
        assert list(index.starts_of(i, j)) == starts[i:j]
        assert list(index.ends_of(i, j)) == ends[i:j]
        offset = data.draw(st.integers(0, ends[-1] + 2))
        assert index.reaching(offset, i, j) == bisect_left(ends, offset, i, j)
        num = data.draw(st.integers(0, nums[-1] + 2))
        assert index.position(num) == len([n for n in nums if n < num])
        tail = index.tail(i, -5)
        assert list(tail.nums) == nums[i:]
        assert list(tail.starts) == [s - 5 for s in starts[i:]]
        assert list(tail.ends) == [e - 5 for e in ends[i:]]
        assert tail.dirty == [d - i for d in dirty if d >= i]
        copy = index.copy()
        index.truncate(0)
        assert (list(copy.nums), list(copy.ends)) == (nums, ends)


# -- records alike (one length, numbered on by one) are checked a block at a time --


@contextmanager
def scan_settings(after: int, least: int, most: int) -> Iterator[None]:
    """The scan with its checks of blocks of records alike tuned (or, after=huge, off)."""
    saved = _format._UNIFORM_AFTER, _format._BLOCK_LEAST, _format._BLOCK_MOST
    _format._UNIFORM_AFTER, _format._BLOCK_LEAST, _format._BLOCK_MOST = after, least, most
    try:
        yield
    finally:
        _format._UNIFORM_AFTER, _format._BLOCK_LEAST, _format._BLOCK_MOST = saved


def scan_everything(buf: bytes) -> Tuple[List[int], List[int], List[int], List[int],
                                         List[Tuple[int, str]], Optional[int], int, int]:
    """All that a scan of a whole file finds, as plain values."""
    index, result = scan_file(buf)
    return (list(index.nums), list(index.starts), list(index.ends), list(index.dirty),
            [(p.offset, p.text) for p in result.problems], result.torn_at, result.end,
            result.last_num)


def one_by_one(buf: bytes) -> Tuple[Any, ...]:
    """The scan record by record only: what the checks of blocks must agree with."""
    with scan_settings(10 ** 9, 64, 64):
        return scan_everything(buf)


@st.composite
def mostly_alike(draw: st.DrawFn) -> bytes:
    """
    A log file of many records of one size numbered on by one, near a
    change in the numbers' digits, with a few edits anywhere: numbers
    skipped, repeated or lower, a number or size written with a leading
    zero, blank lines, another size, data that holds a header, a header
    damaged, a tail cut.
    """
    size = draw(st.integers(0, 12))
    start = draw(st.sampled_from([0, 1, 7, 90, 985, 9990, 10 ** 6 - 300]))
    count = draw(st.integers(0, 400))
    edits = draw(st.dictionaries(st.integers(0, max(count - 1, 0)), st.sampled_from(
        ["skip", "repeat", "lower", "zero-num", "zero-size", "blank", "longer", "shorter",
         "header-in-data", "data-of-newlines", "damaged"]), max_size=4))
    out = [_format.db_header(start)]
    num = start
    for i in range(count):
        num += 1
        data = bytes((97 + (i + k) % 26 for k in range(size)))
        head = b"\nKAF_MSG|%d|%d\n"
        edit = edits.get(i)
        if edit == "skip":
            num += draw(st.integers(1, 20))
        elif edit == "repeat":
            num -= 1
        elif edit == "lower":
            num -= draw(st.integers(2, 5))
        elif edit == "zero-num":
            head = b"\nKAF_MSG|0%d|%d\n"
        elif edit == "zero-size":
            head = b"\nKAF_MSG|%d|0%d\n"
        elif edit == "blank":
            head = b"\n" + head
        elif edit == "longer":
            data += b"xy"
        elif edit == "shorter":
            data = data[1:]
        elif edit == "header-in-data":
            data = (b"\nKAF_MSG|%d|%d\n" % (num + 1, size) + data)[:max(size, 14)]
        elif edit == "data-of-newlines":
            data = b"\n" * size
        elif edit == "damaged":
            # One byte of the header, changed where it moves nothing.
            head = b"\nKAF_MSG|%d|%d\n".replace(draw(st.sampled_from([b"A", b"G", b"|"])), b"#", 1)
        out.append(head % (num, size) + data)
    buf = b"".join(out)
    cut = draw(st.one_of(st.just(0), st.integers(0, 40)))
    return buf[:len(buf) - cut] if cut < len(buf) - 11 else buf


@given(mostly_alike(), st.sampled_from([(1, 2, 8), (3, 1, 1), (16, 64, 1 << 14)]))
@settings(max_examples=400, deadline=None)
def test_a_scan_by_blocks_of_records_alike_finds_what_one_by_one_finds(
        buf: bytes, tuning: Tuple[int, int, int]) -> None:
    with scan_settings(*tuning):
        assert scan_everything(buf) == one_by_one(buf)


@pytest.mark.parametrize("start", [0, 5, 9_900, 99_000, 999_000])
def test_records_alike_across_a_change_of_digits_are_all_found(start: int) -> None:
    messages = [b"%05d" % (i,) for i in range(3000)]
    buf = _format.db_header(start) + _format.records(start + 1, messages)
    index, result = scan_file(buf)
    assert list(index.nums) == list(range(start + 1, start + 3001))
    assert served(buf, index) == list(zip(range(start + 1, start + 3001), messages))
    assert (result.problems, result.torn_at, result.end) == ([], None, len(buf))
    assert scan_everything(buf) == one_by_one(buf)


def test_a_gap_in_numbering_among_records_alike_is_served_and_get_starts_after_it() -> None:
    nums = list(range(1, 2001)) + list(range(2501, 5001))
    buf = _format.db_header(0) + _format.records_of(nums, [b"m" * 20] * len(nums))
    index, result = scan_file(buf)
    assert list(index.nums) == nums
    assert result.problems == []
    # from=2200 lies in the gap: the next message there is is 2501.
    assert index.nums[index.position(2200)] == 2501
    assert index.position(2000) == 1999
    assert scan_everything(buf) == one_by_one(buf)


def test_a_renumbered_record_among_records_alike_is_skipped_as_one_by_one() -> None:
    messages = [b"m" * 20] * 3000
    buf = _format.db_header(0) + _format.records(1, messages)
    # A person changed message 2000's number to 1500 (same width): skipped.
    edited = buf.replace(b"\nKAF_MSG|2000|20\n", b"\nKAF_MSG|1500|20\n")
    index, result = scan_file(edited)
    assert 2000 not in list(index.nums) and len(index) == 2999
    assert [p.text for p in result.problems] == ["message 1500 does not follow 1999: skipped"]
    assert scan_everything(edited) == one_by_one(edited)


def test_a_header_in_the_data_of_records_alike_is_data() -> None:
    # Every message holds the header its successor would have: only the
    # sizes tell records from data.
    messages = [b"\nKAF_MSG|%d|30\n" % (n + 1,) + b"d" * (30 - len(b"\nKAF_MSG|%d|30\n" % (n + 1,)))
                for n in range(1, 3001)]
    buf = _format.db_header(0) + _format.records(1, messages)
    index, _ = scan_file(buf)
    assert served(buf, index) == list(zip(range(1, 3001), messages))


def uniform_at(buf: bytes, num: int, first: int, most: int) -> Tuple[int, int]:
    at = buf.index(b"\nKAF_MSG|%d|" % (num,))
    m = _format._CANONICAL.match(buf, at)
    assert m is not None
    return _format._uniform(buf, at, len(buf), m, first, most)


def test_a_block_of_records_alike_is_as_long_as_asked_and_followed_by_a_header() -> None:
    buf = _format.db_header(0) + _format.records(1, [b"m" * 20] * 500)
    length = len(_format.record(100, b"m" * 20))
    assert uniform_at(buf, 100, 100, 64) == (64, length)
    # Up to the last record followed by a whole header: 100 … 499, as 500
    # is followed by nothing; 100 … 498 when 500's header is cut short.
    assert uniform_at(buf, 100, 100, 1000) == (400, length)
    assert uniform_at(buf[:-21], 100, 100, 1000) == (399, length)
    # The header after the block is checked too.
    edited = buf.replace(b"\nKAF_MSG|164|", b"\nKAF_MSG|165|")
    assert uniform_at(edited, 100, 100, 64) == (0, 0)
    assert uniform_at(edited, 100, 100, 63) == (63, length)


def test_a_block_of_records_alike_stops_before_the_numbers_gain_a_digit() -> None:
    buf = _format.db_header(0) + _format.records(1, [b"m" * 20] * 500)
    # Headers 10 … 99 are alike; 100's has a digit more.
    assert uniform_at(buf, 10, 10, 1000)[0] == 89


@pytest.mark.parametrize("first", [99, 101])
def test_a_block_of_records_alike_is_numbered_from_the_number_asked(first: int) -> None:
    buf = _format.db_header(0) + _format.records(1, [b"m" * 20] * 500)
    assert uniform_at(buf, 100, first, 64) == (0, 0)


@given(st.integers(0, 10 ** 12), st.integers(1, 3000), st.integers(0, 5))
def test_the_digits_of_a_place_over_consecutive_numbers(first: int, n: int, place: int) -> None:
    expected = b"".join(b"%d" % ((k // 10 ** place) % 10,) for k in range(first, first + n))
    assert _format._digit_column(first, n, place) == expected


@given(st.integers(0, 10 ** 6), st.integers(1, 10 ** 5), st.integers(0, 300),
       st.integers(1, 10 ** 9), st.lists(st.integers(1, 300), max_size=70),
       st.integers(0, 3))
def test_extend_uniform_indexes_as_extend_does(start: int, length: int, count: int, num: int,
                                               before: List[int], gap: int) -> None:
    a, b = Index(), Index()
    for index in (a, b):
        index.extend(11, before, [0], [1])
    at = (a.end(len(a) - 1) if len(a) else 0) + gap + start * (not before)
    a.extend(at, [length] * count, [0], [num])
    b.extend_uniform(at, length, count, num)
    assert (list(b.nums), list(b.starts), list(b.ends), b.dirty) == (
        list(a.nums), list(a.starts), list(a.ends), a.dirty)
    if len(a):
        assert [b.end(i) for i in range(len(b))] == [a.end(i) for i in range(len(a))]


# -- the strict parser of kaf bodies (batch=kaf) ---------------------------------


@given(st.lists(message, max_size=20), st.integers(1, 10 ** 9))
@settings(max_examples=300)
def test_kaf_reply_body_parses_back_to_its_messages(messages: List[bytes], first: int) -> None:
    body = _format.reply_header(len(messages)) + _format.records(first, messages)
    assert _format.parse_kaf_body(body) == messages


def test_numbers_in_a_kaf_body_are_ignored() -> None:
    body = _format.reply_header(2) + _format.records_of([7, 3], [b"a", b"b"])
    assert _format.parse_kaf_body(body) == [b"a", b"b"]


def test_empty_kaf_reply_parses_to_no_messages() -> None:
    assert _format.parse_kaf_body(b"KAF_MSGS|v1|0") == []


@pytest.mark.parametrize("body", [
    pytest.param(b"KAF_MSGS|v1|2\nKAF_MSG|1|1\na", id="count-too-high"),
    pytest.param(b"KAF_MSGS|v1|0\nKAF_MSG|1|1\na", id="count-too-low"),
    pytest.param(b"KAF_MSGS|v1|1\nKAF_MSG|1|5\nabc", id="data-cut-short"),
    pytest.param(b"KAF_MSGS|v1|1\nKAF_MSG|1|", id="header-cut-short"),
    pytest.param(b"KAF_MSGS|v1|2\nKAF_MSG|1|5\nab\nKAF_MSG|2|1\nc", id="size-too-long"),
    pytest.param(b"KAF_MSGS|v1|2\nKAF_MSG|1|1\nabc\nKAF_MSG|2|1\nc", id="size-too-short"),
    pytest.param(b"KAF_MSGS|v1|2\nKAF_MSG|1|1\na\n\nKAF_MSG|2|1\nb", id="blank-line"),
    pytest.param(b"KAF_MSGS|v1|1\nKAF_MSG|1|1\na\n", id="trailing-newline"),
    pytest.param(b"KAF_MSGS|v1|1\nKAF_MSG|1|1\nagarbage", id="trailing-garbage"),
    pytest.param(b"KAF_MSGS|v1|1garbage\nKAF_MSG|1|1\na", id="garbage-after-count"),
    pytest.param(b"KAF_MSGS|v1|\nKAF_MSG|1|1\na", id="no-count"),
    pytest.param(b"KAF_MSGS|v2|1\nKAF_MSG|1|1\na", id="wrong-version"),
    pytest.param(b"KAF_DB|v1|0\nKAF_MSG|1|1\na", id="log-file-header"),
    pytest.param(b"a\nb\n", id="lines"),
    pytest.param(b"", id="empty"),
])
def test_malformed_kaf_body_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedBatch):
        _format.parse_kaf_body(body)


@given(st.lists(message, min_size=1, max_size=8), st.data())
@settings(max_examples=200)
def test_kaf_body_cut_anywhere_is_rejected(messages: List[bytes], data: st.DataObject) -> None:
    body = _format.reply_header(len(messages)) + _format.records(1, messages)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MalformedBatch):
        _format.parse_kaf_body(body[:cut])


@given(st.lists(message, min_size=1, max_size=8),
       st.one_of(st.binary(min_size=1, max_size=20), st.sampled_from(TRICKY),
                 st.builds(_format.record, st.integers(1, 99), st.binary(max_size=5))))
@settings(max_examples=200)
def test_kaf_body_with_bytes_after_its_last_message_is_rejected(
        messages: List[bytes], extra: bytes) -> None:
    body = _format.reply_header(len(messages)) + _format.records(1, messages)
    with pytest.raises(MalformedBatch):
        _format.parse_kaf_body(body + extra)


# -- records made in C (kaf._records, where it is built) ------------------------------

@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(0, 2 ** 62))
@settings(max_examples=300)
def test_records_made_in_c_are_the_records_made_in_python(messages: List[bytes],
                                                          first: int) -> None:
    nums = range(first, first + len(messages))
    expected = (b"".join(b"\nKAF_MSG|%d|%d\n%s" % (n, len(m), m) for n, m in zip(nums, messages)),
                [len(b"\nKAF_MSG|%d|%d\n" % (n, len(m))) + len(m) for n, m in zip(nums, messages)])
    assert _format.records_and_lengths(nums, messages) == expected
    saved = _format._records_in_c
    _format._records_in_c = None
    try:
        assert _format.records_and_lengths(nums, messages) == expected
    finally:
        _format._records_in_c = saved


@pytest.mark.skipif(_format._records_in_c is None, reason="kaf._records is not built")
def test_records_of_what_is_not_bytes_are_refused_in_c_and_made_in_python() -> None:
    with pytest.raises(TypeError):
        _format._records_in_c(1, [b"a", "text"])
    with pytest.raises(ValueError):
        _format._records_in_c(-1, [b"a"])
    assert _format.records_and_lengths(range(1, 3), [b"a", bytearray(b"bc")]) == (
        b"\nKAF_MSG|1|1\na\nKAF_MSG|2|2\nbc", [14, 15])
