"""
The Site's own protections (SPEC 3): a client must send a whole request
within the deadline once it starts one, so one dribbling a byte at a time
cannot hold a connection forever; a client that sends nothing is closed
after the idle timeout; neither cuts a long poll in progress.
"""
from __future__ import annotations

from typing import Any, Tuple

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from kaf.engines.file.store import Store
from kaf.api.http import REQUEST_DEADLINE
from kaf.api.web import KafWeb, make_site

from conftest import sync_runner


@pytest.fixture
def site(tmp_path: Any, clock: Clock) -> Any:
    store = Store(str(tmp_path / "data"), clock, sync_runner)
    store.load()
    return make_site(KafWeb(store, max_wait=60), clock)


def connect(site: Any) -> Tuple[Any, StringTransport]:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_request_dribbled_too_slowly_is_answered_408_and_closed(
        site: Any, clock: Clock) -> None:
    protocol, transport = connect(site)
    request = b"GET /logs HTTP/1.1\r\nHost: x\r\n"
    for i in range(len(request)):
        protocol.dataReceived(request[i:i + 1])
        clock.advance(1)
    assert transport.value() == b""
    clock.advance(REQUEST_DEADLINE - len(request))
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b"\r\n\r\nrequest not received within 60 seconds\n")
    assert transport.disconnecting or transport.disconnected


def test_a_request_sent_in_time_is_answered_and_leaves_no_deadline(
        site: Any, clock: Clock) -> None:
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET /logs HTTP/1.1\r\n")
    clock.advance(REQUEST_DEADLINE - 1)
    protocol.dataReceived(b"Host: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert transport.value().endswith(b"\r\n\r\n[]")
    clock.advance(REQUEST_DEADLINE)
    assert b"408" not in transport.value()


def test_a_long_poll_outlasts_the_request_deadline_and_idle_timeout(
        site: Any, clock: Clock) -> None:
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET /get/x?from=1&wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(59)
    assert transport.value() == b""
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert transport.value().endswith(b"\r\n\r\nKAF_MSGS|v1|0")


def test_an_idle_connection_is_closed_after_the_timeout(site: Any, clock: Clock) -> None:
    protocol, transport = connect(site)
    clock.advance(site.timeOut - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting or transport.disconnected


class CountingTransport(StringTransport):
    """Counts the calls for the connection's addresses (a syscall on TCP)."""

    asked = 0

    def getHost(self) -> Any:
        self.asked += 1
        return StringTransport.getHost(self)

    def getPeer(self) -> Any:
        self.asked += 1
        return StringTransport.getPeer(self)


def test_a_connections_addresses_are_looked_up_once_for_all_its_requests(site: Any) -> None:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = CountingTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 7749),
                                  peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    for _ in range(3):
        protocol.dataReceived(b"GET /logs HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 200 ") == 3
    assert transport.asked <= 2
    assert protocol.getHost() == IPv4Address("TCP", "127.0.0.1", 7749)
    assert protocol.getPeer() == IPv4Address("TCP", "127.0.0.1", 40000)
