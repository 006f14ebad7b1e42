"""
Access control (C{--auth}): the token file, the rules the web layer
enforces through StubTreq, the reload on SIGHUP, and the client and CLI
carrying a token, against a real server.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, Iterator, List

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from conftest import sync_runner
from kaf.api import auth
from kaf.engines.file.store import Store
from kaf.tap import AuthService, KafOptions, loopback_only, makeService
from kaf.api.web import KafWeb
from server import KafServer
from test_web import Answer, _result

OPS = "ops-token-1234"
INGEST = "ingest-token-5678"
READER = "reader-token-9012"

RULES = {"tokens": [
    {"name": "ops", "sha256": hashlib.sha256(OPS.encode()).hexdigest(),
     "read": ["*"], "write": ["*"], "archive": ["*"]},
    {"name": "ingest", "token": INGEST, "write": ["orders-*"]},
    {"name": "reader", "token": READER, "read": ["orders-*", "/logs"]},
]}


def write_rules(path: str, rules: Dict[str, Any]) -> str:
    with open(path, "w") as f:
        json.dump(rules, f)
    return path


# -- the file -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("{", "not JSON"),
    ("[]", 'expected {"tokens": [...]}'),
    ('{"tokens": [{"token": "12345678"}]}', "token 1: needs a name"),
    ('{"tokens": [{"name": "a"}]}', "token 'a': give one of token and sha256"),
    ('{"tokens": [{"name": "a", "token": "short"}]}', "8 or more printable characters"),
    ('{"tokens": [{"name": "a", "sha256": "abc"}]}', "sha256 must be 64 hex digits"),
    ('{"tokens": [{"name": "a", "token": "12345678", "rigths": []}]}', "unknown keys rigths"),
    ('{"tokens": [{"name": "a", "token": "12345678", "read": "*"}]}', "read must be a list"),
    ('{"tokens": [{"name": "a", "token": "12345678"}, {"name": "a", "token": "87654321"}]}',
     "the name 'a' is used twice"),
])
def test_a_broken_file_is_refused_with_one_line(text: str, reason: str) -> None:
    with pytest.raises(auth.AuthFileError) as e:
        auth.parse(text)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_a_bad_auth_option_stops_start_up_with_one_line(tmp_path: Any) -> None:
    path = str(tmp_path / "auth.json")
    with open(path, "w") as f:
        f.write("{nope")
    from twisted.python import usage
    with pytest.raises(usage.UsageError) as e:
        KafOptions().parseOptions(["--auth", path, "--data", str(tmp_path / "d")])
    assert str(e.value).startswith("--auth: not JSON")


# -- the rules, through the web layer -----------------------------------------------------

class Kaf:
    def __init__(self, folder: str, clock: Clock, rules: auth.Auth) -> None:
        self.store = Store(folder, clock, sync_runner, fsync=True)
        self.store.load()
        self.folder = folder
        self.treq = StubTreq(KafWeb(self.store, auth=rules).resource())

    def request(self, method: str, path: str, token: Any = None, body: Any = None,
                authorization: Any = None) -> Answer:
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        if authorization is not None:
            headers["Authorization"] = authorization
        d = self.treq.request(method, "http://kaf.test" + path, data=body, headers=headers)
        self.treq.flush()
        response = _result(d)
        content = self.treq.content(response)
        self.treq.flush()
        return Answer(response, _result(content))

    def files(self) -> List[str]:
        return sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []


@pytest.fixture
def kaf(tmp_path: Any, clock: Clock) -> Iterator[Kaf]:
    rules = auth.Auth(write_rules(str(tmp_path / "auth.json"), RULES))
    k = Kaf(str(tmp_path / "data"), clock, rules)
    yield k
    k.store.close()


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic b3BzOm9wcw==", "Bearer  "])
def test_no_token_is_401_with_www_authenticate_and_writes_nothing(
        kaf: Kaf, authorization: Any) -> None:
    answer = kaf.request("POST", "/put/orders-1", body=b"x", authorization=authorization)
    answer.assert_error(401, "put: a token is needed")
    assert answer.header("WWW-Authenticate") == 'Bearer realm="kaf"'
    assert kaf.files() == []


def test_an_unknown_token_is_401(kaf: Kaf) -> None:
    answer = kaf.request("GET", "/get/orders-1?from=1", token="not-a-known-token")
    answer.assert_error(401, "get: unknown token")
    assert answer.header("WWW-Authenticate") == 'Bearer realm="kaf"'


def test_a_token_granted_write_puts_to_matching_logs_only(kaf: Kaf) -> None:
    answer = kaf.request("POST", "/put/orders-1", INGEST, b"first")
    assert (answer.code, answer.body) == (200, b"1")
    refused = kaf.request("POST", "/put/payments", INGEST, b"x")
    refused.assert_error(403, "put: token 'ingest' may not write log 'payments'")
    assert kaf.files() == ["orders-1"]


def test_a_write_token_may_not_read_or_archive(kaf: Kaf) -> None:
    kaf.request("POST", "/put/orders-1", INGEST, b"first")
    kaf.request("GET", "/get/orders-1?from=1", INGEST).assert_error(
        403, "get: token 'ingest' may not read log 'orders-1'")
    kaf.request("POST", "/archive/orders-1?upto=1", INGEST).assert_error(
        403, "archive: token 'ingest' may not archive log 'orders-1'")
    assert kaf.request("GET", "/get/orders-1?from=1&format=raw", READER).body == b"first\n"


def test_a_hashed_token_works_as_the_token(kaf: Kaf) -> None:
    kaf.request("POST", "/put/any", OPS, b"a")
    answer = kaf.request("POST", "/archive/any?upto=1", OPS)
    assert answer.code == 200 and json.loads(answer.body)["archive"].startswith("--any--")
    # The digest itself is no token.
    kaf.request("GET", "/logs", hashlib.sha256(OPS.encode()).hexdigest()).assert_error(401)


def test_the_log_list_needs_its_right_and_shows_only_readable_logs(kaf: Kaf) -> None:
    for name in ("orders-1", "orders-2", "payments"):
        kaf.request("POST", "/put/" + name, OPS, b"x")
    listed = json.loads(kaf.request("GET", "/logs", READER).body)
    assert [entry["name"] for entry in listed] == ["orders-1", "orders-2"]
    assert len(json.loads(kaf.request("GET", "/logs", OPS).body)) == 3
    kaf.request("GET", "/logs", INGEST).assert_error(
        403, "logs: token 'ingest' may not read the log list")


def test_kaf_is_granted_like_a_log(kaf: Kaf) -> None:
    assert kaf.request("GET", "/get/_kaf?from=1", OPS).code == 200
    kaf.request("GET", "/get/_kaf?from=1", READER).assert_error(403, "get: ")


def test_the_console_page_needs_no_token(kaf: Kaf) -> None:
    assert kaf.request("GET", "/console").code == 200


def test_a_reload_takes_new_rules_and_a_broken_file_keeps_the_old(
        tmp_path: Any, clock: Clock) -> None:
    path = write_rules(str(tmp_path / "auth.json"), RULES)
    rules = auth.Auth(path)
    service = AuthService(rules, clock)
    logged: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        write_rules(path, {"tokens": [{"name": "new", "token": "new-token-1", "read": ["*"]}]})
        service.reload()
        assert [t.name for t in rules.rules.tokens] == ["new"]
        with open(path, "w") as f:
            f.write('{"tokens": [')
        service.reload()
        assert [t.name for t in rules.rules.tokens] == ["new"]
    finally:
        globalLogPublisher.removeObserver(logged)
    warnings = [e for e in logged if e.get("log_level") is not None
                and e["log_level"].name == "warn"]
    assert len(warnings) == 1 and "the rules before stay" in warnings[0]["log_format"]


# -- listening with no access control ----------------------------------------------------

@pytest.mark.parametrize("endpoint, loopback", [
    ("tcp:7749:interface=127.0.0.1:backlog=1024", True),
    (r"tcp:7749:interface=\:\:1", True),
    ("unix:/run/kaf.sock", True),
    ("tcp:7749:backlog=1024", False),
    ("tcp:80:interface=0.0.0.0", False),
    ("ssl:443:privateKey=k.pem", False),
])
def test_loopback_only_tells_which_endpoints_every_host_reaches(
        endpoint: str, loopback: bool) -> None:
    assert loopback_only(endpoint) is loopback


def test_listening_to_every_host_without_auth_warns_once(tmp_path: Any) -> None:
    logged: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        config = KafOptions()
        config.parseOptions(["--addr", "0.0.0.0:7749", "--data", str(tmp_path / "d")])
        makeService(config, reactor=MemoryReactorClock())
    finally:
        globalLogPublisher.removeObserver(logged.append)
    warnings = [e for e in logged if "with no --auth" in e.get("log_format", "")]
    assert len(warnings) == 1


# -- a real server ---------------------------------------------------------------------

KAF = os.path.join(os.path.dirname(sys.executable), "kaf")


def test_a_real_server_reads_its_rules_again_on_sighup(tmp_path: Any) -> None:
    path = write_rules(str(tmp_path / "auth.json"), RULES)
    with KafServer(str(tmp_path / "data"), ["--auth", path]) as server:
        env = dict(os.environ, KAF_URL=server.url(""), KAF_TOKEN=INGEST)
        done = subprocess.run([KAF, "put", "orders-9", "hello"], env=env,
                              capture_output=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"1\n")
        refused = subprocess.run([KAF, "--token", "wrong-token", "get", "orders-9"], env=env,
                                 capture_output=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr == b"kaf: get: unknown token\n"
        write_rules(path, {"tokens": [{"name": "later", "token": "later-token", "read": ["*"]}]})
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_output("1 tokens read again from")
        assert subprocess.run([KAF, "put", "orders-9", "again"], env=env,
                              capture_output=True, timeout=60).returncode == 1
        got = subprocess.run([KAF, "--token", "later-token", "get", "orders-9"], env=env,
                             capture_output=True, timeout=60)
        assert got.stdout == b"hello\n"
        assert INGEST not in server.output() and "later-token" not in server.output()
