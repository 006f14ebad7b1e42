"""
C{--cors}: a page on a listed origin may put and read (the CORS headers of
every reply, preflights answered), through StubTreq and a real server.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from conftest import sync_runner
from kaf.api import auth
from kaf.api.cors import Cors, parse_origins
from kaf.engines.file.store import Store
from kaf.tap import KafOptions
from kaf.api.web import KafWeb
from server import KafServer
from test_auth import INGEST, RULES, write_rules
from test_e2e import curl, data  # noqa: F401 (a fixture)
from test_web import Answer, Kaf, unexpected_errors  # noqa: F401 (a fixture)

APP = "https://app.example"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, kaf-msg-id"}


def ask(kaf: Kaf, method: str, path: str, headers: Dict[str, str],
        body: Optional[bytes] = None) -> Answer:
    return kaf.answer(kaf.start(method, path, body, headers))


@pytest.fixture
def kaf(tmp_path: Any, clock: Clock) -> Iterator[Kaf]:
    k = Kaf(str(tmp_path / "data"), clock)
    k.web.cors = Cors(parse_origins(APP + ",http://localhost:3000"))
    k.treq = type(k.treq)(k.web.resource())
    yield k
    k.store.close()


def test_a_preflight_from_a_listed_origin_is_answered_204_with_what_it_may_send(
        kaf: Kaf) -> None:
    answer = ask(kaf, "OPTIONS", "/put/orders", PREFLIGHT)
    assert answer.code == 204 and answer.body == b""
    assert answer.header("Access-Control-Allow-Origin") == APP
    assert answer.header("Vary") == "Origin"
    assert set(answer.header("Access-Control-Allow-Methods").split(", ")) >= {"GET", "POST"}
    allowed = {h.lower() for h in answer.header("Access-Control-Allow-Headers").split(", ")}
    assert allowed >= {"authorization", "kaf-msg-id", "last-event-id", "content-type"}
    assert kaf.files() == []


def test_a_put_from_a_listed_origin_exposes_kafs_headers(kaf: Kaf) -> None:
    answer = ask(kaf, "POST", "/put/orders", {"Origin": APP}, b"hello")
    assert (answer.code, answer.body) == (200, b"1")
    assert answer.header("Access-Control-Allow-Origin") == APP
    exposed = set(answer.header("Access-Control-Expose-Headers").split(", "))
    assert exposed >= {"Kaf-Msg-Id", "Kaf-Duplicate", "X-Kaf-LastMsgSent", "X-Kaf-LastMsg",
                       "X-Kaf-FirstMsg", "X-Kaf-Count"}
    got = ask(kaf, "GET", "/get/orders?from=1&format=raw", {"Origin": "http://localhost:3000"})
    assert got.body == b"hello\n"
    assert got.header("Access-Control-Allow-Origin") == "http://localhost:3000"
    assert got.header("X-Kaf-LastMsgSent") == "1"


def test_an_error_from_a_listed_origin_carries_the_headers_too(kaf: Kaf) -> None:
    answer = ask(kaf, "GET", "/get/orders", {"Origin": APP})
    answer.assert_error(400, "get: missing 'from'")
    assert answer.header("Access-Control-Allow-Origin") == APP


def test_an_origin_not_listed_gets_no_allow_origin(kaf: Kaf) -> None:
    answer = ask(kaf, "POST", "/put/orders", {"Origin": "https://evil.example"}, b"x")
    assert answer.code == 200  # a server does not refuse; the browser hides the reply
    assert answer.header("Access-Control-Allow-Origin") is None
    assert answer.header("Access-Control-Expose-Headers") is None
    preflight = ask(kaf, "OPTIONS", "/put/orders", dict(PREFLIGHT, Origin="https://evil.example"))
    preflight.assert_error(403, "cors: origin https://evil.example is not allowed")
    assert preflight.header("Access-Control-Allow-Origin") is None


def test_without_cors_there_are_no_cors_headers_and_options_is_405(
        tmp_path: Any, clock: Clock) -> None:
    k = Kaf(str(tmp_path / "data"), clock)
    answer = ask(k, "POST", "/put/orders", {"Origin": APP}, b"x")
    assert answer.code == 200
    assert not [n for n, _ in answer.headers.getAllRawHeaders()
                if n.lower().startswith(b"access-control-") or n.lower() == b"vary"]
    ask(k, "OPTIONS", "/put/orders", PREFLIGHT).assert_error(405, "put: use POST")


def test_options_that_is_no_preflight_is_routed_as_before(kaf: Kaf) -> None:
    ask(kaf, "OPTIONS", "/put/orders", {"Origin": APP}).assert_error(405, "put: use POST")


def test_any_origin_with_a_star(tmp_path: Any, clock: Clock) -> None:
    k = Kaf(str(tmp_path / "data"), clock)
    k.web.cors = Cors(parse_origins("*"))
    k.treq = type(k.treq)(k.web.resource())
    answer = ask(k, "OPTIONS", "/get/orders", dict(PREFLIGHT, Origin="https://any.example"))
    assert answer.code == 204
    assert answer.header("Access-Control-Allow-Origin") == "*"


def test_under_auth_a_preflight_needs_no_token_and_the_request_does(
        tmp_path: Any, clock: Clock) -> None:
    store = Store(str(tmp_path / "data"), clock, sync_runner)
    store.load()
    rules = auth.Auth(write_rules(str(tmp_path / "auth.json"), RULES))
    k = Kaf(str(tmp_path / "data"), clock)
    k.web = KafWeb(store, auth=rules, cors=Cors([APP]))
    k.treq = type(k.treq)(k.web.resource())
    assert ask(k, "OPTIONS", "/put/orders-1", PREFLIGHT).code == 204
    refused = ask(k, "POST", "/put/orders-1", {"Origin": APP}, b"x")
    refused.assert_error(401, "put: a token is needed")
    # The page can read why, and that a token is asked for.
    assert refused.header("Access-Control-Allow-Origin") == APP
    put = ask(k, "POST", "/put/orders-1", {"Origin": APP, "Authorization": "Bearer " + INGEST},
              b"x")
    assert (put.code, put.body) == (200, b"1")
    store.close()


@pytest.mark.parametrize("value, reason", [
    ("", "empty origin"),
    ("app.example", "is not an origin"),
    ("https://app.example/", "is not an origin"),
    ("ftp://app.example", "is not an origin"),
    ("https://a.example,,https://b.example", "empty origin"),
])
def test_a_bad_cors_option_stops_start_up_with_one_line(
        tmp_path: Any, value: str, reason: str) -> None:
    with pytest.raises(usage.UsageError) as e:
        KafOptions().parseOptions(["--cors", value, "--data", str(tmp_path / "d")])
    assert str(e.value).startswith("--cors: ") and reason in str(e.value)


def test_a_real_server_answers_a_browsers_preflight_and_put(data: str) -> None:
    with KafServer(data, ["--cors", APP]) as server:
        preflight = curl("-X", "OPTIONS", "-H", "Origin: " + APP,
                         "-H", "Access-Control-Request-Method: POST",
                         "-H", "Access-Control-Request-Headers: kaf-msg-id",
                         server.url("/put/orders"))
        put = curl("-H", "Origin: " + APP, "--data-binary", "hello", server.url("/put/orders"))
    assert preflight.status == 204
    assert preflight.header("Access-Control-Allow-Origin") == APP
    assert "Kaf-Msg-Id" in preflight.header("Access-Control-Allow-Headers")
    assert (put.status, put.body) == (200, b"1")
    assert put.header("Access-Control-Allow-Origin") == APP
    assert "X-Kaf-LastMsgSent" in put.header("Access-Control-Expose-Headers")
