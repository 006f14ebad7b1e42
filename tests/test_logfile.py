"""
Tests of L{kaf.engines.file.logfile.LogFile} against real files: the disk format of
SPEC 4 (byte-identical to the Go version's), reads and reply planning
(3.2), archives (3.3) and failed writes (7).  Hand-edited and damaged
files (SPEC 6) are in test_recovery.py.
"""
from __future__ import annotations

import calendar
import os
import sys
from typing import Any, Dict, List, Tuple

import pytest

from kaf import _format
from kaf.errors import WriteFailed
from kaf.engines.file.logfile import LogFile, Slice

from conftest import put_messages as put
from conftest import FIXTURES, copy_fixture

GOKAF = os.path.join(FIXTURES, "gokaf-data")
MiB = 1 << 20
#: 2026-11-29 06:14:59 UTC, the moment of the Go fixture's archive.
NOW = calendar.timegm((2026, 11, 29, 6, 14, 59, 0, 0, 0))
STAMP = "2026-11-29T06_14_59Z"

KAF_STATS = (b'{"start":"2026-11-29T06:26:08Z","end":"2026-11-29T06:31:08Z","statno":1,'
             b'"logs":[{"name":"s1","last":2,"gets":1,"puts":2},'
             b'{"name":"s2","last":1,"gets":0,"puts":1}]}')

#: What the Go version's files hold: (file header start, messages by number).
GO_FILES: Dict[str, Tuple[int, Dict[int, bytes]]] = {
    "small7": (0, {n: b"s%d" % (n,) for n in range(1, 8)}),
    "test": (0, {1: b"Test1", 2: b"line1\nline2|with pipe\n", 3: b"\x00\x01\xff"}),
    "js": (0, {1: b'{"a":1}', 2: b'{"b":2}'}),
    "sizes": (0, {n: (b"%d" % (n,)) * 1000 for n in range(1, 7)}),
    "_kaf": (0, {1: KAF_STATS}),
    "arch": (2, {n: b"msg-%d" % (n,) for n in range(5, 12)}),
    "--arch--2026-11-29T06_14_59Z_00": (0, {n: b"msg-%d" % (n,) for n in range(1, 11)}),
}


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_all(f: LogFile) -> Slice:
    return f.read(0, len(f.index))


def served(f: LogFile) -> Dict[int, bytes]:
    if not len(f.index):
        return {}
    s = read_all(f)
    return dict(zip(s.nums, s.messages()))


def new_log(folder: Any, messages: List[bytes], name: str = "log") -> LogFile:
    f = LogFile.create(str(folder), name)
    for m in messages:
        put(f, [m])
    return f


# -- creating and appending: byte-identical to the Go version -----------------


def test_create_writes_exactly_the_new_log_header(tmp_path: Any) -> None:
    f = LogFile.create(str(tmp_path), "log")
    assert file_bytes(f.path) == b"KAF_DB|v1|0"
    assert os.listdir(str(tmp_path)) == ["log"]
    assert (f.last_num, len(f.index), f.error) == (0, 0, None)
    f.close()


def test_create_with_a_start_continues_numbering_from_it(tmp_path: Any) -> None:
    f = LogFile.create(str(tmp_path), "log", start=41)
    assert file_bytes(f.path) == b"KAF_DB|v1|41"
    assert put(f, [b"x"]) == 42
    assert file_bytes(f.path) == b"KAF_DB|v1|41\nKAF_MSG|42|1\nx"
    f.close()


@pytest.mark.parametrize("name", ["small7", "test", "js", "sizes", "_kaf"])
def test_appended_records_are_byte_identical_to_the_go_version(tmp_path: Any,
                                                              name: str) -> None:
    _, messages = GO_FILES[name]
    f = new_log(tmp_path, [messages[n] for n in sorted(messages)], name)
    assert file_bytes(f.path) == file_bytes(os.path.join(GOKAF, name))
    f.close()


def test_a_batch_of_records_is_byte_identical_to_single_puts(tmp_path: Any) -> None:
    _, messages = GO_FILES["small7"]
    f = LogFile.create(str(tmp_path), "small7")
    assert put(f, [messages[n] for n in range(1, 8)]) == 7
    assert file_bytes(f.path) == file_bytes(os.path.join(GOKAF, "small7"))
    f.close()


