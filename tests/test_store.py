"""
The store (kaf/engines/file/store.py): loading a data folder, including one written by
the Go version, log names (SPEC 2), what load ignores or tidies, and
finding and creating logs.
"""
from __future__ import annotations

import filecmp
import os
import shutil
from typing import Any, Iterator, List

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from kaf.errors import InvalidName, ReservedName, UnreadableLog
from kaf.engines.file.store import Store, name_problem
from conftest import fired as result
from conftest import FIXTURES, sync_runner

MIB = 1 << 20

GOKAF_LOGS = {
    # name: (message numbers, last number)
    "_kaf": ([1], 1),
    "arch": ([5, 6, 7, 8, 9, 10, 11], 11),
    "js": ([1, 2], 2),
    "sizes": ([1, 2, 3, 4, 5, 6], 6),
    "small7": ([1, 2, 3, 4, 5, 6, 7], 7),
    "test": ([1, 2, 3], 3),
}


class Events:
    """Log events emitted through twisted.logger while a test runs."""

    def __init__(self) -> None:
        self.events: List[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def lines(self, level: LogLevel) -> List[str]:
        return [formatEvent(e) for e in self.events if e.get("log_level") is level]


@pytest.fixture
def events() -> Iterator[Events]:
    observer = Events()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def loaded(folder: str, clock: Clock) -> Store:
    store = Store(folder, clock, sync_runner)
    store.load()
    return store


def messages_of(store: Store, name: str) -> List[bytes]:
    log = store.get(name)
    assert log is not None
    return result(log.get(1, 10000, 64 * MIB)).slice.messages()


def make_file(folder: str, name: str, data: bytes = b"KAF_DB|v1|0") -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- loading ------------------------------------------------------------


def test_load_finds_every_log_of_a_go_data_folder(gokaf_data: str, clock: Clock) -> None:
    store = loaded(gokaf_data, clock)
    assert [log.name for log in store.logs()] == sorted(GOKAF_LOGS)
    for name, (nums, last) in GOKAF_LOGS.items():
        log = store.get(name)
        assert log is not None
        assert log.file.error is None
        assert list(result(log.get(1, 10000, MIB)).slice.nums) == nums, name
        assert log.last == last, name


def test_load_serves_go_messages_byte_for_byte(gokaf_data: str, clock: Clock) -> None:
    store = loaded(gokaf_data, clock)
    assert messages_of(store, "test") == [b"Test1", b"line1\nline2|with pipe\n",
                                          b"\x00\x01\xff"]
    assert messages_of(store, "js") == [b'{"a":1}', b'{"b":2}']
    assert messages_of(store, "sizes") == [str(i).encode() * 1000 for i in range(1, 7)]
    assert messages_of(store, "arch") == [b"msg-%d" % i for i in range(5, 12)]


def test_load_leaves_a_go_data_folder_as_it_is(gokaf_data: str, clock: Clock) -> None:
    loaded(gokaf_data, clock)
    source = os.path.join(FIXTURES, "gokaf-data")
    assert sorted(os.listdir(gokaf_data)) == sorted(os.listdir(source))
    match, mismatch, errors = filecmp.cmpfiles(source, gokaf_data, os.listdir(source),
                                               shallow=False)
    assert (mismatch, errors) == ([], [])


def test_a_put_to_a_go_log_continues_its_numbering(gokaf_data: str, clock: Clock) -> None:
    store = loaded(gokaf_data, clock)
    path = os.path.join(gokaf_data, "small7")
    with open(path, "rb") as f:
        before = f.read()
    log = store.get("small7")
    assert log is not None
    assert result(log.put([b"s8"])) == 8
    with open(path, "rb") as f:
        assert f.read() == before + b"\nKAF_MSG|8|2\ns8"


def test_a_log_is_read_on_first_use_and_logs_one_line(
        gokaf_data: str, clock: Clock, events: Events) -> None:
    store = loaded(gokaf_data, clock)
    assert not any("small7" in line for line in events.lines(LogLevel.info))
    for log in store.logs():
        result(log.described())
    info = events.lines(LogLevel.info)
    small7 = [line for line in info if "small7" in line]
    assert len(small7) == 1
    assert "1" in small7[0] and "7" in small7[0]
    assert str(os.path.getsize(os.path.join(gokaf_data, "small7"))) in small7[0]
    for name in GOKAF_LOGS:
        assert any(name in line for line in info), name


def test_load_creates_a_missing_data_folder(tmp_path: Any, clock: Clock) -> None:
    folder = str(tmp_path / "a" / "data")
    store = loaded(folder, clock)
    assert os.path.isdir(folder)
    assert store.logs() == []


def test_load_ignores_files_with_invalid_names_with_a_warning(
        tmp_path: Any, clock: Clock, events: Events) -> None:
    folder = str(tmp_path)
    for name in ["a b", "a%2Fb", "x" * 201, "good"]:
        make_file(folder, name)
    store = loaded(folder, clock)
    assert [log.name for log in store.logs()] == ["good"]
    warnings = events.lines(LogLevel.warn)
    for name in ["a b", "a%2Fb", "x" * 201]:
        assert len([w for w in warnings if repr(name) in w]) == 1, name
    assert not any("good" in w for w in warnings)


def test_load_ignores_archives_and_dot_files_silently(
        gokaf_data: str, clock: Clock, events: Events) -> None:
    make_file(gokaf_data, ".hidden")
    make_file(gokaf_data, ".small7.torn-2026-11-29T06_14_59Z", b"\nKAF_MSG|9|")
    make_file(gokaf_data, "--small7--2026-11-29T06_14_59Z")
    store = loaded(gokaf_data, clock)
    assert [log.name for log in store.logs()] == sorted(GOKAF_LOGS)
    assert events.lines(LogLevel.warn) == []


def test_load_skips_folders(tmp_path: Any, clock: Clock, events: Events) -> None:
    os.mkdir(str(tmp_path / "sub"))
    store = loaded(str(tmp_path), clock)
    assert store.get("sub") is None
    assert store.logs() == []


def test_a_log_with_a_bad_header_is_loaded_with_an_error_and_others_still_load(
        gokaf_data: str, clock: Clock, events: Events) -> None:
    shutil.copy(os.path.join(FIXTURES, "edited", "bad-db-header", "log"),
                os.path.join(gokaf_data, "broken"))
    make_file(gokaf_data, "empty", b"")
    store = loaded(gokaf_data, clock)
    assert [log.name for log in store.logs()] == sorted(list(GOKAF_LOGS) + ["broken", "empty"])
    for name in ["broken", "empty"]:
        log = store.get(name)
        assert log is not None
        result(log.described())
        assert log.file.error is not None and "not a Kaf log" in log.file.error
        assert any(name in w and "not a Kaf log" in w for w in events.lines(LogLevel.warn))
        with pytest.raises(UnreadableLog):
            result(maybeDeferred(log.get, 1, 1000, MIB))
    assert messages_of(store, "small7") == [b"s%d" % i for i in range(1, 8)]


def test_a_log_with_a_bad_header_is_never_written(gokaf_data: str, clock: Clock) -> None:
    path = os.path.join(gokaf_data, "broken")
    shutil.copy(os.path.join(FIXTURES, "edited", "bad-db-header", "log"), path)
    store = loaded(gokaf_data, clock)
    log = store.get_or_create("broken")
    with pytest.raises(UnreadableLog):
        result(log.put([b"x"]))
    assert filecmp.cmp(path, os.path.join(FIXTURES, "edited", "bad-db-header", "log"),
                       shallow=False)


def test_load_removes_temp_files_of_an_interrupted_archive_or_create(
        gokaf_data: str, clock: Clock, events: Events) -> None:
    make_file(gokaf_data, ".small7.archive-tmp", b"KAF_DB|v1|3\nKAF_MSG|4|2\ns4")
    make_file(gokaf_data, ".newlog.new", b"KAF_DB|v1|0")
    store = loaded(gokaf_data, clock)
    assert not os.path.exists(os.path.join(gokaf_data, ".small7.archive-tmp"))
    assert not os.path.exists(os.path.join(gokaf_data, ".newlog.new"))
    warnings = events.lines(LogLevel.warn)
    assert any(".small7.archive-tmp" in w for w in warnings)
    assert any(".newlog.new" in w for w in warnings)
    # The live log is untouched, and no log was made of the temp file.
    assert messages_of(store, "small7") == [b"s%d" % i for i in range(1, 8)]
    assert store.get("newlog") is None


# -- names ------------------------------------------------------------

VALID = ["a", "A.b-c_9", "x" * 200, "_kaf", "a..b", "a-", "9"]
INVALID = ["", "x" * 201, ".x", "--x", "a/b", "..", ".", "a b", "a%2Fb", "a\x00b",
           "é", "a\nb", "a:b"]


@pytest.mark.parametrize("name", VALID)
def test_valid_log_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", INVALID)
def test_invalid_log_names_have_a_reason(name: str) -> None:
    problem = name_problem(name)
    assert problem
    assert "\n" not in problem


@pytest.mark.parametrize("name", INVALID)
def test_check_refuses_invalid_names_without_touching_the_disk(
        tmp_path: Any, clock: Clock, name: str) -> None:
    store = loaded(str(tmp_path), clock)
    with pytest.raises(InvalidName) as e:
        store.check(name, "put", write=True)
    assert e.value.reason.startswith("put: ")
    assert e.value.status == 400
    assert os.listdir(str(tmp_path)) == []


def test_check_refuses_a_name_that_is_a_folder_on_disk(tmp_path: Any, clock: Clock) -> None:
    os.mkdir(str(tmp_path / "sub"))
    store = loaded(str(tmp_path), clock)
    with pytest.raises(InvalidName) as e:
        store.check("sub", "get")
    assert e.value.reason.startswith("get: ")


def test_check_refuses_writes_to_kaf_names(tmp_path: Any, clock: Clock) -> None:
    store = loaded(str(tmp_path), clock)
    for name in ["_kaf", "_other"]:
        with pytest.raises(ReservedName) as e:
            store.check(name, "put", write=True)
        assert e.value.status == 403
        # Reading and archiving them is allowed.
        store.check(name, "get")
        store.check(name, "archive")


def test_check_accepts_a_valid_name(tmp_path: Any, clock: Clock) -> None:
    store = loaded(str(tmp_path), clock)
    store.check("A.b-c_9", "put", write=True)
    assert os.listdir(str(tmp_path)) == []


# -- finding and creating ------------------------------------------------------------


def test_get_of_an_unknown_log_is_none(gokaf_data: str, clock: Clock) -> None:
    store = loaded(gokaf_data, clock)
    assert store.get("nothing") is None


def test_get_or_create_makes_no_file_until_the_first_put(tmp_path: Any, clock: Clock) -> None:
    folder = str(tmp_path)
    store = loaded(folder, clock)
    log = store.get_or_create("fresh")
    assert os.listdir(folder) == []
    assert store.get("fresh") is None
    assert store.logs() == []
    assert log.last == 0

    assert result(log.put([b"hello"])) == 1
    assert os.listdir(folder) == ["fresh"]
    with open(os.path.join(folder, "fresh"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|0\nKAF_MSG|1|5\nhello"
    assert store.get("fresh") is log
    assert store.get_or_create("fresh") is log
    assert [entry.name for entry in store.logs()] == ["fresh"]


def test_logs_are_listed_sorted_by_name(tmp_path: Any, clock: Clock) -> None:
    store = loaded(str(tmp_path), clock)
    for name in ["b", "_kaf", "a", "C"]:
        result(store.get_or_create(name).put([b"x"]))
    assert [log.name for log in store.logs()] == ["C", "_kaf", "a", "b"]


def test_close_closes_every_log(gokaf_data: str, clock: Clock) -> None:
    store = loaded(gokaf_data, clock)
    result(store.close())
    for log in store.logs():
        assert log.file.fd is None


def test_a_reloaded_store_serves_what_was_written(tmp_path: Any, clock: Clock) -> None:
    folder = str(tmp_path)
    store = loaded(folder, clock)
    result(store.get_or_create("x").put([b"one", b"two"]))
    result(store.close())
    again = loaded(folder, clock)
    assert messages_of(again, "x") == [b"one", b"two"]
    assert again.get("x").last == 2  # type: ignore[union-attr]

