"""
kill -9 under load (SPEC 7): many concurrent writers put unique messages
to a few logs of a real C{twistd -n kaf}; the server is killed with
SIGKILL after a random number of acknowledged puts, restarted on the same
data folder, and every acknowledged put must be there, once, at its number,
byte for byte, in logs numbered 1, 2, 3 … with no partial record.
"""
from __future__ import annotations

import os
import random
import re
from typing import Any, Dict, Generator, List, Set, Tuple

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, HTTPConnectionPool
from treq.client import HTTPClient

from server import KafServer, parse_kaf_reply, read_log_strictly

LOGS = ["crash-a", "crash-b", "crash-c"]
ROUNDS = 4
WRITERS = 32
#: A round is killed after a random number of acknowledged puts in this range…
KILL_AFTER = (50, 4000)
#: …or after this many seconds, whichever comes first.
ROUND_SECONDS = 4.0
#: The random choices (kill moments, logs, message sizes) are repeatable.
SEED = int(os.environ.get("KAF_CRASH_SEED", "7749"))

#: Errors a client sees when the server dies under it: expected, not counted.
CONNECTION_ERRORS = {"ResponseNeverReceived", "ResponseFailed", "RequestTransmissionFailed",
                     "ConnectionRefusedError", "ConnectionLost", "ConnectionDone"}


class Tally:
    """What the writers were told, and what the checks found."""

    def __init__(self) -> None:
        self.acked: Dict[Tuple[str, int], bytes] = {}
        self.duplicated = 0
        self.statuses: Dict[str, int] = {}
        self.rounds = 0
        self.checked = 0
        self.lost = 0
        self.gaps = 0
        self.torn_tails = 0
        self.unacked_on_disk = 0

    def count(self, outcome: str) -> None:
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1


@defer.inlineCallbacks
def write_until_killed(server: KafServer, tally: Tally, rng: random.Random,
                       round_no: int) -> Generator[Any, Any, int]:
    """Run the writers; SIGKILL the server after a random number of acks."""
    kill_after = rng.randint(*KILL_AFTER)
    acks = [0]
    pools = [HTTPConnectionPool(reactor, persistent=True) for _ in range(WRITERS)]
    for p in pools:
        p.maxPersistentPerHost = 1

    def kill() -> None:
        if server.running():
            server.kill()

    timer = reactor.callLater(ROUND_SECONDS, kill)

    @defer.inlineCallbacks
    def writer(w: int) -> Generator[Any, Any, None]:
        http = HTTPClient(Agent(reactor, pool=pools[w]))
        wrng = random.Random(rng.random())
        for seq in range(1 << 30):
            log = wrng.choice(LOGS)
            # Unique, with binary bytes and sizes from tiny to a few KiB.
            message = b"r%d-w%d-s%d|" % (round_no, w, seq) + wrng.randbytes(
                wrng.choice([0, 1, 10, 100, 1000, 4000]))
            try:
                response = yield http.post(server.url("/put/" + log), data=message)
                body = yield response.content()
            except Exception as e:
                tally.count(type(e).__name__)
                return
            tally.count(str(response.code))
            if response.code != 200:
                return
            key = (log, int(body))
            if key in tally.acked:
                tally.duplicated += 1
            tally.acked[key] = message
            acks[0] += 1
            if acks[0] == kill_after:
                # At once, while the other writers' puts are in flight.
                kill()

    yield defer.DeferredList([writer(w) for w in range(WRITERS)])
    if timer.active():
        timer.cancel()
    kill()
    for p in pools:
        yield p.closeCachedConnections()
    return acks[0]