def test_appended_messages_are_read_back_after_reopening(tmp_path: Any) -> None:
    messages = [b"one", b"\nKAF_MSG|1|2\n", b"three\n"]
    f = new_log(tmp_path, messages)
    assert served(f) == {1: b"one", 2: b"\nKAF_MSG|1|2\n", 3: b"three\n"}
    f.close()
    again = LogFile(str(tmp_path), "log")
    assert again.open() == []
    assert served(again) == {1: b"one", 2: b"\nKAF_MSG|1|2\n", 3: b"three\n"}
    assert again.last_num == 3
    again.close()


@pytest.mark.parametrize("name", sorted(GO_FILES))
def test_every_go_file_opens_with_its_messages(gokaf_data: str, name: str) -> None:
    start, messages = GO_FILES[name]
    before = file_bytes(os.path.join(gokaf_data, name))
    f = LogFile(gokaf_data, name)
    assert f.open(NOW) == []
    assert f.error is None
    assert f.start == start
    assert f.last_num == max(messages)
    assert served(f) == messages
    assert list(f.index.nums) == sorted(messages)
    # Opening a well-formed file never writes to it.
    assert file_bytes(f.path) == before
    f.close()


def test_go_log_archived_up_to_2_starts_at_5_and_ends_at_11(gokaf_data: str) -> None:
    f = LogFile(gokaf_data, "arch")
    f.open(NOW)
    assert f.start == 2
    assert f.index.nums[0] == 5 and f.index.nums[-1] == 11
    assert f.position(1) == 0
    assert f.position(7) == 2
    assert f.position(12) == len(f.index)
    assert put(f, [b"msg-12"]) == 12
    f.close()


# -- reads ------------------------------------------------------------------


@pytest.mark.parametrize("i,count", [(0, 7), (0, 1), (3, 2), (6, 1), (2, 5)])
def test_read_of_clean_records_is_one_span_of_the_file(gokaf_data: str, i: int,
                                                        count: int) -> None:
    f = LogFile(gokaf_data, "small7")
    f.open(NOW)
    raw = file_bytes(f.path)
    s = f.read(i, count)
    first, last = f.index.starts[i], f.index.ends[i + count - 1]
    assert s.span == raw[first:last]
    assert s.base == first
    assert s.clean
    assert s.kaf_records() == s.span
    assert list(s.nums) == list(range(i + 1, i + count + 1))
    assert s.messages() == [b"s%d" % (n,) for n in s.nums]
    assert _format.parse_kaf_body(_format.reply_header(count) + s.kaf_records()) == s.messages()
    f.close()


def test_read_of_binary_and_multiline_messages_gives_their_exact_bytes(
        gokaf_data: str) -> None:
    f = LogFile(gokaf_data, "test")
    f.open(NOW)
    s = read_all(f)
    assert s.clean
    assert s.span == file_bytes(f.path)[11:]
    assert s.messages() == [b"Test1", b"line1\nline2|with pipe\n", b"\x00\x01\xff"]
    f.close()


def test_read_across_blank_lines_is_re_encoded_as_canonical_records(tmp_path: Any) -> None:
    f = LogFile(copy_fixture("edited/tail-newlines", str(tmp_path / "d")), "log")
    f.open(NOW)
    whole = read_all(f)
    assert not whole.clean
    assert whole.kaf_records() == _format.records(1, [b"aaaa", b"bbbb", b"cccc", b"new"])
    # A reply that begins at the record after the blank lines is still a copy.
    last = f.read(3, 1)
    assert last.clean
    assert last.kaf_records() == last.span == b"\nKAF_MSG|4|3\nnew"
    f.close()


def test_plan_gives_at_most_limit_messages(tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"m%d" % (i,) for i in range(10)])
    assert f.plan(0, 3, MiB) == 3
    assert f.plan(0, 1000, MiB) == 10
    assert f.plan(8, 5, MiB) == 2
    assert f.plan(10, 5, MiB) == 0
    f.close()


