"""
The production surface through a real C{twistd -n kaf} and real C{curl}:
probes and live streams.
"""
from __future__ import annotations

import socket

from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)


def test_ready_answers_through_the_real_fsync_helpers(data: str) -> None:
    with KafServer(data, ["--fsync", "always"]) as server:
        health = curl(server.url("/health"))
        ready = curl(server.url("/ready"))
    assert (health.status, health.body) == (200, b"ok\n")
    assert (ready.status, ready.body) == (200, b"ready\n")


def _read_until(s: socket.socket, marker: bytes, got: bytes = b"") -> bytes:
    while marker not in got:
        piece = s.recv(65536)
        assert piece, "the stream ended before %r came" % (marker,)
        got += piece
    return got


def test_a_live_stream_through_the_real_server_sends_each_new_put(data: str) -> None:
    with KafServer(data) as server:
        assert curl("--data-binary", "first", server.url("/put/live")).body == b"1"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /get/live?from=1 HTTP/1.1\r\nHost: kaf\r\n"
                      b"Accept: text/event-stream\r\n\r\n")
            got = _read_until(s, b"data: first\n\n")
            assert got.startswith(b"HTTP/1.1 200 ")
            assert b"Content-Type: text/event-stream" in got
            assert b"id: 1\ndata: first\n\n" in got
            # A put through another connection reaches the open stream.
            assert curl("--data-binary", "two\nlines", server.url("/put/live")).body == b"2"
            got = _read_until(s, b"data: lines\n\n", got)
            assert b"id: 2\ndata: two\ndata: lines\n\n" in got
