"""
One log's service: serialized writes with group commit, reads, archives,
long-poll waiters and counters (SPEC 3, 5, 7).  Twisted, no HTTP.

Everything that changes the log's file runs under the log's DeferredLock;
the file object itself is only ever swapped on the reactor thread, so a
read on the reactor thread always sees one consistent file and index.

Group commit is pipelined: a batch's puts are answered only after the
lock is released, so the next batch (the puts that arrived during the
sync) is already written and its fsync under way while the reactor
answers the previous one.  A served log (gathering) answers a synced
batch at the start of the next reactor turn, beside the write of the
puts gathered in the turn the sync ended in.
"""
from __future__ import annotations

import heapq
import os
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import (Deferred, DeferredList, DeferredLock, fail, maybeDeferred,
                                    succeed)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kaf import _format
from kaf.errors import (KafError, DedupeFull, ExpectMismatch, OutOfDescriptors, ShuttingDown,
                        UnreadableLog, WriteFailed)
from kaf.engine import EMPTY, ILog, Reply, Summary
from kaf.engines.file.logfile import NO_DESCRIPTOR_LEFT, NO_DESCRIPTORS, LogFile, Slice
from kaf.engines.file.msgids import SIDE, Dedupe, Duplicate, MsgIds, line as id_line
from kaf.engines.file.openfiles import OpenFiles

#: Runs a blocking callable off the reactor thread: f, *args -> Deferred.
Runner = Callable[..., "Deferred[Any]"]

#: Makes a log file's bytes durable off the reactor thread: (file, undo_to)
#: -> Deferred that fails as LogFile.sync does, the file cut back.
Syncer = Callable[[LogFile, int], "Deferred[None]"]

#: Reads and writes larger than this leave the reactor thread.
BLOCKING_BYTES = 1 << 19

#: A reply larger than this may be read a piece at a time (L{Log.get}).
#: Smaller ones are one read and one write: a default batch of 1,000
#: messages of 100 B (120 KB) is, and a client that does not read it
#: holds at most this much (the target is 256 KiB).
PIECES_BYTES = 192 << 10

#: The wait heap of a log that no one waits on (never pushed onto).
_NO_KEYS: List[int] = []

#: A log whose side file of message ids has not been looked for yet.
UNREAD: Any = object()
#: Dedupe settings of a log made without any: the default window.
_DEFAULT_DEDUPE = Dedupe()

#: A put waiting to be written: messages, expect, first, its answer, its id.
Put = Tuple[List[bytes], Optional[int], Optional[int], "Deferred[int]", Optional[str]]

#: A batch's puts, each with the number of its last message and its count.
Answers = List[Tuple["Deferred[int]", int, int]]


def syncing_by(runner: Runner) -> Syncer:
    """A syncer that runs L{LogFile.sync} in C{runner}."""
    def sync(f: LogFile, undo_to: int) -> "Deferred[None]":
        return runner(f.sync, undo_to)
    return sync


