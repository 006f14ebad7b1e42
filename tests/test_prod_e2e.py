"""
The production surface through a real C{twistd -n kaf} and real C{curl}:
probes, metrics, access control.
"""
from __future__ import annotations

from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)


def test_ready_answers_through_the_real_fsync_helpers(data: str) -> None:
    with KafServer(data, ["--fsync", "always"]) as server:
        health = curl(server.url("/health"))
        ready = curl(server.url("/ready"))
    assert (health.status, health.body) == (200, b"ok\n")
    assert (ready.status, ready.body) == (200, b"ready\n")
