"""
The NATS engine when the cluster loses a server: kill -9 the leader of a
log's stream while 8 writers put for 10 s, through a real Kaf front end
on a real 3-node cluster.  Every acknowledged put must be readable with
its number and bytes, with no duplicate and no gap; puts during the
election answer 503 with Retry-After within 2 s and never hang; the
killed server, restarted, catches up.  A cluster that is not there at
start-up stops twistd with one line.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import gatherResults
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from nats_cluster import Cluster, _get_json, free_ports
from server import run_twistd
from test_engines import Front, fresh, nats_engine

WRITERS = 8
SECONDS = 10.0
KILL_AT = 2.0


def node_last(cluster: Cluster, i: int, stream: str) -> Optional[int]:
    """The last number of C{stream} as server C{i} holds it (its own replica)."""
    jsz = _get_json(cluster.nodes[i].http_port, "/jsz?streams=true")
    for acc in (jsz or {}).get("account_details") or ():
        for detail in acc.get("stream_detail") or ():
            if detail.get("name") == stream:
                return int((detail.get("state") or {}).get("last_seq", 0))
    return None


def caught_up(cluster: Cluster, i: int, stream: str, last: int, timeout: float = 30) -> bool:
    """Wait (in a thread) until server C{i}'s replica holds message C{last}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_last(cluster, i, stream) == last:
            return True
        time.sleep(0.1)
    return False


@pytest_twisted.inlineCallbacks
def first_put(url: str, name: str, body: bytes, timeout: float = 30) -> Any:
    """
    The first put to a new log, sent again with its id while it is refused
    with 503 (a stream of a 3-node cluster being made on a loaded machine
    can take longer than a put may wait): as a client does, written once.
    """
    deadline = time.monotonic() + timeout
    while True:
        r = yield treq.post(url + "/put/" + name, body, timeout=10,
                            headers={"Kaf-Msg-Id": "first-" + name})
        text = yield treq.content(r)
        if r.code == 200:
            return int(text)
        assert r.code == 503, (r.code, text)
        assert r.headers.getRawHeaders("Retry-After"), "a 503 without Retry-After"
        assert time.monotonic() < deadline, "the first put was refused for %.0f s" % (timeout,)
        yield deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.inlineCallbacks
def test_killing_a_stream_leader_under_load_loses_no_acknowledged_put(tmp_path: Any) -> Any:
    cluster = Cluster(tmp_path / "nats")
    front = Front(nats_engine(cluster))
    try:
        name = fresh()
        assert (yield first_put(front.url, name, b"start")) == 1
        stream = front.engine.get(name).stream
        yield deferToThread(cluster.wait_leader_of, stream)

        acked: Dict[bytes, int] = {b"start": 1}
        refused: List[Tuple[float, Optional[str]]] = []
        started = time.monotonic()

        @pytest_twisted.inlineCallbacks
        def writer(w: int) -> Any:
            k = 0
            while time.monotonic() - started < SECONDS:
                body = b"w%d-%d" % (w, k)
                # A put refused with 503 is sent again with its id: written once.
                while True:
                    sent = time.monotonic()
                    response = yield treq.post(
                        front.url + "/put/" + name, body,
                        headers={"Kaf-Msg-Id": body.decode()}, timeout=5)
                    text = yield treq.content(response)
                    took = time.monotonic() - sent
                    if response.code == 200:
                        acked[body] = int(text)
                        break
                    assert response.code == 503, (response.code, text)
                    refused.append((took, response.headers.getRawHeaders("Retry-After",
                                                                         [None])[0]))
                    if time.monotonic() - started >= SECONDS + 10:
                        break
                k += 1

        def kill() -> int:
            time.sleep(KILL_AT)
            leader = cluster.leader_of(stream)
            assert leader is not None
            cluster.kill(leader)
            return leader

        results = yield gatherResults([deferToThread(kill)]
                                      + [writer(w) for w in range(WRITERS)],
                                      consumeErrors=True)
        killed = results[0]
        after_kill = [n for n in acked.values() if n > 0]
        assert len(after_kill) > 100

        # Every refusal came fast, with Retry-After.
        assert refused, "the election refused no put: the leader was not the one killed"
        assert max(took for took, _ in refused) < 2.5
        assert all(retry == "1" for _, retry in refused)

        # Read the whole log back.
        got: List[Tuple[int, bytes]] = []
        at = 1
        while True:
            r = yield treq.get(front.url + "/get/%s?from=%d&format=json&limit=10000"
                               % (name, at), timeout=10)
            messages = json.loads((yield treq.content(r)))
            if not messages:
                break
            first = int(r.headers.getRawHeaders("X-Kaf-FirstMsg")[0])
            got.extend((first + i, m.encode()) for i, m in enumerate(messages))
            at = got[-1][0] + 1
        numbers = [n for n, _ in got]
        bodies = [b for _, b in got]
        assert numbers == list(range(1, len(got) + 1)), "a gap in the numbers"
        assert len(set(bodies)) == len(bodies), "a message written twice"
        stored = dict((b, n) for n, b in got)
        assert {b: stored.get(b) for b in acked} == acked, "an acknowledged put is missing"

        print("failover: %d puts acknowledged, %d refused with 503 (slowest %.2f s), "
              "%d messages read back" % (len(acked), len(refused),
                                         max(took for took, _ in refused), len(got)))

        # The killed server comes back and catches up.
        yield deferToThread(cluster.start, killed)
        ok = yield deferToThread(caught_up, cluster, killed, stream, len(got))
        assert ok, "the restarted server did not catch up"
    finally:
        yield front.close()
        cluster.stop()


