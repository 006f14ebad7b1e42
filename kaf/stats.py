"""
The C{_kaf} log: every stats interval, one JSON record of which logs saw
gets, puts and errors (SPEC section 5).
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kaf.engine import IEngine

STATS_LOG = "_kaf"


def iso_utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Stats:
    """Counts ticks and writes one record a tick when other logs were busy."""

    log = Logger()

    def __init__(self, store: IEngine, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._beg = clock.seconds()
        self.statno = 0

    def record(self) -> Optional[Dict[str, Any]]:
        """Close the current interval; its record, or None when it was idle."""
        self.statno += 1
        end = self._clock.seconds()
        logs: List[Dict[str, Any]] = []
        for log in self._store.used():
            gets, puts, errs = log.reset_counters()
            archived, log.archived = log.archived, 0
            if log.name == STATS_LOG or not (gets or puts or errs or archived):
                continue
            entry: Dict[str, Any] = {"name": log.name, "last": log.last,
                                     "gets": gets, "puts": puts}
            if errs:
                entry["errs"] = errs
            if archived:
                entry["archived"] = archived
            logs.append(entry)
        beg, self._beg = self._beg, end
        if not logs:
            return None
        return {"beg": iso_utc(beg), "end": iso_utc(end), "statno": self.statno, "logs": logs}

    def tick(self) -> "Deferred[None]":
        """Write this interval's record; a failure is logged, never raised."""
        try:
            rec = self.record()
            if rec is None:
                return succeed(None)
            data = json.dumps(rec, separators=(",", ":")).encode()
            d = self._store.get_or_create(STATS_LOG).put([data])
        except Exception:
            self.log.failure("could not write stats")
            return succeed(None)
        d.addCallback(lambda _: None)
        d.addErrback(lambda f: self.log.failure("could not write stats", f))
        return d



class StatsService(Service):
    """Runs L{Stats.tick} every interval, the first one interval after start."""

    def __init__(self, stats: Stats, interval: float, clock: IReactorTime) -> None:
        self._call = LoopingCall(stats.tick)
        self._call.clock = clock
        self._interval = interval

    def startService(self) -> None:
        Service.startService(self)
        self._call.start(self._interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._call.running:
            self._call.stop()
