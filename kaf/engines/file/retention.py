"""
Retention (C{--retain}): the archive of SPEC 3.3, run by Kaf itself when a
log passes a limit of messages, bytes or age, keeping the newest messages
within it; and C{--archive-keep}, which deletes a log's oldest archive
files beyond a number.  Twisted, no HTTP.

Cheap by construction: a log is looked at when it is written (the log's
service says so after each write) or when the age of its oldest message
known passes the limit (a heap of those times), never by scanning the
data folder; a pass (a LoopingCall on the injected clock) checks the logs
due, in memory, and archives them one at a time, each archive under its
own log's lock only.

Ages.  The Go file format holds no times, so Kaf keeps, in memory, for
each log under a C{max-age} rule, checkpoints C{(time, last number)}
taken when it writes: every message numbered up to C{last} was written
by C{time}.  A log first used after a start gets one checkpoint from its
file's modification time (its newest message is no newer).  So a message
is archived at the earliest once it is older than the limit, and at the
latest about a hundredth of the limit later (the checkpoints' spacing) —
or, after a restart, the limit after the file was last written.
"""
from __future__ import annotations

import fnmatch
import heapq
import os
import re
from bisect import bisect_right
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kaf import _format
from kaf.engines.file.log import Log, Runner
from kaf.engines.file.store import Store

_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhd]?)\Z")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?)\s*([kKMGT]?i?B?)\Z")
_SIZE_UNITS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3,
               "TB": 1000 ** 4, "KiB": 1 << 10, "kiB": 1 << 10, "MiB": 1 << 20,
               "GiB": 1 << 30, "TiB": 1 << 40}
_STAMP = r"\d{4}-\d\d-\d\dT\d\d_\d\d_\d\dZ"

#: Seconds between retention passes.
DEFAULT_INTERVAL = 5.0


def duration(text: str) -> Optional[float]:
    """Seconds of C{45}, C{45s}, C{30m}, C{12h}, C{7d}; None if it is not one."""
    m = _DURATION.match(text.strip())
    if m is None:
        return None
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def size(text: str) -> Optional[int]:
    """Bytes of C{500}, C{500B}, C{10kB}, C{10MB}, C{1GiB} (kB/MB/GB: 1000s; KiB/MiB/GiB: 1024s)."""
    m = _SIZE.match(text.strip())
    if m is None or m.group(2) not in _SIZE_UNITS:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


class Rule(NamedTuple):
    """The limits of the logs whose names match C{glob}."""

    glob: str
    max_messages: Optional[int]
    max_bytes: Optional[int]
    max_age: Optional[float]


def parse_rule(text: str) -> Rule:
    """A C{--retain} value, C{GLOB:max-messages=N,max-bytes=B,max-age=D}; ValueError if not."""
    glob, colon, limits = text.rpartition(":")
    if not colon or not glob:
        raise ValueError("must be GLOB:LIMIT=VALUE,… e.g. 'orders-*:max-messages=1000000'"
                         " (got %r)" % (text,))
    found: Dict[str, Any] = {}
    for part in limits.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq or key not in ("max-messages", "max-bytes", "max-age"):
            raise ValueError("%r is not a limit: use max-messages=N, max-bytes=B or max-age=D"
                             % (part,))
        if key in found:
            raise ValueError("%s given twice in %r" % (key, text))
        if key == "max-messages":
            number: Any = int(value) if value.isdigit() and int(value) > 0 else None
            what = "a whole number > 0"
        elif key == "max-bytes":
            number = size(value)
            what = "a size like 500000, 10MB or 1GiB"
        else:
            number = duration(value)
            what = "a duration like 45s, 30m, 12h or 7d"
        if not number:
            raise ValueError("%s must be %s (got %r)" % (key, what, value))
        found[key] = number
    return Rule(glob, found.get("max-messages"), found.get("max-bytes"), found.get("max-age"))


def archive_files(folder: str, name: str) -> List[str]:
    """The archive files of log C{name}, oldest first (SPEC 3.3 names)."""
    pattern = re.compile(r"--%s--(%s)(?:_(\d+))?\Z" % (re.escape(name), _STAMP))
    found = []
    with os.scandir(folder) as scan:
        for entry in scan:
            m = pattern.match(entry.name)
            if m:
                found.append((m.group(1), int(m.group(2) or 0), entry.name))
    return [name for _, _, name in sorted(found)]


def prune_archives(folder: str, name: str, keep: int) -> List[str]:
    """Delete the oldest archive files of log C{name} beyond C{keep}; the names deleted."""
    files = archive_files(folder, name)
    deleted = []
    for old in files[:max(0, len(files) - keep)]:
        try:
            os.unlink(os.path.join(folder, old))
        except FileNotFoundError:
            continue
        deleted.append(old)
    return deleted


