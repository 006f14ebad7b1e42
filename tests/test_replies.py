"""
Tests of the raw and json reply bodies (SPEC 3.2), L{kaf._replies}: the
data of a run of records found by splitting it at once, and when that is
not safe (data that hold framing, hand-edited files) by the slower ways;
the json checks; and the kinds of messages (JSON or text) a log keeps so
that a message is checked once, dropped whenever its positions could mean
other messages (a re-read after an edit, an archive, a closed file).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import sysconfig
from contextlib import contextmanager
from itertools import accumulate
from typing import Any, Iterator, List, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock

from kaf import _format, _replies
from kaf._replies import KIND_BLOCK, KIND_BLOCKS, JsonKinds
from kaf.api.web import KafWeb
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.store import Store

from conftest import fired, put_messages as put, sync_runner

NOW = 1795932899.0

#: Bytes a message may hold that look like Kaf's own framing.
TRICKY = [b"\nKAF_MSG|1|2\n", b"\nKAF_MSG|99|0\n", b"\nKAF_MSG|", b"KAF_MSG|3|1\n",
          b"KAF_MSG|", b"KAF_MSGS|v1|2", b"\n", b"\n\n", b"\r\n", b"|", b"\x00", b"\xff"]

message = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.binary(max_size=4)),
             max_size=6).map(b"".join),
)

#: Nested deeper than any parser's stack, on either Python: text.  (PyPy
#: parses 5,000 levels or not, as deep as its stack already is.)
DEEP = b"[" * 100_000 + b"]" * 100_000

#: Messages a json reply must tell apart: JSON as it is, or text.
JSONISH = st.one_of(
    st.sampled_from([b"{}", b"[]", b'{"a": 1}', b" 1", b"1 ", b"\t[1,2]\n", b"true", b"nul",
                     b"NaN", b"-Infinity", b"[NaN]", b"1 2", b'"x"', b'"x', b"0", b"-",
                     b"01", b"\xff", b"caf\xc3\xa9", b'"caf\xc3\xa9"', b"\xe2\x82",
                     DEEP, b"{" * 3000, b"a,\nb", b"\n", b" ", b""]),
    st.binary(min_size=1, max_size=12),
    st.text(min_size=1, max_size=12).map(lambda t: t.encode("utf-8")),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda kids: st.lists(kids, max_size=3)
                 | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                 max_leaves=6).map(lambda v: json.dumps(v).encode("utf-8")),
)


def span_of(messages: Sequence[bytes], first: int = 1) -> bytes:
    return _format.records(first, list(messages)) if messages else b""


def ends_of(messages: Sequence[bytes], first: int = 1) -> List[int]:
    nums = range(first, first + len(messages))
    return list(accumulate(_format.records_and_lengths(nums, messages)[1]))


def texts_of(messages: Sequence[bytes]) -> List[int]:
    """Where the messages that a json reply sends as text are."""
    return [i for i, m in enumerate(messages) if _replies.json_item(m) is not m]


# -- the data of records ------------------------------------------------------------

@pytest.mark.parametrize("messages", [
    [b"one"], [b"a", b"bb", b""], [b'{"n": 1}', b"x" * 1000, b"|", b"\r"], [b""],
])
def test_records_whose_data_hold_no_newline_are_split_at_their_headers(
        messages: List[bytes]) -> None:
    assert _replies.split_records(span_of(messages, 9_999_998), len(messages)) == messages


@pytest.mark.parametrize("messages", [
    [b"two\nlines"], [b"\n", b"", b"a\r\nb", b"\n\n"], [b'{\n  "a": 1\n}', b"x"],
])
def test_records_whose_data_hold_newlines_are_split_by_the_pattern_of_a_header(
        messages: List[bytes]) -> None:
    assert _replies.split_records(span_of(messages, 98), len(messages)) == messages


def test_records_whose_data_hold_kaf_msg_and_no_newline_are_split_at_their_newlines() -> None:
    messages = [b"KAF_MSG|1|2", b"xKAF_MSG|", b"KAF_MSG|3|1"]
    assert _replies.split_records(span_of(messages), 3) == messages


@pytest.mark.parametrize("messages", [
    [b"a\n", b"xKAF_MSG|y"],
    [b"\nKAF_MSG|1|2\nzz"],
    # With the newline that begins the next header, this one's end reads as
    # a header: splitting there would take the next one's for data.
    [b"data\nKAF_MSG|7|1", b"b"],
    [b"\nKAF_MSG|"],
])
def test_records_whose_data_hold_newlines_and_kaf_msg_are_not_split(
        messages: List[bytes]) -> None:
    span = span_of(messages)
    assert _replies.split_records(span, len(messages)) is None
    assert _replies.messages_of_records(span, len(messages), lambda: ends_of(messages)) \
        == messages


@given(st.lists(message, max_size=20), st.integers(1, 10 ** 12))
@settings(max_examples=300)
def test_split_records_finds_the_data_or_nothing(messages: List[bytes], first: int) -> None:
    span = span_of(messages, first)
    assert _replies.split_records(span, len(messages)) in (None, messages)
    assert _replies.messages_of_records(span, len(messages),
                                        lambda: ends_of(messages, first)) == messages


@given(st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=20),
       st.integers(1, 10 ** 9))
def test_the_data_of_canonical_records_is_found_for_all_of_them(messages: List[bytes],
                                                                first: int) -> None:
    assert _replies.data_of_records(span_of(messages, first), ends_of(messages, first)) \
        == messages


@pytest.mark.parametrize("split_first", [True, False])
def test_the_data_are_split_first_or_found_from_their_ends_as_the_python_does_best(
        monkeypatch: Any, split_first: bool) -> None:
    messages = [b"m%d" % (n,) for n in range(100)]
    span = span_of(messages)

    def unused(*args: Any) -> Any:
        raise AssertionError("not the way of this Python")

    monkeypatch.setattr(_replies, "_SPLIT_FIRST", split_first)
    monkeypatch.setattr(_replies, "data_of_records" if split_first else "split_records",
                        unused)
    assert _replies.messages_of_records(span, 100, lambda: ends_of(messages)) == messages


# -- the data of records joined in C --------------------------------------------------

def test_the_c_join_is_built_on_cpython_where_a_compiler_is() -> None:
    if platform.python_implementation() != "CPython":
        pytest.skip("PyPy runs the Python join (setup.py builds no C there)")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip("no C compiler (%s) at install: the Python join is used" % (compiler,))
    assert _replies.JOIN_IN_C


needs_c = pytest.mark.skipif(not _replies.JOIN_IN_C, reason="kaf._records is not built")


@contextmanager
def joined_in(c: bool) -> Iterator[None]:
    """Replies built with the C join (where it is built), or in Python as without it."""
    saved = _replies._join_data
    if not c:
        _replies._join_data = None
    try:
        yield
    finally:
        _replies._join_data = saved


@needs_c
@given(st.lists(message, max_size=20), st.integers(1, 10 ** 15),
       st.sampled_from([(b"\n", b"", b"\n"), (b",\n", b"[", b"]"), (b"", b"", b"")]))
@settings(max_examples=300)
def test_the_data_of_records_joined_in_c_are_the_messages_joined(
        messages: List[bytes], first: int, framing: Any) -> None:
    sep, head, tail = framing
    span = span_of(messages, first)
    assert (_replies.join_records(span, len(messages), sep, head, tail)
            == head + sep.join(messages) + tail)


@needs_c
@pytest.mark.parametrize("span, count", [
    (b"\nKAF_MSG|1|3\nab", 1),              # data shorter than its size
    (b"\nKAF_MSG|1|1\nabc", 1),             # bytes after the last record
    (b"\nKAF_MSG|1|1\na", 2),               # fewer records than counted
    (b"\nKAF_MSG|1|1\na\nKAF_MSG|2|1\nb", 1),  # more
    (b"KAF_MSG|1|1\na", 1),                 # no newline before the header
    (b"\nKAF_MSG|1|x\na", 1),               # a size that is not a number
    (b"\nKAF_MSG||1\na", 1),                # no number
    (b"\nKAF_MSG|1|1|a", 1),                 # no newline after the header
    (b"\nKAF_MSG|1|99999999999999999999\na", 1),  # a size too long to hold
    (b"\nKAF_MSG|1|-1\na", 1),
    (b"\nKAF_MSG|1|1\na", -1),
])
def test_what_is_not_exactly_canonical_records_is_not_joined_in_c(span: bytes,
                                                                 count: int) -> None:
    assert _replies.join_records(span, count, b"\n", b"", b"\n") is None


@given(st.lists(message, max_size=20), st.integers(1, 1000))
def test_a_raw_body_of_records_is_the_raw_body_of_their_messages(messages: List[bytes],
                                                                  first: int) -> None:
    span = span_of(messages, first)

    def found() -> List[bytes]:
        return _replies.messages_of_records(span, len(messages), lambda: ends_of(messages, first))

    for c in (True, False):
        with joined_in(c):
            assert (_replies.raw_of_records(span, len(messages), found)
                    == _replies.raw_body(messages))


@given(st.lists(JSONISH, max_size=20), st.integers(0, 3 * KIND_BLOCK))
@settings(max_examples=200)
def test_a_json_body_of_records_is_the_json_body_of_their_messages(messages: List[bytes],
                                                                    at: int) -> None:
    span = span_of(messages)
    expected = _replies.json_body(messages)
    for c in (True, False):
        with joined_in(c):
            kinds = JsonKinds()
            for _ in range(2):  # kinds unknown, then known
                assert _replies.json_of_records(span, len(messages), lambda: messages,
                                                kinds, at) == expected
            assert _replies.json_of_records(span, len(messages), lambda: messages) == expected


@needs_c
def test_records_known_to_be_json_make_no_message_objects() -> None:
    messages = [b'{"n": %d}' % (n,) for n in range(1000)]
    span = span_of(messages)
    kinds = JsonKinds()
    kinds.learn(0, len(messages), [])

    def unused() -> List[bytes]:
        raise AssertionError("the messages were found one by one")

    body = _replies.json_of_records(span, len(messages), unused, kinds, 0)
    assert body == b"[" + b",\n".join(messages) + b"]"
    assert _replies.raw_of_records(span, len(messages), unused) == b"".join(
        m + b"\n" for m in messages)


# -- raw -----------------------------------------------------------------------------

@given(st.lists(st.binary(min_size=1, max_size=30), max_size=20))
def test_a_raw_body_is_each_message_and_a_newline(messages: List[bytes]) -> None:
    assert _replies.raw_body(messages) == b"".join(m + b"\n" for m in messages)


# -- json ----------------------------------------------------------------------------

@given(st.lists(JSONISH, max_size=20))
def test_a_json_body_is_each_message_as_json_item_makes_it(messages: List[bytes]) -> None:
    body = _replies.json_body(messages)
    assert body == b"[" + b",\n".join(map(_replies.json_item, messages)) + b"]"
    # And it is one JSON array of as many items.
    assert len(json.loads(body)) == len(messages)


@pytest.mark.parametrize("message, item", [
    (b'{"a": 1}', b'{"a": 1}'),
    (b"NaN", b'"NaN"'),
    (b"1 2", b'"1 2"'),
    (b"\xff", b'"\\ufffd"'),
    (DEEP, None),
])
def test_a_json_item_is_the_message_when_it_is_json_else_its_text(message: bytes,
                                                                  item: Optional[bytes]) -> None:
    got = _replies.json_item(message)
    if item is None:
        # Too deep to check: sent as a string, so the reply stays JSON.
        assert json.loads(got) == message.decode()
    else:
        assert got == item


@pytest.mark.parametrize("spare", [100, 200, 400])
def test_a_json_body_is_the_same_however_deep_the_stack_already_is(spare: int) -> None:
    # Near the limit the parser fails sooner (on PyPy with a TypeError, not
    # a RecursionError): the message is then text, and the reply valid JSON.
    messages = [b"[1]", b"[" * 3000 + b"]" * 3000, DEEP]
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back

    def at(n: int) -> bytes:
        return at(n - 1) if n > 0 else _replies.json_body(messages)

    body = at(sys.getrecursionlimit() - depth - spare)
    assert body.startswith(b"[[1],\n")
    assert body.endswith(b"]" * 1000 + b'"]')  # DEEP, as a string


@given(st.lists(JSONISH, max_size=20), st.integers(0, 3 * KIND_BLOCK))
@settings(max_examples=300)
def test_a_json_body_from_known_kinds_is_the_body_of_checked_messages(
        messages: List[bytes], at: int) -> None:
    kinds = JsonKinds()
    expected = _replies.json_body(messages)
    assert _replies.json_body(messages, kinds, at) == expected
    assert kinds.texts(at, at + len(messages)) == texts_of(messages)
    assert _replies.json_body(messages, kinds, at) == expected


def test_messages_whose_kinds_are_known_are_not_checked_again(monkeypatch: Any) -> None:
    messages = [b'{"n": %d}' % (n,) for n in range(1000)]
    kinds = JsonKinds()
    first = _replies.json_body(messages, kinds, 5000)
    part = _replies.json_body(messages[10:20])

    def checked(*args: Any) -> Any:
        raise AssertionError("checked again")

    monkeypatch.setattr(_replies, "_json_checked", checked)
    assert _replies.json_body(messages, kinds, 5000) == first
    assert _replies.json_body(messages[10:20], kinds, 5010) == part
    # A range partly unknown is checked (here: refused).
    with pytest.raises(AssertionError, match="checked again"):
        _replies.json_body(messages, kinds, 5001)


def test_a_kind_once_known_is_what_the_reply_uses() -> None:
    # The kinds are trusted: they must be dropped whenever a position may
    # hold another message (see the tests of logs below).
    kinds = JsonKinds()
    kinds.learn(7, 2, [0])
    assert _replies.json_body([b'{"a": 1}', b"plain"], kinds, 7) == b'["{\\"a\\": 1}",\nplain]'


def test_an_invalid_json_message_among_valid_ones_is_known_as_text() -> None:
    messages = [b'{"a": 1}', b"[1,\n2]", b'{"broken": ', b"3", b"NaN", b"caf\xe9", b'"s"']
    kinds = JsonKinds()
    body = _replies.json_body(messages, kinds, 0)
    assert json.loads(body) == [{"a": 1}, [1, 2], '{"broken": ', 3, "NaN", "caf\ufffd", "s"]
    assert kinds.texts(0, 7) == [2, 4, 5]
    assert _replies.json_body(messages, kinds, 0) == body
    # Any part of them, from what is known.
    for i in range(7):
        for j in range(i, 8):
            assert _replies.json_body(messages[i:j], kinds, i) == \
                _replies.json_body(messages[i:j])


@pytest.mark.parametrize("messages", [
    [b"hello", b"world"],           # all text, found at once
    [b"caf\xe9", b"x"],             # invalid UTF-8: message by message
    [b"", b"1", b"text"],           # an empty message: message by message
    [b"1", b"2", b"x"],
])
def test_texts_known_are_encoded_as_a_check_would(messages: List[bytes]) -> None:
    kinds = JsonKinds()
    body = _replies.json_body(messages, kinds, 3)
    assert kinds.texts(3, 3 + len(messages)) == texts_of(messages)
    assert _replies.json_body(messages, kinds, 3) == body
    assert body == b"[" + b",\n".join(map(_replies.json_item, messages)) + b"]"


def test_kinds_unknown_or_partly_known_are_not_known() -> None:
    kinds = JsonKinds()
    assert kinds.texts(0, 10) is None
    kinds.learn(0, 10, [3])
    assert kinds.texts(0, 10) == [3]
    assert kinds.texts(2, 5) == [1]
    assert kinds.texts(0, 11) is None
    assert kinds.texts(5, 5) == []


def test_kinds_across_blocks_are_found_in_each() -> None:
    kinds = JsonKinds()
    at = KIND_BLOCK - 3
    kinds.learn(at, KIND_BLOCK + 10, [1, 5, KIND_BLOCK + 9])
    assert kinds.texts(at, at + KIND_BLOCK + 10) == [1, 5, KIND_BLOCK + 9]
    assert kinds.texts(KIND_BLOCK, KIND_BLOCK + 4) == [2]
    assert kinds.nbytes == 3 * KIND_BLOCK


def test_kinds_keep_at_most_their_blocks_and_forget_the_least_recently_used() -> None:
    kinds = JsonKinds()
    for b in range(KIND_BLOCKS):
        kinds.learn(b * KIND_BLOCK, 1, [])
    # Block 0 used again: block 1 is now the least recently used.
    assert kinds.texts(0, 1) == []
    kinds.learn(KIND_BLOCKS * KIND_BLOCK, 1, [0])
    assert kinds.nbytes == KIND_BLOCKS * KIND_BLOCK
    assert kinds.texts(KIND_BLOCK, KIND_BLOCK + 1) is None
    assert kinds.texts(0, 1) == []
    assert kinds.texts(KIND_BLOCKS * KIND_BLOCK, KIND_BLOCKS * KIND_BLOCK + 1) == [0]


# -- a log file's replies ------------------------------------------------------------

def log_with(folder: str, messages: List[bytes]) -> LogFile:
    f = LogFile.create(folder, "log")
    put(f, messages)
    return f


def replies_of(f: LogFile, expected: List[bytes]) -> None:
    """Every raw and json reply of every range of the file is SPEC 3.2's."""
    n = len(expected)
    assert len(f.index) == n
    for i in range(n):
        for j in range(i + 1, n + 1):
            s = f.read(i, j - i)
            assert s.messages() == expected[i:j]
            assert s.raw_body() == b"".join(m + b"\n" for m in expected[i:j])
            assert s.json_body() == b"[" + b",\n".join(
                map(_replies.json_item, expected[i:j])) + b"]"


