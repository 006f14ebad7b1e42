"""
Hostile input against a real C{twistd -n kaf} (SPEC 2 and 3): every input
is answered with a 4xx and a one-line C{text/plain} reason, never a 500 or
a traceback; no file appears outside the data folder (nor, for a bad
name, inside it); and afterwards the server still serves normally.

Raw sockets throughout, so that nothing between the test and the server
tidies an input up.  Each input's status goes into L{TABLE}, printed by
the last test.
"""
from __future__ import annotations

import http.client
import os
import socket
import time
from typing import Any, Dict, Generator, List, Set, Tuple

import pytest

from server import KafServer, header, recv_all, split_response

LIMIT = 1000
TEXT = "text/plain; charset=utf-8"

#: (input, what the server answered), in the order the tests ran.
TABLE: List[Tuple[str, str]] = []

#: Logs the tests below create on purpose; no other name may reach the disk.
CREATED: Set[str] = {"known"}


class Hostile:
    def __init__(self, server: KafServer, base: str, data: str,
                 before: Dict[str, int]) -> None:
        self.server = server
        self.base = base
        self.data = data
        self.before = before


def snapshot(base: str, data: str) -> Dict[str, int]:
    """Every path under C{base} (files with their size), the data folder's inside excepted."""
    seen = {}
    for root, dirs, files in os.walk(base):
        if os.path.abspath(root) == os.path.abspath(data):
            dirs[:] = []
            continue
        for name in dirs:
            seen[os.path.relpath(os.path.join(root, name), base)] = -1
        for name in files:
            path = os.path.join(root, name)
            seen[os.path.relpath(path, base)] = os.lstat(path).st_size
    return seen


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: Any) -> Generator[Hostile, None, None]:
    base = str(tmp_path_factory.mktemp("hostile"))
    data = os.path.join(base, "data")
    os.makedirs(os.path.join(data, "sub"))
    before = snapshot(base, data)
    server = KafServer(data, ["--max-message-size", str(LIMIT)]).start()
    try:
        status, _, body = exchange(server.port, request("POST", "/put/known", b"first"))
        assert (status, body) == (200, b"1")
        yield Hostile(server, base, data, before)
    finally:
        server.close()


def request(method: str, target: str, body: bytes = b"", headers: bytes = b"",
            length: bool = True) -> bytes:
    """One raw HTTP/1.1 request that asks the server to close afterwards."""
    head = b"%s %s HTTP/1.1\r\nHost: kaf\r\nConnection: close\r\n" % (
        method.encode(), target.encode("latin-1"))
    if length and (body or method == "POST"):
        head += b"Content-Length: %d\r\n" % (len(body),)
    return head + headers + b"\r\n" + body


