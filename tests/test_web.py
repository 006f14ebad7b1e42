"""
The HTTP API (SPEC sections 2 and 3.1-3.4), driven in memory through
C{treq.testing.StubTreq}: a real Klein resource over a real store in a
temporary data folder, time from a C{task.Clock}, blocking work run at once.

The body limits of the Site (SPEC 3.1) are tested at the end through
C{kaf.api.web.make_site}, in memory as well.
"""
from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable, Iterator, List, Optional
from urllib.parse import quote, urlencode

import pytest
import treq
from hypothesis import HealthCheck, given, settings, strategies as st
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from conftest import fired as _result
from conftest import FIXTURES, sync_runner
from kaf.engines.file.store import Store
from kaf.api.web import KafWeb, make_site

TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
JSON = "application/json"
ZERO_MESSAGES = b"KAF_MSGS|v1|0"
MiB = 1 << 20
#: 2026-11-29T06:14:59Z, the time archive names are made from.
ARCHIVE_TIME = 1795932899.0


# -- harness -----------------------------------------------------------------

def _reject_constant(name: str) -> None:
    raise ValueError("bare %s is not JSON" % (name,))


def strict_json(body: bytes) -> Any:
    """Parse C{body} as JSON, refusing Python's NaN / Infinity extensions."""
    return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)


def answered(d: "Deferred[Any]") -> bool:
    """Has the request behind C{d} been answered?  (C{d.called} is not
    enough: treq's Deferred is called while it waits on the response.)"""
    out: List[bool] = []

    def seen(result: Any) -> Any:
        out.append(True)
        return result

    d.addBoth(seen)
    return bool(out)


class Answer:
    """One HTTP reply, read in full."""

    def __init__(self, response: Any, body: bytes) -> None:
        self.code: int = response.code
        self.headers = response.headers
        #: The Content-Length the client parsed (UNKNOWN_LENGTH when none).
        self.length = response.length
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        if values is None:
            return None
        assert len(values) == 1, (name, values)
        return values[0]

    def json(self) -> Any:
        assert self.header("Content-Type") == JSON
        return strict_json(self.body)

    def assert_error(self, code: int, start: str = "") -> str:
        """A one-line text/plain error with this status; its line."""
        assert self.code == code, (self.code, self.body)
        assert_one_line_error(self)
        text = self.body.decode("utf-8")
        assert text.startswith(start), text
        return text


def assert_one_line_error(answer: Answer) -> None:
    """SPEC 3: errors are text/plain, one line ending in a newline."""
    assert answer.header("Content-Type") == TEXT
    assert answer.body.endswith(b"\n")
    assert answer.body.count(b"\n") == 1, answer.body
    assert len(answer.body) > 1
    assert b"Traceback" not in answer.body


class Kaf:
    """The Kaf web app over a store in C{folder}, driven in memory."""

    def __init__(self, folder: str, clock: Clock, max_message_size: int = 5 * MiB,
                 max_wait: float = 60.0) -> None:
        self.folder = folder
        self.clock = clock
        self.store = Store(folder, clock, sync_runner, fsync=True)
        self.store.load()
        self.web = KafWeb(self.store, max_message_size=max_message_size, max_wait=max_wait)
        self.treq = StubTreq(self.web.resource())

    def start(self, method: str, path: str, body: Optional[bytes] = None,
              headers: Optional[dict] = None) -> "Deferred[Any]":
        """Send a request; the Deferred fires with the response once answered."""
        d = self.treq.request(method, "http://kaf.test" + path, data=body, headers=headers,
                              allow_redirects=False)
        self.treq.flush()
        return d

    def answer(self, d: "Deferred[Any]") -> Answer:
        self.treq.flush()
        response = _result(d)
        content = self.treq.content(response)
        self.treq.flush()
        return Answer(response, _result(content))

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> Answer:
        answer = self.answer(self.start(method, path, body))
        if method != "HEAD":
            # SPEC 3.2: every reply sets Content-Length.
            assert answer.length == len(answer.body), (method, path, answer.length)
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: Optional[bytes] = None) -> Answer:
        return self.request("POST", path, body)

    def put(self, name: str, message: bytes) -> int:
        answer = self.post("/put/" + name, message)
        assert answer.code == 200, answer.body
        return int(answer.body)

    def put_lines(self, name: str, count: int) -> None:
        body = b"".join([b"m%d\n" % (i,) for i in range(1, count + 1)])
        answer = self.post("/put/%s?batch=lines" % (name,), body)
        assert answer.code == 200, answer.body

    def file(self, name: str) -> bytes:
        with open(os.path.join(self.folder, name), "rb") as f:
            return f.read()

    def files(self) -> List[str]:
        return sorted(os.listdir(self.folder))


def records(messages: List[bytes], first: int = 1) -> bytes:
    """Records numbered from C{first}, written out by hand (SPEC 3.2, 4)."""
    return b"".join([b"\nKAF_MSG|%d|%d\n" % (first + i, len(m)) + m
                     for i, m in enumerate(messages)])


def kaf_body(messages: List[bytes], first: int = 1) -> bytes:
    """A kaf reply body for C{messages}."""
    return b"KAF_MSGS|v1|%d" % (len(messages),) + records(messages, first)


def db_file(start: int, messages: List[bytes]) -> bytes:
    """The bytes of a log file that continues from C{start}."""
    return b"KAF_DB|v1|%d" % (start,) + records(messages, start + 1)


@pytest.fixture(autouse=True)
def unexpected_errors() -> Iterator[List[dict]]:
    """
    Fail a test in which Kaf logged a failure: an unexpected error is what
    becomes a 500 "internal error", which no client input may cause.
    """
    events: List[dict] = []

    def observe(event: dict) -> None:
        if (event.get("log_failure") is not None
                and str(event.get("log_namespace", "")).startswith("kaf")):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)
    if events:
        pytest.fail("Kaf logged unexpected errors: %r" % (
            [e["log_failure"].getTraceback() for e in events],))


@pytest.fixture
def data(tmp_path: Any) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def make_kaf(data: str, clock: Clock) -> Iterator[Callable[..., Kaf]]:
    """Make the app (over C{data} unless told); close its store afterwards."""
    made: List[Kaf] = []

    def make(folder: Optional[str] = None, **kwargs: Any) -> Kaf:
        made.append(Kaf(folder or data, clock, **kwargs))
        return made[-1]

    yield make
    for kaf in made:
        kaf.store.close()


@pytest.fixture
def kaf(make_kaf: Callable[..., Kaf]) -> Kaf:
    return make_kaf()


@pytest.fixture
def gokaf(make_kaf: Callable[..., Kaf], gokaf_data: str) -> Kaf:
    """Kaf serving a copy of the Go version's data folder."""
    return make_kaf(gokaf_data)


@pytest.fixture
def broken(make_kaf: Callable[..., Kaf], data: str) -> Kaf:
    """Kaf over a folder holding a good log and 'broken', which is not a Kaf log."""
    os.makedirs(data)
    with open(os.path.join(FIXTURES, "edited", "bad-db-header", "log"), "rb") as f:
        bad = f.read()
    with open(os.path.join(data, "broken"), "wb") as f:
        f.write(bad)
    with open(os.path.join(data, "good"), "wb") as f:
        f.write(db_file(0, [b"fine"]))
    return make_kaf()


