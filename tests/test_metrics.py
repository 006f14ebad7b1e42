"""
C{GET /metrics}: the Prometheus text format, scraped through StubTreq and
through Kaf's own HTTP server in memory, and parsed with
prometheus-client's parser.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.task import Clock

from conftest import sync_runner
from kaf.api import auth
from kaf.api.metrics import CONTENT_TYPE as METRICS_TYPE, Histogram, Metrics
from kaf.stats import Stats
from kaf.engines.file.store import Store
from kaf.api.web import KafWeb, make_site
from test_auth import OPS, READER, write_rules
from server import KafServer
from test_e2e import curl, data  # noqa: F401 (a fixture)
from test_web import Answer, Kaf, _producer, _result, unexpected_errors  # noqa: F401 (a fixture)

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def samples(body: bytes) -> Samples:
    """Every sample of a scrape, by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def of_log(found: Samples, name: str, log: str) -> Optional[float]:
    return found.get((name, (("log", log),)))


def log_labels(found: Samples) -> List[str]:
    return sorted({dict(labels)["log"] for _, labels in found if "log" in dict(labels)})


@pytest.fixture
def kaf(tmp_path: Any, clock: Clock) -> Iterator[Kaf]:
    k = Kaf(str(tmp_path / "data"), clock)
    k.web.metrics = Metrics(k.store)
    yield k
    k.store.close()


def scrape(kaf: Kaf) -> Samples:
    answer = kaf.get("/metrics")
    assert answer.code == 200, answer.body
    assert answer.header("Content-Type").startswith("text/plain; version=")
    return samples(answer.body)


# -- per log ----------------------------------------------------------------------

def test_metrics_count_each_logs_puts_gets_messages_and_bytes(kaf: Kaf) -> None:
    for m in (b"one", b"two", b"three"):
        kaf.put("orders", m)
    kaf.post("/put/orders?batch=lines", b"four\nfive\n")
    assert kaf.get("/get/orders?from=2").code == 200
    assert kaf.get("/get/orders?from=9").code == 200  # nothing there: a get, none served
    found = scrape(kaf)
    size = os.path.getsize(os.path.join(kaf.folder, "orders")) - len(b"KAF_DB|v1|0")
    assert of_log(found, "kaf_log_puts_total", "orders") == 5
    assert of_log(found, "kaf_log_gets_total", "orders") == 2
    assert of_log(found, "kaf_log_messages_served_total", "orders") == 4
    assert of_log(found, "kaf_log_bytes_in_total", "orders") == size
    one = len(b"\nKAF_MSG|1|3\none")
    assert of_log(found, "kaf_log_bytes_out_total", "orders") == size - one
    assert of_log(found, "kaf_log_last_message", "orders") == 5
    assert of_log(found, "kaf_log_errors_total", "orders") == 0


def test_metrics_count_since_start_up_across_stats_intervals(kaf: Kaf, clock: Clock) -> None:
    stats = Stats(kaf.store, clock)
    kaf.put("orders", b"one")
    assert stats.record() is not None  # the _kaf interval's counters restart...
    kaf.put("orders", b"two")
    found = scrape(kaf)
    # ... the metrics' do not.
    assert of_log(found, "kaf_log_puts_total", "orders") == 2


def test_a_refused_put_is_counted_as_an_error_of_its_log(kaf: Kaf) -> None:
    kaf.put("orders", b"one")
    assert kaf.post("/put/orders?expect=7", b"two").code == 409
    found = scrape(kaf)
    assert of_log(found, "kaf_log_errors_total", "orders") == 1
    assert of_log(found, "kaf_log_puts_total", "orders") == 1


def test_scraping_metrics_is_not_counted_in_kaf(kaf: Kaf, clock: Clock) -> None:
    stats = Stats(kaf.store, clock)
    scrape(kaf)
    kaf.request("HEAD", "/metrics")
    assert stats.record() is None
    assert kaf.store.get("_kaf") is None


def test_metrics_expose_no_series_of_archives_or_dot_files(kaf: Kaf) -> None:
    for m in (b"one", b"two", b"three"):
        kaf.put("events", m)
    archived = kaf.post("/archive/events?upto=2").json()["archive"]
    assert archived.startswith("--events--")
    with open(os.path.join(kaf.folder, ".notes"), "wb") as f:
        f.write(b"KAF_DB|v1|0")
    kaf.store.load()  # as at start-up: the archive and the dot file are there
    assert kaf.get("/get/events?from=1").code == 200
    found = scrape(kaf)
    assert log_labels(found) == ["events"]
    assert of_log(found, "kaf_log_last_message", "events") == 3