@defer.inlineCallbacks
def check_after_restart(server: KafServer, data: str, tally: Tally
                        ) -> Generator[Any, Any, List[str]]:
    """Compare what the restarted server serves and the files hold with the acks."""
    failures: List[str] = []
    unacked: Dict[str, int] = {}
    output = server.output()
    tally.torn_tails += len(re.findall(r"torn tail", output))
    pool = HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(Agent(reactor, pool=pool))
    try:
        for log in LOGS:
            path = os.path.join(data, log)
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                content = f.read()
            try:
                start, records = read_log_strictly(content)
            except ValueError as e:
                failures.append("%s: not clean after the restart: %s" % (log, e))
                continue
            served: List[Tuple[int, bytes]] = []
            from_num = 1
            while True:
                response = yield http.get(server.url(
                    "/get/%s?from=%d&limit=10000" % (log, from_num)), timeout=60)
                body = yield response.content()
                batch = parse_kaf_reply(body)
                if not batch:
                    break
                served.extend(batch)
                from_num = batch[-1][0] + 1
            if served != records:
                failures.append("%s: the server serves other messages than the file holds"
                                % (log,))
            nums = [n for n, _ in records]
            expected = list(range(start + 1, start + len(records) + 1))
            if start != 0 or nums != expected:
                missing = sorted(set(range(1, max(nums or [0]) + 1)) - set(nums))
                tally.gaps += len(missing)
                failures.append("%s: numbers are not 1…%d: missing %s"
                                % (log, len(records), missing[:10]))
            on_disk = dict(records)
            seen: Set[bytes] = set()
            for n, m in records:
                if m in seen:
                    failures.append("%s: message %d is stored twice" % (log, n))
                seen.add(m)
            acked_here = {n: m for (name, n), m in tally.acked.items() if name == log}
            unacked[log] = len(set(on_disk) - set(acked_here))
            for n, m in acked_here.items():
                tally.checked += 1
                if on_disk.get(n) != m:
                    tally.lost += 1
                    failures.append("%s: acknowledged message %d is %s" % (
                        log, n, "missing" if n not in on_disk else "other bytes"))
            # A torn tail moved aside must hold no acknowledged message.
            for side in os.listdir(data):
                if side.startswith(".%s.torn-" % (log,)):
                    with open(os.path.join(data, side), "rb") as f:
                        torn = f.read()
                    for n, m in acked_here.items():
                        # Its unique prefix: even a part of it must not be there.
                        if m[:m.index(b"|") + 1] in torn:
                            failures.append("%s: acknowledged message %d is in torn file %s"
                                            % (log, n, side))
    finally:
        yield pool.closeCachedConnections()
    tally.unacked_on_disk = sum(unacked.values())
    return failures


@pytest.mark.parametrize("fsync", ["always", "never"])
@pytest_twisted.inlineCallbacks
def test_kill_9_under_load_keeps_every_acknowledged_put(
        tmp_path: Any, fsync: str, capsys: Any) -> Generator[Any, Any, None]:
    data = str(tmp_path / "data")
    rng = random.Random("%d-%s" % (SEED, fsync))
    tally = Tally()
    failures: List[str] = []
    for round_no in range(ROUNDS + 1):
        server = KafServer(data, ["--fsync", fsync]).start()
        try:
            # The start of each round is the restart after the last crash.
            failures += (yield check_after_restart(server, data, tally))
            if round_no == ROUNDS:
                break
            acks = yield write_until_killed(server, tally, rng, round_no)
            tally.rounds += 1
            assert acks > 0, server.output()
            assert not server.running()
        finally:
            server.close()
    statuses = dict(sorted(tally.statuses.items()))
    summary = ("kill -9 with --fsync %s: rounds=%d acknowledged puts=%d (checked after "
               "every later restart: %d checks) lost=%d duplicated=%d gaps=%d "
               "torn tails moved aside=%d unacknowledged puts found on disk=%d "
               "outcomes=%s seed=%d"
               % (fsync, tally.rounds, len(tally.acked), tally.checked, tally.lost,
                  tally.duplicated, tally.gaps, tally.torn_tails, tally.unacked_on_disk,
                  statuses, SEED))
    with capsys.disabled():
        print("\n" + summary)
    assert failures == [], summary
    assert tally.duplicated == 0, summary
    assert tally.checked >= ROUNDS, summary
    # Every put is valid: a reply other than 200 is a failure, a dropped
    # connection is the kill.
    unexpected = set(statuses) - {"200"} - CONNECTION_ERRORS
    assert not unexpected, summary
