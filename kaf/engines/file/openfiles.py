"""
The logs whose files are open: a bounded cache, least recently used
closed first, so that a data folder may hold many more logs than the
process may open files (SPEC 7: connections and the fsync helpers need
descriptors too).
"""
from __future__ import annotations

import resource
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaf.engines.file.log import Log

#: Descriptors kept for Kaf itself: listening sockets, the fsync helpers
#: and the pipes that start them, the thread pool's duplicates for large
#: reads, standard streams and the server log.
RESERVED = 64


def default_limit() -> int:
    """How many log files may be open: half of what Kaf itself leaves of RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    # The other half is for connections, each of which holds one.
    return max(8, (soft - RESERVED) // 2)


class OpenFiles:
    """At most C{limit} logs with an open file; using one more closes the least recent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._logs: "OrderedDict[Log, None]" = OrderedDict()
        #: Files being opened off the reactor thread: they count already.
        self._opening = 0

    def __len__(self) -> int:
        return len(self._logs)

    def used(self, log: "Log") -> None:
        """C{log} was just used: it is closed last; if it has just opened its file, count it."""
        logs = self._logs
        if log in logs:
            logs.move_to_end(log)
            return
        if log.file.fd is None:
            return
        logs[log] = None
        self._evict()

    def opening(self) -> None:
        """A file is about to be opened: close the least recent first, to make room."""
        self._opening += 1
        self._evict()

    def opened(self, log: "Log") -> None:
        """The file that L{opening} announced is open (or failed to open)."""
        self._opening -= 1
        self.used(log)

    def _evict(self) -> None:
        logs = self._logs
        while logs and len(logs) + self._opening > self.limit:
            victim, _ = logs.popitem(last=False)
            victim.close_file()

    def holds(self, log: "Log") -> bool:
        return log in self._logs