def test_a_cluster_that_is_not_there_stops_start_up_with_one_line(tmp_path: Any) -> None:
    port, = free_ports(1)
    done = run_twistd(["--store", "nats://127.0.0.1:%d" % (port,), "--addr",
                       "127.0.0.1:%d" % (free_ports(1)[0],)], timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kaf: --store: cannot use the NATS cluster at nats://127.0.0.1:%d"
                               % (port,)), lines[0]


def consumer_host(cluster: Cluster, stream: str) -> Optional[int]:
    """The server that leads the (only) consumer of C{stream}."""
    for i, node in enumerate(cluster.nodes):
        if not node.running():
            continue
        jsz = cluster.jsz(i, "?consumers=true")
        for acc in (jsz or {}).get("account_details") or ():
            for detail in acc.get("stream_detail") or ():
                if detail.get("name") != stream:
                    continue
                for consumer in detail.get("consumer_detail") or ():
                    leader = (consumer.get("cluster") or {}).get("leader")
                    if leader is not None:
                        return cluster.index_of(leader)
    return None


@pytest_twisted.inlineCallbacks
def test_a_long_poll_still_wakes_after_its_consumer_s_server_is_killed(tmp_path: Any) -> Any:
    from twisted.logger import formatEvent, globalLogPublisher

    lines: List[str] = []

    def observe(event: Dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    cluster = Cluster(tmp_path / "nats")
    a, b = Front(nats_engine(cluster)), Front(nats_engine(cluster))
    try:
        name = fresh()
        assert (yield first_put(b.url, name, b"one")) == 1
        # A long poll on A, through the engine (as the web layer asks it).
        log = a.engine.get_or_create(name)
        woken = log.wait(2, 60)
        # Its consumer is being made (and made again if the cluster was slow
        # to answer): look until it is there.
        deadline = time.monotonic() + 20
        while log._watch is None:
            assert time.monotonic() < deadline, "the wait's consumer was never made"
            yield deferLater(reactor, 0.05, lambda: None)
        host = yield deferToThread(consumer_host, cluster, log.stream)
        assert host is not None
        yield deferToThread(cluster.kill, host)
        killed_at = time.monotonic()
        # Put through the other front end until the cluster takes it again.
        while True:
            r = yield treq.post(b.url + "/put/" + name, b"two", timeout=10,
                                headers={"Kaf-Msg-Id": "two"})
            if r.code == 200:
                break
            assert r.code == 503
        yield woken
        assert time.monotonic() - killed_at < 40
        # Woken by a consumer made again once the first went silent.
        assert [line for line in lines if "its wait consumer went silent" in line]
        r = yield treq.get(a.url + "/get/%s?from=2&format=raw" % (name,), timeout=10)
        assert (yield treq.content(r)) == b"two\n"
    finally:
        globalLogPublisher.removeObserver(observe)
        yield a.close()
        yield b.close()
        cluster.stop()
