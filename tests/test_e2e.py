"""
End-to-end tests: a real C{twistd -n kaf} process, driven by real C{curl}
and by treq (SPEC sections 1, 3, 4, 5 and 7 as a user meets them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Generator, List, Optional, Tuple

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.client import Agent, HTTPConnectionPool
from treq.client import HTTPClient

from conftest import FIXTURES, copy_fixture
from server import (KafServer, free_port, read_log_strictly, run_twistd, self_signed,
                    stopped_cleanly)

CURL = shutil.which("curl") or "curl"


class CurlReply:
    """One HTTP reply as C{curl -s -i} printed it."""

    def __init__(self, raw: bytes) -> None:
        # Skip interim replies (100 Continue for bodies curl finds large).
        while raw.startswith(b"HTTP/1.1 1"):
            raw = raw.split(b"\r\n\r\n", 1)[1]
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers: Dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            self.headers[key.strip().lower()] = value.strip()

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


def curl(*args: str) -> CurlReply:
    done = subprocess.run([CURL, "-s", "-i", "--max-time", "20"] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert done.returncode == 0, (args, done.returncode, done.stderr)
    return CurlReply(done.stdout)


def kaf_reply(records: List[Tuple[int, bytes]]) -> bytes:
    """The exact C{format=kaf} body for these messages (SPEC 3.2)."""
    return b"KAF_MSGS|v1|%d" % (len(records),) + b"".join(
        b"\nKAF_MSG|%d|%d\n%s" % (n, len(m), m) for n, m in records)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def data(tmp_path: Any) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def pool() -> Generator[HTTPConnectionPool, None, None]:
    p = HTTPConnectionPool(reactor, persistent=True)
    yield p
    pytest_twisted.blockon(p.closeCachedConnections())


def client(pool: HTTPConnectionPool) -> HTTPClient:
    return HTTPClient(Agent(reactor, pool=pool))


# -- curl: the whole API round trip ------------------------------------------------


def test_curl_put_replies_the_new_number_as_plain_text(data: str) -> None:
    with KafServer(data) as server:
        first = curl("--data-binary", "hello", server.url("/put/e2e"))
        second = curl("--data-binary", "world", server.url("/put/e2e"))
    assert first.status_line == "HTTP/1.1 200 OK"
    assert first.header("Content-Type") == "text/plain; charset=utf-8"
    assert first.header("Content-Length") == "1"
    assert first.body == b"1"
    assert second.body == b"2"
    assert read(os.path.join(data, "e2e")) == (
        b"KAF_DB|v1|0\nKAF_MSG|1|5\nhello\nKAF_MSG|2|5\nworld")


def test_curl_put_of_a_binary_file_keeps_every_byte(data: str, tmp_path: Any) -> None:
    message = bytes(range(256)) * 20  # over 1024 bytes: curl sends Expect: 100-continue
    path = tmp_path / "message.bin"
    path.write_bytes(message)
    with KafServer(data) as server:
        put = curl("--data-binary", "@%s" % (path,), server.url("/put/bin"))
        get = curl(server.url("/get/bin?from=1&format=raw"))
    assert (put.status, put.body) == (200, b"1")
    assert get.body == message + b"\n"
    assert read(os.path.join(data, "bin")) == (
        b"KAF_DB|v1|0\nKAF_MSG|1|%d\n" % (len(message),) + message)


def test_curl_get_returns_exact_kaf_raw_and_json_bodies(data: str) -> None:
    with KafServer(data) as server:
        for m in ("hello", '{"a": 1}', "three\nlines\n"):
            assert curl("--data-binary", m, server.url("/put/e2e")).status == 200
        kaf = curl(server.url("/get/e2e?from=2"))
        raw = curl(server.url("/get/e2e?from=1&format=raw"))
        js = curl(server.url("/get/e2e?from=1&format=json"))
    expected = kaf_reply([(2, b'{"a": 1}'), (3, b"three\nlines\n")])
    assert kaf.status == 200
    assert kaf.body == expected
    assert kaf.header("Content-Type") == "application/octet-stream"
    assert kaf.header("Content-Length") == str(len(expected))
    assert kaf.header("X-Kaf-FirstMsg") == "2"
    assert kaf.header("X-Kaf-LastMsgSent") == "3"
    assert kaf.header("X-Kaf-LastMsg") == "3"
    assert raw.body == b'hello\n{"a": 1}\nthree\nlines\n\n'
    assert raw.header("Content-Type") == "application/octet-stream"
    assert js.header("Content-Type") == "application/json"
    assert json.loads(js.body) == ["hello", {"a": 1}, "three\nlines\n"]


def test_curl_get_of_a_missing_log_is_zero_messages(data: str) -> None:
    with KafServer(data) as server:
        reply = curl(server.url("/get/nothing?from=1"))
        head = curl("-I", server.url("/get/nothing?from=1"))
    assert reply.status == 200
    assert reply.body == b"KAF_MSGS|v1|0"
    assert reply.header("Content-Length") == "13"
    assert reply.header("X-Kaf-LastMsgSent") is None
    assert head.status == 200
    assert head.header("Content-Length") == "13"
    assert not os.path.exists(os.path.join(data, "nothing"))


def test_curl_errors_are_one_line_of_plain_text(data: str) -> None:
    with KafServer(data) as server:
        missing_from = curl(server.url("/get/e2e"))
        wrong_method = curl(server.url("/archive/e2e?upto=1"))
        empty = curl("-X", "POST", server.url("/put/e2e"))
    assert missing_from.status == 400
    assert missing_from.header("Content-Type") == "text/plain; charset=utf-8"
    assert missing_from.body == b"get: missing 'from' message number\n"
    assert wrong_method.status == 405
    assert wrong_method.header("Allow") == "POST"
    assert wrong_method.body.startswith(b"archive: use POST, e.g. curl -X POST")
    assert wrong_method.body.count(b"\n") == 1 and wrong_method.body.endswith(b"\n")
    assert (empty.status, empty.body) == (400, b"put: empty message\n")
    assert not os.path.exists(os.path.join(data, "e2e"))


def test_curl_archive_moves_old_messages_and_numbering_continues(data: str) -> None:
    with KafServer(data) as server:
        for i in range(1, 6):
            assert curl("--data-binary", "m%d" % (i,), server.url("/put/e2e")).body == b"%d" % (i,)
        before = read(os.path.join(data, "e2e"))
        archived = curl("-X", "POST", server.url("/archive/e2e?upto=3"))
        after_get = curl(server.url("/get/e2e?from=1"))
        put = curl("--data-binary", "m6", server.url("/put/e2e"))
        again = curl("-X", "POST", server.url("/archive/e2e?upto=3"))
        logs = curl(server.url("/logs"))
    assert archived.status == 200
    assert archived.header("Content-Type") == "application/json"
    result = json.loads(archived.body)
    assert re.match(r"--e2e--\d{4}-\d\d-\d\dT\d\d_\d\d_\d\dZ\Z", result["archive"])
    assert result == {"log": "e2e", "archive": result["archive"], "upto": 3, "kept": 2}
    assert read(os.path.join(data, result["archive"])) == before
    assert after_get.body == kaf_reply([(4, b"m4"), (5, b"m5")])
    assert put.body == b"6"
    assert read(os.path.join(data, "e2e")) == (
        b"KAF_DB|v1|3\nKAF_MSG|4|2\nm4\nKAF_MSG|5|2\nm5\nKAF_MSG|6|2\nm6")
    assert json.loads(again.body)["archive"] is None
    assert json.loads(logs.body) == [{"name": "e2e", "first": 4, "last": 6, "count": 3,
                                      "bytes": os.path.getsize(os.path.join(data, "e2e"))}]


# -- the Go version's data folder ---------------------------------------------------


GO_LOGS = ["_kaf", "arch", "js", "sizes", "small7", "test"]


def test_go_data_folder_is_served_as_it_is(gokaf_data: str) -> None:
    files = {name: read(os.path.join(gokaf_data, name)) for name in GO_LOGS}
    with KafServer(gokaf_data) as server:
        replies = {name: curl(server.url("/get/%s?from=1" % (name,))) for name in GO_LOGS}
        logs = json.loads(curl(server.url("/logs")).body)
    assert [entry["name"] for entry in logs] == GO_LOGS
    for name in GO_LOGS:
        start, records = read_log_strictly(files[name])
        reply = replies[name]
        assert reply.status == 200, name
        # A clean file's records are the body of a kaf reply (SPEC 4).
        assert reply.body == kaf_reply(records), name
        assert reply.header("X-Kaf-LastMsgSent") == str(records[-1][0]), name
        assert read(os.path.join(gokaf_data, name)) == files[name], name
    by_name = {entry["name"]: entry for entry in logs}
    assert by_name["arch"]["first"] == 5
    assert by_name["small7"] == {"name": "small7", "first": 1, "last": 7, "count": 7,
                                 "bytes": len(files["small7"])}


def test_go_log_is_appended_to_in_the_go_format(gokaf_data: str) -> None:
    path = os.path.join(gokaf_data, "small7")
    before = read(path)
    archive = os.path.join(gokaf_data, "--arch--2026-11-29T06_14_59Z_00")
    archive_before = read(archive)
    with KafServer(gokaf_data) as server:
        put = curl("--data-binary", "s8", server.url("/put/small7"))
        arch = curl("--data-binary", "a12", server.url("/put/arch"))
    assert put.body == b"8"
    assert arch.body == b"12"
    assert read(path) == before + b"\nKAF_MSG|8|2\ns8"
    assert read(archive) == archive_before


# -- restarts and signals ----------------------------------------------------------


def test_restart_continues_numbering(data: str) -> None:
    with KafServer(data) as server:
        for m in ("a", "b", "c"):
            curl("--data-binary", m, server.url("/put/log"))
            curl("--data-binary", m, server.url("/put/emptied"))
        curl("-X", "POST", server.url("/archive/emptied?upto=100"))
        assert stopped_cleanly(server.stop(), signal.SIGTERM, server.output())
    with KafServer(data) as server:
        put = curl("--data-binary", "d", server.url("/put/log"))
        emptied = curl("--data-binary", "d", server.url("/put/emptied"))
        get = curl(server.url("/get/log?from=1&format=raw"))
    assert put.body == b"4"
    assert get.body == b"a\nb\nc\nd\n"
    # An archive that emptied the log keeps its last number in the header.
    assert emptied.body == b"4"


@pytest_twisted.inlineCallbacks
def test_sigterm_finishes_writes_answers_long_polls_and_exits_cleanly(
        data: str, pool: HTTPConnectionPool) -> Generator[Any, Any, None]:
    http = client(pool)
    acked: Dict[int, bytes] = {}
    outcomes: Dict[str, int] = {}
    server = KafServer(data, ["--fsync", "always"]).start()
    try:
        poll_started = time.monotonic()
        poll = http.get(server.url("/get/waiting?from=1&wait=30"), timeout=60)
        enough: "defer.Deferred[None]" = defer.Deferred()

        @defer.inlineCallbacks
        def writer(w: int) -> Generator[Any, Any, None]:
            for i in range(10000):
                body = b"w%d-%d" % (w, i)
                try:
                    response = yield http.post(server.url("/put/busy"), data=body, timeout=30)
                    text = yield response.content()
                except Exception as e:
                    outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
                    return
                key = str(response.code)
                outcomes[key] = outcomes.get(key, 0) + 1
                if response.code != 200:
                    return
                acked[int(text)] = body
                if len(acked) == 50 and not enough.called:
                    enough.callback(None)

        writers = defer.DeferredList([writer(w) for w in range(16)])
        # Should every writer stop before 50 acks, the checks below say why.
        writers.addCallback(lambda _: enough.called or enough.callback(None))
        yield enough
        server.process.send_signal(signal.SIGTERM)
        response = yield poll
        poll_body = yield response.content()
        poll_took = time.monotonic() - poll_started
        yield writers
        # One SIGTERM is enough: wait for the exit it causes.
        server.process.wait(30)
        code = server.stop()
        output = server.output()
    finally:
        server.close()
    assert stopped_cleanly(code, signal.SIGTERM, output), (code, output)
    assert (response.code, poll_body) == (200, b"KAF_MSGS|v1|0")
    assert poll_took < 20
    assert set(outcomes) <= {"200", "503", "ResponseNeverReceived", "ConnectionRefusedError",
                             "RequestTransmissionFailed", "ResponseFailed"}, outcomes
    start, records = read_log_strictly(read(os.path.join(data, "busy")))
    assert [n for n, _ in records] == list(range(1, len(records) + 1))
    on_disk = dict(records)
    assert all(on_disk.get(n) == body for n, body in acked.items())
    with KafServer(data) as again:
        restart_log = again.output()
    assert "torn" not in restart_log
    assert "log busy: messages 1-%d" % (len(records),) in restart_log


@pytest.mark.parametrize("inherited", ["sigint default", "sigint ignored"])
def test_sigint_stops_cleanly_and_exits_0(data: str, inherited: str, request: Any) -> None:
    # Whatever signal state the tests inherit (SIGINT is ignored under a
    # shell's background job), the server gets Ctrl-C as a shell gives it.
    if inherited == "sigint ignored":
        request.getfixturevalue("sigint_ignored")
    with KafServer(data) as server:
        curl("--data-binary", "x", server.url("/put/log"))
        code = server.stop(signal.SIGINT)
        assert stopped_cleanly(code, signal.SIGINT, server.output()), (code, server.output())
    assert read(os.path.join(data, "log")) == b"KAF_DB|v1|0\nKAF_MSG|1|1\nx"


# -- listening -----------------------------------------------------------------------


def test_listen_on_two_tcp_ports_and_a_unix_socket_serves_on_each(data: str) -> None:
    # A short folder: unix socket paths are limited to ~107 bytes.
    folder = tempfile.mkdtemp(prefix="kaf-")
    sock = os.path.join(folder, "kaf.sock")
    try:
        with KafServer(data, ports=2, unix=sock) as server:
            one, two = server.ports
            a = curl("--data-binary", "via-one", "http://127.0.0.1:%d/put/multi" % (one,))
            b = curl("--data-binary", "via-two", "http://127.0.0.1:%d/put/multi" % (two,))
            c = curl("--unix-socket", sock, "--data-binary", "via-unix",
                     "http://kaf/put/multi")
            via_unix = curl("--unix-socket", sock, "http://kaf/get/multi?from=1&format=raw")
            via_one = curl("http://127.0.0.1:%d/get/multi?from=1&format=raw" % (one,))
            output = server.output()
            maps = read("/proc/%d/maps" % (server.pid,)).decode("utf-8", "replace")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert [a.body, b.body, c.body] == [b"1", b"2", b"3"]
    assert via_unix.body == via_one.body == b"via-one\nvia-two\nvia-unix\n"
    assert "listening on tcp:%d:interface=127.0.0.1" % (one,) in output
    assert "listening on tcp:%d:interface=127.0.0.1" % (two,) in output
    assert "listening on unix:%s" % (sock,) in output
    # No listener serves TLS: pyOpenSSL and cryptography are not loaded.
    assert "TLS support not loaded" in output
    assert "cryptography" not in maps and "OpenSSL" not in maps
    # Every listener's events went through kaf.dispatch's direct dispatch.
    assert "epoll events handed to their connections directly" in output


def test_listen_ssl_serves_over_tls(tmp_path: Any) -> None:
    key, cert = self_signed(str(tmp_path))
    port = free_port()
    listen = "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (port, key, cert)
    # Two plain ports too: the server is ready once they answer, and every
    # listener starts before it serves.
    with KafServer(str(tmp_path / "data"), ["--listen", listen], ports=2) as server:
        url = "https://127.0.0.1:%d" % (port,)
        put = curl("--cacert", cert, "--data-binary", "secret", url + "/put/tls")
        assert (put.status, put.body) == (200, b"1")
        got = curl("--cacert", cert, url + "/get/tls?from=1&format=raw")
        assert got.body == b"secret\n"
        assert "TLS support not loaded" not in server.output()


# -- options and start-up log ------------------------------------------------------


@pytest.mark.parametrize("option, value, reason", [
    ("--fsync", "sometimes", "--fsync must be always or never"),
    ("--max-message-size", "abc", "--max-message-size must be a number"),
    ("--max-message-size", "0", "--max-message-size must be > 0"),
    ("--stats-interval", "-1", "--stats-interval must be > 0"),
    ("--max-wait", "soon", "--max-wait must be a number"),
    ("--addr", "localhost", "--addr must be HOST:PORT"),
    ("--addr", "127.0.0.1:70000", "--addr must be HOST:PORT"),
    ("--listen", "tcp:notaport", "--listen 'tcp:notaport' is not an endpoint"),
    ("--listen", "carrier-pigeon:7749", "--listen 'carrier-pigeon:7749' is not an endpoint"),
    ("--data", "A_FILE", "--data"),
    ("--data", "A_FILE/below", "--data"),
    ("--bogus", "", "option --bogus not recognized"),
])
def test_bad_option_value_is_a_one_line_usage_error(
        tmp_path: Any, option: str, value: str, reason: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"not a folder")
    value = value.replace("A_FILE", str(a_file))
    args = ["--addr", "127.0.0.1:1", "--data", str(tmp_path / "data"), option] + (
        [value] if value else [])
    done = run_twistd(args)
    assert done.returncode == 1
    # One line on stderr naming the option, and nothing else: no usage text.
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("twistd kaf: ") and reason in line, done.stderr
    assert line.endswith("(see twistd kaf --help)")
    assert os.listdir(str(tmp_path)) == ["a-file"]


def test_startup_log_names_address_folder_each_log_and_each_problem(gokaf_data: str) -> None:
    copy_fixture("edited/torn-data", gokaf_data + "-torn")
    shutil.copy(os.path.join(gokaf_data + "-torn", "log"), os.path.join(gokaf_data, "torn"))
    shutil.copy(os.path.join(FIXTURES, "edited", "bad-db-header", "log"),
                os.path.join(gokaf_data, "notkaf"))
    with open(os.path.join(gokaf_data, "not a log name"), "wb") as f:
        f.write(b"KAF_DB|v1|0")
    sizes = {name: os.path.getsize(os.path.join(gokaf_data, name)) for name in GO_LOGS}
    with KafServer(gokaf_data) as server:
        output = server.output()
        torn_reply = curl(server.url("/get/torn?from=1&format=raw"))
        notkaf = curl(server.url("/get/notkaf?from=1"))
    lines = output.splitlines()

    def lines_with(*words: str) -> List[str]:
        return [line for line in lines if all(w in line for w in words)]

    assert len(lines_with("listening on", "127.0.0.1", str(server.port))) == 1
    assert len(lines_with("data folder", gokaf_data)) == 1
    firsts = {"_kaf": 1, "arch": 5, "js": 1, "sizes": 1, "small7": 1, "test": 1}
    lasts = {"_kaf": 1, "arch": 11, "js": 2, "sizes": 6, "small7": 7, "test": 3}
    for name in GO_LOGS:
        assert len(lines_with("log %s: messages %d-%d, %d bytes"
                              % (name, firsts[name], lasts[name], sizes[name]))) == 1, name
    # Torn tail: moved aside, cut from the log, one warning that names the side file.
    torn_lines = lines_with("log torn:", "torn tail")
    assert len(torn_lines) == 1, output
    side = [f for f in os.listdir(gokaf_data) if f.startswith(".torn.torn-")]
    assert len(side) == 1 and side[0] in torn_lines[0]
    torn_original = read(os.path.join(gokaf_data + "-torn", "log"))
    assert read(os.path.join(gokaf_data, "torn")) + read(
        os.path.join(gokaf_data, side[0])) == torn_original
    assert torn_reply.body == b"aaaa\nbbbb\n"
    assert len(lines_with("log torn: messages 1-2")) == 1
    # Not a Kaf log: one line, and served as 500 with the reason.
    assert len(lines_with("log notkaf:", "not a Kaf log")) == 1
    assert notkaf.status == 500 and b"not a Kaf log" in notkaf.body
    assert len(lines_with("not a log name")) == 1
    assert lines_with("arch--") == []
    assert "Traceback" not in output


# -- _kaf ---------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_stats_record_is_written_to_kaf_after_activity(
        data: str, pool: HTTPConnectionPool) -> Generator[Any, Any, None]:
    http = client(pool)
    with KafServer(data, ["--stats-interval", "1"]) as server:
        put = yield http.post(server.url("/put/busy"), data=b"one", timeout=30)
        yield put.content()
        # A long poll on _kaf: answered as soon as the next tick writes.
        response = yield http.get(server.url("/get/_kaf?from=1&format=json&wait=15"),
                                  timeout=60)
        records = json.loads((yield response.content()))
        after = yield http.get(server.url("/get/_kaf?from=1&format=json"), timeout=30)
        later = json.loads((yield after.content()))
    assert response.code == 200
    assert len(records) >= 1
    record = records[0]
    assert set(record) == {"beg", "end", "statno", "logs"}
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z", record["beg"])
    assert record["beg"] <= record["end"]
    assert record["statno"] >= 1
    assert record["logs"] == [{"name": "busy", "last": 1, "gets": 0, "puts": 1}]
    # Idle ticks write nothing: only the interval with activity is there
    # (the get of _kaf itself is not activity).
    assert later == records


def start_up_error(args: List[str]) -> str:
    """The one line on stderr a failed start-up gave; it exited 1, having listened nowhere."""
    done = run_twistd(args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert "listening on" not in done.stdout and "starting on" not in done.stdout
    [line] = done.stderr.splitlines()
    return line


def test_an_address_in_use_stops_start_up_with_one_line(tmp_path: Any) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        line = start_up_error(["--addr", "127.0.0.1:%d" % (port,), "--data", str(tmp_path / "d")])
    finally:
        taken.close()
    assert line.startswith("kaf: cannot listen on tcp:%d:interface=127.0.0.1:backlog=1024 "
                           "(--listen/--addr): " % (port,))
    assert "in use" in line


@pytest.mark.parametrize("data, reason", [
    ("/proc/kaf-data", "kaf: --data '/proc/kaf-data': cannot create the folder: "),
    ("/proc", "kaf: --data '/proc': cannot write in the folder: "),
])
def test_a_data_folder_kaf_cannot_use_stops_start_up_before_listening(
        data: str, reason: str) -> None:
    port = free_port()
    line = start_up_error(["--addr", "127.0.0.1:%d" % (port,), "--data", data])
    assert line.startswith(reason)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