def test_plan_stops_adding_messages_once_the_reply_reaches_1_mib(tmp_path: Any) -> None:
    messages = [bytes([65 + i % 26]) * 100_000 for i in range(25)]
    f = LogFile.create(str(tmp_path), "log")
    put(f, messages)
    for i in (0, 7):
        total, want = 0, 0
        for n in range(i + 1, len(messages) + 1):
            want += 1
            total += len(_format.record(n, messages[n - 1]))
            if total >= MiB:
                break
        n = f.plan(i, 1000, MiB)
        assert n == want == 11
        assert len(f.read(i, n).span) >= MiB > len(f.read(i, n - 1).span)
    f.close()


def test_plan_counts_the_message_that_reaches_the_cap_and_no_more(tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"x" * 10, b"y" * 10, b"z" * 10])
    two = len(_format.record(1, b"x" * 10)) + len(_format.record(2, b"y" * 10))
    assert f.plan(0, 1000, two) == 2
    assert f.plan(0, 1000, two - 1) == 2
    assert f.plan(0, 1000, two + 1) == 3
    f.close()


def test_plan_gives_one_message_however_large(tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"L" * (3 * MiB), b"small"])
    assert f.plan(0, 1000, MiB) == 1
    assert f.plan(1, 1000, MiB) == 1
    assert f.read(0, 1).messages() == [b"L" * (3 * MiB)]
    f.close()


# -- archives (SPEC 3.3) ------------------------------------------------------------


def test_archive_keeps_messages_after_upto(tmp_path: Any) -> None:
    messages = [b"msg-%d" % (n,) for n in range(1, 11)]
    f = new_log(tmp_path, messages)
    name, used, kept, after = f.archive(4, NOW)
    f.close()
    assert (name, used, kept) == ("--log--" + STAMP, 4, 6)
    assert file_bytes(after.path) == b"KAF_DB|v1|4" + _format.records(5, messages[4:])
    assert served(after) == {n: messages[n - 1] for n in range(5, 11)}
    assert read_all(after).clean
    assert after.position(1) == 0
    assert put(after, [b"msg-11"]) == 11
    after.close()


def test_archive_file_is_the_old_file_byte_for_byte(tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"msg-%d" % (n,) for n in range(1, 11)])
    before = file_bytes(f.path)
    name, _, _, after = f.archive(4, NOW)
    f.close()
    assert name is not None
    assert file_bytes(os.path.join(str(tmp_path), name)) == before
    assert sorted(os.listdir(str(tmp_path))) == sorted(["log", name])
    after.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_archive_file_is_not_held_open(tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"a", b"b"])
    name, _, _, after = f.archive(1, NOW)
    f.close()
    assert name is not None
    archive = os.path.join(str(tmp_path), name)
    st = os.stat(archive)
    for fd in os.listdir("/proc/self/fd"):
        try:
            held = os.stat("/proc/self/fd/" + fd)
        except OSError:
            continue
        assert (held.st_dev, held.st_ino) != (st.st_dev, st.st_ino)
    after.close()


def test_archives_in_the_same_second_get_suffixes_and_never_overwrite(tmp_path: Any) -> None:
    folder = str(tmp_path)
    f = new_log(tmp_path, [b"m%d" % (n,) for n in range(1, 7)])
    names, contents = [], []
    for upto in (2, 4, 6):
        contents.append(file_bytes(f.path))
        name, _, _, after = f.archive(upto, NOW)
        f.close()
        names.append(name)
        f = after
    base = "--log--" + STAMP
    assert names == [base, base + "_1", base + "_2"]
    for name, content in zip(names, contents):
        assert file_bytes(os.path.join(folder, name)) == content
    f.close()


def test_archive_never_overwrites_a_file_already_named_like_it(tmp_path: Any) -> None:
    folder = str(tmp_path)
    with open(os.path.join(folder, "--log--" + STAMP), "wb") as precious:
        precious.write(b"someone else's")
    f = new_log(tmp_path, [b"a", b"b"])
    name, _, _, after = f.archive(1, NOW)
    f.close()
    assert name == "--log--" + STAMP + "_1"
    assert file_bytes(os.path.join(folder, "--log--" + STAMP)) == b"someone else's"
    after.close()


def test_archive_past_the_last_message_leaves_an_empty_log_continuing_numbering(
        tmp_path: Any) -> None:
    f = new_log(tmp_path, [b"a", b"b", b"c"])
    name, used, kept, after = f.archive(99, NOW)
    f.close()
    assert name is not None
    assert (used, kept) == (3, 0)
    assert file_bytes(after.path) == b"KAF_DB|v1|3"
    assert (len(after.index), after.last_num) == (0, 3)
    assert put(after, [b"d"]) == 4
    assert file_bytes(after.path) == b"KAF_DB|v1|3\nKAF_MSG|4|1\nd"
    after.close()
    again = LogFile(str(tmp_path), "log")
    again.open(NOW)
    assert (again.start, served(again)) == (3, {4: b"d"})
    again.close()


