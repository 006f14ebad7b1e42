"""
Tests of the pure record layer, L{kaf._format}: the byte-exact framing of
SPEC sections 3.2 and 4, the scan of clean files, the strict parser of
C{batch=kaf} bodies, and the compact Index.
"""
from __future__ import annotations

from typing import List, Tuple

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


def test_index_costs_at_most_24_bytes_a_message() -> None:
    n = 100_000
    buf = _format.db_header(0) + _format.records(1, [b"m%d" % (i,) for i in range(n)])
    index, _ = scan_file(buf)
    assert len(index) == n
    per_message = sum(a.itemsize * len(a) for a in (index.nums, index.starts, index.ends)) / n
    assert per_message <= 24
    # A clean log keeps no per-message list at all.
    assert index.dirty == []


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