def exchange_raw(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        return recv_all(s)


def exchange(port: int, raw: bytes) -> Tuple[int, bytes, bytes]:
    return split_response(exchange_raw(port, raw))


def assert_one_line_reason(head: bytes, body: bytes, has_body: bool = True) -> None:
    assert header(head, "Content-Type") == TEXT, head
    if has_body:
        assert body.endswith(b"\n") and body.count(b"\n") == 1, body
        assert len(body) == int(header(head, "Content-Length") or -1)
        assert b"Traceback" not in body


LONG = "a" * 201

# (input, raw request, status).  The names never reach the disk.
CASES: List[Tuple[str, bytes, int]] = [
    # -- log names (SPEC 2) --
    ("put name with /", request("POST", "/put/a/b", b"x"), 400),
    ("put name ..", request("POST", "/put/..", b"x"), 400),
    ("put name ../escape", request("POST", "/put/../escape", b"x"), 400),
    ("put name ../../etc/passwd", request("POST", "/put/../../etc/passwd", b"x"), 400),
    ("put name %2F", request("POST", "/put/%2F", b"x"), 400),
    ("put name a%2Fb", request("POST", "/put/a%2Fb", b"x"), 400),
    ("put name %2E%2E", request("POST", "/put/%2E%2E", b"x"), 400),
    ("put name %2E%2E%2Fescape", request("POST", "/put/%2E%2E%2Fescape", b"x"), 400),
    ("put name a%00b", request("POST", "/put/a%00b", b"x"), 400),
    ("put name %00", request("POST", "/put/%00", b"x"), 400),
    ("put name a%20b", request("POST", "/put/a%20b", b"x"), 400),
    ("put name a%0Ab", request("POST", "/put/a%0Ab", b"x"), 400),
    ("put name a%5Cb (backslash)", request("POST", "/put/a%5Cb", b"x"), 400),
    ("put name %C3%A9 (non-ASCII)", request("POST", "/put/%C3%A9", b"x"), 400),
    ("put name .hidden", request("POST", "/put/.hidden", b"x"), 400),
    ("put name --x--archive", request("POST", "/put/--x--archive", b"x"), 400),
    ("put name of 201 characters", request("POST", "/put/" + LONG, b"x"), 400),
    ("put empty name", request("POST", "/put/", b"x"), 400),
    ("put name of a folder in the data folder", request("POST", "/put/sub", b"x"), 400),
    ("get name of a folder", request("GET", "/get/sub?from=1"), 400),
    ("archive name of a folder", request("POST", "/archive/sub?upto=1"), 400),
    ("get name ..", request("GET", "/get/..?from=1"), 400),
    ("get name %2E%2E%2F%2E%2E", request("GET", "/get/%2E%2E%2F%2E%2E?from=1"), 400),
    ("get name of 201 characters", request("GET", "/get/%s?from=1" % (LONG,)), 400),
    ("archive name ../known", request("POST", "/archive/../known?upto=1"), 400),
    ("archive name of 201 characters", request("POST", "/archive/%s?upto=1" % (LONG,)), 400),
    ("put to _kaf", request("POST", "/put/_kaf", b"x"), 403),
    ("archive of a missing log", request("POST", "/archive/missing?upto=1"), 404),
    ("absolute URI http://evil.example/put/x",
     request("POST", "http://evil.example/put/x", b"x"), 404),
    ("unknown path /delete/known", request("POST", "/delete/known"), 404),
    # -- numbers (SPEC 3.1-3.3) --
    ("from=-1", request("GET", "/get/known?from=-1"), 400),
    ("from=0", request("GET", "/get/known?from=0"), 400),
    ("from=18446744073709551616", request("GET", "/get/known?from=18446744073709551616"), 400),
    ("from=9223372036854775808", request("GET", "/get/known?from=9223372036854775808"), 400),
    ("from=abc", request("GET", "/get/known?from=abc"), 400),
    ("from=1.5", request("GET", "/get/known?from=1.5"), 400),
    ("from=%2B1", request("GET", "/get/known?from=%2B1"), 400),
    ("from= (empty)", request("GET", "/get/known?from="), 400),
    ("from=1&from=2", request("GET", "/get/known?from=1&from=2"), 400),
    ("from missing", request("GET", "/get/known"), 400),
    ("limit=-1", request("GET", "/get/known?from=1&limit=-1"), 400),
    ("limit=0", request("GET", "/get/known?from=1&limit=0"), 400),
    ("limit=18446744073709551616",
     request("GET", "/get/known?from=1&limit=18446744073709551616"), 400),
    ("limit=ten", request("GET", "/get/known?from=1&limit=ten"), 400),
    ("limit=1&limit=2", request("GET", "/get/known?from=1&limit=1&limit=2"), 400),
    ("wait=-1", request("GET", "/get/known?from=9&wait=-1"), 400),
    ("wait=nan", request("GET", "/get/known?from=9&wait=nan"), 400),
    ("wait=1e9", request("GET", "/get/known?from=9&wait=1e9"), 400),
    ("wait=61 (over --max-wait)", request("GET", "/get/known?from=9&wait=61"), 400),
    ("format=xml", request("GET", "/get/known?from=1&format=xml"), 400),
    ("format=kaf&format=raw", request("GET", "/get/known?from=1&format=kaf&format=raw"), 400),
    ("upto=-1", request("POST", "/archive/known?upto=-1"), 400),
    ("upto=0", request("POST", "/archive/known?upto=0"), 400),
    ("upto=18446744073709551616",
     request("POST", "/archive/known?upto=18446744073709551616"), 400),
    ("upto=abc", request("POST", "/archive/known?upto=abc"), 400),
    ("upto=1&upto=2", request("POST", "/archive/known?upto=1&upto=2"), 400),
    ("upto missing", request("POST", "/archive/known"), 400),
    ("expect=-1", request("POST", "/put/known?expect=-1", b"x"), 400),
    ("expect=18446744073709551616",
     request("POST", "/put/known?expect=18446744073709551616", b"x"), 400),
    ("expect=abc", request("POST", "/put/known?expect=abc", b"x"), 400),
    ("expect=1&expect=1", request("POST", "/put/known?expect=1&expect=1", b"x"), 400),
    ("batch=csv", request("POST", "/put/known?batch=csv", b"x"), 400),
    ("batch=kaf with a malformed body", request("POST", "/put/known?batch=kaf", b"KAF_"), 400),
    ("empty body", request("POST", "/put/known"), 400),
    # -- methods (SPEC 3) --
    ("PUT /put/known", request("PUT", "/put/known", b"x"), 405),
    ("DELETE /put/known", request("DELETE", "/put/known"), 405),
    ("PATCH /put/known", request("PATCH", "/put/known", b"x"), 405),
    ("GET /put/known", request("GET", "/put/known"), 405),
    ("HEAD /put/known", request("HEAD", "/put/known"), 405),
    ("OPTIONS /put/known", request("OPTIONS", "/put/known"), 405),
    ("BREW /put/known (unknown method)", request("BREW", "/put/known", b"x"), 405),
    ("POST /get/known", request("POST", "/get/known?from=1", b"x"), 405),
    ("DELETE /get/known", request("DELETE", "/get/known?from=1"), 405),
    ("GET /archive/known", request("GET", "/archive/known?upto=1"), 405),
    ("PUT /archive/known", request("PUT", "/archive/known?upto=1", b"x"), 405),
    ("DELETE /logs", request("DELETE", "/logs"), 405),
    ("POST /logs", request("POST", "/logs", b"x"), 405),
    # -- bodies and framing --
    ("Content-Length over the limit (headers only)",
     request("POST", "/put/big", headers=b"Content-Length: %d\r\n" % (LIMIT + 1,),
             length=False), 413),
    ("Content-Length over the limit with Expect: 100-continue",
     request("POST", "/put/big", headers=b"Content-Length: %d\r\nExpect: 100-continue\r\n"
             % (LIMIT + 1,), length=False), 413),
    ("Content-Length over 64 MiB for a batch (headers only)",
     request("POST", "/put/big?batch=lines", headers=b"Content-Length: %d\r\n"
             % ((64 << 20) + 1,), length=False), 413),
    ("GET with a 70000-byte Content-Length (headers only)",
     request("GET", "/logs", headers=b"Content-Length: 70000\r\n", length=False), 413),
    ("Content-Length: -1",
     request("POST", "/put/neg", b"x", headers=b"Content-Length: -1\r\n", length=False), 400),
    ("Content-Length: abc",
     request("POST", "/put/nan", b"x", headers=b"Content-Length: abc\r\n", length=False), 400),
    ("two different Content-Lengths",
     request("POST", "/put/two", b"xy", headers=b"Content-Length: 1\r\nContent-Length: 2\r\n",
             length=False), 400),
    ("Transfer-Encoding: chunked and Content-Length",
     request("POST", "/put/both", b"1\r\nx\r\n0\r\n\r\n",
             headers=b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", length=False), 400),
    ("chunk size that is not hex",
     request("POST", "/put/badchunk", b"zz\r\nx\r\n0\r\n\r\n",
             headers=b"Transfer-Encoding: chunked\r\n", length=False), 400),
    # -- request lines and headers the HTTP parser refuses --
    ("NUL byte in the request line", request("POST", "/put/a\x00b", b"x"), 400),
    ("space in the request target", request("POST", "/put/a b", b"x"), 400),
    ("request line GARBAGE", b"GARBAGE\r\n\r\n", 400),
    ("HTTP/9.9", b"GET /logs HTTP/9.9\r\nHost: kaf\r\n\r\n", 400),
    ("header line without a colon", request("GET", "/logs", headers=b"NoColonHere\r\n"), 400),
    ("header line of 20000 bytes",
     request("GET", "/logs", headers=b"X-Big: " + b"a" * 20000 + b"\r\n"), 431),
    ("600 headers", request("GET", "/logs", headers=b"".join(
        b"X-H%d: v\r\n" % (i,) for i in range(600))), 431),
]


@pytest.mark.parametrize("label, raw, status", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_answered_4xx_with_a_one_line_reason(
        hostile: Hostile, label: str, raw: bytes, status: int) -> None:
    got, head, body = exchange(hostile.server.port, raw)
    TABLE.append((label, str(got)))
    assert got == status, (head, body)
    assert_one_line_reason(head, body, has_body=not raw.startswith(b"HEAD "))
    if status == 405:
        assert header(head, "Allow") in ("POST", "GET, HEAD")


def test_content_length_shorter_than_the_body_stores_only_what_it_announced(
        hostile: Hostile) -> None:
    # The rest of the body is read as the next request, which is not one.
    raw = (b"POST /put/short HTTP/1.1\r\nHost: kaf\r\nContent-Length: 3\r\n\r\n"
           b"abcNOT A REQUEST\r\n\r\n")
    CREATED.add("short")
    reply = exchange_raw(hostile.server.port, raw)
    first, _, rest = reply.partition(b"\r\n\r\n")
    second = rest[1:]
    TABLE.append(("Content-Length shorter than the body", "%d then %d" % (
        split_response(reply)[0], split_response(second)[0])))
    assert split_response(reply)[0] == 200 and rest.startswith(b"1")
    status, head, body = split_response(second)
    assert status == 400
    assert_one_line_reason(head, body)
    with open(os.path.join(hostile.data, "short"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|0\nKAF_MSG|1|3\nabc"


def test_content_length_longer_than_the_body_then_close_stores_nothing(
        hostile: Hostile) -> None:
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as s:
        s.sendall(b"POST /put/long HTTP/1.1\r\nHost: kaf\r\nContent-Length: 100\r\n\r\nabc")
        s.shutdown(socket.SHUT_WR)
        reply = recv_all(s)
    TABLE.append(("Content-Length longer than the body, then close",
                  "no reply (nothing to answer)" if not reply else reply[:12].decode()))
    assert reply == b""
    assert not os.path.exists(os.path.join(hostile.data, "long"))


def test_chunked_body_over_the_limit_is_refused_before_it_ends(hostile: Hostile) -> None:
    chunk = b"64\r\n" + b"x" * 100 + b"\r\n"
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as s:
        s.sendall(b"POST /put/chunky HTTP/1.1\r\nHost: kaf\r\nTransfer-Encoding: chunked\r\n\r\n")
        # Just over the limit, and no last chunk: the server must answer
        # without the end of the body.
        for _ in range(LIMIT // 100 + 1):
            s.sendall(chunk)
        reply = recv_all(s)
    status, head, body = split_response(reply)
    TABLE.append(("chunked body over the limit (no last chunk sent)", str(status)))
    assert status == 413
    assert_one_line_reason(head, body)
    assert header(head, "Connection") == "close"
    assert not os.path.exists(os.path.join(hostile.data, "chunky"))


def test_a_chunked_body_that_never_ends_is_refused_and_its_connection_closed(
        hostile: Hostile) -> None:
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as s:
        s.sendall(b"POST /put/endless HTTP/1.1\r\nHost: kaf\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        s.setblocking(False)
        reply = b""
        closed = False
        deadline = time.monotonic() + 15
        # The client sends on and on; the server answers once the limit is
        # passed, then closes the connection whatever the client still sends.
        while time.monotonic() < deadline and not closed:
            try:
                s.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                closed = True
            try:
                data = s.recv(65536)
                if data:
                    reply += data
                else:
                    closed = True
            except BlockingIOError:
                pass
            except OSError:
                closed = True
    TABLE.append(("chunked body that never ends", reply[:12].decode() + ", then closed"))
    assert closed
    status, head, body = split_response(reply)
    assert status == 413
    assert_one_line_reason(head, body)
    assert not os.path.exists(os.path.join(hostile.data, "endless"))


def test_body_over_the_limit_is_refused_from_its_content_length_before_it_is_sent(
        hostile: Hostile) -> None:
    with socket.create_connection(("127.0.0.1", hostile.server.port), timeout=10) as s:
        s.sendall(b"POST /put/huge HTTP/1.1\r\nHost: kaf\r\nContent-Length: 1000000000\r\n\r\n")
        reply = recv_all(s)
    status, head, body = split_response(reply)
    TABLE.append(("Content-Length: 1000000000, body never sent", str(status)))
    assert status == 413
    assert_one_line_reason(head, body)
    assert not os.path.exists(os.path.join(hostile.data, "huge"))


def _timed_get(port: int) -> float:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/get/known?from=1&format=raw")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"first\n")
    finally:
        conn.close()
    return time.monotonic() - started


def test_clients_dribbling_headers_do_not_stop_others_being_served(hostile: Hostile) -> None:
    # Twenty clients each send a request one byte at a time; between two
    # bytes, another client is served.  No sleeps: the dribblers are slow
    # because they never finish while the others are answered.
    CREATED.add("slow")
    port = hostile.server.port
    head = b"POST /put/slow HTTP/1.1\r\nHost: kaf\r\nConnection: close\r\nContent-Length: 4\r\n"
    dribblers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        took = []
        for i in range(len(head)):
            for s in dribblers:
                s.sendall(head[i:i + 1])
            took.append(_timed_get(port))
        for s in dribblers:
            s.sendall(b"\r\nslow")
        numbers = sorted(int(split_response(recv_all(s))[2]) for s in dribblers)
    finally:
        for s in dribblers:
            s.close()
    TABLE.append(("20 clients sending headers a byte at a time",
                  "others served in at most %.3fs each; dribblers answered 200" % (max(took),)))
    assert max(took) < 2.0
    assert numbers == list(range(1, 21))


def test_after_the_hostile_inputs_the_server_still_serves_and_nothing_leaked(
        hostile: Hostile, capsys: Any) -> None:
    CREATED.add("after")
    status, _, body = exchange(hostile.server.port, request("POST", "/put/after", b"fine"))
    got, head, reply = exchange(hostile.server.port, request("GET", "/get/after?from=1"))
    output = hostile.server.output()
    with capsys.disabled():
        print("\nhostile inputs and the status each got:")
        for label, answer in TABLE:
            print("  %-62s %s" % (label, answer))
    assert (status, body) == (200, b"1")
    assert (got, reply) == (200, b"KAF_MSGS|v1|1\nKAF_MSG|1|4\nfine")
    assert hostile.server.running()
    assert "Traceback" not in output and "Unhandled Error" not in output, output
    assert "unexpected error" not in output, output
    assert snapshot(hostile.base, hostile.data) == hostile.before
    entries = set(os.listdir(hostile.data))
    assert entries - {"sub"} <= CREATED, entries
    assert os.listdir(os.path.join(hostile.data, "sub")) == []
    assert all(not answer.startswith("5") for _, answer in TABLE), TABLE
