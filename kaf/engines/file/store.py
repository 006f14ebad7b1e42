"""
The data folder: log names, finding the logs at start-up, finding and
creating logs (SPEC sections 1, 2 and 6).

Start-up only lists the folder: a log's service and its reading of the
file wait for the log's first use, so that a folder of a million logs
starts in seconds, and an idle log costs only its name.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, List, Optional

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from zope.interface import implementer

from kaf.engines.file import logfile, msgids
from kaf.engine import IEngine, check_name, name_problem
from kaf.errors import InvalidName
from kaf.engines.file.log import Log, Runner, Syncer
from kaf.engines.file.logfile import LogFile
from kaf.engines.file.msgids import Dedupe
from kaf.engines.file.openfiles import OpenFiles, default_limit

_TMP = re.compile(r"\.(.+)\.(?:archive-tmp|new)\Z")
_IDS_TMP = re.compile(r"\.(.+)\.ids-tmp\Z")


@implementer(IEngine)
class Store:
    """Every log of one data folder."""

    log = Logger()

    def __init__(self, folder: str, reactor: IReactorTime, blocking: Runner,
                 fsync: bool = True, gather: bool = False,
                 syncing: Optional[Syncer] = None, max_open: Optional[int] = None,
                 dedupe: Optional[Dedupe] = None) -> None:
        """
        C{max_open} bounds the logs with an open file (by default, from
        RLIMIT_NOFILE); C{dedupe}: the window and cap of message ids.
        """
        self.folder = folder
        self._reactor = reactor
        self._blocking = blocking
        self._fsync = fsync
        self._gather = gather
        self._syncing = syncing
        self.files = OpenFiles(default_limit() if max_open is None else max_open)
        self.dedupe = Dedupe() if dedupe is None else dedupe
        #: Told of every write to a log (the retention rules), if set.
        self.watch: Optional[Callable[[Log], None]] = None
        # None: a log found at start-up and not used since.
        self._logs: Dict[str, Optional[Log]] = {}

    def _log(self, f: LogFile) -> Log:
        return Log(f, self._reactor, self._blocking, self._fsync, self._gather, self._syncing,
                   self.files, self.dedupe, self.watch)

    def _found(self, name: str) -> Optional[Log]:
        """The log named C{name} if it is known, its service made on first use."""
        logs = self._logs
        log = logs.get(name)
        if log is None and name in logs:
            # Stored again under the name the log keeps, so that the name
            # found at start-up is not kept beside it.
            del logs[name]
            log = logs[name] = self._log(LogFile(self.folder, name))
        return log

    def load(self) -> None:
        """
        Create the folder if missing and find the logs in it; each is read
        (and repaired, SPEC 6) on its first use.
        """
        os.makedirs(self.folder, exist_ok=True)
        with os.scandir(self.folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            m = _TMP.match(entry.name)
            if m:
                for line in logfile.tidy(self.folder, m.group(1)):
                    self.log.warn("{line}", line=line)
            m = _IDS_TMP.match(entry.name)
            if m:
                for line in msgids.tidy(self.folder, m.group(1)):
                    self.log.warn("{line}", line=line)
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.startswith("--"):
                continue
            if name_problem(name) is not None:
                self.log.warn("ignoring {entry!r} in the data folder: not a log name",
                              entry=name)
                continue
            if entry.is_file():
                self._logs[name] = None
        self.log.info("{count} logs found", count=len(self._logs))

    def check(self, name: str, op: str, write: bool = False) -> None:
        """Refuse a bad name before anything touches the disk."""
        # A loaded log's name was checked when it was loaded or created.
        if name in self._logs and not (write and name.startswith("_")):
            return
        check_name(name, op, write)
        if name not in self._logs and os.path.isdir(os.path.join(self.folder, name)):
            raise InvalidName("%s: %r is a folder, not a log" % (op, name))

    def get(self, name: str) -> Optional[Log]:
        """The log named C{name}, or None when it does not exist."""
        log = self._found(name)
        if log is not None and log.file.missing and log.last == 0:
            return None
        return log

    def get_or_create(self, name: str) -> Log:
        """
        The log named C{name}; a new one starts with no file, which its
        first write creates (off the reactor thread).
        """
        log = self._found(name)
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
        """Every existing log, sorted by name (their files not necessarily read yet)."""
        logs = [self._found(name) for name in sorted(self._logs)]
        return [log for log in logs if log is not None
                and not (log.file.missing and log.last == 0)]

    def refresh(self) -> "Deferred[None]":
        """Nothing to do: this process makes every log of its folder."""
        return succeed(None)

    def used(self) -> List[Log]:
        """The logs used since start-up, sorted by name."""
        return sorted((log for log in self._logs.values() if log is not None),
                      key=lambda log: log.name)

    def close(self) -> "Deferred[object]":
        """Finish every log's pending writes and close its file."""
        return DeferredList([log.close() for log in self._logs.values() if log is not None])