def test_replies_of_messages_that_hold_framing_are_exact(tmp_path: Any) -> None:
    messages = [b"x", b"\nKAF_MSG|9|1\ny", b"zKAF_MSG|", b"two\nlines", b'{"a": 1}', b""]
    f = log_with(str(tmp_path), messages)
    replies_of(f, messages)
    f.close()


def test_replies_of_a_hand_edited_file_are_exact(tmp_path: Any) -> None:
    # Blank lines before a header, a size that disagrees with its data
    # (rule 4), a number written with a leading zero, a newline an editor
    # added at the end: none of it is in a reply.
    path = tmp_path / "log"
    path.write_bytes(b"KAF_DB|v1|0\nKAF_MSG|1|4\naaaa\n\n\nKAF_MSG|2|4\nbbbb"
                     b"\nKAF_MSG|3|2\n[3, 3]\nKAF_MSG|04|1\nd\nKAF_MSG|5|1\ne\n")
    f = LogFile(str(tmp_path), "log")
    f.open(NOW)
    replies_of(f, [b"aaaa", b"bbbb", b"[3, 3]", b"d", b"e"])
    f.close()


def test_a_log_file_keeps_the_kinds_of_its_messages_while_open(tmp_path: Any) -> None:
    f = log_with(str(tmp_path), [b'{"a": 1}', b"text", b"2"])
    assert f.read(0, 3).json_body() == b'[{"a": 1},\n"text",\n2]'
    assert f.json_kinds.texts(0, 3) == [1]
    assert f.read(1, 2).kinds is f.json_kinds
    f.close()
    # Closed (as when evicted to make room): forgotten.
    assert f.json_kinds.texts(0, 3) is None


