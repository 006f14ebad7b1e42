"""
The NATS engine through real servers: two C{twistd -n kaf --store nats://}
front ends on one real cluster, one on Twisted's asyncio reactor (its
default with --store nats://: the NATS client shares the reactor's loop)
and one on the epoll reactor (the client on a loop in a thread), driven
with curl.
"""
from __future__ import annotations

import subprocess
from typing import Any, Generator, List

import pytest

from nats_cluster import Cluster
from server import KafServer
from test_engines import cluster, fresh  # noqa: F401 (the session's cluster fixture)


@pytest.fixture
def fronts(cluster: Cluster, tmp_path: Any) -> Generator[List[KafServer], None, None]:  # noqa: F811
    store = ["--store", ",".join(cluster.urls)]
    # With --store nats:// twistd runs on the asyncio reactor unless told
    # otherwise (-r epoll: the NATS client then has a loop in a thread).
    servers = [KafServer(str(tmp_path / "unused-1"), args=store,
                         twistd_flags=("-n", "--pidfile=", "-r", "epoll")).start(),
               KafServer(str(tmp_path / "unused-2"), args=store).start()]
    yield servers
    for server in servers:
        server.close()


def curl(*args: str) -> bytes:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], check=True,
                          capture_output=True, timeout=30).stdout


def test_two_real_front_ends_serve_one_log(fronts: List[KafServer]) -> None:
    plain, on_asyncio = fronts
    name = fresh()
    assert curl("--data-binary", "first", plain.url("/put/" + name)) == b"1"
    assert curl("--data-binary", "second", on_asyncio.url("/put/" + name)) == b"2"
    assert curl(plain.url("/get/%s?from=1&format=raw" % name)) == b"first\nsecond\n"
    assert curl(on_asyncio.url("/get/%s?from=1&format=json" % name)) == b'["first",\n"second"]'
    # A long poll on one wakes for a put on the other.
    poll = subprocess.Popen(["curl", "-sS", "--max-time", "20",
                             on_asyncio.url("/get/%s?from=3&wait=15&format=raw" % name)],
                            stdout=subprocess.PIPE)
    try:
        assert curl("--data-binary", "third", plain.url("/put/" + name)) == b"3"
        out, _ = poll.communicate(timeout=25)
    finally:
        poll.kill()
    assert out == b"third\n"
    log = open(on_asyncio.log_path).read()
    assert "its client on the reactor's asyncio loop" in log
    assert "AsyncioSelectorReactor" in log
    assert "its client on an asyncio loop in a thread" in open(plain.log_path).read()
    assert curl(plain.url("/ready")) == b"ready\n"
