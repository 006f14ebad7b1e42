"""
fsyncs in helper processes (SPEC 7): the syncing of group commit without
a thread in the server.  On PyPy a sync thread cost the reactor thread
GIL handoffs (futex calls) on every group commit; a process shares no
GIL with it.

Each process (kaf/engines/file/_syncer.py) gets the log file's descriptor over a UNIX
socket, fsyncs it (a duplicate descriptor flushes the same file) and
answers in order; the reactor reads the answers like any connection's.
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections import deque
from typing import Any, Callable, Deque, List, Optional

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from kaf.engines.file.log import Runner
from kaf.engines.file.logfile import LogFile

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_syncer.py")
#: The process allocates almost nothing: PyPy's default nursery, not the
#: large one advised for the server, keeps it small.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYPY_GC_NURSERY"}


class SyncProcesses:
    """
    A syncer for L{kaf.engines.file.log.Log}: C{(file, undo_to) -> Deferred} that fires
    once the file's bytes are on disk, or fails as L{LogFile.sync} does,
    with the file cut back to C{undo_to} (on C{blocking}: that fsyncs too).

    Up to C{size} processes, started as needed: a sync goes to an idle one,
    so a slow fsync of one log does not hold up the others.
    """

    def __init__(self, reactor: Any, blocking: Runner, size: int = 4) -> None:
        self._reactor = reactor
        self._blocking = blocking
        self._size = size
        self._children: List[SyncProcess] = []
        #: Helpers started, and those that ended while in use (each is
        #: replaced by a new one when next needed).
        self.started = 0
        self.lost = 0
        #: Called with each fsync's seconds, when set (see kaf.api.metrics).
        self.timed: Optional[Callable[[float], None]] = None

    @property
    def running(self) -> int:
        return len(self._children)

    def __call__(self, f: LogFile, undo_to: int) -> "Deferred[None]":
        assert f.fd is not None
        children = self._children
        child = min(children, key=SyncProcess.load) if children else None
        try:
            if child is None or child.load() and len(children) < self._size:
                child = self._start()
            d = child.sync(f.fd)
        except OSError as e:
            # No process to start (out of descriptors, say): the file must
            # still be cut back.
            d = fail(e)
        if self.timed is not None:
            d.addCallback(self._time, self._reactor.seconds())
        d.addErrback(self._failed, f, undo_to)
        return d

    def ping(self, fd: int) -> "Deferred[None]":
        """fsync C{fd} (a folder, say) in a helper: does a helper answer?"""
        children = self._children
        child = min(children, key=SyncProcess.load) if children else None
        try:
            if child is None:
                child = self._start()
            return child.sync(fd)
        except OSError as e:
            return fail(e)

    def _start(self) -> "SyncProcess":
        child = SyncProcess(self._reactor, self._forget)
        self._children.append(child)
        self.started += 1
        return child

    def _time(self, result: None, began: float) -> None:
        assert self.timed is not None
        self.timed(self._reactor.seconds() - began)
        return result

    def _failed(self, failure: Failure, f: LogFile, undo_to: int) -> "Deferred[None]":
        e = failure.value
        if not isinstance(e, OSError):
            return failure  # type: ignore[return-value]
        return self._blocking(f.sync_failed, undo_to, e)

    def _forget(self, child: "SyncProcess") -> None:
        if child in self._children:
            self._children.remove(child)
            self.lost += 1

    def stop(self) -> None:
        """End the processes (the store is closed: no sync is pending)."""
        children, self._children = self._children, []
        for child in children:
            child.stop()


class SyncProcess:
    """One fsync process, and its socket's end in the reactor (an IReadWriteDescriptor)."""

    def __init__(self, reactor: Any, ended: Callable[["SyncProcess"], None]) -> None:
        self._reactor = reactor
        self._ended = ended
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", CHILD, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=CHILD_ENV)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._socket: Optional[socket.socket] = ours
        self._fileno = ours.fileno()
        #: A Deferred for every sync asked and not yet answered, in order.
        self._pending: Deque["Deferred[None]"] = deque()
        #: Duplicates of descriptors to send once the socket has room.
        self._unsent: Deque[int] = deque()
        self._partial = b""
        reactor.addReader(self)

    def load(self) -> int:
        return len(self._pending)

    def sync(self, fd: int) -> "Deferred[None]":
        d: "Deferred[None]" = Deferred()
        if self._socket is None:
            d.errback(OSError(errno.EPIPE, "the fsync process has ended"))
            return d
        if not self._unsent:
            try:
                socket.send_fds(self._socket, [b"s"], [fd])
            except BlockingIOError:
                self._reactor.addWriter(self)
            except OSError as e:
                if e.errno == errno.EBADF:
                    # Not a descriptor: the socket itself is fine.
                    d.errback(e)
                    return d
                self._pending.append(d)
                self._lost("the fsync process's socket failed: %s" % (e.strerror,))
                return d
            else:
                self._pending.append(d)
                return d
        # The descriptor may be closed before there is room: send a copy.
        self._unsent.append(os.dup(fd))
        self._pending.append(d)
        return d

    # -- the reactor's side of the socket ----------------------------------

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "SyncProcess"

    def doWrite(self) -> None:
        while self._unsent and self._socket is not None:
            try:
                socket.send_fds(self._socket, [b"s"], [self._unsent[0]])
            except BlockingIOError:
                return
            except OSError as e:
                self._lost("the fsync process's socket failed: %s" % (e.strerror,))
                return
            os.close(self._unsent.popleft())
        self._reactor.removeWriter(self)

    def doRead(self) -> None:
        if self._socket is None:
            return
        try:
            data = self._socket.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost("the fsync process's socket failed: %s" % (e.strerror,))
            return
        if not data:
            self._lost("the fsync process has ended")
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._socket is None:
                return  # a callback ended the process: the rest have failed
            d = self._pending.popleft()
            answer = int(line)
            if answer == 0:
                d.callback(None)
            else:
                d.errback(OSError(answer, os.strerror(answer)))

    def connectionLost(self, reason: Failure) -> None:
        self._lost("the fsync process has ended")

    def _lost(self, why: str) -> None:
        """Fail every unanswered sync, and end the process."""
        if self._socket is None:
            return
        # Forgotten first: a failed sync's callbacks may ask for the next.
        self._ended(self)
        self._close(why)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _close(self, why: str) -> bool:
        if self._socket is None:
            return False
        self._reactor.removeReader(self)
        self._reactor.removeWriter(self)
        self._socket.close()
        self._socket = None
        while self._unsent:
            os.close(self._unsent.popleft())
        pending, self._pending = self._pending, deque()
        for d in pending:
            d.errback(OSError(errno.EPIPE, why))
        return True

    def stop(self, timeout: float = 10) -> None:
        """Close the socket: the process fsyncs what it was sent, and ends."""
        if self._close("the server is stopping"):
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