def test_metrics_count_long_poll_waiters_while_they_wait(kaf: Kaf) -> None:
    waiting = kaf.start("GET", "/get/orders?from=1&wait=30")
    assert scrape(kaf)[("kaf_long_poll_waiters", ())] == 1
    kaf.put("orders", b"one")
    assert kaf.answer(waiting).code == 200
    assert scrape(kaf)[("kaf_long_poll_waiters", ())] == 0


def test_head_of_metrics_has_no_body(kaf: Kaf) -> None:
    answer = kaf.request("HEAD", "/metrics")
    assert answer.code == 200 and answer.body == b""


def test_metrics_take_get_only(kaf: Kaf) -> None:
    answer = kaf.post("/metrics", b"x")
    answer.assert_error(405, "metrics: use GET")
    assert answer.header("Allow") == "GET, HEAD"


def test_without_metrics_the_path_is_404(tmp_path: Any, clock: Clock) -> None:
    k = Kaf(str(tmp_path / "data"), clock)
    k.get("/metrics").assert_error(404, "metrics: off (the server runs with --no-metrics)")


# -- under --auth -------------------------------------------------------------------

RULES = {"tokens": [
    {"name": "ops", "token": OPS, "read": ["*"]},
    {"name": "reader", "token": READER, "read": ["orders-*", "/logs"]},
    {"name": "prometheus", "token": "scraper-token-1", "read": ["/metrics"]},
]}


def test_metrics_are_granted_like_a_log_named_slash_metrics(tmp_path: Any, clock: Clock) -> None:
    store = Store(str(tmp_path / "data"), clock, sync_runner)
    store.load()
    rules = auth.Auth(write_rules(str(tmp_path / "auth.json"), RULES))
    stub = StubTreq(KafWeb(store, auth=rules, metrics=Metrics(store)).resource())

    def get(token: Optional[str]) -> Answer:
        headers = {} if token is None else {"Authorization": "Bearer " + token}
        d = stub.get("http://kaf.test/metrics", headers=headers)
        stub.flush()
        response = _result(d)
        return Answer(response, _result(stub.content(response)))

    nobody = get(None)
    nobody.assert_error(401, "metrics: a token is needed")
    assert nobody.header("WWW-Authenticate") == 'Bearer realm="kaf"'
    get(READER).assert_error(403, "metrics: token 'reader' may not read the metrics")
    assert get("scraper-token-1").code == 200
    assert get(OPS).code == 200


# -- through Kaf's own HTTP server ------------------------------------------------------

class Served:
    """Kaf's routes through make_site (kaf.api.http), in memory."""

    def __init__(self, kaf: Kaf) -> None:
        self.agent = RequestTraversalAgent(kaf.web.resource())
        # treq's testing agent serves its connections with _serverFactory:
        # the only way to put Kaf's own server behind it.
        self.site = self.agent._serverFactory = make_site(kaf.web, kaf.clock)
        self.client = HTTPClient(self.agent, data_to_body_producer=_producer)

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> Answer:
        d = self.client.request(method, "http://kaf.test" + path, data=body)
        self.agent.flush()
        response = _result(d)
        content = treq.content(response)
        self.agent.flush()
        return Answer(response, _result(content))


def test_metrics_count_requests_by_route_and_status(kaf: Kaf) -> None:
    served = Served(kaf)
    for _ in range(3):
        assert served.request("POST", "/put/orders", b"m").code == 200
    assert served.request("POST", "/put/_kaf", b"m").code == 403
    assert served.request("GET", "/get/orders?from=1").code == 200
    assert served.request("GET", "/get/orders").code == 400
    assert served.request("GET", "/nowhere/at/all").code == 404
    assert served.request("GET", "/logs").code == 200
    answer = served.request("GET", "/metrics")
    found = samples(answer.body)
    requests = {labels: value for (name, labels), value in found.items()
                if name == "kaf_http_requests_total"}
    assert requests == {
        (("route", "put"), ("status", "200")): 3,
        (("route", "put"), ("status", "403")): 1,
        (("route", "get"), ("status", "200")): 1,
        (("route", "get"), ("status", "400")): 1,
        (("route", "other"), ("status", "404")): 1,
        (("route", "logs"), ("status", "200")): 1,
    }
    # The scrape itself is counted once answered, in the next scrape.
    again = samples(served.request("GET", "/metrics").body)
    assert again[("kaf_http_requests_total", (("route", "metrics"), ("status", "200")))] == 1