def test_archiving_nothing_returns_none_and_changes_no_file(tmp_path: Any) -> None:
    folder = str(tmp_path)
    f = new_log(tmp_path, [b"a", b"b", b"c"])
    name, _, _, after = f.archive(2, NOW)
    f.close()
    listing, content = sorted(os.listdir(folder)), file_bytes(after.path)
    for upto in (1, 2):
        again = after.archive(upto, NOW + 5)
        assert again[0] is None
        assert again[2] == 1
        assert again[3] is after
    assert sorted(os.listdir(folder)) == listing
    assert file_bytes(after.path) == content
    after.close()


def test_archiving_an_empty_log_returns_none(tmp_path: Any) -> None:
    f = LogFile.create(str(tmp_path), "log")
    name, used, kept, same = f.archive(5, NOW)
    assert (name, kept, same) == (None, 0, f)
    assert os.listdir(str(tmp_path)) == ["log"]
    assert file_bytes(f.path) == b"KAF_DB|v1|0"
    f.close()


def test_archive_before_the_first_message_of_a_go_archived_log_changes_nothing(
        gokaf_data: str) -> None:
    f = LogFile(gokaf_data, "arch")
    f.open(NOW)
    listing = sorted(os.listdir(gokaf_data))
    name, _, kept, same = f.archive(4, NOW)
    assert (name, kept, same) == (None, 7, f)
    assert sorted(os.listdir(gokaf_data)) == listing
    f.close()


@pytest.mark.parametrize("fixture,upto,kept", [
    ("edited/tail-newlines", 3, {4: b"new"}),
    ("edited/mid-longer", 1, {2: b"bbbbb", 3: b"cccc"}),
    ("edited/tail-header-only", 3, {4: b"", 5: b"new"}),
])
def test_archive_of_an_edited_log_keeps_its_records_byte_for_byte(
        tmp_path: Any, fixture: str, upto: int, kept: Dict[int, bytes]) -> None:
    f = LogFile(copy_fixture(fixture, str(tmp_path / "d")), "log")
    f.open(NOW)
    i = f.position(upto + 1)
    rest = file_bytes(f.path)[f.index.starts[i]:]
    _, _, _, after = f.archive(upto, NOW)
    f.close()
    assert file_bytes(after.path) == b"KAF_DB|v1|%d" % (upto,) + rest
    assert served(after) == kept
    # Replies are well-formed kaf records whatever the records on disk.
    s = read_all(after)
    assert _format.parse_kaf_body(
        _format.reply_header(len(s)) + s.kaf_records()) == list(kept.values())
    # What the archive hands over is what a fresh open of the new file finds.
    fresh = LogFile(after.folder, "log")
    fresh.open(NOW)
    assert list(fresh.index.nums) == list(after.index.nums)
    assert list(fresh.index.starts) == list(after.index.starts)
    assert list(fresh.index.ends) == list(after.index.ends)
    fresh.close()
    after.close()


# -- failed writes (SPEC 7) ------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_failed_write_is_cut_back_and_the_log_keeps_working(tmp_path: Any) -> None:
    import resource
    import signal

    f = new_log(tmp_path, [b"aaaa"])
    before = file_bytes(f.path)
    # A file size limit makes the kernel write part of the record, then fail
    # with EFBIG: the partial record a full disk or an I/O error leaves.
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 10, limit[1]))
    try:
        with pytest.raises(WriteFailed):
            f.append(_format.record(2, b"b" * 100))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert file_bytes(f.path) == before
    assert (f.size, f.last_num, list(f.index.nums)) == (len(before), 1, [1])
    assert put(f, [b"bb"]) == 2
    assert file_bytes(f.path) == before + b"\nKAF_MSG|2|2\nbb"
    f.close()
    again = LogFile(str(tmp_path), "log")
    assert again.open(NOW) == []
    assert served(again) == {1: b"aaaa", 2: b"bb"}
    again.close()
