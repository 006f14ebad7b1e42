"""
One log file on disk: its index, appends, reads, archives and repair
(SPEC sections 3.3, 4, 6 and 7).  Blocking I/O, no Twisted: the log's
service decides what runs on the reactor thread and what does not.
"""
from __future__ import annotations

import errno
import mmap
import os
import time
from bisect import bisect_left
from typing import List, NamedTuple, NoReturn, Optional, Sequence, Tuple

from zope.interface import implementer

from kaf import _format
from kaf._replies import JsonKinds
from kaf.engine import IPieces, Slice
from kaf.errors import OutOfDescriptors, StorageFull, UnreadableLog, WriteFailed

ARCHIVE_TMP = ".%s.archive-tmp"
NEW_TMP = ".%s.new"

#: The process (or the system) has no descriptor left.
NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
NO_DESCRIPTOR_LEFT = "no file descriptor left to open the log; nothing was done, try again"

#: A closed file this small forgets its index, and is read again on its
#: next use: an idle log of a node of a hundred thousand costs only its
#: numbers, and reading 64 KiB again costs less than opening the file.
REREAD_BYTES = 1 << 16


def utc_stamp(now: float) -> str:
    """The time format of archive and side-file names."""
    return time.strftime("%Y-%m-%dT%H_%M_%SZ", time.gmtime(now))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IPieces)
