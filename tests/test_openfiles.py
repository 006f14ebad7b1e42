"""
Many logs, few file handles: files read on first use, a bounded cache of
open files, descriptor exhaustion answered 503, and a full disk that
leaves nothing behind.
"""
from __future__ import annotations

import errno
import os
from typing import Any, List

import pytest
from twisted.internet.task import Clock

from kaf import _format
from kaf.errors import OutOfDescriptors, Repeats, StorageFull
from kaf.engines.file.store import Store
from conftest import fired, sync_runner


def make_logs(folder: str, count: int, messages: int = 3) -> None:
    os.makedirs(folder, exist_ok=True)
    for n in range(count):
        with open(os.path.join(folder, "log%d" % n), "wb") as f:
            f.write(_format.db_header(0) + _format.records(
                1, [b"m%d" % i for i in range(1, messages + 1)]))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_up_opens_no_file(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 50)
    before = open_fds()
    store = Store(folder, Clock(), sync_runner, max_open=10)
    store.load()
    assert open_fds() == before
    assert len(store.files) == 0


def test_at_most_max_open_logs_are_open_and_every_log_still_works(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 50)
    store = Store(folder, Clock(), sync_runner, max_open=10)
    store.load()
    before = open_fds()
    for n in range(50):
        log = store.get_or_create("log%d" % n)
        assert fired(log.put([b"new"])) == 4
        assert len(store.files) <= 10
        assert open_fds() - before <= 10
    for n in range(50):
        log = store.get("log%d" % n)
        assert log is not None
        reply = fired(log.get(1, 100, 1 << 20))
        assert reply.slice.messages() == [b"m1", b"m2", b"m3", b"new"]
    fired(store.close())


def test_a_log_edited_while_its_file_was_closed_is_re_read(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 3)
    store = Store(folder, Clock(), sync_runner, max_open=1)
    store.load()
    first = store.get("log0")
    assert first is not None
    assert fired(first.get(1, 100, 1 << 20)).slice.messages() == [b"m1", b"m2", b"m3"]
    other = store.get("log1")
    assert other is not None
    fired(other.get(1, 100, 1 << 20))
    assert first.file.fd is None
    with open(os.path.join(folder, "log0"), "wb") as f:
        f.write(_format.db_header(0) + _format.records(1, [b"edited"]))
    assert fired(first.get(1, 100, 1 << 20)).slice.messages() == [b"edited"]
    # Numbering never goes back, whatever the edit did.
    assert fired(first.put([b"next"])) == 4
    fired(store.close())


def test_a_torn_tail_is_moved_aside_on_first_use(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 1)
    with open(os.path.join(folder, "log0"), "ab") as f:
        f.write(b"\nKAF_MSG|4|100\nabc")
    store = Store(folder, Clock(), sync_runner)
    store.load()
    assert not [n for n in os.listdir(folder) if ".torn-" in n]
    log = store.get_or_create("log0")
    assert fired(log.put([b"m4"])) == 4
    assert [n for n in os.listdir(folder) if n.startswith(".log0.torn-")]
    fired(store.close())


def test_out_of_descriptors_refuses_a_put_with_503_and_retry_after(
        tmp_path: Any, monkeypatch: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 1)
    store = Store(folder, Clock(), sync_runner)
    store.load()
    log = store.get_or_create("log0")
    real = os.open

    def no_descriptor(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "open", no_descriptor)
    with pytest.raises(OutOfDescriptors) as e:
        fired(log.put([b"x"]))
    assert e.value.status == 503 and e.value.retry_after == 1
    monkeypatch.setattr(os, "open", real)
    # The log was not marked unreadable: it works once descriptors are back.
    assert log.file.error is None
    assert fired(log.put([b"x"])) == 4
    fired(store.close())


def test_a_full_disk_leaves_no_temporary_file_behind(tmp_path: Any, monkeypatch: Any) -> None:
    folder = str(tmp_path)
    store = Store(folder, Clock(), sync_runner)
    store.load()
    real = os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    for n in range(5):
        with pytest.raises(StorageFull):
            fired(store.get_or_create("new-%d" % n).put([b"x"]))
    monkeypatch.setattr(os, "write", real)
    assert os.listdir(folder) == []
    assert [log.name for log in store.logs()] == []


def test_repeated_refusals_are_counted_not_logged_one_by_one() -> None:
    lines: List[str] = []
    repeats = Repeats(lines.append)
    for _ in range(150):
        repeats("put: disk full")
    repeats("put: other")
    assert lines == ["put: disk full", "put: disk full (10 times)",
                     "put: disk full (100 times)", "put: disk full (150 times)", "put: other"]


def test_an_evicted_small_log_keeps_only_its_numbers_and_is_read_again_on_use(
        tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 3)
    store = Store(folder, Clock(), sync_runner, max_open=1)
    store.load()
    first = store.get_or_create("log0")
    assert fired(first.put([b"m4"])) == 4
    other = store.get("log1")
    assert other is not None
    fired(other.get(1, 100, 1 << 20))
    # Evicted: no file, no index, no lock; the numbers stay.
    assert first.file.fd is None and first.file._index is None and first._lock is None
    assert (first.last, first.file.count, first.file.first_num) == (4, 4, 1)
    assert fired(first.get(2, 100, 1 << 20)).slice.messages() == [b"m2", b"m3", b"m4"]
    assert fired(first.put([b"m5"])) == 5
    fired(store.close())


def test_logs_lists_evicted_logs_with_their_counts(tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 4, messages=2)
    store = Store(folder, Clock(), sync_runner, max_open=1)
    store.load()
    for n in range(4):
        fired(store.get_or_create("log%d" % n).put([b"x"] * n))
    assert [(log.name, log.file.first_num, log.last, log.file.count)
            for log in store.logs()] == [("log0", 1, 2, 2), ("log1", 1, 3, 3),
                                         ("log2", 1, 4, 4), ("log3", 1, 5, 5)]
    fired(store.close())


def test_a_log_edited_after_its_index_was_forgotten_is_re_read_and_never_renumbered(
        tmp_path: Any) -> None:
    folder = str(tmp_path)
    make_logs(folder, 2)
    store = Store(folder, Clock(), sync_runner, max_open=1)
    store.load()
    first = store.get_or_create("log0")
    assert fired(first.put([b"m4"])) == 4
    fired(store.get_or_create("log1").put([b"m4"]))
    assert first.file._index is None
    with open(os.path.join(folder, "log0"), "ab") as f:
        f.write(_format.records(5, [b"by hand"]))
    assert fired(first.get(4, 100, 1 << 20)).slice.messages() == [b"m4", b"by hand"]
    fired(store.get_or_create("log1").put([b"m5"]))
    with open(os.path.join(folder, "log0"), "wb") as f:
        f.write(_format.db_header(0) + _format.records(1, [b"only"]))
    assert fired(first.get(1, 100, 1 << 20)).slice.messages() == [b"only"]
    assert fired(first.put([b"next"])) == 6
    fired(store.close())


def test_a_large_log_keeps_its_index_when_its_file_closes(tmp_path: Any) -> None:
    folder = str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "big"), "wb") as f:
        f.write(_format.db_header(0) + _format.records(1, [b"b" * 1000] * 100))
    make_logs(folder, 1)
    store = Store(folder, Clock(), sync_runner, max_open=1)
    store.load()
    big = store.get_or_create("big")
    assert fired(big.put([b"m"])) == 101
    fired(store.get_or_create("log0").put([b"m4"]))
    # Over 64 KiB: reading it again would cost more than its index.
    assert big.file.fd is None and big.file._index is not None
    fired(store.close())