@implementer(ILog)
class Log:
    """The service of one log."""

    log = Logger()
    # A node may serve a hundred thousand logs: no instance dictionary.
    __slots__ = ("file", "name", "_reactor", "_blocking", "_syncing", "_fsync", "_lock",
                 "_pending", "_flush_scheduled", "_gather", "_waiters", "_wait_keys",
                 "_unanswered", "_answer_call", "_closing", "_files", "gets", "puts", "errs",
                 "_dedupe", "_ids", "_watch", "archived",
                 "_counted_before", "served", "bytes_in", "bytes_out", "__weakref__")

    def __init__(self, file: LogFile, reactor: IReactorTime, blocking: Runner,
                 fsync: bool = True, gather: bool = False,
                 syncing: Optional[Syncer] = None, files: Optional[OpenFiles] = None,
                 dedupe: Optional[Dedupe] = None,
                 watch: Optional[Callable[["Log"], None]] = None) -> None:
        """
        C{blocking} runs blocking disk work off the reactor thread;
        C{syncing} does the fsyncs of group commit (by default, LogFile.sync
        run by C{blocking}); C{files} bounds the logs with an open file (by
        default, no bound); C{dedupe} the window and cap of message ids
        (by default a 2-minute window); C{watch} is told of each write (the
        retention rules).  The file is read on first use.
        """
        self.file = file
        self._files = OpenFiles(1 << 62) if files is None else files
        self.name = file.name
        self._reactor = reactor
        self._blocking = blocking
        self._syncing = syncing_by(blocking) if syncing is None else syncing
        self._fsync = fsync
        # Made on first use and dropped once the file is closed and nothing
        # waits for it, like the lists below: most logs of a large node are
        # idle, and each empty one would cost a hundred bytes a log.
        self._lock: Optional[DeferredLock] = None
        self._pending: Optional[List[Put]] = None
        self._flush_scheduled = False
        # Gathering waits for the end of the reactor's turn before a write,
        # so that all the puts read in one turn go out in one write (and
        # one sync): with many clients, most of the cost of a put is the
        # write's, not the request's.
        self._gather = gather
        # Long-poll waiters by the message number they wait for, and those
        # numbers in a heap: a put wakes only the waiters it satisfies.
        self._waiters: Optional[Dict[int, Set["Deferred[None]"]]] = None
        self._wait_keys: List[int] = _NO_KEYS
        # Synced batches to answer at the start of the next turn.
        self._unanswered: Optional[List[Answers]] = None
        self._answer_call: Optional[IDelayedCall] = None
        self._closing = False
        self._dedupe = _DEFAULT_DEDUPE if dedupe is None else dedupe
        # The message ids of the window: UNREAD until the first use reads
        # the side file, None for a log that has none (most logs).
        self._ids: Optional[MsgIds] = UNREAD
        self._watch = watch
        #: Archives made since the stats last counted them.
        self.archived = 0
        self.gets = 0
        self.puts = 0
        self.errs = 0
        # Since start-up, for /metrics: the counts of the intervals closed
        # by reset_counters, messages and record bytes read, record bytes
        # written.
        self._counted_before = (0, 0, 0)
        self.served = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def clock(self) -> IReactorTime:
        """The clock the log's timeouts run on."""
        return self._reactor

    @property
    def closing(self) -> bool:
        """Is the log closing (the server stopping)?"""
        return self._closing

    @property
    def last(self) -> int:
        """The log's last number (SPEC 3.1)."""
        return self.file.last_num

    @property
    def generation(self) -> object:
        """Its file: an archive puts a new one in its place."""
        return self.file

    def summary(self) -> Summary:
        f = self.file
        return Summary(f.first_num, f.last_num, f.count, f.size, f.error)

    def reset_counters(self) -> Tuple[int, int, int]:
        """The gets, puts and errors of the interval ending now; the next starts at 0."""
        counts = (self.gets, self.puts, self.errs)
        gets, puts, errs = self._counted_before
        self._counted_before = (gets + counts[0], puts + counts[1], errs + counts[2])
        self.gets = self.puts = self.errs = 0
        return counts

    def totals(self) -> Tuple[int, int, int]:
        """The gets, puts (messages written) and errors since start-up."""
        gets, puts, errs = self._counted_before
        return gets + self.gets, puts + self.puts, errs + self.errs

    def _report(self, problems: List[str]) -> None:
        for p in problems:
            self.log.warn("log {name}: {problem}", name=self.name, problem=p)

    # -- writes ------------------------------------------------------------

    def put(self, messages: List[bytes], expect: Optional[int] = None,
            first: Optional[int] = None, msg_id: Optional[str] = None) -> "Deferred[int]":
        """
        Append C{messages} (numbered consecutively, all or none); fire with
        the number of the last.  Puts that arrive while a write and sync are
        under way are written and synced together in the next step.

        C{first}: number the messages from C{first}, which must be the next
        number, or any later one while the log holds no message (its file
        then continues from C{first - 1}, as after an archive): a copy of
        an archived log keeps its numbers.

        C{msg_id} (C{Kaf-Msg-Id}): a put whose id this log wrote within the
        dedupe window writes nothing and fires with a L{Duplicate} of the
        first one's reply; one that comes while the first is being written
        is answered once that is durable (puts are written in order).
        """
        if self._closing:
            self.errs += 1
            raise ShuttingDown("put: the server is shutting down")
        d: "Deferred[int]" = Deferred()
        if self._pending is None:
            self._pending = [(messages, expect, first, d, msg_id)]
        else:
            self._pending.append((messages, expect, first, d, msg_id))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._gather:
                self._reactor.callLater(0, self._start_flush)
            else:
                self._start_flush()
        return d

    def _start_flush(self) -> None:
        answer = self._answer_next_turn if self._gather and self._fsync else self._answer
        lock = self._lock
        if lock is None or not lock.locked:
            # The lock is free (most often): taken at once, as lock.run
            # would, without the Deferreds and calls of run itself.
            if lock is None:
                lock = self._lock = DeferredLock()
            lock.acquire()
            try:
                d = self._flush()
            except BaseException:
                d = fail()
            d.addBoth(self._release, lock)
        else:
            d = self._serially(self._flush)
        d.addCallback(answer).addErrback(self._unexpected)

    def _release(self, result: Any, lock: DeferredLock) -> Any:
        lock.release()
        return self._unlocked(result, lock)

    def _serially(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        """Run C{f} under the log's lock: after every change of the file begun before."""
        lock = self._lock
        if lock is None:
            lock = self._lock = DeferredLock()
        return lock.run(f, *args).addBoth(self._unlocked, lock)

    def _unlocked(self, result: Any, lock: DeferredLock) -> Any:
        # An evicted log keeps no lock while nothing waits for it.
        if (self._lock is lock and not lock.locked and not lock.waiting
                and self.file.fd is None):
            self._lock = None
        return result

    def _answer_next_turn(self, answers: Answers) -> None:
        """
        Answer a synced batch at the start of the reactor's next turn, with
        the puts gathered in this one, instead of inside the callbacks of
        the fsync helper's reply (the lock's release, the next batch's write
        and sync request).  Measured on PyPy (B1, 64 connections, fresh
        servers): the rate with fsyncs rose from 0.67 to 0.86 of the rate
        without, and the server's CPU a put fell from about 30 to 24 us,
        while the reactor turns a put hardly changed (11 -> 12 puts a
        turn): the answering itself ran slower where it was.  A put is
        still answered only after its fsync.
        """
        if not answers:
            return
        if self._unanswered is None:
            self._unanswered = [answers]
        else:
            self._unanswered.append(answers)
        if self._answer_call is None:
            self._answer_call = self._reactor.callLater(0, self._answer_unanswered)

    def _answer_unanswered(self) -> None:
        if self._answer_call is not None and self._answer_call.active():
            self._answer_call.cancel()
        self._answer_call = None
        batches, self._unanswered = self._unanswered, None
        for answers in batches or ():
            self._answer(answers)

    def _unexpected(self, failure: Any) -> None:
        self.log.failure("log {name}: unexpected error", failure, name=self.name)

    def _flush(self) -> "Deferred[Answers]":
        """Write and sync the pending puts; the answers are given after the lock."""
        self._flush_scheduled = False
        batch, self._pending = self._pending, None
        if not batch:
            return succeed([])
        f = self.file
        if self._ids is not UNREAD and f.fd is not None and not f.changed_on_disk():
            # Open, its ids read, unchanged on disk: what _attach would
            # find, here without its Deferreds.
            self._files.used(self)
            try:
                written = self._write(batch)
            except Exception:
                written = fail()
            return written.addErrback(self._fail_all, batch)
        d: "Deferred[Any]" = self._attach()
        d.addCallback(lambda _: self._write(batch))
        d.addErrback(self._fail_all, batch)
        return d

    def _answer(self, answers: Answers) -> None:
        """Answer the puts of a durable batch (outside the lock: see above)."""
        for done, num, n in answers:
            self.puts += n
            done.callback(num)
        if answers:
            self._wake()
            if self._watch is not None:
                self._watch(self)

    def _write(self, batch: List[Put]
               ) -> "Deferred[Answers]":
        f = self.file
        if f.error is not None:
            raise UnreadableLog("put: log %r cannot be read: %s" % (self.name, f.error))
        last = f.last_num
        chunks: List[bytes] = []
        lengths: List[int] = []
        accepted: Answers = []
        restart: Optional[int] = None
        # Puts with a message id: the ids this write gives (id -> position
        # in accepted), the repeats of ids written before (answered as
        # they were) and the repeats of ids of this write (answered as
        # their first is).
        ids: Optional[MsgIds] = None
        new_ids: Dict[str, int] = {}
        repeats: Answers = []
        followers: List[Tuple["Deferred[int]", int]] = []
        now = 0.0
        for messages, expect, first_num, done, msg_id in batch:
            if msg_id is not None and self._dedupe.on:
                if ids is None:
                    now = self._reactor.seconds()
                    ids = self._msg_ids(now)
                original = ids.original(msg_id, now)
                if original is not None:
                    repeats.append((done, Duplicate(*original), 0))
                    continue
                if msg_id in new_ids:
                    followers.append((done, new_ids[msg_id]))
                    continue
                if not self._room_for_id(now, len(new_ids)):
                    self.errs += 1
                    done.errback(DedupeFull(
                        "put: the dedupe window holds %d message ids, its limit; nothing "
                        "was written, try again (or raise --dedupe-max-ids)"
                        % (self._dedupe.count,)))
                    continue
            else:
                msg_id = None
            if expect is not None and expect != last:
                self.errs += 1
                done.errback(ExpectMismatch(
                    "put: expected last message %d, but the log's last is %d" % (expect, last),
                    last))
                continue
            if first_num is not None and first_num != last + 1:
                if first_num <= last or accepted or not f.restartable():
                    self.errs += 1
                    done.errback(ExpectMismatch(
                        "put: cannot number from %d: the log's last is %d%s" % (
                            first_num, last, "" if first_num <= last
                            else " and it holds messages"), last))
                    continue
                restart = last = first_num - 1
            records, record_lengths = _format.records_and_lengths(
                range(last + 1, last + 1 + len(messages)), messages)
            chunks.append(records)
            lengths.extend(record_lengths)
            last += len(messages)
            if msg_id is not None:
                new_ids[msg_id] = len(accepted)
            accepted.append((done, last, len(messages)))
        if not accepted:
            return succeed(repeats)
        if new_ids:
            assert ids is not None
            return self._write_with_ids(f, b"".join(chunks), lengths, accepted, restart, ids,
                                        new_ids, repeats, followers, now)
        data = b"".join(chunks)
        first = (f.last_num if restart is None else restart) + 1
        before = (f.start, f.last_num, f.missing)
        if restart is not None:
            # The file holds no message: the append writes a new one that
            # continues from restart.
            f.restart(restart)

        def written(at: int) -> "Deferred[int]":
            # Counted once a first write has created and opened the file.
            self._files.used(self)
            if self._fsync:
                return self._syncing(f, at).addCallback(lambda _: at)
            return succeed(at)

        def durable(at: int) -> Answers:
            # The file cannot have been swapped: swaps take the same lock.
            f.published(first, at, lengths=lengths)
            self.bytes_in += len(data)
            return accepted + repeats

        def failed(failure: Any) -> Answers:
            if restart is not None and f.missing:
                # No new file was written: the log continues as it did.
                f.start, f.last_num, f.missing = before
            error = self._write_error(failure)
            for done, _, n in accepted:
                self.errs += 1
                done.errback(error)
            return repeats

        # A first write creates the file (write, fsync, rename): off-thread.
        if len(data) > BLOCKING_BYTES or f.fd is None or f.missing:
            return self._blocking(f.append, data).addCallback(written).addCallbacks(
                durable, failed)
        # A small append to the open file, here: the same steps without
        # maybeDeferred's Deferred (most batches are this one).
        try:
            w = written(f.append(data))
        except Exception:
            return succeed(failed(Failure()))
        return w.addCallbacks(durable, failed)

    # -- message ids -----------------------------------------------------------

    def _msg_ids(self, now: float) -> MsgIds:
        """The log's ids, made on its first put with one; the expired ones dropped."""
        ids = self._ids
        if ids is None:
            ids = self._ids = MsgIds(self.file.folder, self.name, self._dedupe)
        ids.expire(now)
        return ids

    def _room_for_id(self, now: float, adding: int) -> bool:
        """Is there room for one more id in the store's cap (expiring all logs' if need be)?"""
        dedupe = self._dedupe
        if dedupe.count + adding < dedupe.max_ids:
            return True
        for log in list(dedupe.holders):
            ids = log._ids
            if ids is not None and ids is not UNREAD:
                ids.expire(now)
                if not len(ids):
                    dedupe.holders.discard(log)
        return dedupe.count + adding < dedupe.max_ids

    def _write_with_ids(self, f: LogFile, data: bytes, lengths: List[int], accepted: Answers,
                        restart: Optional[int], ids: MsgIds, new_ids: Dict[str, int],
                        repeats: Answers, followers: List[Tuple["Deferred[int]", int]],
                        now: float) -> "Deferred[Answers]":
        """
        The write of puts with new message ids: the records to the log file,
        then the ids' lines to its side file, both synced before anything is
        answered; when either fails, both are cut back (kaf.engines.file.msgids tells
        the crash ordering).  The side file is open only during the write,
        counted among the open files.
        """
        first = (f.last_num if restart is None else restart) + 1
        before = (f.start, f.last_num, f.missing)
        lines = b"".join([id_line(msg_id, accepted[i][1], accepted[i][2], now)
                          for msg_id, i in new_ids.items()])
        if restart is not None:
            f.restart(restart)
        log_at: List[int] = []

        def compact(_: object) -> Any:
            if ids.wants_compaction():
                return self._blocking(ids.rewrite, ids.snapshot(), len(ids))
            return None

        def append_log(_: object) -> "Deferred[int]":
            if len(data) > BLOCKING_BYTES or f.fd is None or f.missing:
                return self._blocking(f.append, data)
            return maybeDeferred(f.append, data)

        def append_ids(at: int) -> "Deferred[Any]":
            log_at.append(at)
            self._files.used(self)
            # Opening the side file may create it (and sync the folder).
            d = self._blocking(ids.append, lines)
            return d.addCallbacks(sync, undo_log)

        def sync(side_at: int) -> Any:
            if not self._fsync:
                return None
            syncs = [self._syncing(f, log_at[0]),
                     self._syncing(ids, side_at)]  # type: ignore[arg-type]
            return DeferredList(syncs, consumeErrors=True).addCallback(synced, side_at)

        def synced(results: List[Tuple[bool, Any]], side_at: int) -> Any:
            (log_ok, log_result), (ids_ok, ids_result) = results
            if log_ok and ids_ok:
                return None
            # What failed was cut back; the other is cut back too.
            if log_ok:
                return self._blocking(f.undo, log_at[0]).addCallback(lambda _: ids_result)
            if ids_ok:
                return self._blocking(ids.cut_back, side_at).addCallback(lambda _: log_result)
            return log_result

        def undo_log(failure: Any) -> Any:
            # The ids' append failed (and cut itself back): so is the log's.
            return self._blocking(f.undo, log_at[0]).addCallback(lambda _: failure)

        def durable(_: object) -> Answers:
            f.published(first, log_at[0], lengths=lengths)
            self.bytes_in += len(data)
            for msg_id, i in new_ids.items():
                _, num, n = accepted[i]
                ids.remember(msg_id, num, n, now)
            self._dedupe.holders.add(self)
            out = accepted + repeats
            for done, i in followers:
                _, num, n = accepted[i]
                out.append((done, Duplicate(num, n), 0))
            return out

        def failed(failure: Any) -> Answers:
            if restart is not None and f.missing:
                f.start, f.last_num, f.missing = before
            error = self._write_error(failure)
            for done, _, _ in accepted:
                self.errs += 1
                done.errback(error)
            for done, _ in followers:
                self.errs += 1
                done.errback(error)
            return repeats

        def closed(result: Any) -> Any:
            ids.close()
            self._files.opened(self)
            return result

        # The side file's descriptor counts against the bound of open files.
        self._files.opening()
        d: "Deferred[Any]" = succeed(None)
        d.addCallback(compact)
        d.addCallback(append_log)
        d.addCallback(append_ids)
        d.addBoth(closed)
        return d.addCallbacks(durable, failed)

    def _write_error(self, failure: Any) -> KafError:
        """The error a failed write is answered with; anything unforeseen is logged."""
        error = failure.value
        if isinstance(error, KafError):
            return error
        self.log.failure("log {name}: write failed", failure, name=self.name)
        return WriteFailed("put: write failed; nothing was written")

    def _fail_all(self, failure: Any, batch: List[Put]) -> Answers:
        error = self._write_error(failure)
        for _, _, _, done, _ in batch:
            if not done.called:
                self.errs += 1
                done.errback(error)
        return []

    # -- the open file --------------------------------------------------------

    def _attach(self) -> "Deferred[None]":
        """
        Under the lock: have the file read, open and up to date.  A log is
        read on its first use (repairs of SPEC 6 included), not at start-up;
        a file closed to make room is opened again, and re-read only if
        another program changed it meanwhile (rule 7).  The message ids of
        the window are read on first use too, before any write.
        """
        if self._ids is UNREAD:
            return self._attach_file().addCallback(self._read_ids)
        return self._attach_file()

    def _attach_file(self) -> "Deferred[None]":
        f = self.file
        if f.fd is not None or f.missing:
            self._files.used(self)
            return self._check_disk()
        if f.indexed and f.error is not None:
            return self._check_disk()
        self._files.opening()
        if not f.indexed:
            d = self._blocking(f.open, self._reactor.seconds())
            d.addCallback(self._opened, f)
        else:
            d = self._blocking(f.reattach)
        d.addBoth(self._counted)
        return d.addCallback(lambda _: self._check_disk())

    def _read_ids(self, _: object) -> "Deferred[None]":
        f = self.file
        if f.error is not None:
            # Never written while it cannot be read: looked for once it can.
            return succeed(None)
        self._ids = None
        # Most logs have no side file: one stat tells, and costs no thread.
        if not os.path.exists(os.path.join(f.folder, SIDE % (self.name,))):
            return succeed(None)

        def loaded(result: Tuple[Optional[MsgIds], List[str]]) -> None:
            ids, problems = result
            self._report(problems)
            self._ids = ids
            if ids is not None:
                self._dedupe.count += len(ids)
                self._dedupe.holders.add(self)

        def failed(failure: Any) -> Any:
            self._ids = UNREAD
            return failure

        d = self._blocking(MsgIds.load, f.folder, self.name, self._dedupe, f.last_num,
                           self._reactor.seconds())
        return d.addCallbacks(loaded, failed)

    def _counted(self, result: Any) -> Any:
        self._files.opened(self)
        return result

    def _opened(self, problems: List[str], f: LogFile) -> None:
        if f.error is None:
            index = f.index
            self.log.info("log {name}: messages {first}-{last}, {size} bytes",
                          name=self.name, first=index.nums[0] if len(index) else "none",
                          last=f.last_num, size=f.size)
        self._report(problems)

    def close_file(self) -> None:
        """Close the file to make room for another's (it opens again on next use)."""
        self._serially(self._close_file)

    def _close_file(self) -> None:
        # Used again since it was chosen: it stays open.
        if not self._files.holds(self):
            self.file.close()
            self.file.forget_index()

    @property
    def known(self) -> bool:
        """Are its numbers known without reading its file?"""
        return self.file.indexed or self.file.missing

    def described(self) -> "Deferred[None]":
        """Fire once the file has been read, so its numbers are known (SPEC 3.4)."""
        if self.file.indexed or self.file.missing:
            return succeed(None)
        return self._serially(self._attach)

    # -- live edits ------------------------------------------------------------

    def _check_disk(self) -> "Deferred[None]":
        """Re-read the file first if another program changed it (rule 7)."""
        f = self.file
        if not f.changed_on_disk():
            return succeed(None)

        def swap(result: Tuple[LogFile, List[str]]) -> None:
            new, problems = result
            self._report(problems)
            if self.file is f:
                self.file = new
                f.close()
            else:
                new.close()
            self._wake()

        return self._blocking(f.reloaded, self._reactor.seconds()).addCallback(swap)

    # -- reads ------------------------------------------------------------

    def get(self, from_num: int, limit: int, max_bytes: int,
            pieces: bool = False) -> "Deferred[Reply]":
        """
        The messages numbered C{from_num} and after (SPEC 3.2).  With
        C{pieces}, a reply over L{PIECES_BYTES} of canonical records comes
        without their bytes, to be read by its L{Reply.pieces} (which the
        caller closes): as a client's socket drains, not all at once.
        """
        self.gets += 1
        f = self.file
        if (f.fd is not None or f.missing) and not f.changed_on_disk():
            self._files.used(self)
            return self._read(from_num, limit, max_bytes, pieces)
        # The read starts under the lock, so no eviction or swap comes
        # between the file's opening and the read; a large read goes on
        # after it, on its own descriptor.
        return self._serially(self._attached_read, from_num, limit, max_bytes,
                              pieces).addCallback(lambda reading: reading[0])

    def _attached_read(self, from_num: int, limit: int, max_bytes: int, pieces: bool
                       ) -> "Deferred[List[Deferred[Reply]]]":
        return self._attach().addCallback(
            lambda _: [maybeDeferred(self._read, from_num, limit, max_bytes, pieces)])

    def _read(self, from_num: int, limit: int, max_bytes: int,
              pieces: bool = False) -> "Deferred[Reply]":
        f = self.file
        if f.error is not None:
            self.errs += 1
            raise UnreadableLog("get: log %r cannot be read: %s" % (self.name, f.error))
        i = f.position(from_num)
        n = f.plan(i, limit, max_bytes)
        last = f.last_num
        if n == 0:
            return succeed(Reply(EMPTY, last, True))
        index = f.index
        size = index.ends[i + n - 1] - index.starts[i]
        self.served += n
        self.bytes_out += size
        if pieces and size > PIECES_BYTES:
            found = f.pieces(i, n)
            if found is not None:
                return succeed(Reply(found[0], last, True, found[1]))
        if size <= BLOCKING_BYTES:
            return succeed(Reply(f.read(i, n), last, True))
        # A large read leaves the reactor thread on its own handle, so a
        # swap of the file meanwhile cannot pull the file from under it.
        assert f.fd is not None
        try:
            fd = os.dup(f.fd)
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                raise OutOfDescriptors("get: " + NO_DESCRIPTOR_LEFT)
            raise
        reader = LogFile(f.folder, f.name)
        reader.fd = fd
        reader.index = index

        def read() -> Slice:
            try:
                return reader.read(i, n)
            finally:
                reader.close()

        return self._blocking(read).addCallback(lambda s: Reply(s, last, True))

    def wait(self, from_num: int, timeout: Optional[float]) -> "Deferred[None]":
        """
        Fire when a message numbered C{from_num} or after exists, or after
        C{timeout} seconds (None: no timeout).  Cancelling it (a client that
        went away) leaves nothing behind.
        """
        if self._closing or self.file.last_num >= from_num:
            return succeed(None)
        call: List[IDelayedCall] = []

        def cancel(d: "Deferred[None]") -> None:
            self._forget(from_num, d)

        d: "Deferred[None]" = Deferred(cancel)
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = {}
            self._wait_keys = []
        bucket = waiters.get(from_num)
        if bucket is None:
            bucket = waiters[from_num] = set()
            heapq.heappush(self._wait_keys, from_num)
        bucket.add(d)

        def timeout_() -> None:
            self._forget(from_num, d)
            d.callback(None)

        if timeout is not None:
            call.append(self._reactor.callLater(timeout, timeout_))
            d.addBoth(self._cancel_timer, call)
        return d

    @staticmethod
    def _cancel_timer(result: Any, call: List[IDelayedCall]) -> Any:
        if call and call[0].active():
            call[0].cancel()
        return result

    def _forget(self, from_num: int, d: "Deferred[None]") -> None:
        waiters = self._waiters
        bucket = None if waiters is None else waiters.get(from_num)
        if waiters is not None and bucket is not None:
            bucket.discard(d)
            if not bucket:
                del waiters[from_num]
                if not waiters:
                    self._waiters, self._wait_keys = None, _NO_KEYS
                # Keys of emptied buckets stay in the heap until popped;
                # rebuild it before they could pile up.
                elif len(self._wait_keys) > 2 * len(waiters) + 64:
                    self._wait_keys = list(waiters)
                    heapq.heapify(self._wait_keys)

    def _wake(self, everyone: bool = False) -> None:
        """Answer the waiters that now have a message (all, at shutdown)."""
        waiters = self._waiters
        if waiters is None:
            return
        keys = self._wait_keys
        last = self.file.last_num
        while keys and (everyone or keys[0] <= last):
            bucket = waiters.pop(heapq.heappop(keys), None)
            for d in bucket or ():
                if not d.called:
                    d.callback(None)
        if not waiters and self._waiters is waiters:
            self._waiters, self._wait_keys = None, _NO_KEYS

    @property
    def busy(self) -> bool:
        """Are writes pending, under way, or synced and not yet answered?"""
        return (bool(self._pending) or (self._lock is not None and self._lock.locked)
                or bool(self._unanswered))

    @property
    def waiting(self) -> int:
        return sum(len(bucket) for bucket in (self._waiters or {}).values())

    # -- archive ------------------------------------------------------------

    def archive(self, upto: int) -> "Deferred[Tuple[Optional[str], int, int]]":
        """Move messages numbered <= C{upto} to an archive file (SPEC 3.3)."""
        return self._serially(self._archive, upto)

    def _archive(self, upto: int) -> "Deferred[Tuple[Optional[str], int, int]]":
        def run(_: None) -> "Deferred[Tuple[Optional[str], int, int, LogFile]]":
            f = self.file
            if f.error is not None:
                raise UnreadableLog("archive: log %r cannot be read: %s" % (self.name, f.error))
            return self._blocking(f.archive, upto, self._reactor.seconds())

        def swap(result: Tuple[Optional[str], int, int, LogFile]
                 ) -> Tuple[Optional[str], int, int]:
            name, used, kept, new = result
            if new is not self.file:
                old, self.file = self.file, new
                old.close()
                self.archived += 1
                self.log.info("log {name}: archived up to {upto} as {archive}, kept {kept}",
                              name=self.name, upto=used, archive=name, kept=kept)
            return name, used, kept

        return self._attach().addCallback(run).addCallback(swap)

    # -- shutdown ------------------------------------------------------------

    def close(self) -> "Deferred[None]":
        """Finish pending writes, answer waiters, close the file."""
        self._closing = True
        self._wake(everyone=True)

        def done(answers: Answers) -> None:
            # Synced puts still to be answered are answered now, in order.
            self._answer_unanswered()
            self._answer(answers)
            self.file.close()

        # Puts still gathering for the end of the turn are written first.
        return self._serially(self._flush).addCallback(done)
