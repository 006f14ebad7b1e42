"""
Kaf's HTTP/1.1 server: a connection protocol and a light request object
that the Klein resource renders, in place of twisted.web's Site, channel
and Request, which cost several times the rest of a put.

It owns the protocol rules of SPEC 3: keep-alive, pipelined requests
answered in order, chunked bodies, ``Expect: 100-continue``, HEAD, the
body limit decided from the request line before the body is read, 400 on
a malformed request, 431 on oversized headers, and the idle and
slow-client timeouts.  It reads no more from a client that does not read
its replies: while the socket's send buffer is full, or requests wait
behind the one being answered, the connection stops reading.

Requests are parsed by httptools (llhttp, in C) where it is installed,
else by the pure-Python L{PythonParser} (PyPy, where Kaf does not install
the C extension); L{PARSER} names the one chosen, and the log names it at
start.
"""
from __future__ import annotations

import re
from collections import deque
from email.utils import formatdate
from io import BytesIO
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs

from klein._app import KleinRequest
from klein.interfaces import IKleinRequest
from twisted.internet.defer import Deferred
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IProtocolNegotiationFactory, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.components import registerAdapter
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

try:
    import httptools
except ImportError:  # PyPy: see the module docstring
    httptools = None

#: The largest request line and headers together, and the most header
#: lines (431 past either).
MAX_HEAD = 16384
MAX_HEADERS = 100
#: Requests read ahead of the one being answered before reading stops.
MAX_QUEUED = 16
#: Seconds a client has to send a whole request once it starts one: the
#: idle timeout alone would let a client dribbling a byte at a time
#: (slowloris) hold a connection forever.
REQUEST_DEADLINE = 60.0
#: Seconds a refused client has to read the refusal before it is cut off.
REFUSAL_GRACE = 2.0

_PHRASES = {
    100: b"Continue", 200: b"OK", 204: b"No Content", 304: b"Not Modified",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
    413: b"Payload Too Large", 429: b"Too Many Requests", 431:
    b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    507: b"Insufficient Storage",
}


class ParseError(Exception):
    """The request is not HTTP/1.x as RFC 9112 has it."""


class HeadTooLarge(ParseError):
    """The request line and headers are over L{MAX_HEAD} or L{MAX_HEADERS}."""

    def __init__(self, reason: str = "request: headers over %d bytes" % (MAX_HEAD,)) -> None:
        ParseError.__init__(self, reason)
        self.reason = reason


