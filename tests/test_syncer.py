"""
fsyncs in helper processes (kaf/engines/file/syncer.py): real processes, a real reactor.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
from typing import Any, Iterator, List

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor

from kaf.errors import OutOfDescriptors, WriteFailed
from kaf.engines.file.log import Log
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.syncer import SyncProcess, SyncProcesses

from conftest import sync_runner


@pytest.fixture
def processes() -> Iterator[SyncProcesses]:
    p = SyncProcesses(reactor, sync_runner, size=2)
    yield p
    p.stop()


@pytest.fixture
def folder(tmp_path: Any) -> str:
    return str(tmp_path)


def pids(processes: SyncProcesses) -> List[int]:
    return [child.process.pid for child in processes._children]


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def file_bytes(f: LogFile) -> bytes:
    with open(f.path, "rb") as r:
        return r.read()


def failing_sync(processes: SyncProcesses) -> Any:
    """A syncer whose process is sent a pipe, which fsync refuses (EINVAL)."""
    def sync(f: LogFile, undo_to: int) -> Any:
        r, w = os.pipe()
        real, f.fd = f.fd, r
        try:
            return processes(f, undo_to)
        finally:
            f.fd = real
            os.close(r)
            os.close(w)
    return sync


@pytest_twisted.ensureDeferred
async def test_a_sync_of_a_log_file_succeeds_in_another_process(
        processes: SyncProcesses, folder: str) -> None:
    f = LogFile.create(folder, "t")
    at = f.append(b"\nKAF_MSG|1|1\na")
    await processes(f, at)
    [pid] = pids(processes)
    assert pid != os.getpid() and alive(pid)
    f.close()


@pytest_twisted.ensureDeferred
async def test_puts_through_the_processes_are_answered_in_order(
        processes: SyncProcesses, folder: str) -> None:
    log = Log(LogFile.create(folder, "t"), reactor, sync_runner, syncing=processes)
    nums = [log.put([b"m%d" % (i,)]) for i in range(50)]
    assert [await d for d in nums] == list(range(1, 51))
    assert log.file.last_num == 50
    await log.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_fsync_fails_the_put_and_cuts_the_file_back(
        processes: SyncProcesses, folder: str) -> None:
    log = Log(LogFile.create(folder, "t"), reactor, sync_runner, syncing=processes)
    assert await log.put([b"kept"]) == 1
    before = file_bytes(log.file)
    log._syncing = failing_sync(processes)
    with pytest.raises(WriteFailed, match="Invalid argument"):
        await log.put([b"lost"])
    assert file_bytes(log.file) == before
    log._syncing = processes
    assert await log.put([b"next"]) == 2
    await log.close()


@pytest_twisted.ensureDeferred
async def test_a_dead_process_fails_its_pending_syncs_and_the_next_sync_starts_another(
        processes: SyncProcesses, folder: str) -> None:
    log = Log(LogFile.create(folder, "t"), reactor, sync_runner, syncing=processes)
    assert await log.put([b"kept"]) == 1
    before = file_bytes(log.file)
    [pid] = pids(processes)
    os.kill(pid, signal.SIGSTOP)
    put = log.put([b"lost"])
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WriteFailed, match="the fsync process"):
        await put
    assert file_bytes(log.file) == before
    assert await log.put([b"next"]) == 2
    [new] = pids(processes)
    assert new != pid and not alive(pid)
    await log.close()


@pytest_twisted.ensureDeferred
async def test_a_process_that_cannot_start_fails_the_put_and_cuts_the_file_back(
        processes: SyncProcesses, folder: str, monkeypatch: Any) -> None:
    log = Log(LogFile.create(folder, "t"), reactor, sync_runner, syncing=processes)
    before = file_bytes(log.file)

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.raises(OutOfDescriptors, match="no file descriptor left"):
        await log.put([b"lost"])
    assert file_bytes(log.file) == before
    monkeypatch.undo()
    assert await log.put([b"next"]) == 1
    await log.close()


@pytest_twisted.ensureDeferred
async def test_a_stuck_fsync_of_one_log_does_not_hold_up_another(
        processes: SyncProcesses, folder: str) -> None:
    one = LogFile.create(folder, "one")
    two = LogFile.create(folder, "two")
    await processes(one, one.size)
    [pid] = pids(processes)
    os.kill(pid, signal.SIGSTOP)
    stuck = processes(one, one.size)
    await processes(two, two.size)
    assert not stuck.called
    os.kill(pid, signal.SIGCONT)
    await stuck
    one.close()
    two.close()


@pytest_twisted.ensureDeferred
async def test_a_descriptor_that_is_not_open_fails_only_its_sync(
        processes: SyncProcesses, folder: str) -> None:
    f = LogFile.create(folder, "t")
    await processes(f, f.size)
    [child] = processes._children
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as e:
        await child.sync(r)
    assert e.value.errno == errno.EBADF
    await processes(f, f.size)
    assert processes._children == [child]
    f.close()


@pytest_twisted.ensureDeferred
async def test_after_stop_no_process_remains(folder: str) -> None:
    processes = SyncProcesses(reactor, sync_runner, size=2)
    one = LogFile.create(folder, "one")
    two = LogFile.create(folder, "two")
    await processes(one, one.size)
    [first] = pids(processes)
    # A busy process makes the next sync start a second one.
    os.kill(first, signal.SIGSTOP)
    stuck = processes(one, one.size)
    await processes(two, two.size)
    os.kill(first, signal.SIGCONT)
    await stuck
    started = pids(processes)
    assert len(started) == 2
    processes.stop()
    assert pids(processes) == []
    assert not any(alive(pid) for pid in started)
    one.close()
    two.close()


def test_a_process_ends_when_the_server_end_of_its_socket_closes() -> None:
    # As when the server is killed: the kernel closes its end.
    child = SyncProcess(reactor, lambda _: None)
    reactor.removeReader(child)  # type: ignore[call-arg, misc]
    assert child._socket is not None
    child._socket.close()
    assert child.process.wait(10) == 0
