"""
Many logs and few descriptors, and a full disk, against a real
C{twistd -n kaf} under an open-file limit (and, as root, on a small tmpfs).
"""
from __future__ import annotations

import os
import subprocess
from typing import Any, Iterator, List, Tuple

import pytest

from kaf import _format
from server import KafServer


def curl_many(method: str, urls: List[str], body: bytes = b"x") -> List[Tuple[int, str, bytes]]:
    """(status, headers, body) for each URL, one curl each."""
    out = []
    for url in urls:
        args = ["curl", "-s", "-i", "--max-time", "30"]
        if method == "POST":
            args += ["--data-binary", body.decode()]
        done = subprocess.run(args + [url], capture_output=True, check=True)
        head, _, rest = done.stdout.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        out.append((status, head.decode("latin-1"), rest))
    return out


def make_logs(folder: str, count: int) -> None:
    os.makedirs(folder)
    for n in range(count):
        with open(os.path.join(folder, "log%d" % n), "wb") as f:
            f.write(_format.db_header(0) + _format.records(1, [b"a", b"b"]))


def test_more_logs_than_descriptors_are_all_served(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    make_logs(data, 300)
    server = KafServer(data, ["--fsync", "never"], nofile=128).start()
    try:
        puts = curl_many("POST", [server.url("/put/log%d" % n) for n in range(300)])
        assert [(s, b) for s, _, b in puts] == [(200, b"3")] * 300
        gets = curl_many("GET", [server.url("/get/log%d?from=1&format=raw" % n)
                                 for n in range(300)])
        assert [(s, b) for s, _, b in gets] == [(200, b"a\nb\nx\n")] * 300
        assert len(os.listdir("/proc/%d/fd" % server.pid)) < 128
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_out_of_descriptors_a_put_is_503_with_retry_after(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    # A cache larger than the limit allows: descriptors truly run out.
    server = KafServer(data, ["--fsync", "never", "--max-open-logs", "1000"],
                       nofile=48).start()
    try:
        puts = curl_many("POST", [server.url("/put/log%d" % n) for n in range(100)])
    finally:
        server.stop()
    statuses = [s for s, _, _ in puts]
    assert 503 in statuses and set(statuses) <= {200, 503}
    assert statuses[0] == 200
    for status, head, body in puts:
        if status == 503:
            assert "Retry-After: 1" in head
            assert body.endswith(b"\n") and body.count(b"\n") == 1
    output = server.output()
    assert "Traceback" not in output
    # One line for the first refusal, counts for the repeats.
    assert output.count("no file descriptor left") < statuses.count(503) or \
        statuses.count(503) == 1


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = str(tmp_path / "disk")
    os.makedirs(mount)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount]).returncode:
        pytest.skip("this system cannot mount a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=True)


def test_a_full_disk_refuses_puts_cleanly_and_leaves_nothing_behind(small_disk: str) -> None:
    data = os.path.join(small_disk, "data")
    server = KafServer(data, ["--fsync", "never"]).start()
    try:
        body = b"y" * 4000
        puts = curl_many("POST", [server.url("/put/new-%d" % n) for n in range(300)], body)
        statuses = [s for s, _, _ in puts]
        assert 507 in statuses and set(statuses) <= {200, 507}
        # Nothing half-made stays while the disk is still full.
        assert [n for n in os.listdir(data) if n.startswith(".")] == []
        # Logs that exist refuse their puts the same way, and cut back.
        again = curl_many("POST", [server.url("/put/new-0")] * 30, body)
        refused = [s for s, _, _ in again]
        assert 507 in refused and set(refused) <= {200, 507}
        assert [n for n in os.listdir(data) if n.startswith(".")] == []
        # Every acknowledged put is there, whole.
        acked = [n for n, s in enumerate(statuses) if s == 200]
        for n in acked[1:]:
            got = curl_many("GET", [server.url("/get/new-%d?from=1&format=raw" % n)])
            assert got[0][0] == 200 and got[0][2] == body + b"\n"
        got = curl_many("GET", [server.url("/get/new-0?from=1&format=raw")])
        assert got[0][2] == (body + b"\n") * (1 + refused.count(200))
    finally:
        server.stop()
    output = server.output()
    assert "Traceback" not in output
    # One line for the reason, then counts of its repeats.
    lines = [line for line in output.splitlines() if "no space left" in line]
    assert len(lines) < 5 < statuses.count(507) + refused.count(507)
    assert any(line.endswith("nothing was written (10 times)") for line in lines)
