"""
The C{kaf} command as a real process against real C{twistd -n kaf}
servers: what it prints, its one-line errors and its exit codes.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

import pytest

from kaf import cli
from server import KafServer, default_signals, free_port

KAF = os.path.join(os.path.dirname(sys.executable), "kaf")


def kaf(args: List[str], url: Optional[str] = None, stdin: bytes = b"",
        timeout: float = 60.0) -> "subprocess.CompletedProcess[bytes]":
    env: Dict[str, str] = dict(os.environ)
    env.pop("KAF_URL", None)
    if url is not None:
        env["KAF_URL"] = url
    return subprocess.run([KAF] + args, input=stdin, capture_output=True, env=env,
                          timeout=timeout)


def ok(args: List[str], url: Optional[str], stdin: bytes = b"") -> bytes:
    """Run a command that must succeed quietly; its stdout."""
    done = kaf(args, url, stdin)
    assert (done.returncode, done.stderr) == (0, b""), done
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[KafServer]:
    with KafServer(str(tmp_path_factory.mktemp("cli") / "data")) as s:
        yield s


@pytest.fixture(scope="module")
def url(server: KafServer) -> str:
    return server.url("")


def test_put_takes_the_message_from_the_argument_or_stdin(url: str) -> None:
    assert ok(["put", "p1", "from the argument"], url) == b"1\n"
    assert ok(["put", "p1"], url, stdin=b"from stdin\nwith two lines\n") == b"2\n"
    assert ok(["get", "p1", "--format", "json"], url) == (
        b'["from the argument",\n"from stdin\\nwith two lines\\n"]\n')


def test_put_expect_may_stand_before_the_message(url: str) -> None:
    assert ok(["put", "p-expect", "--expect", "0", "first"], url) == b"1\n"
    assert ok(["put", "p-expect", "second", "--expect", "1"], url) == b"2\n"
    assert kaf(["put", "p-expect", "--expect", "1", "late"], url).returncode == 3
    assert ok(["get", "p-expect"], url) == b"first\nsecond\n"


def test_put_lines_sends_one_message_per_line_and_prints_the_last_number(url: str) -> None:
    lines = b"".join(b"line %d\n" % (i,) for i in range(1, 25001)) + b"\n\nlast"
    assert ok(["put", "p2", "--lines"], url, stdin=lines) == b"25001\n"
    out = ok(["get", "p2", "--from", "24999"], url)
    assert out == b"line 24999\nline 25000\nlast\n"
    assert len(ok(["get", "p2"], url).split(b"\n")) == 25002


def test_get_prints_every_message_in_each_format(url: str) -> None:
    ok(["put", "g1", "--lines"], url, stdin=b"a\nb\nc\n")
    assert ok(["get", "g1", "--limit", "2"], url) == b"a\nb\nc\n"
    assert json.loads(ok(["get", "g1", "--format", "json", "--limit", "2"], url)) == [
        "a", "b", "c"]
    assert ok(["get", "g1", "--format", "kaf", "--from", "2"], url) == (
        b"KAF_MSGS|v1|2\nKAF_MSG|2|1\nb\nKAF_MSG|3|1\nc")
    assert ok(["get", "nothing", "--format", "kaf"], url) == b"KAF_MSGS|v1|0"
    assert ok(["get", "nothing", "--format", "json"], url) == b"[]\n"
    assert ok(["get", "nothing"], url) == b""


def test_tail_prints_the_last_n_messages(url: str) -> None:
    ok(["put", "t1", "--lines"], url, stdin=b"".join(b"%d\n" % (i,) for i in range(1, 21)))
    assert ok(["tail", "t1", "-n", "3"], url) == b"18\n19\n20\n"
    assert ok(["tail", "t1"], url) == b"".join(b"%d\n" % (i,) for i in range(11, 21))
    assert ok(["tail", "t1", "-n", "50"], url).count(b"\n") == 20


@pytest.mark.parametrize("inherited", ["sigint default", "sigint ignored"])
def test_tail_follow_prints_messages_as_they_are_put(
        url: str, inherited: str, request: Any) -> None:
    if inherited == "sigint ignored":
        request.getfixturevalue("sigint_ignored")
    ok(["put", "t2", "--lines"], url, stdin=b"old\nrecent\n")
    env = dict(os.environ, KAF_URL=url)
    tail = subprocess.Popen([KAF, "tail", "t2", "-n", "1", "-f"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=default_signals)
    lines = Lines(tail)
    try:
        assert lines.next() == b"recent\n"
        ok(["put", "t2", "news"], url)
        assert lines.next() == b"news\n"
        ok(["put", "t2", "--lines"], url, stdin=b"more\nstill more\n")
        assert lines.next() == b"more\n"
        assert lines.next() == b"still more\n"
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0
        assert tail.stderr is not None and tail.stderr.read() == b""
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


class Lines:
    """Reads a process's output line by line, each within a deadline."""

    def __init__(self, process: "subprocess.Popen[bytes]") -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "no output within %gs" % (timeout,)
            chunk = os.read(self.fd, 65536)
            assert chunk, "the process closed its output"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


def test_archive_reports_what_it_did(url: str) -> None:
    ok(["put", "a1", "--lines"], url, stdin=b"1\n2\n3\n4\n5\n")
    out = ok(["archive", "a1", "--upto", "3"], url).decode()
    assert out.startswith("a1: archived up to 3 into --a1--") and out.endswith(
        "; 2 messages kept\n")
    assert ok(["get", "a1"], url) == b"4\n5\n"
    assert ok(["archive", "a1", "--upto", "3"], url) == b"a1: nothing to archive up to 3\n"


