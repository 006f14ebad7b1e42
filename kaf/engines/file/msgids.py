"""
Message ids of exactly-once puts (C{Kaf-Msg-Id}): the ids a log saw within
the dedupe window, in memory and in a side file beside the log.  Blocking
I/O, no Twisted: the log's service decides what runs where.

The log file stays in the Go format; the ids live in the hidden side file
C{.<log>.ids} (dot files are never logs, SPEC 2), one line per put:

    <last>|<count>|<time>|<id>\\n

C{last} and C{count} are the put's reply (the number of its last message
and how many it wrote), C{time} the Unix time it was written, and C{id}
the id as the client sent it (printable ASCII, so the file reads with
C{cat}).  The file is opened only by logs that use ids.

Crash ordering.  A put's record is written to the log file first, its
line to the side file after it, by the same write (in the log's lock), and
both are made durable before the put is answered.  So a crash leaves:
  - neither (nothing was answered), or
  - the message without its line (a retry writes it a second time: the
    at-least-once of a put without id, no worse), or
  - both.
It can also leave a line whose message is not in the log: with
C{--fsync always} the two files reach the disk in either order, and a
write cut back after a failed fsync may have left its line behind.  Such a
line names a number above the log's last, so L{load}, which runs before
the log takes its first write, drops every line above the log's last
number (and rewrites the file without them): a line never points at a
number that a later message could take.  A torn last line (no newline) is
cut off the same way.

The side file is compacted (rewritten with the ids still in the window,
through C{.<log>.ids-tmp} and a rename) once it holds more than twice the
lines of the window, and removed when none is left; a name ending in
C{.ids-tmp} is no log's side file of another kind.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, List, Optional, Set, Tuple

from kaf.engines.file.logfile import NO_DESCRIPTORS, NO_DESCRIPTOR_LEFT, _write_error, fsync_dir
from kaf.engine import Duplicate, check_id  # noqa: F401 (part of this module's API)
from kaf.errors import OutOfDescriptors

if TYPE_CHECKING:
    from kaf.engines.file.log import Log

SIDE = ".%s.ids"
SIDE_TMP = ".%s.ids-tmp"

#: Printable ASCII, 1-128 bytes.
_LINE = re.compile(rb"(\d{1,19})\|(\d{1,19})\|(\d{1,12}(?:\.\d{1,6})?)\|([\x20-\x7e]{1,128})\Z")

#: Default of C{--dedupe-window}, in seconds.
DEFAULT_WINDOW = 120.0
#: Default of C{--dedupe-max-ids}: the ids kept in memory, all logs together.
DEFAULT_MAX_IDS = 1_000_000

#: A put's reply: (number of its last message, how many it wrote).
Original = Tuple[int, int]


class Dedupe:
    """
    The dedupe settings of a store, and the ids held in memory by all its
    logs together: at most C{max_ids}, so unique ids cannot run memory up.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, max_ids: int = DEFAULT_MAX_IDS) -> None:
        self.window = window
        self.max_ids = max_ids
        self.count = 0
        #: The logs that hold ids, to expire theirs when the cap is reached.
        self.holders: "Set[Log]" = set()

    @property
    def on(self) -> bool:
        return self.window > 0


