"""
twistd options and wiring (kaf/tap.py, SPEC 1 and 8): option defaults and
checks, makeService on a MemoryReactorClock, and the twistd plugin.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from typing import Any, Iterator, List

import pytest
from twisted.application.service import IServiceMaker, MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage

from kaf.stats import StatsService
from kaf.tap import (GC_THRESHOLD, CollectorService, KafOptions, Listener, Options, StoreService,
                     makeService)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*args: str) -> KafOptions:
    config = KafOptions()
    config.parseOptions(list(args))
    return config


def refused(*args: str) -> str:
    """The one-line reason a bad command line is refused with."""
    with pytest.raises(usage.UsageError) as e:
        parse(*args)
    reason = str(e.value)
    assert reason and "\n" not in reason
    return reason


# -- options ------------------------------------------------------------


def test_defaults() -> None:
    config = parse()
    assert config["listen"] == ["tcp:7749:interface=127.0.0.1:backlog=1024"]
    assert config["data"] == "./kaf-data"
    assert config["stats-interval"] == 300
    assert config["fsync"] == "always"
    assert config["max-message-size"] == 5242880
    assert config["max-wait"] == 60
    assert config["max-open-logs"] is None


def test_addr_becomes_a_tcp_endpoint() -> None:
    assert parse("--addr", "0.0.0.0:80")["listen"] == ["tcp:80:interface=0.0.0.0:backlog=1024"]
    assert parse("--addr", ":7749")["listen"] == ["tcp:7749:backlog=1024"]
    assert parse("--addr", "[::1]:7749")["listen"] == [r"tcp:7749:interface=\:\:1:backlog=1024"]


def test_listen_is_repeatable_and_replaces_addr() -> None:
    config = parse("--addr", "127.0.0.1:1", "--listen", "tcp:7750:interface=0.0.0.0",
                   "--listen", "unix:/tmp/kaf.sock")
    assert config["listen"] == ["tcp:7750:interface=0.0.0.0", "unix:/tmp/kaf.sock"]


def test_option_values_are_parsed() -> None:
    config = parse("--data", "/srv/kaf", "--stats-interval", "2.5", "--fsync", "never",
                   "--max-message-size", "100", "--max-wait", "0", "--max-open-logs", "7")
    assert config["data"] == "/srv/kaf"
    assert config["stats-interval"] == 2.5
    assert config["fsync"] == "never"
    assert config["max-message-size"] == 100
    assert config["max-wait"] == 0
    assert config["max-open-logs"] == 7


@pytest.mark.parametrize("args, option", [
    (["--fsync", "sometimes"], "--fsync"),
    (["--max-message-size", "-1"], "--max-message-size"),
    (["--max-message-size=-1"], "--max-message-size"),
    (["--max-message-size", "abc"], "--max-message-size"),
    (["--max-message-size", "0"], "--max-message-size"),
    (["--max-message-size", "1.5"], "--max-message-size"),
    (["--addr", "nonsense"], "--addr"),
    (["--addr", "1.2.3.4:99999"], "--addr"),
    (["--addr", "1.2.3.4:"], "--addr"),
    (["--stats-interval", "0"], "--stats-interval"),
    (["--stats-interval", "-5"], "--stats-interval"),
    (["--stats-interval", "nan"], "--stats-interval"),
    (["--stats-interval", "inf"], "--stats-interval"),
    (["--max-wait", "inf"], "--max-wait"),
    (["--stats-interval", "soon"], "--stats-interval"),
    (["--max-wait", "-1"], "--max-wait"),
    (["--max-open-logs", "0"], "--max-open-logs"),
    (["--max-open-logs", "many"], "--max-open-logs"),
    (["--listen", "bogus:thing"], "--listen"),
    (["--listen", "tcp:notaport"], "--listen"),
])
def test_bad_values_are_refused_with_a_one_line_reason(args: List[str], option: str) -> None:
    assert option in refused(*args)


def test_twistds_options_print_one_line_and_exit_1(capfd: Any) -> None:
    # Whatever twistd's version does after a usage error, Kaf exits 1.
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--fsync", "sometimes"])
    assert e.value.code == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ("twistd kaf: --fsync must be always or never (got 'sometimes') "
                   "(see twistd kaf --help)\n")


def test_a_data_folder_under_a_file_is_refused(tmp_path: Any) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert "--data" in refused("--data", str(tmp_path / "file" / "data"))


def test_twistd_refuses_a_bad_value_without_a_traceback(tmp_path: Any) -> None:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    run = subprocess.run([twistd, "-n", "kaf", "--fsync", "sometimes"], cwd=str(tmp_path),
                         capture_output=True, timeout=60)
    output = (run.stdout + run.stderr).decode()
    assert run.returncode != 0
    assert "--fsync must be always or never (got 'sometimes')" in output
    assert "Traceback" not in output
    assert os.listdir(str(tmp_path)) == []


# -- wiring ------------------------------------------------------------


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def started(tmp_path: Any, reactor: MemoryReactorClock) -> Iterator[Any]:
    """Start the services of a command line; stop them afterwards."""
    tops: List[MultiService] = []

    def start(*args: str) -> MultiService:
        config = parse("--data", str(tmp_path / "data"), *args)
        top = makeService(config, reactor=reactor)
        top.startService()
        tops.append(top)
        return top

    yield start
    for top in tops:
        if top.running:
            top.stopService()


def of_type(top: MultiService, kind: type) -> List[Any]:
    return [s for s in top if isinstance(s, kind)]


def http(factory: Any, request: bytes) -> bytes:
    """Send one request to a protocol of C{factory}; the bytes it answers."""
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    answer = transport.value()
    protocol.connectionLost(None)
    return answer


def test_make_service_wires_store_stats_and_one_listener_per_endpoint(
        tmp_path: Any, reactor: MemoryReactorClock, started: Any) -> None:
    sock = str(tmp_path / "kaf.sock")
    top = started("--listen", "tcp:7750:interface=127.0.0.1", "--listen", "unix:" + sock)
    assert isinstance(top, MultiService)
    [store_service] = of_type(top, StoreService)
    assert store_service.store.folder == str(tmp_path / "data")
    assert len(of_type(top, StatsService)) == 1
    assert len(of_type(top, Listener)) == 2

    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (7750, "127.0.0.1")
    [(path, unix_factory, _, _, _)] = reactor.unixServers
    assert path == sock
    assert unix_factory is factory


def test_the_default_command_line_listens_on_7749_of_localhost(
        reactor: MemoryReactorClock, started: Any) -> None:
    started()
    [(port, _, _, interface)] = reactor.tcpServers
    assert (port, interface) == (7749, "127.0.0.1")


def test_starting_loads_the_data_folder(tmp_path: Any, started: Any) -> None:
    top = started()
    assert os.path.isdir(str(tmp_path / "data"))
    [store_service] = of_type(top, StoreService)
    assert store_service.store.logs() == []


def test_the_site_serves_the_store(reactor: MemoryReactorClock, started: Any) -> None:
    started()
    factory = reactor.tcpServers[0][1]
    answer = http(factory, b"GET /get/nothing?from=1 HTTP/1.1\r\nHost: kaf\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\nKAF_MSGS|v1|0")


def test_the_site_uses_the_max_message_size(reactor: MemoryReactorClock, started: Any) -> None:
    started("--max-message-size", "10")
    factory = reactor.tcpServers[0][1]
    answer = http(factory, b"POST /put/x HTTP/1.1\r\nHost: kaf\r\nContent-Length: 11\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_the_site_uses_the_max_wait(reactor: MemoryReactorClock, started: Any) -> None:
    started("--max-wait", "5")
    factory = reactor.tcpServers[0][1]
    answer = http(factory, b"GET /get/x?from=1&wait=6 HTTP/1.1\r\nHost: kaf\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_stats_tick_on_the_given_reactor_at_the_interval(
        reactor: MemoryReactorClock, started: Any) -> None:
    started("--stats-interval", "7")
    assert [call.getTime() for call in reactor.getDelayedCalls()
            if call.getTime() == 7] == [7]


def test_fsync_option_reaches_the_logs(started: Any) -> None:
    # Log takes fsync as a constructor argument only; look at what it got.
    for args, fsync in [((), True), (("--fsync", "never"), False)]:
        [store_service] = of_type(started(*args), StoreService)
        assert store_service.store.get_or_create("x")._fsync is fsync


def test_served_logs_gather_the_puts_of_a_reactor_turn(started: Any) -> None:
    # Production writes the puts read in one turn together (tests/test_log.py).
    [store_service] = of_type(started(), StoreService)
    assert store_service.store.get_or_create("x")._gather is True


def test_stopping_stops_listening_and_the_stats_timer(
        reactor: MemoryReactorClock, started: Any) -> None:
    top = started("--stats-interval", "7")
    top.stopService()
    assert not any(call.getTime() == 7 for call in reactor.getDelayedCalls())


def test_once_running_the_collector_looks_only_at_what_came_after_start_up(
        reactor: MemoryReactorClock, started: Any) -> None:
    [collector] = of_type(started(), CollectorService)
    if not hasattr(gc, "freeze"):  # PyPy: no cyclic collector to tune
        assert collector.tune() is False
        return
    before = gc.get_threshold()
    try:
        assert gc.get_threshold()[0] != GC_THRESHOLD
        for f, args, kwargs in reactor.whenRunningHooks:
            f(*args, **kwargs)
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (GC_THRESHOLD,) + before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- listening ----------------------------------------------------------------------


class SlowEndpoint:
    """An endpoint whose listen is answered when the test says."""

    def __init__(self) -> None:
        self.listening: "Deferred[Any]" = Deferred()
        self.factories: List[Any] = []

    def listen(self, factory: Any) -> "Deferred[Any]":
        self.factories.append(factory)
        return self.listening


class Port:
    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


def test_a_listener_listens_once_and_stops_listening_when_stopped() -> None:
    endpoint = SlowEndpoint()
    listener = Listener(endpoint, "site", "tcp:1")
    listener.privilegedStartService()
    listener.startService()
    assert endpoint.factories == ["site"]
    port = Port()
    endpoint.listening.callback(port)
    listener.stopService()
    assert port.stopped and not listener.running


def test_a_listen_that_fails_after_start_up_is_logged_not_dropped() -> None:
    from twisted.logger import globalLogPublisher

    endpoint = SlowEndpoint()
    listener = Listener(endpoint, "site", "tcp:1")
    listener.startService()
    events: List[Any] = []
    globalLogPublisher.addObserver(events.append)
    try:
        endpoint.listening.errback(OSError("no such device"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_failure") is not None]
    assert event["endpoint"] == "tcp:1"
    assert event["log_failure"].check(OSError)


def test_a_listen_stopped_before_it_is_answered_is_cancelled_quietly() -> None:
    endpoint = SlowEndpoint()
    listener = Listener(endpoint, "site", "tcp:1")
    listener.startService()
    listener.stopService()
    # Cancelled: the Deferred fired with CancelledError, which is not logged.
    assert endpoint.listening.called


def test_start_up_imports_no_automat_for_its_listeners() -> None:
    # twisted.application.internet builds automat's state machines on import.
    probe = ("import sys, kaf.tap, kaf.api.web; print(sorted(m for m in sys.modules "
             "if m == 'twisted.application.internet' or m.startswith('automat')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# -- the twistd plugin ------------------------------------------------------------


def test_the_plugin_is_a_service_maker_named_kaf_for_kaf_tap() -> None:
    from twisted.plugins import kaf_plugin

    maker = kaf_plugin.kaf
    assert IServiceMaker.providedBy(maker)
    assert maker.tapname == "kaf"
    assert maker.module == "kaf.tap"
    assert maker.options is Options
    assert maker.makeService is makeService


def test_twisted_and_twisted_plugins_have_no_init_py() -> None:
    # An __init__.py would hide Twisted's own twisted package.
    assert os.path.isfile(os.path.join(REPO, "twisted", "plugins", "kaf_plugin.py"))
    assert not os.path.exists(os.path.join(REPO, "twisted", "__init__.py"))
    assert not os.path.exists(os.path.join(REPO, "twisted", "plugins", "__init__.py"))


# -- TLS support loaded only for a listener that serves TLS ----------------------------

SKIP_TLS = """
import sys
from kaf.tap import skip_tls
skipped = skip_tls(sys.argv[1:])
from twisted.internet import reactor, tcp
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ITLSTransport
serverFromString(reactor, "tcp:0")
print(skipped, sys.modules.get("OpenSSL") is not None, ITLSTransport.implementedBy(tcp.Server))
"""


@pytest.mark.parametrize("listen, skipped", [
    ([], True),
    (["tcp:7749:interface=127.0.0.1", "tcp6:7750", "unix:/run/kaf.sock"], True),
    (["tcp:7749", "ssl:7750:privateKey=k.pem"], False),
    (["tls:7750"], False),
])
def test_a_server_loads_tls_support_only_when_a_listener_serves_tls(
        listen: List[str], skipped: bool) -> None:
    done = subprocess.run([sys.executable, "-c", SKIP_TLS] + listen, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Skipped: pyOpenSSL is not loaded, and TCP connections go without TLS.
    assert done.stdout.split() == ([str(True), str(False), str(False)] if skipped
                                   else [str(False), str(True), str(True)])


def test_a_process_that_has_loaded_the_reactor_keeps_its_tls_support() -> None:
    from kaf.tap import skip_tls

    assert "twisted.internet.tcp" in sys.modules
    assert skip_tls(["tcp:7749"]) is False
    assert sys.modules.get("OpenSSL", 0) is not None