class Pieces:
    """
    The records of a reply, read from the log's file a piece at a time on
    a descriptor of their own: an archive or an eviction of the log's file
    meanwhile leaves them readable.  C{close} must be called.
    """

    __slots__ = ("name", "_fd", "_pos", "_end", "length")

    def __init__(self, name: str, fd: int, base: int, end: int) -> None:
        self.name = name
        self._fd: Optional[int] = fd
        self._pos = base
        self._end = end
        self.length = end - base

    @property
    def done(self) -> bool:
        return self._pos >= self._end

    def read(self, size: int) -> bytes:
        """The next C{size} bytes at most; UnreadableLog if the file shrank."""
        assert self._fd is not None
        n = min(size, self._end - self._pos)
        data = os.pread(self._fd, n, self._pos)
        if len(data) != n:
            raise UnreadableLog("log %r: the file is shorter than its index" % (self.name,))
        self._pos += n
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LogFile:
    """
    One log's file.  C{last_num} is the log's last number (SPEC 3.1): the
    number of its last message, or the number it continues from.
    """

    __slots__ = ("folder", "name", "fd", "_index", "start", "last_num", "size",
                 "error", "missing", "indexed", "_stat_key", "_count", "_first_num",
                 "_kinds")

    def __init__(self, folder: str, name: str) -> None:
        self.folder = folder
        self.name = name
        self.fd: Optional[int] = None
        self._kinds: Optional[JsonKinds] = None
        self.index = _format.Index()
        self.start = 0
        self.last_num = 0
        self.size = 0
        #: Why the file cannot be served (SPEC 6 rule 1), or None.
        self.error: Optional[str] = None
        #: The file was deleted by someone else; the next append re-creates it.
        self.missing = False
        #: The file has been read (open ran): its index and numbers are known.
        self.indexed = False
        # The file's identity, size and time when last read or written, as
        # one hash: a log keeps it for as long as the node runs.
        self._stat_key: Optional[int] = None
        # What /logs needs of a forgotten index.
        self._count = 0
        self._first_num: Optional[int] = None

    @property
    def path(self) -> str:
        return os.path.join(self.folder, self.name)

    @property
    def index(self) -> _format.Index:
        """Where each message lies; read again first if L{forget_index} dropped it."""
        index = self._index
        assert index is not None, "the index of a closed file is read again on open"
        return index

    @index.setter
    def index(self, index: _format.Index) -> None:
        self._index = index
        # Kinds are by position: another index's positions are other messages.
        self._drop_kinds()

    def _drop_kinds(self) -> None:
        # Given back to the store-wide cap now, not when collected (PyPy).
        if self._kinds is not None:
            self._kinds.release()
            self._kinds = None

    @property
    def json_kinds(self) -> JsonKinds:
        """
        Which of the messages json replies found to be JSON, by index
        position: kept while the file is open with this index (an archive or
        a re-read after an edit makes another LogFile, or another index).
        """
        kinds = self._kinds
        if kinds is None:
            kinds = self._kinds = JsonKinds()
        return kinds

    @property
    def count(self) -> int:
        """How many messages the file holds."""
        index = self._index
        return self._count if index is None else len(index)

    @property
    def first_num(self) -> Optional[int]:
        """The number of the file's first message, or None when it holds none."""
        index = self._index
        if index is None:
            return self._first_num
        return index.nums[0] if len(index) else None

    def forget_index(self) -> None:
        """
        Drop the index of a small closed file, keeping its numbers: the next
        L{reattach} reads the file again.
        """
        index = self._index
        if (index is None or self.fd is not None or not self.indexed or self.missing
                or self.error is not None or self.size > REREAD_BYTES):
            return
        self._count = len(index)
        self._first_num = index.nums[0] if len(index) else None
        self._index = None

    # -- opening and re-reading ------------------------------------------

    @classmethod
    def create(cls, folder: str, name: str, start: int = 0) -> "LogFile":
        """Create a new log file atomically (a crash leaves none or a whole one)."""
        log = cls(folder, name)
        log._write_new_file(start)
        log.open()
        return log

    def _write_new_file(self, start: int) -> None:
        tmp = os.path.join(self.folder, NEW_TMP % (self.name,))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, _format.db_header(start))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            fsync_dir(self.folder)
        except OSError as e:
            # On a full disk the temporary file would stay until the next
            # start, one for every refused put to a new log.
            _remove(tmp)
            raise _write_error(e)

    def open(self, now: Optional[float] = None) -> List[str]:
        """
        Open and index the file, repairing a torn tail (rule 6).  Returns
        the problems found, as lines for the log.
        """
        self.close()
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                # Not the file's fault: it stays as it was, to be opened later.
                raise OutOfDescriptors(NO_DESCRIPTOR_LEFT)
            self._reset()
            self.error = "cannot open: %s" % (e.strerror,)
            return [self.error]
        self._reset()
        self.fd = fd
        try:
            return self._scan_from(None, os.fstat(fd).st_size, now)
        except OutOfDescriptors:
            self.close()
            self.indexed = False
            raise

    def _reset(self) -> None:
        self.index = _format.Index()
        self.error = None
        self.missing = False
        self.indexed = True

    def reattach(self) -> bool:
        """
        Open the file again after L{close}, keeping its index: true if it
        is the file last read, unchanged.  Otherwise it stays closed, and
        L{changed_on_disk} tells the caller to re-read it (rule 7).
        """
        assert self.fd is None and self.indexed
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                raise OutOfDescriptors(NO_DESCRIPTOR_LEFT)
            # Whatever stops it opening, a re-read finds and reports.
            self._stat_key = None
            return False
        st = os.fstat(fd)
        if _stat_key(st) != self._stat_key:
            os.close(fd)
            return False
        self.fd = fd
        if self._index is None:
            # The file is as it was when its index was forgotten: reading it
            # again finds the same messages, and nothing new to report.
            self._index = _format.Index()
            try:
                self._scan_from(None, st.st_size, None)
            except BaseException:
                self.close()
                self._index = None
                raise
        return True

    def _scan_from(self, resume: Optional[Tuple[int, int]], size: int,
                   now: Optional[float]) -> List[str]:
        """Index from the file header, or from C{resume} = (offset, last_num)."""
        assert self.fd is not None
        if size == 0:
            self.error = "not a Kaf log: the file is empty"
            # Remembered, so that only a real edit makes it re-read (rule 7).
            self._remember()
            return [self.error]
        try:
            # mmap holds a duplicate of the descriptor.
            mapped = mmap.mmap(self.fd, size, access=mmap.ACCESS_READ)
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                raise OutOfDescriptors(NO_DESCRIPTOR_LEFT)
            raise
        with mapped as mm:
            if resume is None:
                head = _format.parse_db_header(mm)
                if head is None:
                    self.error = "not a Kaf log: it does not begin with KAF_DB|v1|<number>"
                    self._remember()
                    return [self.error]
                previous = self.last_num
                self.start, pos = head
                result = _format.scan(mm, pos, size, self.index, self.start)
                # Never hand out a number twice, whatever an edit did.
                self.last_num = max(result.last_num, previous)
            else:
                pos, last = resume
                result = _format.scan(mm, pos, size, self.index, last)
                self.last_num = max(result.last_num, self.last_num)
            problems = ["offset %d: %s" % (p.offset, p.text) for p in result.problems]
            if result.torn_at is not None:
                side = self._keep_torn_tail(mm, result.torn_at, size, now)
                problems.append("offset %d: torn tail of %d bytes moved to %s"
                                % (result.torn_at, size - result.torn_at, side))
        if result.torn_at is not None:
            os.ftruncate(self.fd, result.torn_at)
            os.fsync(self.fd)
        self._remember()
        return problems

    def _keep_torn_tail(self, mm: mmap.mmap, at: int, size: int,
                        now: Optional[float]) -> str:
        stamp = utc_stamp(time.time() if now is None else now)
        side = self._free_name(".%s.torn-%s" % (self.name, stamp))
        with open(os.path.join(self.folder, side), "xb") as f:
            f.write(mm[at:size])
            f.flush()
            os.fsync(f.fileno())
        return side

    def _free_name(self, base: str) -> str:
        name, n = base, 0
        while os.path.lexists(os.path.join(self.folder, name)):
            n += 1
            name = "%s_%d" % (base, n)
        return name

    def _remember(self) -> None:
        assert self.fd is not None
        st = os.fstat(self.fd)
        self.size = st.st_size
        self._stat_key = _stat_key(st)

    def changed_on_disk(self) -> bool:
        """Did another program change, replace or delete the file (rule 7)?"""
        try:
            st = os.stat(self.path)
        except OSError:
            return not self.missing
        return _stat_key(st) != self._stat_key

    def reloaded(self, now: Optional[float] = None) -> Tuple["LogFile", List[str]]:
        """
        Re-read a file changed by another program (rule 7).  Returns a new
        LogFile, so that reads of this one stay consistent until the caller
        swaps them (on the reactor thread) and closes this one.
        """
        new = LogFile(self.folder, self.name)
        new.indexed = True
        new.start = self.start
        # Never hand out a number twice, whatever an edit did.
        new.last_num = self.last_num
        try:
            st = os.stat(self.path)
        except OSError:
            new.missing = True
            return new, ["the file was deleted; the next put re-creates it"]
        if (self._stat_key is not None and self.fd is not None and self.error is None
                and _same_file(st, os.fstat(self.fd)) and st.st_size > self.size
                and self._grown_by_records()):
            # Grown by an append: read only the new part.
            index = self.index
            new.index = index.copy()
            resume = ((index.end(len(index) - 1), index.num(len(index) - 1)) if len(index)
                      else (len(_format.db_header(self.start)), self.start))
            try:
                new.fd = os.open(self.path, os.O_RDWR)
            except OSError as e:
                if e.errno in NO_DESCRIPTORS:
                    raise OutOfDescriptors(NO_DESCRIPTOR_LEFT)
                raise
            size = os.fstat(new.fd).st_size
            try:
                return new, ["grown by another program"] + new._scan_from(resume, size, now)
            except OutOfDescriptors:
                new.close()
                raise
        return new, ["changed by another program: re-read"] + new.open(now)

    def _grown_by_records(self) -> bool:
        """
        Did the file only grow by records added after the ones we know?  The
        last known record must be intact (its size agreeing with its data)
        and the new bytes must begin a record header; anything else is an
        edit, and the whole file is re-read.
        """
        assert self.fd is not None
        index = self.index
        if len(index):
            start, end = index.start(len(index) - 1), index.end(len(index) - 1)
            # The header is all is_canonical reads: 64 bytes hold any.
            if not _format.is_canonical(os.pread(self.fd, 64, start), 0, end - start):
                return False
        else:
            end = len(_format.db_header(self.start))
            if os.pread(self.fd, end, 0) != _format.db_header(self.start):
                return False
        return _format.begins_record(os.pread(self.fd, 64, end))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        # A closed log (evicted to make room for another) gives their
        # memory back: they are found again as they are asked for.
        self._drop_kinds()

    # -- writing ------------------------------------------------------------

    def restartable(self) -> bool:
        """Does the file hold nothing but its header (or is it yet to be made)?"""
        return self.error is None and (
            self.missing or self.fd is None
            or (len(self.index) == 0 and self.size == len(_format.db_header(self.start))))

    def restart(self, start: int) -> None:
        """
        Make the next append write a new file that continues from C{start};
        only for a file that L{restartable} says holds nothing to keep.
        """
        assert self.restartable() and start >= self.last_num
        self.start = self.last_num = start
        self.missing = True

    def append(self, data: bytes) -> int:
        """
        Write C{data} at the end of the file; return the offset it begins at.
        A failed write is cut back, so no partial record stays.
        """
        if self.error is not None:
            raise UnreadableLog("log %r: %s" % (self.name, self.error))
        if self.missing:
            self._write_new_file(self.last_num)
            self.open()
            if self.error is not None:
                raise UnreadableLog("log %r: %s" % (self.name, self.error))
        assert self.fd is not None
        at = self.size
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], at + done)
        except OSError as e:
            self._cut_back(at)
            raise _write_error(e)
        self._remember()
        return at

    def sync(self, undo_to: int) -> None:
        """fsync; on failure cut the file back to C{undo_to} and raise."""
        assert self.fd is not None
        try:
            os.fsync(self.fd)
        except OSError as e:
            self.sync_failed(undo_to, e)

    def sync_failed(self, undo_to: int, e: OSError) -> NoReturn:
        """An fsync (here or elsewhere) failed with C{e}: cut back to C{undo_to}, raise."""
        self._cut_back(undo_to)
        raise _write_error(e)

    def undo(self, at: int) -> None:
        """Cut the file back to C{at}: a write after it is undone (and synced)."""
        self._cut_back(at)

    def _cut_back(self, at: int) -> None:
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, at)
            os.fsync(self.fd)
        except OSError:
            pass
        self._remember()

    def published(self, first: int, at: int, sizes: Sequence[int] = (),
                  lengths: Optional[Sequence[int]] = None) -> None:
        """
        Make messages written at C{at} visible to reads, given the sizes of
        their data or, when the writer knows them, the lengths of their
        whole records.
        """
        self.index.extend_clean(first, at, sizes, lengths)
        self.last_num = first + len(sizes if lengths is None else lengths) - 1

    # -- reading ------------------------------------------------------------

    def position(self, from_num: int) -> int:
        """Index position of the first message numbered C{from_num} or after."""
        return self.index.position(from_num)

    def plan(self, i: int, limit: int, max_bytes: int) -> int:
        """
        How many messages from position C{i} make a reply: at most C{limit},
        none added once the bytes reach C{max_bytes}, at least one.
        """
        index = self.index
        n = min(len(index) - i, limit)
        if n <= 0:
            return 0
        # The file offsets measure the reply's size without a loop.
        j = index.reaching(index.start(i) + max_bytes, i, i + n)
        return min(n, j - i + 1)

    def read(self, i: int, count: int) -> Slice:
        """Read messages at positions C{i} … C{i+count-1}: one pread."""
        index = self.index
        assert self.fd is not None
        base = index.start(i)
        end = index.end(i + count - 1)
        span = os.pread(self.fd, end - base, base)
        if len(span) != end - base:
            raise UnreadableLog("log %r: the file is shorter than its index" % (self.name,))
        dirty = index.dirty
        # Only the first message may be marked for the blank lines before
        # it, which a reply starting there does not include.
        k = bisect_left(dirty, i + 1)
        clean = (k == len(dirty) or dirty[k] >= i + count) and (
            k == 0 or dirty[k - 1] != i
            or _format.is_canonical(span, 0, index.end(i) - base))
        # Offsets are found only if asked for: a kaf reply needs none.
        j = i + count
        return Slice(span, base, index.nums_of(i, j),
                     _format.Column(index.start, index.starts_of, i, j),
                     _format.Column(index.end, index.ends_of, i, j), clean,
                     self.json_kinds, i)

    def pieces(self, i: int, count: int) -> Optional[Tuple[Slice, Pieces]]:
        """
        Messages at positions C{i} … C{i+count-1}, their records to be read
        a piece at a time: a Slice without their bytes, and the Pieces.  None
        when a record among them is not canonical (the reply is re-encoded),
        or no descriptor is left.
        """
        index = self.index
        assert self.fd is not None
        dirty = index.dirty
        k = bisect_left(dirty, i)
        if k < len(dirty) and dirty[k] < i + count:
            return None
        try:
            fd = os.dup(self.fd)
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                return None
            raise
        base, end = index.start(i), index.end(i + count - 1)
        j = i + count
        found = Slice(b"", base, index.nums_of(i, j),
                      _format.Column(index.start, index.starts_of, i, j),
                      _format.Column(index.end, index.ends_of, i, j), True)
        return found, Pieces(self.name, fd, base, end)

    # -- archiving ------------------------------------------------------------

    def archive(self, upto: int, now: float) -> Tuple[Optional[str], int, int, "LogFile"]:
        """
        Move messages numbered <= C{upto} out of the live file (SPEC 3.3).
        Returns (archive file name or None, upto used, messages kept, the
        LogFile to use from now on: the caller swaps it in and closes this).

        The live file is never absent: the archive is a hard link to the old
        file, made before the new file is renamed over the live name.
        """
        if self.error is not None:
            raise UnreadableLog("log %r: %s" % (self.name, self.error))
        index = self.index
        used = min(upto, self.last_num)
        k = index.position(upto + 1)
        if k == 0 or self.fd is None:
            return None, used, len(index), self
        kept_from = index.start(k) if k < len(index) else self.size
        header = _format.db_header(used)
        tmp = os.path.join(self.folder, ARCHIVE_TMP % (self.name,))
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(out, header)
                pos = kept_from
                while pos < self.size:
                    chunk = os.pread(self.fd, min(1 << 20, self.size - pos), pos)
                    if not chunk:
                        break
                    os.write(out, chunk)
                    pos += len(chunk)
                os.fsync(out)
            finally:
                os.close(out)
        except OSError as e:
            # The live file is untouched; a partial copy must not stay.
            _remove(tmp)
            raise _write_error(e, "archive")
        archive_name = self._link_archive(now)
        os.rename(tmp, self.path)
        fsync_dir(self.folder)
        new = index.tail(k, len(header) - kept_from)
        after = LogFile(self.folder, self.name)
        after.indexed = True
        after.fd = os.open(self.path, os.O_RDWR)
        after.index = new
        after.start = used
        after.last_num = self.last_num
        after._remember()
        return archive_name, used, len(new), after

    def _link_archive(self, now: float) -> str:
        base = "--%s--%s" % (self.name, utc_stamp(now))
        n = 0
        while True:
            name = base if n == 0 else "%s_%d" % (base, n)
            try:
                os.link(self.path, os.path.join(self.folder, name))
                return name
            except FileExistsError:
                n += 1


def _stat_key(st: os.stat_result) -> int:
    return hash((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_error(e: OSError, op: str = "put") -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("%s: no space left on the disk; nothing was written" % (op,))
    if e.errno in NO_DESCRIPTORS:
        return OutOfDescriptors("%s: no file descriptor left; nothing was written" % (op,))
    return WriteFailed("%s: write failed (%s); nothing was written" % (op, e.strerror))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def tidy(folder: str, name: str) -> List[str]:
    """Remove what a crash in the middle of an archive or create left behind."""
    found = []
    for tmp in (ARCHIVE_TMP % (name,), NEW_TMP % (name,)):
        path = os.path.join(folder, tmp)
        if os.path.isfile(path):
            os.unlink(path)
            found.append("removed %s left by an interrupted archive or create" % (tmp,))
    return found