def test_an_archived_log_checks_its_messages_again(tmp_path: Any) -> None:
    f = log_with(str(tmp_path), [b"text one", b"text two", b'{"j": 3}', b'{"j": 4}'])
    assert f.read(0, 4).json_body() == b'["text one",\n"text two",\n{"j": 3},\n{"j": 4}]'
    _, _, kept, after = f.archive(2, NOW)
    f.close()
    assert kept == 2
    # Positions 0 and 1 now hold messages 3 and 4: not text.
    assert after.read(0, 2).json_body() == b'[{"j": 3},\n{"j": 4}]'
    after.close()


def test_a_log_re_read_after_an_edit_checks_its_messages_again(tmp_path: Any) -> None:
    f = log_with(str(tmp_path), [b'{"a": 1}', b'{"b": 2}'])
    assert f.read(0, 2).json_body() == b'[{"a": 1},\n{"b": 2}]'
    edit_in_place(f.path, b'{"b": 2}', b'{"b": x}')
    assert f.changed_on_disk()
    new, _ = f.reloaded(NOW)
    f.close()
    assert new.read(0, 2).json_body() == b'[{"a": 1},\n"{\\"b\\": x}"]'
    new.close()


def edit_in_place(path: str, old: bytes, new: bytes) -> None:
    """What an editor does: the same bytes but these, saved later."""
    with open(path, "r+b") as f:
        content = f.read()
        assert content.count(old) == 1
        f.seek(0)
        f.write(content.replace(old, new))
        f.truncate()
    st_ = os.stat(path)
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10 ** 9))


