"""
The data folder: log names, loading every log at start-up, finding and
creating logs (SPEC sections 1, 2 and 6).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kaf import logfile
from kaf.errors import InvalidName, ReservedName
from kaf.log import Log, Runner, Syncer
from kaf.logfile import LogFile

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}\Z")
_TMP = re.compile(r"\.(.+)\.(?:archive-tmp|new)\Z")


def name_problem(name: str) -> Optional[str]:
    """Why C{name} is not a log name (SPEC 2), or None."""
    if name == "":
        return "empty log name"
    if len(name) > 200:
        return "log name longer than 200 characters"
    if not _NAME.match(name):
        return "log name may only hold A-Z a-z 0-9 _ . -"
    if name.startswith("."):
        return "log name may not begin with '.'"
    if name.startswith("--"):
        return "log name may not begin with '--'"
    return None


class Store:
    """Every log of one data folder."""

    log = Logger()

    def __init__(self, folder: str, reactor: IReactorTime, blocking: Runner,
                 fsync: bool = True, gather: bool = False,
                 syncing: Optional[Syncer] = None) -> None:
        self.folder = folder
        self._reactor = reactor
        self._blocking = blocking
        self._fsync = fsync
        self._gather = gather
        self._syncing = syncing
        self._logs: Dict[str, Log] = {}

    def _log(self, f: LogFile) -> Log:
        return Log(f, self._reactor, self._blocking, self._fsync, self._gather, self._syncing)

    def load(self) -> None:
        """Create the folder if missing and open every log in it."""
        os.makedirs(self.folder, exist_ok=True)
        names = sorted(os.listdir(self.folder))
        for entry in names:
            m = _TMP.match(entry)
            if m:
                for line in logfile.tidy(self.folder, m.group(1)):
                    self.log.warn("{line}", line=line)
        for entry in sorted(os.listdir(self.folder)):
            if entry.startswith(".") or entry.startswith("--"):
                continue
            path = os.path.join(self.folder, entry)
            if name_problem(entry) is not None:
                self.log.warn("ignoring {entry!r} in the data folder: not a log name",
                              entry=entry)
                continue
            if not os.path.isfile(path):
                continue
            f = LogFile(self.folder, entry)
            problems = f.open(self._reactor.seconds())
            self._logs[entry] = self._log(f)
            index = f.index
            if f.error is None:
                self.log.info(
                    "log {name}: messages {first}-{last}, {size} bytes",
                    name=entry, first=index.nums[0] if len(index) else "none",
                    last=f.last_num, size=f.size)
            for p in problems:
                self.log.warn("log {name}: {problem}", name=entry, problem=p)

    def check(self, name: str, op: str, write: bool = False) -> None:
        """Refuse a bad name before anything touches the disk."""
        # A loaded log's name was checked when it was loaded or created.
        if name in self._logs and not (write and name.startswith("_")):
            return
        problem = name_problem(name)
        if problem is not None:
            raise InvalidName("%s: %s" % (op, problem))
        if write and name.startswith("_"):
            raise ReservedName("%s: logs whose names begin with '_' belong to Kaf" % (op,))
        if name not in self._logs and os.path.isdir(os.path.join(self.folder, name)):
            raise InvalidName("%s: %r is a folder, not a log" % (op, name))

    def get(self, name: str) -> Optional[Log]:
        """The log named C{name}, or None when it does not exist."""
        log = self._logs.get(name)
        if log is not None and log.file.missing and log.last == 0:
            return None
        return log

    def get_or_create(self, name: str) -> Log:
        """
        The log named C{name}; a new one starts with no file, which its
        first write creates (off the reactor thread).
        """
        log = self._logs.get(name)
        if log is None:
            f = LogFile(self.folder, name)
            f.missing = True
            log = self._logs[name] = self._log(f)
        return log

    def release(self, log: Log) -> None:
        """Forget a log that has no file, no message and no waiter."""
        if (log.file.missing and log.last == 0 and not log.waiting and not log.busy
                and self._logs.get(log.name) is log):
            del self._logs[log.name]

    def logs(self) -> List[Log]:
        """Every existing log, sorted by name."""
        return [log for name, log in sorted(self._logs.items())
                if not (log.file.missing and log.last == 0)]

    def close(self) -> "Deferred[object]":
        """Finish every log's pending writes and close its file."""
        return DeferredList([log.close() for log in self._logs.values()])