# -- the pure-Python parser ----------------------------------------------------

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\x00-\x20\x7f]+) "
                           rb"HTTP/1\.([01])\Z")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*\Z")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class PythonParser:
    """
    A request parser with httptools' interface (the callbacks
    on_message_begin, on_url, on_header, on_headers_complete, on_body,
    on_message_complete; feed_data; get_method, get_http_version,
    should_keep_alive), for Pythons where httptools does not load.
    """

    def __init__(self, protocol: Any) -> None:
        self._p = protocol
        self._buf = b""
        self._state = "head"
        self._left = 0
        self._method = b""
        self._minor = b"1"
        self._keep_alive = True
        self._begun = False

    def get_method(self) -> bytes:
        return self._method

    def get_http_version(self) -> str:
        return "1." + self._minor.decode()

    def should_keep_alive(self) -> bool:
        return self._keep_alive

    def feed_data(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        self._buf = b""
        p = self._p
        while buf:
            state = self._state
            if state == "body":
                if len(buf) < self._left:
                    self._left -= len(buf)
                    p.on_body(buf)
                    return
                body, buf = buf[:self._left], buf[self._left:]
                if body:
                    p.on_body(body)
                self._complete()
            elif state == "head":
                if not self._begun:
                    # Blank lines before a request line are allowed (RFC 9112 2.2).
                    buf = buf.lstrip(b"\r\n")
                    if not buf:
                        return
                    self._begun = True
                    p.on_message_begin()
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HeadTooLarge()
                    self._buf = buf
                    return
                if end > MAX_HEAD:
                    raise HeadTooLarge()
                head, buf = buf[:end], buf[end + 4:]
                self._head(head)
            elif state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ParseError("chunk size line too long")
                    self._buf = buf
                    return
                m = _CHUNK_SIZE.match(buf[:end])
                if m is None:
                    raise ParseError("bad chunk size")
                buf = buf[end + 2:]
                self._left = int(m.group(1), 16)
                self._state = "chunk" if self._left else "trailer"
            elif state == "chunk":
                n = min(len(buf), self._left)
                p.on_body(buf[:n])
                buf = buf[n:]
                self._left -= n
                if not self._left:
                    self._state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    self._buf = buf
                    return
                if buf[:2] != b"\r\n":
                    raise ParseError("no CRLF after a chunk")
                buf = buf[2:]
                self._state = "size"
            else:  # trailer: header lines up to an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HeadTooLarge()
                    self._buf = buf
                    return
                line, buf = buf[:end], buf[end + 2:]
                if not line:
                    self._complete()

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        m = _REQUEST_LINE.match(lines[0])
        if m is None:
            raise ParseError("malformed request line")
        self._method, target, self._minor = m.groups()
        p = self._p
        p.on_url(target)
        length: Optional[bytes] = None
        chunked = False
        connection = b""
        for line in lines[1:]:
            h = _HEADER.match(line)
            if h is None or _BAD_VALUE.search(h.group(2)):
                raise ParseError("malformed header")
            name, value = h.groups()
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit() or (length is not None and value != length):
                    raise ParseError("bad Content-Length")
                length = value
            elif lower == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise ParseError("unsupported Transfer-Encoding")
                chunked = True
            elif lower == b"connection":
                connection = value.lower()
            p.on_header(name, value)
        if chunked and length is not None:
            raise ParseError("both Content-Length and Transfer-Encoding")
        if self._minor == b"1":
            self._keep_alive = b"close" not in connection
        else:
            self._keep_alive = b"keep-alive" in connection
        p.on_headers_complete()
        if chunked:
            self._state = "size"
        elif length is not None and int(length):
            self._state = "body"
            self._left = int(length)
        else:
            self._complete()

    def _complete(self) -> None:
        self._state = "head"
        self._begun = False
        self._p.on_message_complete()


if httptools is not None:
    PARSER = "httptools %s (llhttp)" % (httptools.__version__,)
    _make_parser: Callable[[Any], Any] = httptools.HttpRequestParser
    _PARSE_ERRORS: Tuple[type, ...] = (httptools.HttpParserError, ParseError)
    _INVALID_METHOD: Tuple[type, ...] = (httptools.HttpParserInvalidMethodError,)
else:
    PARSER = "pure Python"
    _make_parser = PythonParser
    _PARSE_ERRORS = (ParseError,)
    _INVALID_METHOD = ()


# -- requests --------------------------------------------------------------------

class Request:
    """
    One request and its reply: the part of twisted.web's IRequest that
    Kaf's routes (and features hooked around them) use.  The reply's head
    goes out with its first write, in one write to the socket.
    """

    code = 200
    code_message = b"OK"
    #: When the request began to arrive (the reactor's seconds).
    started: Optional[float] = None
    finished = False
    startedWriting = False
    _producer: Any = None

    _args: Optional[Dict[bytes, List[bytes]]] = None
    _postpath: Optional[List[bytes]] = None

    def __init__(self, channel: "HTTPConnection", method: bytes, uri: bytes, version: bytes,
                 headers: List[Tuple[bytes, bytes]], by_name: Dict[bytes, bytes],
                 keep_alive: bool) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.clientproto = version
        self.path, _, self._query = uri.partition(b"?")
        self.prepath: List[bytes] = []
        self.content = BytesIO()
        self._raw_headers = headers
        self._in = by_name
        self._out: Dict[bytes, Tuple[bytes, bytes]] = {}
        self._headers_obj: Optional[Headers] = None
        self._request_headers: Optional[Headers] = None
        self.keep_alive = keep_alive
        self._chunked = False
        self._finish_waiters: List["Deferred[None]"] = []
        self._gone_calls: Optional[List[Tuple[Callable[..., None], Tuple[Any, ...]]]] = None
        self.sentLength = 0

    # -- what was asked ---------------------------------------------------------

    # The query and the path's segments are parsed when first asked for.
    @property
    def args(self) -> Dict[bytes, List[bytes]]:
        if self._args is None:
            self._args = parse_qs(self._query, keep_blank_values=True) if self._query else {}
        return self._args

    @args.setter
    def args(self, value: Dict[bytes, List[bytes]]) -> None:
        self._args = value

    @property
    def postpath(self) -> List[bytes]:
        if self._postpath is None:
            self._postpath = self.path[1:].split(b"/")
        return self._postpath

    @postpath.setter
    def postpath(self, value: List[bytes]) -> None:
        self._postpath = value

    def getHeader(self, name: Union[bytes, str]) -> Optional[bytes]:
        if isinstance(name, str):
            name = name.encode("latin-1")
        return self._in.get(name.lower())

    @property
    def requestHeaders(self) -> Headers:
        """The request's headers as twisted.web's Headers (built on first use)."""
        if self._request_headers is None:
            h = self._request_headers = Headers()
            for name, value in self._raw_headers:
                h.addRawHeader(name, value)
        return self._request_headers

    def getHost(self) -> Any:
        return self.channel.getHost()

    def getPeer(self) -> Any:
        return self.channel.getPeer()

    def getClientAddress(self) -> Any:
        return self.channel.getPeer()

    def isSecure(self) -> bool:
        return False

    # -- the reply ---------------------------------------------------------------

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        self.code = code
        self.code_message = message or _PHRASES.get(code, b"Unknown")

    def setHeader(self, name: Union[bytes, str], value: Union[bytes, str]) -> None:
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("utf-8")
        if self._headers_obj is not None:
            self._headers_obj.setRawHeaders(name, [value])
        else:
            self._out[name.lower()] = (name, value)

    @property
    def responseHeaders(self) -> Headers:
        """The reply's headers as twisted.web's Headers (built on first use)."""
        if self._headers_obj is None:
            h = self._headers_obj = Headers()
            for name, value in self._out.values():
                h.setRawHeaders(name, [value])
        return self._headers_obj

    def _head(self, last: bool, body_length: int) -> bytes:
        """The status line and headers; C{last}: no write will follow."""
        if self._headers_obj is not None:
            pairs = [(n, v) for n, vs in self._headers_obj.getAllRawHeaders() for v in vs]
            names = {n.lower() for n, _ in pairs}
        else:
            pairs = list(self._out.values())
            names = self._out.keys()
        if b"content-length" not in names and self.code not in (204, 304):
            if last:
                pairs.append((b"Content-Length", b"%d" % (body_length,)))
            elif self.clientproto == b"HTTP/1.1":
                self._chunked = True
                pairs.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.keep_alive = False
        if not self.keep_alive:
            pairs.append((b"Connection", b"close"))
        return b"".join([b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (
            self.code, self.code_message, self.channel.factory.date())]
            + [b"%s: %s\r\n" % pair for pair in pairs] + [b"\r\n"])

    def write(self, data: bytes, _last: bool = False) -> None:
        if self.finished or self.channel.gone:
            return
        length = len(data)
        if self.method == b"HEAD":
            data = b""
        if not self.startedWriting:
            self.startedWriting = True
            head = self._head(_last, length)
            if self._chunked and data:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            self.channel.send(head + data)
        elif data:
            self.channel.send(
                b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        self.sentLength += len(data)

    def finish(self) -> None:
        if self.finished:
            return
        if not self.startedWriting:
            self.write(b"", _last=True)
        elif self._chunked and not self.channel.gone:
            self.channel.send(b"0\r\n\r\n")
        self.finished = True
        self._gone_calls = None
        if self._finish_waiters:
            waiters, self._finish_waiters = self._finish_waiters, []
            for d in waiters:
                d.callback(None)
        self.channel.request_done(self)

    def notifyFinish(self) -> "Deferred[None]":
        """Fires when the reply is sent; fails if the client goes first."""
        d: "Deferred[None]" = Deferred()
        if self.finished:
            d.callback(None)
        else:
            self._finish_waiters.append(d)
        return d

    def when_gone(self, f: Callable[..., None], *args: Any) -> None:
        """
        Call C{f(reason, *args)} if the client goes before the reply is
        whole: what C{notifyFinish().addErrback(f, *args)} does, without a
        Deferred for every request.
        """
        if self.finished:
            return
        if self._gone_calls is None:
            self._gone_calls = [(f, args)]
        else:
            self._gone_calls.append((f, args))

    def connection_lost(self, reason: Failure) -> None:
        calls, self._gone_calls = self._gone_calls, None
        for f, args in calls or ():
            f(reason, *args)
        waiters, self._finish_waiters = self._finish_waiters, []
        for d in waiters:
            d.errback(reason)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        self.channel.register_producer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self.channel.unregister_producer()

    def processingFailed(self, reason: Failure) -> None:
        HTTPFactory.log.failure("unhandled error in a request", reason)
        if self.startedWriting:
            self.channel.transport.abortConnection()
            return
        body = b"internal error; the server log has the details\n"
        self.setResponseCode(500)
        self._out = {}
        self._headers_obj = None
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Content-Length", b"%d" % (len(body),))
        self.write(body)
        self.finish()


# Klein's branch routes keep their state on an IKleinRequest adapter.
registerAdapter(KleinRequest, Request, IKleinRequest)


# -- connections -------------------------------------------------------------------

class Refusal:
    """
    What the watchers of requests (the metrics, the access log) see of a
    request the channel refused itself (400, 408, 413, 431): its request
    line when it was read, else C{-}.
    """

    started = None
    path = b""
    method = b"-"
    uri = b""
    clientproto = b""

    def __init__(self, channel: "HTTPConnection", code: int, length: int,
                 request: Optional[Request]) -> None:
        self.channel = channel
        self.code = code
        self.sentLength = length
        self._request = request
        if request is not None:
            self.path = request.path
            self.method = request.method
            self.uri = request.uri
            self.clientproto = request.clientproto

    def getPeer(self) -> Any:
        return self.channel.getPeer()

    def getHeader(self, name: bytes) -> Optional[bytes]:
        return None if self._request is None else self._request.getHeader(name)


class HTTPConnection(Protocol):
    """One client connection: parses requests, renders them in order, replies."""

    factory: "HTTPFactory"
    gone = False
    _refused = False
    _looping = False
    #: Requests read whole on this connection.
    _completed = 0
    _timer: Optional[IDelayedCall] = None
    _abort: Optional[IDelayedCall] = None
    _socket: Any = None
    _host: Any = None
    _peer: Any = None

    def __init__(self) -> None:
        self._parser: Any = None
        self._queue: Deque[Request] = deque()
        self._current: Optional[Request] = None
        self._incoming: Optional[Request] = None
        self._url: List[bytes] = []
        self._headers: List[Tuple[bytes, bytes]] = []
        self._by_name: Dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._limit: Optional[int] = None
        self._received = 0
        #: When the request being received began (None: between requests).
        self._started: Optional[float] = None
        self._last_read = 0.0
        #: The socket's send buffer is full (the transport paused us) since.
        self._write_paused: Optional[float] = None
        self._read_paused = False
        self._producer: Any = None

    # -- the connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        f.connections += 1
        self._parser = f.make_parser(self)
        self._last_read = f.reactor.seconds()
        self.transport.registerProducer(self, True)
        # Twisted's own socket transports (TCP, Unix): see send.
        t = self.transport
        self._socket = t.socket if isinstance(t, FileDescriptor) and hasattr(t, "socket") \
            and not getattr(t, "TLS", False) else None
        # A reply is often two writes (the head, then the records as read
        # from the file): with Nagle's algorithm the second waits for the
        # client's delayed ACK, 40 ms on Linux.  Every write here is a
        # whole piece of a reply, so none is worth holding back.
        set_no_delay = getattr(t, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass  # not a TCP socket
        self._timer = f.reactor.callLater(min(f.timeOut, REQUEST_DEADLINE), self._check_time)

    def send(self, data: bytes) -> None:
        """
        Write C{data}: straight to the socket when nothing is buffered
        before it.  Twisted's transport.write would instead watch the socket
        for writability and send in the next turn of the event loop: two
        more epoll_ctl calls and a turn a reply, a quarter of a put's time.
        """
        t = self.transport
        sock = self._socket
        if sock is not None and not t._tempDataLen and not t.dataBuffer and t.connected \
                and not t.disconnecting:
            try:
                n = sock.send(data)
            except OSError:
                n = 0  # a full buffer or a lost connection: the transport will see
            if n == len(data):
                return
            data = data[n:]
        t.write(data)

    def getHost(self) -> Any:
        # A connection's addresses never change: found once (the local one
        # is a getsockname call each time).
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        self._last_read = self.factory.reactor.seconds()
        at_start = self._started is None
        completed = self._completed
        try:
            self._parser.feed_data(data)
        except _INVALID_METHOD:
            if at_start and completed == self._completed and not self._refused:
                # llhttp knows only the methods it lists; a method it does
                # not know is still a request, answered 405 by the routes.
                self._parser = PythonParser(self)
                self.dataReceived(data)
            else:
                self._refuse(400, "request: malformed HTTP request")
        except HeadTooLarge as e:
            self._refuse(431, e.reason)
        except _PARSE_ERRORS as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, HeadTooLarge):
                self._refuse(431, cause.reason)
            elif not self._refused:
                self._refuse(400, "request: malformed HTTP request")

    def connectionLost(self, reason: Failure) -> None:
        self.gone = True
        self.factory.connections -= 1
        for call in (self._timer, self._abort):
            if call is not None and call.active():
                call.cancel()
        self._queue.clear()
        if self._current is not None:
            current, self._current = self._current, None
            current.connection_lost(reason)

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._started = self.factory.reactor.seconds()
        self._url = []
        self._headers = []
        self._by_name = {}
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD:
            raise HeadTooLarge()
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD:
            raise HeadTooLarge()
        if len(self._headers) >= MAX_HEADERS:
            raise HeadTooLarge("request: more than %d headers" % (MAX_HEADERS,))
        self._headers.append((name, value))
        self._by_name[name.lower()] = value

    def on_headers_complete(self) -> None:
        p = self._parser
        version = b"HTTP/" + p.get_http_version().encode()
        uri = b"".join(self._url)
        request = Request(self, p.get_method(), uri, version, self._headers, self._by_name,
                          p.should_keep_alive())
        request.started = self._started
        self._incoming = request
        self._received = 0
        self._limit = limit = self.factory.body_limit(request.method, uri)
        by_name = self._by_name
        length = by_name.get(b"content-length")
        if limit is not None and length is not None and int(length) > limit:
            self._refuse_body(request, limit)
            raise ParseError("refused")
        expect = by_name.get(b"expect")
        if (expect is not None and expect.lower() == b"100-continue"
                and version == b"HTTP/1.1" and self._current is None and not self._queue):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        request = self._incoming
        assert request is not None
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self._refuse_body(request, self._limit)
            raise ParseError("refused")
        request.content.write(data)

    def on_message_complete(self) -> None:
        request, self._incoming = self._incoming, None
        self._started = None
        self._completed += 1
        assert request is not None
        request.content.seek(0)
        self._queue.append(request)
        if self._current is None:
            self._next()
        elif len(self._queue) >= MAX_QUEUED:
            self._pause_reading()

    # -- rendering, one request at a time ----------------------------------------------

    def _next(self) -> None:
        """
        Render the requests read ahead, in order, while each is answered at
        once: in a loop, not by recursion from each reply's finish, however
        many a client pipelines.
        """
        if self._looping:
            return
        self._looping = True
        try:
            while (self._current is None and self._queue and self._write_paused is None
                   and not self.gone):
                self._render(self._queue.popleft())
        finally:
            self._looping = False
        if self._read_paused and len(self._queue) < MAX_QUEUED // 2:
            self._read_paused = False
            if self._write_paused is None:
                self.transport.resumeProducing()
        if self._current is None and not self._queue and self._pending_refusal is not None:
            self._send_refusal()

    def _render(self, request: Request) -> None:
        self._current = request
        try:
            body = self.factory.resource.render(request)
        except Exception:
            request.processingFailed(Failure())
            return
        if body is not NOT_DONE_YET and not request.finished:
            request.write(body or b"", _last=True)
            request.finish()

    def request_done(self, request: Request) -> None:
        """The reply to C{request} is whole: log it, then go on to the next."""
        for watch in self.factory.watchers:
            watch(request)
        if request is not self._current:
            return
        self._current = None
        if not request.keep_alive:
            self._refused = True  # nothing more is read
            self._pending_refusal = None
            self._queue.clear()
            self.transport.loseConnection()
            return
        self._next()

    # -- flow control: the transport is our consumer --------------------------------

    def _pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            self.transport.pauseProducing()

    def pauseProducing(self) -> None:
        """The socket's send buffer is full: stop reading and rendering."""
        if self._write_paused is None:
            self._write_paused = self.factory.reactor.seconds()
            if not self._read_paused:
                self.transport.pauseProducing()
            if self._producer is not None:
                self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        if self._write_paused is None:
            return
        self._write_paused = None
        self._last_read = self.factory.reactor.seconds()
        if self._producer is not None:
            self._producer.resumeProducing()
        if not self._read_paused:
            self.transport.resumeProducing()
        self._next()

    def stopProducing(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def register_producer(self, producer: Any, streaming: bool) -> None:
        # A streamed reply (a push producer) is paused and resumed with the
        # socket's send buffer; nothing in Kaf pulls.
        if not streaming:
            raise ValueError("only push producers (streaming=True) are supported")
        self._producer = producer

    def unregister_producer(self) -> None:
        self._producer = None

    # -- refusals: answered in turn, then the connection closes ------------------------

    _pending_refusal: Optional[Tuple[int, str]] = None

    _refused_request: Optional[Request] = None

    def _refuse_body(self, request: Request, limit: int) -> None:
        self._refused_request = request
        parts = request.path.split(b"/")
        op = parts[1].decode("latin-1") if len(parts) > 2 and parts[1] in (
            b"put", b"get", b"archive") else "request"
        self._refuse(413, "%s: body over the limit of %d bytes" % (op, limit))

    def _refuse(self, status: int, reason: str) -> None:
        """Stop reading; answer C{status} after the replies owed, then close."""
        if self._refused:
            return
        self._refused = True
        self._started = None
        self._pending_refusal = (status, reason)
        if self._current is None and not self._queue:
            self._send_refusal()


    def _send_refusal(self) -> None:
        assert self._pending_refusal is not None
        status, reason = self._pending_refusal
        self._pending_refusal = None
        body = (reason + "\n").encode("utf-8")
        self.send(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, _PHRASES[status], len(body), body))
        if self.factory.watchers:
            refusal = Refusal(self, status, len(body), self._refused_request)
            for watch in self.factory.watchers:
                watch(refusal)
        # Discard what the client still sends, then close: closing at once
        # with unread data would reset the connection before the client
        # reads the answer.
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
            self._abort = self.factory.reactor.callLater(REFUSAL_GRACE,
                                                         self.transport.abortConnection)
        else:
            self.transport.loseConnection()

    # -- timeouts ---------------------------------------------------------------------

    def _check_time(self) -> None:
        """
        One timer a connection, not one a request: it wakes at the soonest
        moment a timeout could be due, and looks at what is the case then.
        """
        self._timer = None
        f = self.factory
        now = f.reactor.seconds()
        due = [now + min(f.timeOut, REQUEST_DEADLINE)]
        if self._started is not None and not self._refused:
            if now - self._started >= REQUEST_DEADLINE:
                self._refuse(408, "request not received within %g seconds"
                             % (REQUEST_DEADLINE,))
                return
            due.append(self._started + REQUEST_DEADLINE)
        if self._write_paused is not None:
            # A client that reads none of its replies is cut off.
            if now - self._write_paused >= f.timeOut:
                self.transport.abortConnection()
                return
            due.append(self._write_paused + f.timeOut)
        elif self._current is None and not self._queue and self._started is None:
            if now - self._last_read >= f.timeOut:
                self.transport.loseConnection()
                return
            due.append(self._last_read + f.timeOut)
        self._timer = f.reactor.callLater(max(min(due) - now, 0.0), self._check_time)


@implementer(IProtocolNegotiationFactory)
class HTTPFactory(Factory):
    """Serves one resource (Kaf's Klein resource) over HTTP/1.1."""

    protocol = HTTPConnection
    log = Logger()

    def __init__(self, resource: Any, body_limit: Callable[[bytes, bytes], Optional[int]],
                 reactor: IReactorTime, watchers: Sequence[Callable[[Request], None]] = (),
                 timeout: float = 75.0,
                 make_parser: Callable[[Any], Any] = _make_parser) -> None:
        """
        C{watchers}: called with each request once its reply is whole (the
        metrics, the access log).  C{make_parser}: L{PythonParser}, or
        httptools' where it loads.
        """
        self.make_parser = make_parser
        self.resource = resource
        self.body_limit = body_limit
        self.reactor = reactor
        self.watchers = tuple(watchers)
        #: Connections open now.
        self.connections = 0
        #: Seconds an idle connection stays open.
        self.timeOut = timeout
        self._date = b""
        self._date_at = -1

    def acceptableProtocols(self) -> List[bytes]:
        """
        What TLS connections may negotiate (ALPN): HTTP/1.1 alone.  Without
        an answer here, the TLS handshake fails with an internal error with
        the Twisted and pyOpenSSL releases of today.
        """
        return [b"http/1.1"]

    def startFactory(self) -> None:
        self.log.info("HTTP requests parsed by {parser}",
                      parser=PARSER if self.make_parser is _make_parser else "pure Python")

    def date(self) -> bytes:
        """The Date header's value, made once a second."""
        now = int(self.reactor.seconds())
        if now != self._date_at:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode("ascii")
        return self._date