class MsgIds:
    """One log's ids within the window, and its side file."""

    __slots__ = ("folder", "name", "path", "fd", "size", "lines", "ids", "_dedupe")

    def __init__(self, folder: str, name: str, dedupe: Dedupe) -> None:
        self.folder = folder
        self.name = name
        self.path = os.path.join(folder, SIDE % (name,))
        self.fd: Optional[int] = None
        #: Bytes and lines of the side file.
        self.size = 0
        self.lines = 0
        #: id -> (last, count, time), oldest first.
        self.ids: "OrderedDict[str, Tuple[int, int, float]]" = OrderedDict()
        self._dedupe = dedupe

    def __len__(self) -> int:
        return len(self.ids)

    # -- memory --------------------------------------------------------------

    def original(self, msg_id: str, now: float) -> Optional[Original]:
        """The reply of the put that had C{msg_id} within the window, if any."""
        found = self.ids.get(msg_id)
        if found is None or found[2] <= now - self._dedupe.window:
            return None
        return found[0], found[1]

    def expire(self, now: float) -> None:
        """Forget the ids older than the window."""
        ids = self.ids
        oldest = now - self._dedupe.window
        dropped = 0
        while ids:
            key, (_, _, t) = next(iter(ids.items()))
            if t > oldest:
                break
            del ids[key]
            dropped += 1
        self._dedupe.count -= dropped

    def remember(self, msg_id: str, last: int, count: int, now: float) -> None:
        ids = self.ids
        if msg_id in ids:
            del ids[msg_id]
        else:
            self._dedupe.count += 1
        ids[msg_id] = (last, count, now)

    def forget_all(self) -> None:
        self._dedupe.count -= len(self.ids)
        self.ids.clear()

    # -- the side file (blocking) ---------------------------------------------

    @classmethod
    def load(cls, folder: str, name: str, dedupe: Dedupe, last_num: int, now: float
             ) -> Tuple[Optional["MsgIds"], List[str]]:
        """
        Read the side file, if there is one: the ids of the window, with the
        lines that name a number above C{last_num} dropped (see the module's
        docstring).  Returns (None when there is no side file, problems).
        """
        ids = cls(folder, name, dedupe)
        try:
            with open(ids.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, []
        except OSError as e:
            if e.errno in NO_DESCRIPTORS:
                raise OutOfDescriptors(NO_DESCRIPTOR_LEFT)
            return None, ["cannot read %s: %s; its ids are not used" % (SIDE % (name,),
                                                                          e.strerror)]
        problems: List[str] = []
        lines = data.split(b"\n")
        torn = lines.pop()
        if torn:
            problems.append("%s: a torn last line cut off" % (SIDE % (name,),))
        above = bad = 0
        oldest = now - dedupe.window
        for line in lines:
            m = _LINE.match(line)
            if m is None:
                bad += 1
                continue
            last, count, t = int(m.group(1)), int(m.group(2)), float(m.group(3))
            if last > last_num:
                above += 1
                continue
            if t > oldest:
                # Not remember(): the store's count is the reactor thread's.
                msg_id = m.group(4).decode("ascii")
                ids.ids.pop(msg_id, None)
                ids.ids[msg_id] = (last, count, t)
        if bad:
            problems.append("%s: %d lines that are not ids skipped" % (SIDE % (name,), bad))
        if above:
            problems.append("%s: %d ids of messages the log does not hold dropped"
                            % (SIDE % (name,), above))
        ids.size, ids.lines = len(data), len(lines)
        if torn or bad or above:
            ids.rewrite(ids.snapshot(), len(ids))
        return ids, problems

    def _open(self) -> None:
        new = not os.path.exists(self.path)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise _write_error(e)
        if new:
            # The side file's name must be durable before an id in it is
            # answered for.
            fsync_dir(self.folder)
        self.size = os.fstat(self.fd).st_size

    @property
    def opened(self) -> bool:
        return self.fd is not None

    def append(self, data: bytes) -> int:
        """Write lines at the end of the side file (opened if need be); return where."""
        if self.fd is None:
            self._open()
        assert self.fd is not None
        at = self.size
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as e:
            self.cut_back(at)
            raise _write_error(e)
        self.size = at + len(data)
        self.lines += data.count(b"\n")
        return at

    def sync(self, undo_to: int) -> None:
        assert self.fd is not None
        try:
            os.fsync(self.fd)
        except OSError as e:
            self.sync_failed(undo_to, e)

    def sync_failed(self, undo_to: int, e: OSError) -> None:
        """As L{kaf.engines.file.logfile.LogFile.sync_failed}: cut back, raise."""
        self.cut_back(undo_to)
        raise _write_error(e)

    def cut_back(self, at: int) -> None:
        """Undo the lines written from C{at} (their messages were not written)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, at)
            os.fsync(self.fd)
        except OSError:
            pass
        self.size = at
        self.lines = -1  # unknown: the next compaction counts again

    def wants_compaction(self) -> bool:
        return self.lines < 0 or self.lines > 2 * len(self.ids) + 1024

    def snapshot(self) -> bytes:
        """The side file's lines for the ids held (taken on the reactor thread)."""
        return b"".join([line(msg_id, last, count, t)
                         for msg_id, (last, count, t) in self.ids.items()])

    def rewrite(self, data: bytes, count: int) -> None:
        """
        Replace the side file by C{data}, C{count} lines from L{snapshot}
        (remove it when there are none).
        """
        self.close()
        if not count:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.size = self.lines = 0
            return
        tmp = os.path.join(self.folder, SIDE_TMP % (self.name,))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            fsync_dir(self.folder)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _write_error(e)
        self.size, self.lines = len(data), count

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def line(msg_id: str, last: int, count: int, t: float) -> bytes:
    """One put's line in the side file."""
    return b"%d|%d|%.3f|%s\n" % (last, count, t, msg_id.encode("ascii"))


def tidy(folder: str, name: str) -> List[str]:
    """Remove the temporary file of a compaction a crash interrupted."""
    path = os.path.join(folder, SIDE_TMP % (name,))
    if os.path.isfile(path):
        os.unlink(path)
        return ["removed %s left by an interrupted compaction" % (SIDE_TMP % (name,),)]
    return []
