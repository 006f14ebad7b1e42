"""
Health and readiness: what an orchestrator probes.  C{/health} says the
process serves; C{/ready} says it can take writes: the data folder is there
and writable, and the fsync helpers answer.  Neither scans the folder.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

#: Sends a descriptor to an fsync helper: fd -> Deferred fired once it answers.
Ping = Callable[[int], "Deferred[None]"]


class Readiness:
    """Answers "can this server take writes now?" with None or a one-line reason."""

    def __init__(self, folder: Optional[str], reactor: IReactorTime,
                 ping: Optional[Ping] = None, timeout: float = 2.0,
                 engine: Optional[Callable[[], "Deferred[Optional[str]]"]] = None) -> None:
        """
        C{folder}: the data folder (None when the engine keeps no files);
        C{engine}: asks the storage engine whether it is reachable (None or
        a one-line reason), when it is not this machine's disk.
        """
        self._folder = folder
        self._reactor = reactor
        self._ping = ping
        self._timeout = timeout
        self._engine = engine

    def check(self) -> "Deferred[Optional[str]]":
        if self._engine is not None:
            return self._engine()
        problem = self._folder_problem()
        if problem is not None or self._ping is None:
            return succeed(problem)
        try:
            fd = os.open(self._folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            return succeed("not ready: the data folder cannot be opened: %s" % (e.strerror,))
        d = self._ping(fd)
        # The descriptor is the helper's own once sent: ours closes at once.
        os.close(fd)
        # A helper that hangs must not hang the probe with it.
        d.addTimeout(self._timeout, self._reactor)  # type: ignore[arg-type]

        def answered(_: Any) -> None:
            return None

        def failed(failure: Any) -> str:
            return "not ready: the fsync helpers do not answer: %s" % (failure.getErrorMessage(),)

        return d.addCallbacks(answered, failed)

    def _folder_problem(self) -> Optional[str]:
        if self._folder is None:
            return None
        if not os.path.isdir(self._folder):
            return "not ready: the data folder %r is missing" % (self._folder,)
        if not os.access(self._folder, os.W_OK | os.X_OK):
            return "not ready: the data folder %r is not writable" % (self._folder,)
        return None