def test_metrics_time_each_put_in_the_put_latency_histogram(kaf: Kaf) -> None:
    served = Served(kaf)
    for _ in range(4):
        served.request("POST", "/put/orders", b"m")
    served.request("GET", "/get/orders?from=1")
    found = samples(served.request("GET", "/metrics").body)
    assert found[("kaf_put_latency_seconds_count", ())] == 4
    assert found[("kaf_put_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    # Answered at once, in memory: within the smallest bucket.
    assert found[("kaf_put_latency_seconds_bucket", (("le", "0.0001"),))] == 4


def test_metrics_count_open_connections(kaf: Kaf) -> None:
    served = Served(kaf)
    found = samples(served.request("GET", "/metrics").body)
    # The connection that asked is open while it is answered.
    assert found[("kaf_http_open_connections", ())] == 1


def test_a_histogram_puts_a_value_on_a_bound_in_that_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    family = h.family("x_seconds", "doc")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.1": 2, "1.0": 4, "+Inf": 5}
    assert h.sum == pytest.approx(8.65)


def test_each_server_has_its_own_registry(tmp_path: Any, clock: Clock) -> None:
    a = Store(str(tmp_path / "a"), clock, sync_runner)
    b = Store(str(tmp_path / "b"), clock, sync_runner)
    a.load()
    b.load()
    _result(a.get_or_create("only-in-a").put([b"x"]))
    assert b"only-in-a" in Metrics(a).exposition()
    assert b"only-in-a" not in Metrics(b).exposition()


def test_the_content_type_is_prometheus_clients_for_what_it_writes() -> None:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    assert METRICS_TYPE == CONTENT_TYPE_LATEST.encode("ascii")


def test_prometheus_client_is_imported_at_the_first_scrape_not_at_start_up() -> None:
    # Start-up imports what a server runs (tap, web); /metrics is on by
    # default, but only a scrape needs prometheus-client.
    probe = ("import sys, kaf.tap, kaf.api.web; "
             "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# -- a real server ----------------------------------------------------------------------

def children(pid: int) -> List[int]:
    found: List[int] = []
    for task in os.listdir("/proc/%d/task" % (pid,)):
        with open("/proc/%d/task/%s/children" % (pid, task)) as f:
            found += [int(p) for p in f.read().split()]
    return found


def test_a_real_server_reports_fsyncs_and_helper_restarts(data: str) -> None:
    with KafServer(data, ["--fsync", "always"]) as server:
        for n, m in enumerate(("one", "two"), 1):
            assert curl("--data-binary", m, server.url("/put/orders")).body == b"%d" % (n,)
        first = samples(curl(server.url("/metrics")).body)
        assert of_log(first, "kaf_log_puts_total", "orders") == 2
        assert first[("kaf_fsync_latency_seconds_count", ())] >= 1
        assert first[("kaf_fsync_helpers", ())] >= 1
        assert first[("kaf_fsync_helper_restarts_total", ())] == 0
        assert first[("kaf_http_requests_total", (("route", "put"), ("status", "200")))] == 2
        assert first[("kaf_put_latency_seconds_count", ())] == 2
        helpers = children(server.pid)
        assert helpers
        for pid in helpers:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            found = samples(curl(server.url("/metrics")).body)
            if found[("kaf_fsync_helper_restarts_total", ())] == len(helpers):
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
        # A new helper takes the next put.
        assert curl("--data-binary", "three", server.url("/put/orders")).body == b"3"
        assert of_log(samples(curl(server.url("/metrics")).body),
                      "kaf_log_last_message", "orders") == 3


def test_a_real_server_with_no_metrics_answers_404(data: str) -> None:
    with KafServer(data, ["--no-metrics"]) as server:
        reply = curl(server.url("/metrics"))
    assert reply.status == 404
    assert reply.body == b"metrics: off (the server runs with --no-metrics)\n"
