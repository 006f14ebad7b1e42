"""
The log service (kaf/engines/file/log.py): group commit, numbering, expect, batches,
failed writes, reads, long-poll waiters, close and archive serialization
(SPEC 3, 5, 7).  Blocking work goes through a runner the tests hold and
release by hand, and time is a task.Clock.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from kaf.errors import (ExpectMismatch, ShuttingDown, StorageFull, UnreadableLog,
                        WriteFailed)
from kaf.engines.file.log import BLOCKING_BYTES, Log, syncing_by
from kaf.engines.file.logfile import LogFile

MIB = 1 << 20


class HeldRunner:
    """
    Runs blocking work only when the test says so, so a write or an fsync
    can be held "in progress".  Records the name of every call it gets.
    """

    def __init__(self) -> None:
        self.held: List[Tuple[Callable[..., Any], Tuple[Any, ...], "Deferred[Any]"]] = []
        self.calls: List[str] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        d: "Deferred[Any]" = Deferred()
        self.held.append((f, args, d))
        self.calls.append(f.__name__)
        return d

    def waiting_for(self) -> List[str]:
        return [f.__name__ for f, _, _ in self.held]

    def release(self) -> None:
        """Run the oldest held call and fire its Deferred with the outcome."""
        f, args, d = self.held.pop(0)
        try:
            result = f(*args)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def drain(self) -> None:
        while self.held:
            self.release()


def outcome(d: "Deferred[Any]") -> List[Any]:
    """A list that holds C{d}'s result (or Failure) once it has fired."""
    box: List[Any] = []
    d.addBoth(box.append)
    return box


def value(box: List[Any]) -> Any:
    """The success value in an L{outcome} box."""
    assert len(box) == 1, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def error(box: List[Any]) -> BaseException:
    """The exception in an L{outcome} box."""
    assert len(box) == 1, "the Deferred has not fired"
    assert isinstance(box[0], Failure), "expected a failure, got %r" % (box[0],)
    return box[0].value


def record(num: int, data: bytes) -> bytes:
    """SPEC 4's record framing, written out here so the tests check it."""
    return b"\nKAF_MSG|%d|%d\n" % (num, len(data)) + data


def log_bytes(start: int, messages: Sequence[bytes], first: Optional[int] = None) -> bytes:
    first = start + 1 if first is None else first
    return b"KAF_DB|v1|%d" % (start,) + b"".join(
        record(first + i, m) for i, m in enumerate(messages))


def file_bytes(log: Log) -> bytes:
    with open(log.file.path, "rb") as f:
        return f.read()


class CountingLogFile(LogFile):
    """
    A real LogFile that also records each append's bytes, and how much of
    the file the fsyncs that have finished cover (its size as each began).
    """

    def __init__(self, folder: str, name: str) -> None:
        LogFile.__init__(self, folder, name)
        self.appends: List[bytes] = []
        self.synced = 0

    def append(self, data: bytes) -> int:
        self.appends.append(data)
        return LogFile.append(self, data)

    def sync(self, undo_to: int) -> None:
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        LogFile.sync(self, undo_to)
        self.synced = max(self.synced, size)


def make_log(folder: str, runner: Any, clock: Clock, fsync: bool = True,
             name: str = "t", gather: bool = False) -> Log:
    return Log(CountingLogFile.create(folder, name), clock, runner, fsync=fsync,
               gather=gather)


@contextmanager
def failing(call: str, code: int) -> Iterator[None]:
    """Inside the block, os.<call> fails with C{code} (e.g. ENOSPC)."""
    def fail(*args: Any) -> Any:
        raise OSError(code, os.strerror(code))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, call, fail)
        yield


@contextmanager
def disk_with_room(room: int) -> Iterator[None]:
    """Inside the block, writes succeed for C{room} more bytes, then ENOSPC."""
    real = os.pwrite
    left = [room]

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:left[0]]), offset)
        left[0] -= n
        return n

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "pwrite", pwrite)
        yield