# -- 3.1 put -------------------------------------------------------------------

def test_first_put_creates_log_file_and_answers_one(kaf: Kaf) -> None:
    answer = kaf.post("/put/x", b"hello")
    assert answer.code == 200
    assert answer.header("Content-Type") == TEXT
    assert answer.body == b"1"
    assert kaf.file("x") == b"KAF_DB|v1|0\nKAF_MSG|1|5\nhello"


def test_put_answers_next_number_with_no_newline(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    answer = kaf.post("/put/x", b"world")
    assert (answer.code, answer.body) == (200, b"2")
    assert kaf.file("x") == db_file(0, [b"hello", b"world"])


def test_put_stores_any_bytes_exactly(kaf: Kaf) -> None:
    message = b"\x00\xff\r\n\nKAF_MSG|9|3\nabc\n"
    assert kaf.put("x", message) == 1
    assert kaf.file("x") == db_file(0, [message])
    assert kaf.get("/get/x?from=1").body == kaf_body([message])


def test_put_empty_body_is_400_and_creates_no_file(kaf: Kaf) -> None:
    answer = kaf.post("/put/x", b"")
    answer.assert_error(400)
    assert answer.body == b"put: empty message\n"
    assert kaf.files() == []


def test_put_over_max_message_size_is_413_and_writes_nothing(make_kaf: Callable[..., Kaf]) -> None:
    kaf = make_kaf(max_message_size=10)
    kaf.post("/put/x", b"a" * 11).assert_error(413, "put: ")
    assert kaf.files() == []


def test_put_of_exactly_max_message_size_is_accepted(make_kaf: Callable[..., Kaf]) -> None:
    kaf = make_kaf(max_message_size=10)
    assert kaf.put("x", b"a" * 10) == 1


@pytest.mark.parametrize("name", ["_kaf", "_mine"])
def test_put_to_name_beginning_with_underscore_is_403(kaf: Kaf, name: str) -> None:
    kaf.post("/put/" + name, b"hello").assert_error(403, "put: ")
    kaf.post("/put/%s?batch=lines" % (name,), b"a\nb").assert_error(403, "put: ")
    assert kaf.files() == []


BAD_NAMES = ["a%2Fb", "..", ".hidden", "--x", "x" * 201, "a%00b", "a%20b", "a/b", "%C3%A9",
             "a%0A", "%0A", "a%0Ab", "%FF", "a%C3"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("method, path", [
    ("POST", "/put/{}"), ("GET", "/get/{}?from=1"), ("POST", "/archive/{}?upto=1")])
def test_bad_log_name_is_400_and_touches_no_disk(kaf: Kaf, name: str, method: str,
                                                 path: str) -> None:
    op = path.split("/")[1]
    answer = kaf.request(method, path.format(name), b"hello" if method == "POST" else None)
    answer.assert_error(400, op + ": ")
    assert kaf.files() == []


def test_name_of_a_folder_is_400(kaf: Kaf) -> None:
    os.makedirs(os.path.join(kaf.folder, "sub"))
    kaf.post("/put/sub", b"hello").assert_error(400, "put: ")
    kaf.get("/get/sub?from=1").assert_error(400, "get: ")
    assert kaf.files() == ["sub"]
    assert os.listdir(os.path.join(kaf.folder, "sub")) == []


def test_name_of_200_allowed_characters_is_accepted(kaf: Kaf) -> None:
    name = ("Az09_.-" * 30)[:200]
    assert kaf.put(name, b"hello") == 1
    assert kaf.files() == [name]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_put_path_with_other_method_is_405_with_allow_post_and_hint(kaf: Kaf,
                                                                    method: str) -> None:
    answer = kaf.request(method, "/put/x", b"hello" if method != "GET" else None)
    text = answer.assert_error(405, "put: use POST")
    assert "/put/x" in text
    assert answer.header("Allow") == "POST"
    assert kaf.files() == []


def test_head_on_put_path_is_405_with_allow_post(kaf: Kaf) -> None:
    answer = kaf.request("HEAD", "/put/x")
    assert answer.code == 405
    assert answer.header("Allow") == "POST"
    assert answer.body == b""


# -- 3.1 expect ------------------------------------------------------------------

def test_put_with_expect_equal_to_last_appends(kaf: Kaf) -> None:
    kaf.put("x", b"a")
    kaf.put("x", b"b")
    answer = kaf.post("/put/x?expect=2", b"c")
    assert (answer.code, answer.body) == (200, b"3")


def test_put_with_stale_expect_is_409_naming_both_numbers(kaf: Kaf) -> None:
    for m in (b"a", b"b", b"c"):
        kaf.put("x", m)
    before = kaf.file("x")
    answer = kaf.post("/put/x?expect=2", b"d")
    text = answer.assert_error(409, "put: ")
    assert answer.header("X-Kaf-LastMsg") == "3"
    assert "2" in text and "3" in text
    assert kaf.file("x") == before


def test_put_with_expect_zero_on_new_log_appends(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?expect=0", b"first")
    assert (answer.code, answer.body) == (200, b"1")
    assert kaf.file("x") == db_file(0, [b"first"])


def test_put_with_expect_above_zero_on_new_log_is_409_and_creates_no_file(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?expect=1", b"first")
    answer.assert_error(409, "put: ")
    assert answer.header("X-Kaf-LastMsg") == "0"
    assert kaf.files() == []


def test_expect_after_archive_that_emptied_log_is_the_archive_upto(kaf: Kaf) -> None:
    kaf.put_lines("x", 3)
    assert kaf.post("/archive/x?upto=3").code == 200
    kaf.post("/put/x?expect=0", b"no").assert_error(409)
    answer = kaf.post("/put/x?expect=3", b"yes")
    assert (answer.code, answer.body) == (200, b"4")


def test_put_with_first_numbers_a_new_log_from_there(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?batch=lines&first=41", b"a\nb\n")
    assert (answer.code, answer.body) == (200, b"42")
    assert kaf.file("x") == db_file(40, [b"a", b"b"])
    assert kaf.get("/get/x?from=1&format=raw").body == b"a\nb\n"
    assert kaf.put("x", b"c") == 43


def test_put_with_first_renumbers_a_log_an_archive_emptied(kaf: Kaf) -> None:
    kaf.put_lines("x", 3)
    assert kaf.post("/archive/x?upto=3").code == 200
    answer = kaf.post("/put/x?first=10&expect=3", b"ten")
    assert (answer.code, answer.body) == (200, b"10")
    assert kaf.file("x") == db_file(9, [b"ten"])


def test_put_with_first_equal_to_the_next_number_appends(kaf: Kaf) -> None:
    kaf.put_lines("x", 2)
    answer = kaf.post("/put/x?first=3", b"c")
    assert (answer.code, answer.body) == (200, b"3")


@pytest.mark.parametrize("first", ["2", "5"])
def test_put_with_first_that_would_skip_or_reuse_numbers_is_409(kaf: Kaf, first: str) -> None:
    kaf.put_lines("x", 3)
    before = kaf.file("x")
    answer = kaf.post("/put/x?first=" + first, b"d")
    answer.assert_error(409, "put: cannot number from %s: the log's last is 3" % (first,))
    assert answer.header("X-Kaf-LastMsg") == "3"
    assert kaf.file("x") == before


def test_put_with_first_zero_is_400_and_creates_no_file(kaf: Kaf) -> None:
    kaf.post("/put/x?first=0", b"a").assert_error(400, "put: invalid 'first'")
    assert kaf.files() == []


@pytest.mark.parametrize("value", ["-1", "abc", "1.0"])
def test_put_with_invalid_expect_is_400_and_writes_nothing(kaf: Kaf, value: str) -> None:
    kaf.post("/put/x?expect=" + value, b"hello").assert_error(400, "put: ")
    assert kaf.files() == []


# -- 3.1 batches -----------------------------------------------------------------

def test_batch_lines_writes_one_message_per_line(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?batch=lines", b"a\nbb\nccc")
    assert (answer.code, answer.body) == (200, b"3")
    assert answer.header("Content-Type") == TEXT
    assert answer.header("X-Kaf-Count") == "3"
    assert kaf.file("x") == db_file(0, [b"a", b"bb", b"ccc"])


def test_batch_lines_trailing_newline_makes_no_empty_message(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?batch=lines", b"a\nb\n")
    assert (answer.body, answer.header("X-Kaf-Count")) == (b"2", "2")
    assert kaf.file("x") == db_file(0, [b"a", b"b"])


def test_batch_lines_skips_empty_lines(kaf: Kaf) -> None:
    answer = kaf.post("/put/x?batch=lines", b"\na\n\n\nb\n\n")
    assert (answer.body, answer.header("X-Kaf-Count")) == (b"2", "2")
    assert kaf.file("x") == db_file(0, [b"a", b"b"])


def test_batch_numbers_follow_the_existing_messages(kaf: Kaf) -> None:
    kaf.put("x", b"one")
    answer = kaf.post("/put/x?batch=lines", b"two\nthree\nfour")
    assert (answer.body, answer.header("X-Kaf-Count")) == (b"4", "3")
    assert kaf.get("/get/x?from=1&format=raw").body == b"one\ntwo\nthree\nfour\n"


def test_batch_kaf_ignores_the_numbers_in_the_body(kaf: Kaf) -> None:
    kaf.put("x", b"one")
    answer = kaf.post("/put/x?batch=kaf", kaf_body([b"two", b"three"], first=70))
    assert (answer.body, answer.header("X-Kaf-Count")) == (b"3", "2")
    assert kaf.file("x") == db_file(0, [b"one", b"two", b"three"])


def test_get_piped_into_batch_kaf_put_copies_a_log_exactly(kaf: Kaf) -> None:
    messages = [b"hello", b"two\nlines\n", b"\x00\x01\xff", b"\nKAF_MSG|9|3\nfake",
                b"KAF_MSGS|v1|1", b"x" * 5000, b"\n"]
    for m in messages:
        kaf.put("source", m)
    body = kaf.get("/get/source?from=1").body
    answer = kaf.post("/put/copy?batch=kaf", body)
    assert (answer.code, answer.body) == (200, b"7")
    assert answer.header("X-Kaf-Count") == "7"
    assert kaf.file("copy") == kaf.file("source") == db_file(0, messages)


@pytest.mark.parametrize("name", ["test", "js", "small7", "sizes", "_kaf"])
def test_go_log_copied_through_get_and_batch_put_is_identical(gokaf: Kaf, name: str) -> None:
    body = gokaf.get("/get/%s?from=1" % (name,)).body
    assert gokaf.post("/put/copy-of%s?batch=kaf" % (name,), body).code == 200
    assert gokaf.file("copy-of" + name) == gokaf.file(name)


MALFORMED_KAF = [
    b"hello",
    b"KAF_MSGS|v1|",
    b"KAF_MSGS|v2|1\nKAF_MSG|1|5\nhello",
    b"KAF_MSGS|v1|2\nKAF_MSG|1|5\nhello",
    b"KAF_MSGS|v1|1\nKAF_MSG|1|9\nhello",
    b"KAF_MSGS|v1|1\nKAF_MSG|1|5\nhelloEXTRA",
    b"KAF_MSGS|v1|1\nKAF_MSG|1|0\n",
    b"KAF_MSGS|v1|1\nKAF_MSG|1|x\nhello",
]


@pytest.mark.parametrize("body", MALFORMED_KAF)
def test_malformed_kaf_batch_is_400_and_writes_nothing(kaf: Kaf, body: bytes) -> None:
    kaf.put("x", b"kept")
    before = kaf.file("x")
    kaf.post("/put/x?batch=kaf", body).assert_error(400, "put: ")
    kaf.post("/put/new?batch=kaf", body).assert_error(400, "put: ")
    assert kaf.file("x") == before
    assert kaf.files() == ["x"]


def test_batch_with_expect_equal_to_last_appends_all(kaf: Kaf) -> None:
    kaf.put("x", b"one")
    answer = kaf.post("/put/x?batch=lines&expect=1", b"two\nthree")
    assert (answer.code, answer.body, answer.header("X-Kaf-Count")) == (200, b"3", "2")


def test_batch_with_stale_expect_is_409_and_writes_nothing(kaf: Kaf) -> None:
    kaf.put("x", b"one")
    before = kaf.file("x")
    answer = kaf.post("/put/x?batch=kaf&expect=0", kaf_body([b"two", b"three"]))
    answer.assert_error(409, "put: ")
    assert answer.header("X-Kaf-LastMsg") == "1"
    assert kaf.file("x") == before


@pytest.mark.parametrize("kind, body", [
    ("lines", b"ok\n" + b"a" * 11 + b"\nok"),
    ("kaf", kaf_body([b"ok", b"a" * 11, b"ok"])),
])
def test_batch_with_message_over_limit_is_413_and_writes_nothing(
        make_kaf: Callable[..., Kaf], kind: str, body: bytes) -> None:
    kaf = make_kaf(max_message_size=10)
    kaf.put("x", b"kept")
    before = kaf.file("x")
    kaf.post("/put/x?batch=" + kind, body).assert_error(413, "put: ")
    assert kaf.file("x") == before


def test_batch_body_may_exceed_message_limit(make_kaf: Callable[..., Kaf]) -> None:
    kaf = make_kaf(max_message_size=10)
    body = b"0123456789\n" * 20
    answer = kaf.post("/put/x?batch=lines", body)
    assert (answer.code, answer.body) == (200, b"20")


@pytest.mark.parametrize("kind", ["json", "LINES"])
def test_unknown_batch_kind_is_400_and_writes_nothing(kaf: Kaf, kind: str) -> None:
    kaf.post("/put/x?batch=" + kind, b"a\nb").assert_error(400, "put: ")
    assert kaf.files() == []


# -- 3.2 get: parameters -------------------------------------------------------------

def test_get_without_from_is_400(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    answer = kaf.get("/get/x")
    answer.assert_error(400)
    assert answer.body == b"get: missing 'from' message number\n"


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "1.5", "+1", " 1", "0x1",
                                   "18446744073709551616", "1" * 40])
def test_get_with_invalid_from_is_400(kaf: Kaf, value: str) -> None:
    kaf.put("x", b"hello")
    answer = kaf.get("/get/x?from=" + quote(value))
    answer.assert_error(400)
    assert answer.body.decode("utf-8") == (
        "get: invalid 'from' message number (must be an integer ≥ 1)\n")


def test_get_with_from_given_twice_is_400(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    kaf.get("/get/x?from=1&from=2").assert_error(400, "get: ")


@pytest.mark.parametrize("fmt", ["xml", "KAF", "text"])
def test_get_with_unknown_format_is_400_listing_the_three(kaf: Kaf, fmt: str) -> None:
    kaf.put("x", b"hello")
    text = kaf.get("/get/x?from=1&format=" + fmt).assert_error(400, "get: ")
    assert "kaf" in text and "raw" in text and "json" in text


# -- 3.2 get: replies ----------------------------------------------------------------

def test_get_of_unknown_log_answers_zero_messages(kaf: Kaf) -> None:
    answer = kaf.get("/get/nothing?from=1")
    assert answer.code == 200
    assert answer.header("Content-Type") == OCTETS
    assert answer.body == ZERO_MESSAGES
    assert len(answer.body) == 13
    assert answer.header("X-Kaf-LastMsgSent") is None
    assert answer.header("X-Kaf-FirstMsg") is None
    assert answer.header("X-Kaf-LastMsg") is None


def test_get_of_unknown_log_creates_nothing(kaf: Kaf) -> None:
    kaf.get("/get/nothing?from=1")
    assert kaf.files() == []
    assert kaf.get("/logs").json() == []


def test_get_kaf_format_is_byte_exact(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    kaf.put("x", b"world")
    answer = kaf.get("/get/x?from=1&format=kaf")
    assert answer.code == 200
    assert answer.header("Content-Type") == OCTETS
    assert answer.body == b"KAF_MSGS|v1|2\nKAF_MSG|1|5\nhello\nKAF_MSG|2|5\nworld"


def test_get_default_format_is_kaf(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    assert kaf.get("/get/x?from=1").body == b"KAF_MSGS|v1|1\nKAF_MSG|1|5\nhello"


def test_get_returns_messages_from_the_given_number(kaf: Kaf) -> None:
    for m in (b"a", b"b", b"c"):
        kaf.put("x", m)
    assert kaf.get("/get/x?from=2").body == b"KAF_MSGS|v1|2\nKAF_MSG|2|1\nb\nKAF_MSG|3|1\nc"


def test_get_past_the_last_message_answers_zero_messages(kaf: Kaf) -> None:
    kaf.put("x", b"a")
    answer = kaf.get("/get/x?from=2")
    assert (answer.code, answer.body) == (200, ZERO_MESSAGES)
    assert answer.header("X-Kaf-LastMsgSent") is None
    assert answer.header("X-Kaf-FirstMsg") is None
    assert answer.header("X-Kaf-LastMsg") == "1"


def test_get_headers_give_first_and_last_sent_and_last_of_log(kaf: Kaf) -> None:
    kaf.put_lines("x", 5)
    answer = kaf.get("/get/x?from=2&limit=2")
    assert answer.header("X-Kaf-FirstMsg") == "2"
    assert answer.header("X-Kaf-LastMsgSent") == "3"
    assert answer.header("X-Kaf-LastMsg") == "5"


def test_get_raw_format_ends_each_message_with_newline(kaf: Kaf) -> None:
    kaf.put("x", b"hello")
    kaf.put("x", b"two\nlines")
    answer = kaf.get("/get/x?from=1&format=raw")
    assert answer.header("Content-Type") == OCTETS
    assert answer.body == b"hello\ntwo\nlines\n"
    assert answer.header("X-Kaf-LastMsgSent") == "2"


@pytest.mark.parametrize("path", ["/get/x?from=2&format=raw", "/get/nothing?from=1&format=raw"])
def test_get_raw_with_no_messages_is_empty(kaf: Kaf, path: str) -> None:
    kaf.put("x", b"hello")
    answer = kaf.get(path)
    assert (answer.code, answer.body) == (200, b"")
    assert answer.header("Content-Type") == OCTETS


def test_get_json_writes_json_messages_as_they_are_and_others_as_strings(kaf: Kaf) -> None:
    messages = [b'{"a": [1, 2.5, null]}', b"hello", b'"quoted"', b"12", b"[1,\n2]",
                b'{"broken": ', b"true"]
    kaf.post("/put/x?batch=kaf", kaf_body(messages))
    answer = kaf.get("/get/x?from=1&format=json")
    assert answer.code == 200
    assert answer.header("Content-Type") == JSON
    assert answer.body == (b'[{"a": [1, 2.5, null]},\n"hello",\n"quoted",\n12,\n[1,\n2],\n'
                           b'"{\\"broken\\": ",\ntrue]')
    assert answer.json() == [{"a": [1, 2.5, None]}, "hello", "quoted", 12, [1, 2],
                             '{"broken": ', True]


@pytest.mark.parametrize("message", [b"NaN", b"Infinity", b"-Infinity", b"[NaN]",
                                     b'{"x": Infinity}'])
def test_get_json_sends_nan_as_a_string_never_bare(kaf: Kaf, message: bytes) -> None:
    kaf.put("x", message)
    answer = kaf.get("/get/x?from=1&format=json")
    assert answer.json() == [message.decode()]


def test_get_json_replaces_invalid_utf8(kaf: Kaf) -> None:
    kaf.put("x", b"caf\xe9 \xff")
    kaf.put("x", b'"\xff"')
    answer = kaf.get("/get/x?from=1&format=json")
    assert answer.json() == ["caf\ufffd \ufffd", '"\ufffd"']


@pytest.mark.parametrize("path", ["/get/x?from=2&format=json", "/get/nothing?from=1&format=json"])
def test_get_json_with_no_messages_is_an_empty_list(kaf: Kaf, path: str) -> None:
    kaf.put("x", b"hello")
    answer = kaf.get(path)
    assert (answer.code, answer.body) == (200, b"[]")
    assert answer.header("Content-Type") == JSON


def _json_value(message: bytes) -> Any:
    """What a json reply must hold for C{message} (SPEC 3.2)."""
    try:
        return strict_json(message)
    except ValueError:
        return message.decode("utf-8", "replace")


_json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
).map(lambda v: json.dumps(v).encode("utf-8"))
_messages = st.lists(
    st.one_of(st.binary(min_size=1, max_size=30), _json_texts,
              st.sampled_from([b"NaN", b"-Infinity", b"[Infinity]", b"\xef\xbb\xbf1",
                               b"1e999", b" 7 ", b"\xed\xa0\x80"])),
    min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=_messages)
def test_get_json_is_always_valid_json(kaf: Kaf, messages: List[bytes]) -> None:
    name = "j%d" % (len(kaf.store.logs()),)
    assert kaf.post("/put/%s?batch=kaf" % (name,), kaf_body(messages)).code == 200
    answer = kaf.get("/get/%s?from=1&format=json" % (name,))
    got = answer.json()
    assert got == [_json_value(m) for m in messages]


# -- 3.2 get: batch size ---------------------------------------------------------------

def test_get_default_limit_is_1000_messages(kaf: Kaf) -> None:
    kaf.put_lines("x", 1001)
    answer = kaf.get("/get/x?from=1")
    assert answer.body.startswith(b"KAF_MSGS|v1|1000\n")
    assert answer.header("X-Kaf-LastMsgSent") == "1000"
    assert answer.header("X-Kaf-LastMsg") == "1001"


def test_get_limit_is_capped_at_10000_messages(kaf: Kaf) -> None:
    kaf.put_lines("x", 10001)
    answer = kaf.get("/get/x?from=1&limit=20000&format=raw")
    assert answer.body.count(b"\n") == 10000
    assert answer.header("X-Kaf-LastMsgSent") == "10000"


def test_get_limit_bounds_the_messages_in_a_reply(kaf: Kaf) -> None:
    kaf.put_lines("x", 5)
    answer = kaf.get("/get/x?from=2&limit=2&format=raw")
    assert answer.body == b"m2\nm3\n"


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_get_with_invalid_limit_is_400(kaf: Kaf, value: str) -> None:
    kaf.put("x", b"hello")
    kaf.get("/get/x?from=1&limit=" + value).assert_error(400, "get: ")


def test_get_stops_adding_messages_once_reply_reaches_one_mib(kaf: Kaf) -> None:
    messages = [bytes([ord("a") + i]) * (300 << 10) for i in range(5)]
    for m in messages:
        kaf.put("x", m)
    answer = kaf.get("/get/x?from=1")
    # 3 messages are 900 KiB, under 1 MiB: a 4th is added, which reaches it.
    assert answer.body == kaf_body(messages[:4])
    assert answer.header("X-Kaf-LastMsgSent") == "4"
    assert kaf.get("/get/x?from=5").body == kaf_body(messages[4:], first=5)


def test_get_returns_one_message_larger_than_one_mib_alone(kaf: Kaf) -> None:
    big = b"b" * (2 * MiB)
    kaf.put("x", big)
    kaf.put("x", b"small")
    answer = kaf.get("/get/x?from=1&format=raw")
    assert answer.body == big + b"\n"
    assert answer.header("X-Kaf-LastMsgSent") == "1"


def test_client_following_lastmsgsent_reads_every_message_once(kaf: Kaf) -> None:
    kaf.put_lines("x", 2500)
    seen: List[bytes] = []
    start = 1
    while True:
        answer = kaf.get("/get/x?from=%d&format=raw" % (start,))
        sent = answer.header("X-Kaf-LastMsgSent")
        if sent is None:
            assert answer.body == b""
            break
        seen.extend(answer.body.splitlines())
        start = int(sent) + 1
    assert seen == [b"m%d" % (i,) for i in range(1, 2501)]


def test_get_from_before_first_message_after_archive_starts_at_first(kaf: Kaf) -> None:
    kaf.put_lines("x", 6)
    assert kaf.post("/archive/x?upto=3").code == 200
    answer = kaf.get("/get/x?from=1&format=raw")
    assert answer.body == b"m4\nm5\nm6\n"
    assert answer.header("X-Kaf-FirstMsg") == "4"


# -- 3.2 get: Content-Length and HEAD ----------------------------------------------------

EVERY_KIND_OF_REPLY = [
    ("POST", "/put/x", b"hello"),
    ("POST", "/put/x", b""),
    ("POST", "/put/x?batch=lines", b"a\nb"),
    ("POST", "/put/x?expect=99", b"hello"),
    ("POST", "/put/_kaf", b"hello"),
    ("GET", "/put/x", None),
    ("GET", "/get/x?from=1", None),
    ("GET", "/get/x?from=1&format=raw", None),
    ("GET", "/get/x?from=1&format=json", None),
    ("GET", "/get/x?from=9", None),
    ("GET", "/get/nothing?from=1", None),
    ("GET", "/get/nothing?from=1&format=raw", None),
    ("GET", "/get/x?from=0", None),
    ("GET", "/get/..?from=1", None),
    ("POST", "/archive/x?upto=1", None),
    ("POST", "/archive/x?upto=1", None),
    ("POST", "/archive/nothing?upto=1", None),
    ("GET", "/logs", None),
    ("GET", "/nope", None),
    ("GET", "/", None),
]


@pytest.mark.parametrize("method, path, body", EVERY_KIND_OF_REPLY)
def test_every_reply_sets_content_length(kaf: Kaf, method: str, path: str,
                                         body: Optional[bytes]) -> None:
    kaf.put("x", b"first")
    answer = kaf.answer(kaf.start(method, path, body))
    assert answer.length != UNKNOWN_LENGTH
    assert answer.length == len(answer.body)


HEADABLE = [
    "/get/x?from=1", "/get/x?from=2&format=raw", "/get/x?from=1&format=json",
    "/get/x?from=7", "/get/nothing?from=1", "/get/x", "/get/x?from=0", "/get/x?from=1&format=no",
    "/get/_x?from=1", "/get/.x?from=1", "/logs", "/nope", "/put/x", "/archive/x?upto=1",
]


@pytest.mark.parametrize("path", HEADABLE)
def test_head_answers_like_get_without_a_body(kaf: Kaf, path: str) -> None:
    kaf.put_lines("x", 3)
    get = kaf.get(path)
    head = kaf.request("HEAD", path)
    assert head.code == get.code
    assert head.body == b""
    assert head.header("Content-Length") == str(len(get.body))
    names = ["Content-Type", "Allow", "X-Kaf-LastMsgSent", "X-Kaf-FirstMsg", "X-Kaf-LastMsg"]
    assert [head.header(n) for n in names] == [get.header(n) for n in names]


# -- 3.2 get: the Go version's data folder ------------------------------------------------

def test_go_log_binary_message_is_served_as_it_is(gokaf: Kaf) -> None:
    assert gokaf.get("/get/test?from=3&format=raw").body == b"\x00\x01\xff\n"
    assert gokaf.get("/get/test?from=3").body == b"KAF_MSGS|v1|1\nKAF_MSG|3|3\n\x00\x01\xff"


def test_go_log_multiline_message_is_served_as_it_is(gokaf: Kaf) -> None:
    answer = gokaf.get("/get/test?from=1&limit=2&format=raw")
    assert answer.body == b"Test1\nline1\nline2|with pipe\n\n"


def test_go_archived_log_starts_at_its_first_kept_message(gokaf: Kaf) -> None:
    answer = gokaf.get("/get/arch?from=1")
    assert answer.header("X-Kaf-FirstMsg") == "5"
    assert answer.header("X-Kaf-LastMsgSent") == "11"
    assert answer.body == kaf_body([b"msg-%d" % (i,) for i in range(5, 12)], first=5)


def test_go_archived_log_continues_numbering(gokaf: Kaf) -> None:
    assert gokaf.put("arch", b"msg-12") == 12


def test_go_json_log_served_as_json(gokaf: Kaf) -> None:
    answer = gokaf.get("/get/js?from=1&format=json")
    assert answer.body == b'[{"a":1},\n{"b":2}]'


def test_go_stats_log_is_readable(gokaf: Kaf) -> None:
    [record] = gokaf.get("/get/_kaf?from=1&format=json").json()
    assert record["statno"] == 1


# -- 3.2 wait ---------------------------------------------------------------------------

def test_wait_answers_as_soon_as_a_message_is_put(kaf: Kaf) -> None:
    waiting = kaf.start("GET", "/get/x?from=1&wait=5")
    assert not answered(waiting)
    assert kaf.put("x", b"news") == 1
    assert answered(waiting)
    answer = kaf.answer(waiting)
    assert (answer.code, answer.body) == (200, b"KAF_MSGS|v1|1\nKAF_MSG|1|4\nnews")
    assert answer.header("X-Kaf-LastMsgSent") == "1"
    assert kaf.clock.seconds() == 0


def test_wait_for_a_later_message_ignores_earlier_state(kaf: Kaf) -> None:
    kaf.put("x", b"old")
    waiting = kaf.start("GET", "/get/x?from=2&wait=5&format=raw")
    assert not answered(waiting)
    kaf.put("x", b"new")
    assert kaf.answer(waiting).body == b"new\n"


def test_wait_answers_zero_messages_when_time_runs_out(kaf: Kaf) -> None:
    waiting = kaf.start("GET", "/get/x?from=1&wait=5")
    kaf.clock.advance(4.9)
    assert not answered(waiting)
    kaf.clock.advance(0.1)
    answer = kaf.answer(waiting)
    assert (answer.code, answer.body) == (200, ZERO_MESSAGES)
    assert answer.header("X-Kaf-LastMsgSent") is None


def test_wait_that_runs_out_on_unknown_log_creates_nothing(kaf: Kaf) -> None:
    waiting = kaf.start("GET", "/get/x?from=1&wait=5")
    kaf.clock.advance(5)
    assert kaf.answer(waiting).header("X-Kaf-LastMsg") is None
    assert kaf.files() == []
    assert kaf.get("/logs").json() == []
    assert kaf.get("/get/x?from=1").header("X-Kaf-LastMsg") is None


def test_wait_answers_at_once_when_messages_exist(kaf: Kaf) -> None:
    kaf.put("x", b"here")
    waiting = kaf.start("GET", "/get/x?from=1&wait=5&format=raw")
    assert answered(waiting)
    assert kaf.answer(waiting).body == b"here\n"
    assert kaf.clock.getDelayedCalls() == []


def test_wait_zero_answers_at_once(kaf: Kaf) -> None:
    answer = kaf.get("/get/x?from=1&wait=0")
    assert (answer.code, answer.body) == (200, ZERO_MESSAGES)


@pytest.mark.parametrize("value", ["11", "10.5", "-1", "abc", "", "nan", "inf"])
def test_wait_outside_zero_to_max_wait_is_400(make_kaf: Callable[..., Kaf], value: str) -> None:
    kaf = make_kaf(max_wait=10)
    kaf.get("/get/x?from=1&wait=" + value).assert_error(400, "get: ")
    assert kaf.clock.getDelayedCalls() == []


def test_wait_of_max_wait_is_accepted(make_kaf: Callable[..., Kaf]) -> None:
    kaf = make_kaf(max_wait=10)
    waiting = kaf.start("GET", "/get/x?from=1&wait=10")
    kaf.clock.advance(10)
    assert kaf.answer(waiting).code == 200


def test_client_that_disconnects_while_waiting_leaves_nothing_behind(kaf: Kaf) -> None:
    kaf.put("x", b"old")
    waiting = kaf.start("GET", "/get/x?from=2&wait=5")
    log = kaf.store.get("x")
    assert log is not None and log.waiting == 1
    waiting.cancel()
    kaf.treq.flush()
    failures: List[Failure] = []
    waiting.addErrback(failures.append)
    assert len(failures) == 1
    assert log.waiting == 0
    assert kaf.clock.getDelayedCalls() == []
    # The log goes on as before.
    assert kaf.put("x", b"new") == 2


# -- 3.3 archive --------------------------------------------------------------------------

def test_archive_replies_with_archive_name_upto_and_kept(kaf: Kaf) -> None:
    kaf.put_lines("x", 10)
    kaf.clock.advance(ARCHIVE_TIME)
    answer = kaf.post("/archive/x?upto=4")
    assert answer.code == 200
    assert answer.json() == {"log": "x", "archive": "--x--2026-11-29T06_14_59Z",
                             "upto": 4, "kept": 6}
    assert kaf.files() == ["--x--2026-11-29T06_14_59Z", "x"]


def test_archive_keeps_messages_after_upto_in_live_file(kaf: Kaf) -> None:
    kaf.put_lines("x", 10)
    before = kaf.file("x")
    kaf.clock.advance(ARCHIVE_TIME)
    kaf.post("/archive/x?upto=4")
    kept = [b"m%d" % (i,) for i in range(5, 11)]
    assert kaf.file("x") == db_file(4, kept)
    assert kaf.file("--x--2026-11-29T06_14_59Z") == before
    answer = kaf.get("/get/x?from=1")
    assert answer.body == kaf_body(kept, first=5)
    assert answer.header("X-Kaf-FirstMsg") == "5"


def test_put_after_archive_continues_numbering(kaf: Kaf) -> None:
    kaf.put_lines("x", 10)
    kaf.post("/archive/x?upto=4")
    assert kaf.put("x", b"next") == 11


def test_archive_twice_to_the_same_number_is_idempotent(kaf: Kaf) -> None:
    kaf.put_lines("x", 10)
    kaf.post("/archive/x?upto=4")
    files, live = kaf.files(), kaf.file("x")
    answer = kaf.post("/archive/x?upto=4")
    assert answer.code == 200
    assert answer.json() == {"log": "x", "archive": None, "upto": 4, "kept": 6}
    assert kaf.files() == files
    assert kaf.file("x") == live


def test_archive_beyond_last_message_empties_log_and_keeps_numbering(kaf: Kaf) -> None:
    kaf.put_lines("x", 3)
    answer = kaf.post("/archive/x?upto=100")
    assert answer.json()["upto"] == 3
    assert answer.json()["kept"] == 0
    assert kaf.file("x") == b"KAF_DB|v1|3"
    empty = kaf.get("/get/x?from=1")
    assert (empty.body, empty.header("X-Kaf-LastMsg")) == (ZERO_MESSAGES, "3")
    assert kaf.put("x", b"four") == 4


def test_archive_of_empty_log_changes_nothing(kaf: Kaf) -> None:
    kaf.put_lines("x", 3)
    kaf.post("/archive/x?upto=3")
    answer = kaf.post("/archive/x?upto=3")
    assert answer.json() == {"log": "x", "archive": None, "upto": 3, "kept": 0}


def test_second_archive_in_the_same_second_gets_a_suffix(kaf: Kaf) -> None:
    kaf.put_lines("x", 10)
    kaf.clock.advance(ARCHIVE_TIME)
    first = kaf.post("/archive/x?upto=2").json()["archive"]
    second = kaf.post("/archive/x?upto=4").json()["archive"]
    assert (first, second) == ("--x--2026-11-29T06_14_59Z", "--x--2026-11-29T06_14_59Z_1")
    assert kaf.file(first) == db_file(0, [b"m%d" % (i,) for i in range(1, 11)])
    assert kaf.file(second) == db_file(2, [b"m%d" % (i,) for i in range(3, 11)])


@pytest.mark.parametrize("query", ["", "?upto=0", "?upto=abc", "?upto=-1", "?upto=",
                                   "?upto=1&upto=2"])
def test_archive_with_invalid_upto_is_400_and_changes_nothing(kaf: Kaf, query: str) -> None:
    kaf.put_lines("x", 3)
    kaf.post("/archive/x" + query).assert_error(400, "archive: ")
    assert kaf.files() == ["x"]


def test_archive_of_unknown_log_is_404_and_creates_nothing(kaf: Kaf) -> None:
    kaf.post("/archive/nothing?upto=1").assert_error(404, "archive: ")
    assert kaf.files() == []


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_archive_with_other_method_is_405_with_allow_post_and_hint(kaf: Kaf,
                                                                  method: str) -> None:
    kaf.put_lines("x", 3)
    answer = kaf.request(method, "/archive/x?upto=2")
    answer.assert_error(405, "archive: use POST")
    assert answer.header("Allow") == "POST"
    assert kaf.files() == ["x"]


def test_archive_of_stats_log_is_allowed(gokaf: Kaf) -> None:
    answer = gokaf.post("/archive/_kaf?upto=1")
    assert answer.code == 200
    assert answer.json()["kept"] == 0


# -- 3.4 /logs ------------------------------------------------------------------------------

def test_logs_of_empty_folder_is_an_empty_list(kaf: Kaf) -> None:
    answer = kaf.get("/logs")
    assert answer.code == 200
    assert answer.json() == []


def test_logs_lists_every_log_sorted_with_its_numbers(gokaf: Kaf) -> None:
    def size(name: str) -> int:
        return os.path.getsize(os.path.join(gokaf.folder, name))

    assert gokaf.get("/logs").json() == [
        {"name": "_kaf", "first": 1, "last": 1, "count": 1, "bytes": size("_kaf")},
        {"name": "arch", "first": 5, "last": 11, "count": 7, "bytes": size("arch")},
        {"name": "js", "first": 1, "last": 2, "count": 2, "bytes": size("js")},
        {"name": "sizes", "first": 1, "last": 6, "count": 6, "bytes": size("sizes")},
        {"name": "small7", "first": 1, "last": 7, "count": 7, "bytes": size("small7")},
        {"name": "test", "first": 1, "last": 3, "count": 3, "bytes": size("test")},
    ]


def test_logs_follows_puts_and_archives(kaf: Kaf) -> None:
    kaf.put("b", b"hello")
    kaf.put_lines("a", 4)
    kaf.post("/archive/a?upto=3")
    assert kaf.get("/logs").json() == [
        {"name": "a", "first": 4, "last": 4, "count": 1, "bytes": len(kaf.file("a"))},
        {"name": "b", "first": 1, "last": 1, "count": 1, "bytes": len(kaf.file("b"))},
    ]


def test_logs_reports_unreadable_log_with_error(broken: Kaf) -> None:
    entries = broken.get("/logs").json()
    assert [e["name"] for e in entries] == ["broken", "good"]
    error = entries[0]["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert "error" not in entries[1]


@pytest.mark.parametrize("method, path, op", [
    ("GET", "/get/broken?from=1", "get"),
    ("GET", "/get/broken?from=1&wait=5", "get"),
    ("POST", "/put/broken", "put"),
    ("POST", "/put/broken?batch=lines", "put"),
    ("POST", "/archive/broken?upto=1", "archive"),
])
def test_unreadable_log_answers_500_with_one_line_reason(broken: Kaf, method: str, path: str,
                                                         op: str) -> None:
    before = broken.file("broken")
    answer = broken.request(method, path, b"new\nnew" if method == "POST" else None)
    answer.assert_error(500, op + ": ")
    assert broken.file("broken") == before
    assert broken.files() == ["broken", "good"]
    assert broken.get("/get/good?from=1&format=raw").body == b"fine\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_logs_with_other_method_is_405(kaf: Kaf, method: str) -> None:
    answer = kaf.request(method, "/logs", b"x")
    answer.assert_error(405, "logs: ")
    assert answer.header("Allow") == "GET, HEAD"


# -- paths and errors ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/nope", "/gets/x", "/put", "/logs/x", "/PUT/x",
                                  "/archive", "/get", "/%0A", "/x%0Ay/z"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_path_is_404_or_empty_name_400(kaf: Kaf, path: str, method: str) -> None:
    answer = kaf.request(method, path, b"x" if method == "POST" else None)
    if path in ("/put", "/archive", "/get"):
        answer.assert_error(400, path[1:] + ": ")
    else:
        answer.assert_error(404)
    assert kaf.files() == []


@pytest.mark.parametrize("method, path, op", [
    ("POST", "/put/", "put"), ("GET", "/get/?from=1", "get"),
    ("POST", "/archive/?upto=1", "archive")])
def test_empty_log_name_is_400(kaf: Kaf, method: str, path: str, op: str) -> None:
    answer = kaf.request(method, path, b"hello" if method == "POST" else None)
    answer.assert_error(400, op + ": ")
    assert kaf.files() == []


_methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"])
_ops = st.sampled_from(["put", "get", "archive", "logs", "", "x"])
_keys = st.sampled_from(["from", "format", "limit", "wait", "upto", "expect", "batch", "x"])
_values = st.one_of(st.text(max_size=8), st.integers(-2, 12).map(str),
                    st.sampled_from(["kaf", "raw", "json", "lines", "1e3", "9" * 25]))


@pytest.fixture
def fuzz_kaf(make_kaf: Callable[..., Kaf]) -> Kaf:
    kaf = make_kaf(max_message_size=20, max_wait=2)
    kaf.put("x", b"seed")
    return kaf


# The app is made once for all examples: what one example leaves is input
# for the next.
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=_methods, op=_ops, name=st.one_of(st.text(max_size=12),
                                                st.sampled_from(["x", "_kaf", "a.b"])),
       query=st.lists(st.tuples(_keys, _values), max_size=4),
       body=st.binary(max_size=40))
def test_no_client_input_gets_a_500(fuzz_kaf: Kaf, method: str, op: str, name: str,
                                    query: List[Any], body: bytes) -> None:
    kaf = fuzz_kaf
    path = "/%s/%s" % (op, quote(name, safe="")) if op else "/" + quote(name, safe="")
    if query:
        path += "?" + urlencode(query)
    d = kaf.start(method, path, body if method in ("POST", "PUT") else None)
    if not answered(d):
        kaf.clock.advance(3)  # a long poll: let it run out
    answer = kaf.answer(d)
    assert answer.code in (200, 400, 403, 404, 405, 409, 413), (method, path, answer.body)
    if answer.code >= 400 and method != "HEAD":
        assert_one_line_error(answer)


# -- the Site: body limits before the body is read (3.1) ---------------------------------------

@implementer(IBodyProducer)
class Body:
    """
    A request body given in C{chunks}; C{length} may be UNKNOWN_LENGTH (a
    chunked body).  Unless C{finish}, the body never ends: the client is
    still sending when the server answers.
    """

    def __init__(self, chunks: List[bytes], length: Any = UNKNOWN_LENGTH,
                 finish: bool = True) -> None:
        self.chunks = chunks
        self.length = length
        self.finish = finish

    def startProducing(self, consumer: Any) -> "Deferred[None]":
        for chunk in self.chunks:
            consumer.write(chunk)
        return succeed(None) if self.finish else Deferred()

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def _producer(data: Any) -> Any:
    return data if IBodyProducer.providedBy(data) else Body([data], len(data))


class SiteClient:
    """Requests through Kaf's own Site (make_site), in memory."""

    def __init__(self, kaf: Kaf) -> None:
        self.kaf = kaf
        self.agent = RequestTraversalAgent(kaf.web.resource())
        # _serverFactory is a private attribute of treq's testing agent: it
        # is the only way to serve its in-memory connections with our Site.
        self.agent._serverFactory = make_site(kaf.web, kaf.clock)
        self.client = HTTPClient(self.agent, data_to_body_producer=_producer)

    def post(self, path: str, body: Any) -> Answer:
        d = self.client.request("POST", "http://kaf.test" + path, data=body)
        self.agent.flush()
        response = _result(d)
        content = treq.content(response)
        self.agent.flush()
        return Answer(response, _result(content))


@pytest.fixture
def site(make_kaf: Callable[..., Kaf]) -> SiteClient:
    return SiteClient(make_kaf(max_message_size=100))


def test_site_refuses_content_length_over_limit_without_reading_the_body(
        site: SiteClient) -> None:
    # The client announces 1 GB and sends 10 bytes: the answer cannot wait
    # for the body.
    answer = site.post("/put/x", Body([b"a" * 10], length=10 ** 9, finish=False))
    answer.assert_error(413, "put: ")
    assert site.kaf.files() == []


def test_site_refuses_content_length_over_limit_sent_with_its_body(site: SiteClient) -> None:
    site.post("/put/x", b"a" * 101).assert_error(413, "put: ")
    assert site.kaf.files() == []


def test_site_refuses_chunked_body_as_soon_as_it_passes_the_limit(site: SiteClient) -> None:
    answer = site.post("/put/x", Body([b"a" * 60, b"a" * 60], finish=False))
    answer.assert_error(413, "put: ")
    assert site.kaf.files() == []


def test_site_refuses_whole_chunked_body_over_limit_and_writes_nothing(
        site: SiteClient) -> None:
    site.post("/put/x", Body([b"a" * 40] * 5)).assert_error(413, "put: ")
    assert site.kaf.files() == []
    assert site.kaf.get("/get/x?from=1").body == ZERO_MESSAGES


def test_site_accepts_body_within_the_limit(site: SiteClient) -> None:
    answer = site.post("/put/x", b"a" * 100)
    assert (answer.code, answer.body) == (200, b"1")
    assert site.kaf.file("x") == db_file(0, [b"a" * 100])


def test_site_accepts_chunked_body_within_the_limit(site: SiteClient) -> None:
    answer = site.post("/put/x", Body([b"hello ", b"world"]))
    assert (answer.code, answer.body) == (200, b"1")
    assert site.kaf.file("x") == db_file(0, [b"hello world"])


def test_site_accepts_batch_body_larger_than_the_message_limit(site: SiteClient) -> None:
    answer = site.post("/put/x?batch=lines", Body([b"a" * 99 + b"\n"] * 5))
    assert (answer.code, answer.body) == (200, b"5")
    assert answer.header("X-Kaf-Count") == "5"


def test_site_refuses_message_over_limit_in_a_batch(site: SiteClient) -> None:
    site.post("/put/x?batch=lines", b"ok\n" + b"a" * 101).assert_error(413, "put: ")
    assert site.kaf.files() == []


def test_routes_remembered_stay_bounded_whatever_paths_clients_send(kaf: Kaf) -> None:
    resource = kaf.web.resource()
    treq = StubTreq(resource)
    for i in range(4200):
        treq.get("http://kaf.test/get/log%d?from=1" % (i,))
    treq.get("http://kaf.test/get/" + "x" * 300 + "?from=1")
    treq.flush()
    assert resource._route.cache_info().currsize == 4096
    # A path longer than any route's with a valid name is matched, not kept.
    assert resource._route.cache_info().misses == 4200


# -- the console -----------------------------------------------------------------------

def test_console_serves_its_page_and_files_from_the_package(kaf: Kaf) -> None:
    page = kaf.get("/console")
    assert page.code == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    assert b'<script src="console/console.js">' in page.body
    script = kaf.get("/console/console.js")
    assert (script.code, script.header("Content-Type")) == (200, "text/javascript; charset=utf-8")
    assert script.header("Content-Security-Policy").startswith("default-src 'self'")
    assert kaf.get("/console/console.css").header("Content-Type") == "text/css; charset=utf-8"


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/..%2Fweb.py",
                                  "/console/__init__.py"])
def test_console_serves_no_other_file(kaf: Kaf, path: str) -> None:
    kaf.get(path).assert_error(404)


def test_a_browser_asking_for_the_root_is_sent_to_the_console(kaf: Kaf) -> None:
    answer = kaf.answer(kaf.start("GET", "/", headers={
        "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}))
    assert (answer.code, answer.header("Location")) == (302, "/console")


def test_an_api_client_asking_for_the_root_gets_the_404_it_always_got(kaf: Kaf) -> None:
    answer = kaf.answer(kaf.start("GET", "/", headers={"Accept": "*/*"}))
    answer.assert_error(404, "unknown path '/'")


def test_console_with_post_is_405(kaf: Kaf) -> None:
    answer = kaf.post("/console", b"x")
    answer.assert_error(405, "console: ")
    assert answer.header("Allow") == "GET, HEAD"


def test_a_full_disk_refuses_puts_507_logs_one_line_with_counts_and_leaves_nothing(
        kaf: Kaf, monkeypatch: Any) -> None:
    kaf.put("old", b"kept")
    lines: List[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace", "").startswith("kaf") and "reason" in event:
            lines.append(event["reason"])

    def full(*args: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = kaf.files()
    globalLogPublisher.addObserver(observe)
    try:
        monkeypatch.setattr(os, "write", full)
        monkeypatch.setattr(os, "pwrite", full)
        for n in range(12):
            kaf.post("/put/new-%d" % (n,), b"x").assert_error(507, "put: no space left")
            kaf.post("/put/old", b"y").assert_error(507, "put: no space left")
        monkeypatch.undo()
    finally:
        globalLogPublisher.removeObserver(observe)
    # 24 refusals for one reason: its first line, then its count at 10.
    reason = "put: no space left on the disk; nothing was written"
    assert lines == [reason, reason + " (10 times)"]
    # No temporary file stays while the disk is full, and the log is whole.
    assert kaf.files() == before
    assert kaf.file("old") == db_file(0, [b"kept"])
    assert kaf.put("old", b"after") == 2