# -- through HTTP --------------------------------------------------------------------

class Kaf:
    """The web app over a store in C{folder}, in memory."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.store = Store(folder, Clock(), sync_runner, fsync=True)
        self.store.load()
        self.treq = StubTreq(KafWeb(self.store).resource())

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> bytes:
        d = self.treq.request(method, "http://kaf.test" + path, data=body)
        self.treq.flush()
        response = fired(d)
        content = self.treq.content(response)
        self.treq.flush()
        assert response.code == 200
        return fired(content)


@pytest.fixture
def kaf(tmp_path: Any) -> Iterator[Kaf]:
    made = Kaf(str(tmp_path / "data"))
    yield made
    made.store.close()


def test_gets_of_messages_that_hold_framing_are_exact(kaf: Kaf) -> None:
    messages = [b"a", b"\nKAF_MSG|1|2\nzz", b"data\nKAF_MSG|7|1", b'{"n": 4}']
    kaf.request("POST", "/put/x?batch=kaf", b"KAF_MSGS|v1|4" + _format.records(1, messages))
    assert kaf.request("GET", "/get/x?from=1&format=raw") == b"".join(m + b"\n" for m in messages)
    assert kaf.request("GET", "/get/x?from=2&format=raw") == b"".join(
        m + b"\n" for m in messages[1:])
    for _ in range(2):
        assert json.loads(kaf.request("GET", "/get/x?from=1&format=json")) == [
            "a", "\nKAF_MSG|1|2\nzz", "data\nKAF_MSG|7|1", {"n": 4}]


def test_a_json_get_after_the_file_is_edited_checks_the_messages_again(kaf: Kaf) -> None:
    for m in (b'{"a": 1}', b'{"b": 2}'):
        kaf.request("POST", "/put/x", m)
    assert kaf.request("GET", "/get/x?from=1&format=json") == b'[{"a": 1},\n{"b": 2}]'
    edit_in_place(os.path.join(kaf.folder, "x"), b'{"b": 2}', b'{"b": x}')
    assert kaf.request("GET", "/get/x?from=1&format=json") == b'[{"a": 1},\n"{\\"b\\": x}"]'


def test_a_json_get_after_an_archive_checks_the_messages_again(kaf: Kaf) -> None:
    for m in (b"text one", b"text two", b'{"j": 3}', b'{"j": 4}'):
        kaf.request("POST", "/put/x", m)
    assert json.loads(kaf.request("GET", "/get/x?from=1&format=json")) == [
        "text one", "text two", {"j": 3}, {"j": 4}]
    kaf.request("POST", "/archive/x?upto=2")
    assert kaf.request("GET", "/get/x?from=1&format=json") == b'[{"j": 3},\n{"j": 4}]'


def test_all_logs_together_keep_at_most_all_kind_blocks(monkeypatch: Any) -> None:
    import gc

    from kaf import _replies

    gc.collect()
    monkeypatch.setattr(_replies, "ALL_KIND_BLOCKS", JsonKinds.in_use + 2)
    one, two = JsonKinds(), JsonKinds()
    one.learn(0, 1, [])
    one.learn(KIND_BLOCK, 1, [])
    # No room left: a log with no block keeps none, and its kinds stay unknown.
    two.learn(0, 1, [0])
    assert two.nbytes == 0 and two.texts(0, 1) is None
    # A log with blocks trades its least recently used one for the new.
    one.learn(2 * KIND_BLOCK, 1, [0])
    assert one.nbytes == 2 * KIND_BLOCK
    assert one.texts(0, 1) is None and one.texts(2 * KIND_BLOCK, 2 * KIND_BLOCK + 1) == [0]
    # A log forgotten gives its blocks back.
    del one
    gc.collect()
    two.learn(0, 1, [0])
    assert two.texts(0, 1) == [0]