@pytest.fixture
def runner() -> HeldRunner:
    return HeldRunner()


@pytest.fixture
def folder(tmp_path: Any) -> str:
    return str(tmp_path)


def fill(log: Log, runner: HeldRunner, messages: Sequence[bytes]) -> None:
    for m in messages:
        box = outcome(log.put([m]))
        runner.drain()
        value(box)


# -- group commit ------------------------------------------------------------


def test_puts_arriving_during_a_sync_are_written_and_synced_together(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    assert runner.waiting_for() == ["sync"]

    others = [outcome(log.put([b"m%d" % i])) for i in range(10)]
    # Nothing more is written while the first sync is under way.
    assert runner.waiting_for() == ["sync"]
    assert file_bytes(log) == log_bytes(0, [b"first"])

    runner.release()
    assert value(first) == 1
    # The ten waiting puts went to disk in one write, now under one sync.
    assert runner.waiting_for() == ["sync"]
    assert log.file.appends[1:] == [b"".join(record(2 + i, b"m%d" % i) for i in range(10))]
    assert file_bytes(log) == log_bytes(0, [b"first"] + [b"m%d" % i for i in range(10)])
    # Each put is answered only after its sync.
    assert all(box == [] for box in others)

    runner.release()
    assert [value(box) for box in others] == list(range(2, 12))
    assert runner.calls.count("sync") == 2
    assert len(log.file.appends) == 2


def test_the_next_batch_is_written_and_syncing_before_the_last_one_is_answered(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = log.put([b"first"])
    during = outcome(log.put([b"second"]))
    seen: List[Any] = []
    first.addCallback(lambda num: seen.append(
        (num, runner.waiting_for(), len(log.file.appends))))
    runner.release()
    # When "first" is answered, "second" is already written and its fsync
    # under way: the disk works while the reactor answers.
    assert seen == [(1, ["sync"], 2)]
    assert during == []
    runner.release()
    assert value(during) == 2


def test_fsyncs_run_in_the_syncing_runner(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    syncing = HeldRunner()
    log = Log(CountingLogFile.create(folder, "t"), clock, runner, syncing=syncing_by(syncing))
    box = outcome(log.put([b"a"]))
    assert runner.calls == []
    assert syncing.waiting_for() == ["sync"]
    syncing.release()
    assert value(box) == 1


def test_fsync_never_answers_puts_without_any_sync(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    boxes = [outcome(log.put([b"x%d" % i])) for i in range(5)]
    assert [value(box) for box in boxes] == [1, 2, 3, 4, 5]
    assert "sync" not in runner.calls
    assert file_bytes(log) == log_bytes(0, [b"x%d" % i for i in range(5)])


# -- gathering the puts of one reactor turn ------------------------------------


@pytest.mark.parametrize("fsync", [True, False])
def test_puts_read_in_one_reactor_turn_go_out_in_one_write(
        folder: str, runner: HeldRunner, clock: Clock, fsync: bool) -> None:
    log = make_log(folder, runner, clock, fsync=fsync, gather=True)
    boxes = [outcome(log.put([b"x%d" % i])) for i in range(5)]
    # Until the turn ends nothing is written and nothing is answered.
    assert log.file.appends == []
    assert all(box == [] for box in boxes)
    assert log.busy

    clock.advance(0)
    assert log.file.appends == [b"".join(record(1 + i, b"x%d" % i) for i in range(5))]
    if fsync:
        # One sync for the five, and no answer before it.
        assert runner.waiting_for() == ["sync"]
        assert all(box == [] for box in boxes)
        runner.release()
        # Synced, and answered at the start of the next turn.
        assert all(box == [] for box in boxes)
        clock.advance(0)
    assert [value(box) for box in boxes] == [1, 2, 3, 4, 5]
    assert runner.calls.count("sync") == (1 if fsync else 0)
    assert not log.busy


def test_a_synced_batch_is_answered_in_the_next_turn_with_the_puts_gathered_in_this_one(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, gather=True)
    first = outcome(log.put([b"a"]))
    clock.advance(0)
    assert runner.waiting_for() == ["sync"]
    # The sync ends in a turn of its own, which also reads a put.
    runner.release()
    second = outcome(log.put([b"b"]))
    assert first == [] and second == []
    # The next turn answers "a", and writes "b" and starts its sync.
    clock.advance(0)
    assert value(first) == 1
    assert second == []
    assert runner.waiting_for() == ["sync"]
    assert len(log.file.appends) == 2
    runner.release()
    clock.advance(0)
    assert value(second) == 2
    assert not log.busy


def test_close_answers_synced_puts_still_waiting_for_the_next_turn(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, gather=True)
    synced = outcome(log.put([b"a"]))
    clock.advance(0)
    runner.release()
    assert synced == []
    gathering = outcome(log.put([b"b"]))
    closed = outcome(log.close())
    runner.drain()
    assert value(synced) == 1
    assert value(gathering) == 2
    assert value(closed) is None
    assert file_bytes(log) == log_bytes(0, [b"a", b"b"])
    # The turn's end finds nothing left to answer or write.
    clock.advance(0)
    assert len(log.file.appends) == 2


def test_each_gathered_put_is_checked_against_its_own_expect(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False, gather=True)
    first = outcome(log.put([b"a"], expect=0))
    stale = outcome(log.put([b"b"], expect=0))
    second = outcome(log.put([b"c", b"d"], expect=1))
    clock.advance(0)
    assert value(first) == 1
    assert isinstance(error(stale), ExpectMismatch)
    assert value(second) == 3
    assert file_bytes(log) == log_bytes(0, [b"a", b"c", b"d"])


def test_close_writes_the_puts_still_gathering(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False, gather=True)
    box = outcome(log.put([b"last words"]))
    closed = outcome(log.close())
    assert value(box) == 1
    assert value(closed) is None
    assert file_bytes(log) == log_bytes(0, [b"last words"])
    # The end of the turn, after the close, finds nothing left to write.
    clock.advance(0)
    assert file_bytes(log) == log_bytes(0, [b"last words"])


# -- numbering ------------------------------------------------------------


def test_64_concurrent_puts_get_unique_consecutive_numbers_in_file_order(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    messages = [b"message %d" % i for i in range(64)]
    boxes = [outcome(log.put([m])) for m in messages]
    runner.drain()
    numbers = [value(box) for box in boxes]
    assert sorted(numbers) == list(range(1, 65))
    by_number = dict(zip(numbers, messages))
    assert file_bytes(log) == log_bytes(0, [by_number[n] for n in range(1, 65)])
    assert log.last == 64


batches = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.one_of(batches, st.none()), max_size=30))
def test_any_interleaving_of_puts_and_syncs_numbers_every_message_once_in_file_order(
        steps: List[Optional[List[bytes]]]) -> None:
    # None in steps lets the oldest held write or sync finish.
    with tempfile.TemporaryDirectory() as folder:
        runner = HeldRunner()
        log = make_log(folder, runner, Clock())
        puts = []
        uncovered: List[int] = []

        def covered(num: int) -> int:
            # An answer never comes before an fsync that began after the
            # put's bytes were written.
            f = log.file
            if f.index.ends[f.position(num)] > f.synced:
                uncovered.append(num)
            return num

        for step in steps:
            if step is None:
                if runner.held:
                    runner.release()
            else:
                puts.append((step, outcome(log.put(step).addCallback(covered))))
        runner.drain()
        assert uncovered == []
        by_number = {}
        for messages, box in puts:
            last = value(box)
            for i, m in enumerate(messages):
                num = last - len(messages) + 1 + i
                assert num not in by_number
                by_number[num] = m
        total = sum(len(messages) for messages, _ in puts)
        assert sorted(by_number) == list(range(1, total + 1))
        assert file_bytes(log) == log_bytes(0, [by_number[n] for n in range(1, total + 1)])
        log.file.close()


# -- expect ------------------------------------------------------------


def test_of_many_puts_racing_with_the_same_expect_exactly_one_wins(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    racers = [outcome(log.put([b"racer %d" % i], expect=1)) for i in range(8)]
    runner.drain()
    assert value(first) == 1

    wins = [i for i, box in enumerate(racers) if not isinstance(box[0], Failure)]
    assert len(wins) == 1
    assert value(racers[wins[0]]) == 2
    for i, box in enumerate(racers):
        if i != wins[0]:
            e = error(box)
            assert isinstance(e, ExpectMismatch)
            assert e.last == 2
    assert file_bytes(log) == log_bytes(0, [b"first", b"racer %d" % wins[0]])


def test_expect_mismatch_writes_nothing_and_carries_the_actual_last(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a", b"b"])
    before = file_bytes(log)
    e = error(outcome(log.put([b"c", b"d"], expect=5)))
    assert isinstance(e, ExpectMismatch)
    assert e.last == 2
    assert "5" in e.reason and "2" in e.reason
    assert file_bytes(log) == before
    assert log.last == 2


def test_expect_zero_appends_to_a_new_log(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    assert value(outcome(log.put([b"a"], expect=0))) == 1


def test_expect_works_with_batches(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a"])
    assert value(outcome(log.put([b"b", b"c", b"d"], expect=1))) == 4


# -- batches ------------------------------------------------------------


def test_a_batch_is_numbered_consecutively_among_other_puts(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    before = outcome(log.put([b"before"]))
    batch = outcome(log.put([b"b1", b"b2", b"b3"]))
    after = outcome(log.put([b"after"]))
    runner.drain()
    assert [value(first), value(before), value(batch), value(after)] == [1, 2, 5, 6]
    assert file_bytes(log) == log_bytes(
        0, [b"first", b"before", b"b1", b"b2", b"b3", b"after"])


# -- failed writes ------------------------------------------------------------


def test_a_failed_fsync_fails_every_put_of_its_batch_and_leaves_no_partial_record(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    group = [outcome(log.put([b"two"])), outcome(log.put([b"three", b"four"])),
             outcome(log.put([b"five"]))]
    runner.release()
    assert value(first) == 1
    assert runner.waiting_for() == ["sync"]

    with failing("fsync", errno.ENOSPC):
        runner.release()
    for box in group:
        assert isinstance(error(box), StorageFull)
    assert file_bytes(log) == log_bytes(0, [b"first"])
    assert log.last == 1

    after = outcome(log.put([b"next"]))
    runner.drain()
    assert value(after) == 2
    assert file_bytes(log) == log_bytes(0, [b"first", b"next"])


def test_puts_arriving_during_a_failed_fsync_follow_the_last_good_message(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    fill(log, runner, [b"first"])
    lost = outcome(log.put([b"lost"]))
    during = [outcome(log.put([b"during %d" % i])) for i in range(3)]
    with failing("fsync", errno.EIO):
        runner.release()
    assert isinstance(error(lost), WriteFailed)
    # The file was cut back before the next batch was written after it.
    assert log.file.appends[-1] == b"".join(record(2 + i, b"during %d" % i) for i in range(3))
    runner.drain()
    assert [value(box) for box in during] == [2, 3, 4]
    assert file_bytes(log) == log_bytes(0, [b"first"] + [b"during %d" % i for i in range(3)])


def test_a_write_cut_short_by_a_full_disk_is_cut_back(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"first"])
    # Room for part of the batch: the write fails half way.
    with disk_with_room(20):
        box = outcome(log.put([b"x" * 100, b"y"]))
    assert isinstance(error(box), StorageFull)
    assert file_bytes(log) == log_bytes(0, [b"first"])

    assert value(outcome(log.put([b"second"]))) == 2
    assert file_bytes(log) == log_bytes(0, [b"first", b"second"])


def test_a_large_write_failing_in_the_runner_is_cut_back(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    fill(log, runner, [b"first"])
    big = b"z" * (BLOCKING_BYTES + 1)
    box = outcome(log.put([big]))
    # A large write leaves the reactor thread.
    assert runner.waiting_for() == ["append"]
    with disk_with_room(BLOCKING_BYTES // 2):
        runner.release()
    assert isinstance(error(box), StorageFull)
    assert file_bytes(log) == log_bytes(0, [b"first"])
    assert runner.held == []


def test_an_io_error_on_fsync_is_a_write_failure(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    box = outcome(log.put([b"a"]))
    with failing("fsync", errno.EIO):
        runner.release()
    e = error(box)
    assert isinstance(e, WriteFailed)
    assert e.status == 500
    assert file_bytes(log) == log_bytes(0, [])
    box = outcome(log.put([b"b"]))
    runner.drain()
    assert value(box) == 1


def test_an_unreadable_log_refuses_puts_and_gets_and_is_never_written(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    path = os.path.join(folder, "bad")
    with open(path, "wb") as f:
        f.write(b"KAF_DB|v2|0\nKAF_MSG|1|1\na")
    f = LogFile(folder, "bad")
    f.open()
    log = Log(f, clock, runner)
    assert isinstance(error(outcome(log.put([b"x"]))), UnreadableLog)
    assert isinstance(error(outcome(maybeDeferred(log.get, 1, 10, MIB))), UnreadableLog)
    with open(path, "rb") as fh:
        assert fh.read() == b"KAF_DB|v2|0\nKAF_MSG|1|1\na"
    assert log.errs == 2
    # Unchanged, it is not re-read (nor reported again) on each request.
    assert runner.calls == []


def test_an_unreadable_log_is_served_once_a_person_fixes_its_header(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    path = os.path.join(folder, "bad")
    with open(path, "wb") as f:
        f.write(b"KAF_DB|v2|0\nKAF_MSG|1|1\na")
    f = LogFile(folder, "bad")
    f.open()
    log = Log(f, clock, runner)
    with open(path, "r+b") as fh:
        fh.write(b"KAF_DB|v1|0")
    box = outcome(log.get(1, 10, MIB))
    runner.drain()
    assert value(box).slice.messages() == [b"a"]
    put = outcome(log.put([b"b"]))
    runner.drain()
    assert value(put) == 2


# -- reads ------------------------------------------------------------


def test_get_returns_the_messages_from_a_number_and_the_last(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1", b"m2", b"m3", b"m4", b"m5"])
    reply = value(outcome(log.get(2, 1000, MIB)))
    assert list(reply.slice.nums) == [2, 3, 4, 5]
    assert reply.slice.messages() == [b"m2", b"m3", b"m4", b"m5"]
    assert reply.slice.kaf_records() == b"".join(
        record(n, b"m%d" % n) for n in range(2, 6))
    assert reply.last == 5
    assert reply.exists


def test_get_stops_at_limit(folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1", b"m2", b"m3", b"m4", b"m5"])
    reply = value(outcome(log.get(1, 2, MIB)))
    assert list(reply.slice.nums) == [1, 2]
    assert reply.last == 5


def test_get_holds_at_least_one_message_however_large(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a" * 100, b"b" * 100])
    reply = value(outcome(log.get(1, 1000, 10)))
    assert reply.slice.messages() == [b"a" * 100]


def test_get_adds_no_message_once_the_reply_reaches_max_bytes(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a" * 100, b"b" * 100, b"c" * 100])
    # The first two records reach 200 bytes of data and more: no third.
    reply = value(outcome(log.get(1, 1000, 200)))
    assert list(reply.slice.nums) == [1, 2]


def test_get_past_the_last_message_is_empty_with_the_last(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1", b"m2"])
    reply = value(outcome(log.get(3, 1000, MIB)))
    assert len(reply.slice) == 0
    assert reply.last == 2


def test_get_before_the_first_message_starts_at_the_first_there_is(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m%d" % i for i in range(1, 11)])
    box = outcome(log.archive(4))
    runner.drain()
    value(box)
    reply = value(outcome(log.get(1, 1000, MIB)))
    assert list(reply.slice.nums) == list(range(5, 11))
    assert reply.last == 10


def test_a_large_read_runs_in_the_blocking_runner(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    big = b"q" * (BLOCKING_BYTES + 1)
    fill(log, runner, [big])
    box = outcome(log.get(1, 1000, 2 * MIB))
    assert box == []
    assert runner.waiting_for() == ["read"]
    runner.release()
    assert value(box).slice.messages() == [big]


def test_a_put_after_another_program_appended_continues_its_numbering(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1"])
    with open(log.file.path, "ab") as f:
        f.write(record(2, b"by hand"))
    box = outcome(log.put([b"m3"]))
    runner.drain()
    assert value(box) == 3
    assert file_bytes(log) == log_bytes(0, [b"m1", b"by hand", b"m3"])


def test_a_deleted_live_log_is_recreated_by_the_next_put_continuing_numbering(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1", b"m2"])
    os.unlink(log.file.path)
    box = outcome(log.put([b"m3"]))
    runner.drain()
    assert value(box) == 3
    assert file_bytes(log) == log_bytes(2, [b"m3"])


# -- long poll ------------------------------------------------------------


def test_wait_fires_when_a_put_arrives_and_cancels_its_timer(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    waiter = outcome(log.wait(1, 30))
    assert waiter == []
    assert log.waiting == 1

    outcome(log.put([b"hello"]))
    # The message is not there to read until it is synced.
    assert waiter == []
    runner.drain()
    assert waiter == [None]
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []
    assert value(outcome(log.get(1, 1000, MIB))).slice.messages() == [b"hello"]


def test_wait_fires_empty_after_its_timeout(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    waiter = outcome(log.wait(1, 30))
    clock.advance(29.9)
    assert waiter == []
    clock.advance(0.1)
    assert waiter == [None]
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []
    assert len(value(outcome(log.get(1, 1000, MIB))).slice) == 0


def test_cancelling_a_wait_removes_the_waiter_and_its_timer(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    d = log.wait(1, 30)
    waiter = outcome(d)
    assert log.waiting == 1
    assert len(clock.getDelayedCalls()) == 1
    d.cancel()
    assert waiter != []
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []
    # A later put finds nobody to wake and works.
    box = outcome(log.put([b"x"]))
    runner.drain()
    assert value(box) == 1


def test_wait_fires_at_once_when_a_message_is_already_there(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a", b"b"])
    assert outcome(log.wait(2, 30)) == [None]
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []


def test_one_put_wakes_a_thousand_waiters(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    waiters = [outcome(log.wait(1, 60)) for _ in range(1000)]
    assert log.waiting == 1000
    fill(log, runner, [b"a"])
    assert all(w == [None] for w in waiters)
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []


# -- close ------------------------------------------------------------


def test_close_answers_waiters(folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    waiter = outcome(log.wait(1, 60))
    closed = outcome(log.close())
    assert waiter == [None]
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []
    assert closed == [None]


def test_close_finishes_pending_writes_before_closing_the_file(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    second = outcome(log.put([b"second"]))
    closed = outcome(log.close())
    assert closed == []
    runner.drain()
    assert value(first) == 1
    assert value(second) == 2
    assert closed == [None]
    assert runner.calls.count("sync") == 2
    assert file_bytes(log) == log_bytes(0, [b"first", b"second"])
    assert log.file.fd is None


def test_put_after_close_is_refused(folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    outcome(log.close())
    assert isinstance(error(outcome(maybeDeferred(log.put, [b"late"]))), ShuttingDown)
    assert file_bytes(log) == log_bytes(0, [])


def test_wait_after_close_answers_at_once(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    outcome(log.close())
    assert outcome(log.wait(1, 60)) == [None]
    assert clock.getDelayedCalls() == []


# -- archive ------------------------------------------------------------


def test_puts_issued_during_an_archive_are_numbered_after_it(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    old = [b"m%d" % i for i in range(1, 11)]
    fill(log, runner, old)
    before = file_bytes(log)

    archived = outcome(log.archive(4))
    assert runner.waiting_for() == ["archive"]
    p = outcome(log.put([b"m11"]))
    q = outcome(log.put([b"m12", b"m13"]))
    # The puts wait for the archive: the live file is not touched yet.
    assert p == [] and q == []
    assert file_bytes(log) == before

    runner.drain()
    name, upto, kept = value(archived)
    assert (name, upto, kept) == ("--t--1970-01-01T00_00_00Z", 4, 6)
    assert (value(p), value(q)) == (11, 13)
    with open(os.path.join(folder, name), "rb") as f:
        assert f.read() == before
    assert file_bytes(log) == log_bytes(4, old[4:] + [b"m11", b"m12", b"m13"])
    reply = value(outcome(log.get(1, 1000, MIB)))
    assert list(reply.slice.nums) == list(range(5, 14))
    assert reply.last == 13


def test_an_archive_waits_for_a_write_in_progress(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    fill(log, runner, [b"m1", b"m2"])
    put = outcome(log.put([b"m3"]))
    archived = outcome(log.archive(10))
    assert runner.waiting_for() == ["sync"]
    runner.release()
    assert value(put) == 3
    assert runner.waiting_for() == ["archive"]
    runner.release()
    name, upto, kept = value(archived)
    assert (upto, kept) == (3, 0)
    with open(os.path.join(folder, name), "rb") as f:
        assert f.read() == log_bytes(0, [b"m1", b"m2", b"m3"])
    assert file_bytes(log) == b"KAF_DB|v1|3"
    # Numbering continues after an archive that emptied the log.
    box = outcome(log.put([b"m4"]))
    runner.drain()
    assert value(box) == 4
    assert log.last == 4


def test_archive_of_nothing_changes_nothing(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"m1", b"m2"])
    first = outcome(log.archive(1))
    runner.drain()
    assert value(first)[1:] == (1, 1)
    before = sorted(os.listdir(folder))
    again = outcome(log.archive(1))
    runner.drain()
    assert value(again) == (None, 1, 1)
    assert sorted(os.listdir(folder)) == before


# -- counters ------------------------------------------------------------


def test_counters_count_gets_puts_and_errors_and_restart(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    fill(log, runner, [b"a", b"b", b"c"])
    value(outcome(log.get(1, 1000, MIB)))
    value(outcome(log.get(4, 1000, MIB)))
    error(outcome(log.put([b"d"], expect=0)))
    assert (log.gets, log.puts, log.errs) == (2, 3, 1)
    assert log.reset_counters() == (2, 3, 1)
    assert (log.gets, log.puts, log.errs) == (0, 0, 0)


def test_every_put_of_a_failed_write_counts_as_an_error(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    first = outcome(log.put([b"first"]))
    group = [outcome(log.put([b"two"])), outcome(log.put([b"three"]))]
    runner.release()
    value(first)
    with failing("fsync", errno.ENOSPC):
        runner.release()
    for box in group:
        error(box)
    assert (log.puts, log.errs) == (1, 2)


def test_a_put_wakes_only_the_waiters_it_gives_a_message(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock, fsync=False)
    near = outcome(log.wait(1, 30))
    far = outcome(log.wait(3, 30))
    fill(log, runner, [b"a"])
    assert near == [None]
    assert far == []
    assert log.waiting == 1
    fill(log, runner, [b"b", b"c"])
    assert far == [None]
    assert log.waiting == 0
    assert clock.getDelayedCalls() == []


def test_a_cancelled_wait_fails_with_cancelled_and_is_not_answered(
        folder: str, runner: HeldRunner, clock: Clock) -> None:
    log = make_log(folder, runner, clock)
    d = log.wait(1, 30)
    box = outcome(d)
    d.cancel()
    assert isinstance(error(box), CancelledError)