def test_logs_prints_a_table_of_the_logs(url: str) -> None:
    ok(["put", "l1", "--lines"], url, stdin=b"x\ny\n")
    lines = ok(["--url", url, "logs"], None).decode().splitlines()
    assert lines[0].split() == ["NAME", "FIRST", "LAST", "COUNT", "BYTES"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["l1"][:3] == ["1", "2", "2"]
    assert json.loads(ok(["logs", "--json"], url))[0]["name"] == sorted(rows)[0]


def test_errors_are_one_line_with_a_non_zero_exit_code(url: str) -> None:
    cases = [
        (["put", "_kaf", "x"], 1, "kaf: put: logs whose names begin with '_' belong to Kaf\n"),
        (["put", "e1"], 1, "kaf: put: empty message\n"),
        (["get", "bad name"], 1, "kaf: get: log name may only hold A-Z a-z 0-9 _ . -\n"),
        (["archive", "never", "--upto", "1"], 1, "kaf: archive: no log named 'never'\n"),
        (["put", "e2", "x", "--expect", "5"], 3,
         "kaf: put: expected last message 5, but the log's last is 0\n"),
    ]
    for args, code, stderr in cases:
        done = kaf(args, url)
        assert (done.returncode, done.stderr.decode(), done.stdout) == (code, stderr, b""), args


def test_an_unreachable_server_is_a_one_line_error() -> None:
    port = free_port()
    done = kaf(["--url", "127.0.0.1:%d" % (port,), "logs"])
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "kaf: cannot connect to http://127.0.0.1:%d: connection refused\n" % (port,))


def test_bad_usage_exits_with_2() -> None:
    done = kaf(["get", "ev", "--from", "0"])
    assert done.returncode == 2
    assert b"--from: must be an integer" in done.stderr
    assert kaf([]).returncode == 2


@pytest.mark.parametrize("command", ["put", "get", "tail", "archive", "logs", "copy"])
def test_each_command_has_help(command: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.parser().parse_args([command, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith("usage: kaf " + command)


def test_copy_copies_a_log_and_resumes_after_a_partial_copy(
        server: KafServer, url: str, tmp_path: Any) -> None:
    lines = [b"event %d %s" % (i, b"x" * (i % 50)) for i in range(1, 1001)]
    ok(["put", "c1", "--lines"], url, stdin=b"\n".join(lines))
    with KafServer(str(tmp_path / "dest")) as dest:
        dest_url = dest.url("")
        # What an interrupted copy leaves: the first messages, numbered alike.
        ok(["put", "c1copy", "--lines"], dest_url, stdin=b"\n".join(lines[:350]))
        out = ok(["copy", "--limit", "100", url + "/c1", dest_url + "/c1copy"], url)
        assert out.startswith(b"copied 650 messages (")
        assert out.endswith(b"/c1copy is at message 1000\n")
        assert ok(["get", "c1copy", "--format", "kaf"], dest_url) == ok(
            ["get", "c1", "--format", "kaf"], url)
        # Done already: running it again copies nothing.
        again = ok(["copy", url + "/c1", dest_url + "/c1copy"], url)
        assert again.startswith(b"copied 0 messages")
        # The destination moved ahead: refused, and left alone.
        ok(["put", "c1copy", "extra"], dest_url)
        done = kaf(["copy", url + "/c1", dest_url + "/c1copy"], url)
        assert done.returncode == 1
        assert done.stderr == (b"kaf: copy: the destination's last message (1001) is "
                               b"ahead of the source's (1000)\n")
        assert ok(["tail", "c1copy", "-n", "1"], dest_url) == b"extra\n"


def test_copy_of_an_archived_log_into_an_empty_destination_keeps_the_numbers(
        url: str) -> None:
    ok(["put", "arch", "--lines"], url, stdin=b"".join(b"m%d\n" % (i,) for i in range(1, 31)))
    ok(["archive", "arch", "--upto", "20"], url)
    out = ok(["copy", "--limit", "4", url + "/arch", url + "/archcopy"], url)
    assert out.startswith(b"copied 10 messages (") and out.endswith(b"is at message 30\n")
    assert ok(["get", "archcopy", "--format", "kaf"], url) == ok(
        ["get", "arch", "--format", "kaf"], url)
    assert ok(["get", "archcopy", "--from", "21", "--format", "raw"], url).startswith(b"m21\n")


def test_copy_of_an_archived_log_resumes_after_an_interruption(url: str) -> None:
    ok(["put", "arch2", "--lines"], url, stdin=b"".join(b"m%d\n" % (i,) for i in range(1, 31)))
    ok(["archive", "arch2", "--upto", "20"], url)
    # What an interrupted copy leaves: messages 21 to 25, numbered alike.
    body = b"".join(b"m%d\n" % (i,) for i in range(21, 26))
    with urllib.request.urlopen(url + "/put/arch2copy?batch=lines&first=21", body) as reply:
        assert reply.read() == b"25"
    out = ok(["copy", url + "/arch2", url + "/arch2copy"], url)
    assert out.startswith(b"copied 5 messages (") and out.endswith(b"is at message 30\n")
    assert ok(["get", "arch2copy", "--format", "kaf"], url) == ok(
        ["get", "arch2", "--format", "kaf"], url)


def test_copy_refuses_an_argument_that_is_not_server_url_slash_log(url: str) -> None:
    done = kaf(["copy", url, url + "/x"])
    assert done.returncode == 2
    assert done.stderr.startswith(b"kaf: copy: ")
