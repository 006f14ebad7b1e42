"""
Retention through a real C{twistd -n kaf} and real C{curl}: a log over
its C{--retain} limit is archived by the server itself, and
C{--archive-keep} deletes the oldest archive files.
"""
from __future__ import annotations

import os
import time
from typing import Callable, List

from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)

from kaf.engines.file.retention import DEFAULT_INTERVAL


def archives(folder: str) -> List[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("--ev--"))


def wait_until(check: Callable[[], bool], timeout: float = 4 * DEFAULT_INTERVAL) -> None:
    """The server is another process: a bounded poll."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "retention did not run in %gs" % (timeout,)
        time.sleep(0.05)


def test_the_server_archives_a_log_over_its_limit_by_itself(data: str) -> None:
    with KafServer(data, ["--retain", "ev:max-messages=3", "--archive-keep", "1"]) as server:
        for i in range(1, 6):
            assert curl("--data-binary", "m%d" % (i,), server.url("/put/ev")).body == b"%d" % i
        wait_until(lambda: len(archives(data)) == 1)
        assert curl(server.url("/get/ev?from=1&format=raw")).body == b"m3\nm4\nm5\n"
        first = archives(data)
        for i in range(6, 8):
            curl("--data-binary", "m%d" % (i,), server.url("/put/ev"))
        wait_until(lambda: archives(data) != first)
        assert len(archives(data)) == 1
        assert curl(server.url("/get/ev?from=1&format=raw")).body == b"m5\nm6\nm7\n"
        assert "retention: log ev archived up to 2" in server.output()
        with open(os.path.join(data, "ev"), "rb") as f:
            assert f.read().startswith(b"KAF_DB|v1|4")
