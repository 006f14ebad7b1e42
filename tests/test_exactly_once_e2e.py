"""
Exactly-once puts through a real C{twistd -n kaf} and real C{curl}: a put
with an id is written, and the server is killed with SIGKILL before it
could answer; after a restart, the retry with the same id is answered
with the first number and C{Kaf-Duplicate: true}, and the message is in
the log once.

"Before it could answer" is made certain, not timed: the server's fsync
helpers are stopped (SIGSTOP), so the put's record and its id are written
but its sync never completes and no reply can be sent.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from typing import Iterator, List

from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)

from kaf.engines.file.msgids import SIDE


def children(pid: int) -> List[int]:
    found: List[int] = []
    for task in os.listdir("/proc/%d/task" % (pid,)):
        with open("/proc/%d/task/%s/children" % (pid, task)) as f:
            found.extend(int(p) for p in f.read().split())
    return found


def wait_for(path: str, text: bytes, timeout: float = 10.0) -> None:
    """Return once the file at C{path} holds C{text} (another process writes it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, "%s never held %r" % (path, text)
        time.sleep(0.01)


def test_a_put_killed_before_its_reply_is_answered_once_by_its_retry(data: str) -> None:
    with KafServer(data, ["--fsync", "always"]) as server:
        # The first put starts the fsync helper.
        assert curl("--data-binary", "before", server.url("/put/ev")).body == b"1"
        helpers = children(server.pid)
        assert helpers, "no fsync helper runs"
        for pid in helpers:
            os.kill(pid, signal.SIGSTOP)
        try:
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /put/ev HTTP/1.1\r\nHost: kaf\r\nKaf-Msg-Id: retry-me\r\n"
                      b"Content-Length: 4\r\n\r\nonce")
            wait_for(os.path.join(data, SIDE % ("ev",)), b"|retry-me\n")
            with open(os.path.join(data, "ev"), "rb") as f:
                assert f.read().endswith(b"\nKAF_MSG|2|4\nonce")
            s.settimeout(0.3)
            try:
                assert s.recv(100) == b"", "the put was answered before its fsync"
            except socket.timeout:
                pass
            server.kill()
            s.close()
        finally:
            for pid in helpers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    with KafServer(data, ["--fsync", "always"]) as server:
        retry = curl("-H", "Kaf-Msg-Id: retry-me", "--data-binary", "once",
                     server.url("/put/ev"))
        assert (retry.status, retry.body, retry.header("Kaf-Duplicate")) == (200, b"2", "true")
        new = curl("-H", "Kaf-Msg-Id: another", "--data-binary", "next", server.url("/put/ev"))
        assert (new.body, new.header("Kaf-Duplicate")) == (b"3", None)
        got = curl(server.url("/get/ev?from=1&format=raw"))
        assert got.body == b"before\nonce\nnext\n"