class Retention:
    """The retention rules of a store, and the logs due for a check."""

    log = Logger()

    def __init__(self, store: Store, rules: List[Rule], clock: IReactorTime,
                 blocking: Runner, archive_keep: Optional[int] = None) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._blocking = blocking
        self.archive_keep = archive_keep
        #: Rules by log name, found once (None: no rule).
        self._rule_of: Dict[str, Optional[Rule]] = {}
        #: Logs written since they were last checked.
        self._due: Set[str] = set()
        #: (time, log) when a log's oldest checkpoint passes its max-age.
        self._aging: List[Tuple[float, str]] = []
        #: Checkpoints (time, last number) of logs under a max-age rule.
        self._times: Dict[str, List[Tuple[float, int]]] = {}
        self._running: Optional["Deferred[None]"] = None

    def rule(self, name: str) -> Optional[Rule]:
        """The first rule whose glob matches C{name}."""
        try:
            return self._rule_of[name]
        except KeyError:
            pass
        found = next((r for r in self._rules if fnmatch.fnmatchcase(name, r.glob)), None)
        if len(self._rule_of) > 1 << 20:
            self._rule_of.clear()
        self._rule_of[name] = found
        return found

    # -- what makes a log due ----------------------------------------------

    def written(self, log: Log) -> None:
        """The log's service wrote to C{log} (its hook, on the reactor thread)."""
        rule = self.rule(log.name)
        if rule is None:
            return
        self._due.add(log.name)
        if rule.max_age is not None:
            self._checkpoint(log.name, rule.max_age, self._clock.seconds(), log.last)

    def _checkpoint(self, name: str, max_age: float, when: float, last: int) -> None:
        times = self._times.setdefault(name, [])
        if times and times[-1][1] >= last:
            return
        # One checkpoint per hundredth of the limit: a message may stay up
        # to that much longer than the limit.
        step = max_age / 100
        if times and times[-1][0] // step == when // step:
            times[-1] = (when, last)
        else:
            times.append((when, last))
        if len(times) == 1:
            heapq.heappush(self._aging, (times[0][0] + max_age, name))

    def start(self) -> None:
        """At start-up: every log under a max-age rule is checked once, on its turn."""
        for log in self._store.logs():
            rule = self.rule(log.name)
            if rule is not None:
                self._due.add(log.name)

    # -- a pass --------------------------------------------------------------

    def run(self) -> "Deferred[None]":
        """One pass: check the logs due, and archive those over a limit, one at a time."""
        if self._running is not None:
            return succeed(None)
        now = self._clock.seconds()
        aging = self._aging
        while aging and aging[0][0] <= now:
            self._due.add(heapq.heappop(aging)[1])
        due, self._due = sorted(self._due), set()
        d = self._running = Deferred.fromCoroutine(self._check_all(due))

        def done(result: Any) -> None:
            self._running = None

        return d.addBoth(done)

    async def _check_all(self, names: List[str]) -> None:
        for name in names:
            try:
                await self._check(name)
            except Exception:
                self.log.failure("retention: checking log {name} failed", name=name)

    async def _check(self, name: str) -> None:
        rule = self.rule(name)
        log = self._store.get(name)
        if rule is None or log is None:
            self._times.pop(name, None)
            return
        f = log.file
        if not f.indexed:
            # First use since start-up: read, one log at a time.
            await log.described()
            f = log.file
        if f.error is not None:
            return
        if rule.max_age is not None and name not in self._times and len(f.index):
            # Its messages were written by the file's last change at the latest.
            try:
                mtime = os.stat(f.path).st_mtime
            except OSError:
                mtime = self._clock.seconds()
            self._checkpoint(name, rule.max_age, min(mtime, self._clock.seconds()), f.last_num)
        upto, why = self._upto(name, log, rule)
        if upto is None:
            return
        archive, used, kept = await log.archive(upto)
        if archive is None:
            return
        self.log.info("retention: log {name} archived up to {upto} as {archive} ({why}), "
                      "kept {kept}", name=name, upto=used, archive=archive, why=why, kept=kept)
        if self.archive_keep is not None:
            deleted = await self._blocking(prune_archives, self._store.folder, name,
                                           self.archive_keep)
            for old in deleted:
                self.log.info("retention: deleted {archive}, beyond --archive-keep {keep}",
                              archive=old, keep=self.archive_keep)

    def _upto(self, name: str, log: Log, rule: Rule) -> Tuple[Optional[int], str]:
        """The archive's C{upto} that brings the log within its limits, or None; and why."""
        f = log.file
        index = f.index
        count = len(index)
        if not count:
            return None, ""
        cuts: List[Tuple[int, str]] = []
        if rule.max_messages is not None and count > rule.max_messages:
            cuts.append((index.num(count - rule.max_messages - 1),
                         "max-messages=%d" % (rule.max_messages,)))
        if rule.max_bytes is not None and f.size > rule.max_bytes:
            # Keep the newest records that fit in max-bytes with the new header.
            room = rule.max_bytes - len(_format.db_header(f.last_num))
            offset = f.size - room
            k = index.reaching(offset, 0, count)
            if k < count and index.start(k) < offset:
                k += 1
            if k > 0:
                cuts.append((index.num(k - 1), "max-bytes=%d" % (rule.max_bytes,)))
        times = self._times.get(name)
        if rule.max_age is not None and times:
            oldest = self._clock.seconds() - rule.max_age
            j = bisect_right(times, (oldest, 1 << 63))
            if j:
                cuts.append((times[j - 1][1], "max-age=%gs" % (rule.max_age,)))
                del times[:j]
            if times:
                heapq.heappush(self._aging, (times[0][0] + rule.max_age, name))
            else:
                del self._times[name]
        if not cuts:
            return None, ""
        upto, why = max(cuts)
        if upto < index.num(0):
            return None, ""
        return upto, why


class RetentionService(Service):
    """Runs L{Retention.run} every C{interval} seconds on C{clock}."""

    def __init__(self, retention: Retention, clock: IReactorTime,
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.retention = retention
        self._call = LoopingCall(retention.run)
        self._call.clock = clock
        self._interval = interval

    def startService(self) -> None:
        Service.startService(self)
        self.retention.start()
        self._call.start(self._interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._call.running:
            self._call.stop()
