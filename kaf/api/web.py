"""
The HTTP API (SPEC section 3): Klein routes that parse a request, call the
store and log services, and render the reply; domain errors become HTTP
statuses in one place.  No file access here.

Also each request's body limit, which kaf.api.http enforces before it reads
the body.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache, partial
from types import CoroutineType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import (CancelledError, Deferred, ensureDeferred, gatherResults,
                                    maybeDeferred)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http_headers
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import NotFound

from kaf import _format
from kaf.api import console, sse
from kaf.api.auth import LOGS, METRICS, Auth, Refused
from kaf.api.cors import Cors
from kaf.api.health import Readiness
from kaf.api.http import HTTPFactory
from kaf.errors import (BadRequest, ExpectMismatch, KafError, MessageTooLarge, Repeats,
                        UnknownLog)
from kaf.engine import EMPTY as _EMPTY, Duplicate, IEngine, ILog, Reply, check_id
from kaf.api.metrics import CONTENT_TYPE as METRICS_TYPE, Metrics
from kaf.api.streamed import PiecesProducer

# Send Kaf's headers spelled as SPEC.md spells them (HTTP names are
# case-insensitive; this is for people reading `curl -i`).
_SPELLING = getattr(getattr(http_headers, "_NameEncoder", http_headers.Headers),
                    "_caseMappings", None)
if isinstance(_SPELLING, dict):
    for _name in (b"X-Kaf-LastMsg", b"X-Kaf-FirstMsg", b"X-Kaf-LastMsgSent", b"X-Kaf-Count",
                  b"Kaf-Msg-Id"):
        _SPELLING[b"-".join([w.capitalize() for w in _name.split(b"-")])] = _name

MAX_BATCH_BODY = 64 << 20
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
MAX_REPLY_BYTES = 1 << 20

_INT = re.compile(rb"\d{1,19}\Z")
_NUMBER = re.compile(rb"\d{1,9}(?:\.\d{1,9})?\Z")
_MAX_INT = (1 << 63) - 1

TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"
JSON = b"application/json"

# Hints for a wrong method: what the client should have sent.
_HINTS = {
    "put": ("POST", "put: use POST, e.g. curl --data-binary @message.txt {url}"),
    "get": ("GET, HEAD", "get: use GET, e.g. curl '{url}?from=1'"),
    "archive": ("POST", "archive: use POST, e.g. curl -X POST '{url}?upto=100'"),
    "logs": ("GET, HEAD", "logs: use GET, e.g. curl {url}"),
    "console": ("GET, HEAD", "console: open it in a browser, {url}"),
    "health": ("GET, HEAD", "health: use GET, e.g. curl {url}"),
    "ready": ("GET, HEAD", "ready: use GET, e.g. curl {url}"),
    "metrics": ("GET, HEAD", "metrics: use GET, e.g. curl {url}"),
}


class KafWeb:
    """The Klein application, given its store."""

    app = Klein()
    log = Logger()

    def __init__(self, store: IEngine, max_message_size: int = 5 << 20,
                 max_wait: float = 60.0, auth: Optional[Auth] = None,
                 readiness: Optional[Readiness] = None,
                 metrics: Optional[Metrics] = None, cors: Optional[Cors] = None) -> None:
        """
        C{auth}: the access rules of C{--auth}; None serves everyone.
        C{metrics}: what /metrics reports; None answers it 404 (--no-metrics).
        C{cors}: the origins of C{--cors}; None sets no CORS header.
        """
        self.store = store
        self.auth = auth
        self.metrics = metrics
        self.cors = cors
        self.max_message_size = max_message_size
        self.max_wait = max_wait
        self.readiness = readiness
        self._refusals = Repeats(lambda line: self.log.warn("{reason}", reason=line))

    def _allow(self, request: IRequest, right: str, name: str, op: str) -> None:
        """Refuse (L{Refused}) a request whose token may not do C{right} on C{name}."""
        if self.auth is not None:
            self.auth.rules.check(request.getHeader(b"Authorization"), right, name, op)

    def resource(self) -> "KafResource":
        return KafResource(self.app, self.cors)

    # -- errors, in one place ------------------------------------------------

    # werkzeug routes no path holding a newline (%0A): answer it as any
    # other path, not as an unexpected error.
    @app.handle_errors(NotFound)
    def _no_route(self, request: IRequest, failure: Failure) -> bytes:
        return self.unknown(request)

    @app.handle_errors(KafError)
    def _kaf_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, ExpectMismatch):
            request.setHeader(b"X-Kaf-LastMsg", b"%d" % (error.last,))
        if error.retry_after is not None:
            request.setHeader(b"Retry-After", b"%d" % (error.retry_after,))
        if error.status >= 500:
            self._refusals(error.reason)
        return _text(request, error.status, error.reason)

    @app.handle_errors(Refused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if error.status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="kaf"')
        return _text(request, error.status, error.reason)

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("unexpected error", failure)
        return _text(request, 500, "internal error; the server log has the details")

    # -- routes --------------------------------------------------------------

    @app.route("/put/<path:name>")
    def put(self, request: IRequest, name: str) -> Any:
        _method(request, "put")
        self.store.check(name, "put", write=True)
        self._allow(request, "write", name, "put")
        args = _args(request)
        if args:
            expect = _int(args, b"expect", "put", minimum=0)
            first = _int(args, b"first", "put", minimum=1)
            batch = _one(args, b"batch", "put")
        else:
            expect = first = batch = None
        msg_id = request.getHeader(b"Kaf-Msg-Id")
        if msg_id is not None:
            msg_id = check_id(msg_id)
        body = request.content.read() if request.content is not None else b""
        messages = self._messages(body, batch)
        log = self.store.get_or_create(name)

        def done(last: int) -> bytes:
            count = len(messages)
            if isinstance(last, Duplicate):
                # Written before: the first put's reply, as it was.
                request.setHeader(b"Kaf-Duplicate", b"true")
                count = last.count
            if batch is not None:
                request.setHeader(b"X-Kaf-Count", b"%d" % (count,))
            return _reply(request, TEXT, b"%d" % (last,))

        return log.put(messages, expect, first, msg_id).addCallback(done)

    def _messages(self, body: bytes, batch: Optional[bytes]) -> List[bytes]:
        if batch is None:
            if not body:
                raise BadRequest("put: empty message")
            if len(body) > self.max_message_size:
                raise MessageTooLarge("put: message of %d bytes is over the limit of %d"
                                      % (len(body), self.max_message_size))
            return [body]
        if batch == b"lines":
            messages = body.split(b"\n")
            if messages[-1] == b"":
                messages.pop()
            # Blank lines are skipped: looked for in C first, as most
            # batches have none.
            if b"" in messages:
                messages = [line for line in messages if line]
        elif batch == b"kaf":
            try:
                messages = _format.parse_kaf_body(body)
            except _format.MalformedBatch as e:
                raise BadRequest("put: malformed kaf batch: %s" % (e,))
            if any(not m for m in messages):
                raise BadRequest("put: the batch holds an empty message")
        else:
            raise BadRequest("put: invalid 'batch' (must be lines or kaf)")
        if not messages:
            raise BadRequest("put: empty batch")
        if max(map(len, messages)) > self.max_message_size:
            sizes = list(map(len, messages))
            i = next(i for i, size in enumerate(sizes) if size > self.max_message_size)
            raise MessageTooLarge(
                "put: message %d of the batch has %d bytes, over the limit of %d"
                % (i + 1, sizes[i], self.max_message_size))
        return messages

    @app.route("/get/<path:name>")
    def get(self, request: IRequest, name: str) -> Any:
        _method(request, "get")
        self.store.check(name, "get")
        self._allow(request, "read", name, "get")
        args = _args(request)
        from_num = _int(args, b"from", "get", minimum=1, what="'from' message number")
        fmt = _one(args, b"format", "get")
        if fmt == b"sse" or (fmt is None and sse.wants_events(request.getHeader(b"Accept"))):
            return self._stream(request, name, from_num)
        if from_num is None:
            raise BadRequest("get: missing 'from' message number")
        fmt = fmt or b"kaf"
        if fmt not in (b"kaf", b"raw", b"json"):
            raise BadRequest("get: invalid 'format' (must be kaf, raw, json or sse)")
        limit = _int(args, b"limit", "get", minimum=1)
        limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
        wait = _seconds(args, b"wait", "get", self.max_wait)

        log: Optional[ILog] = self.store.get(name)
        if log is None and wait:
            # A poller may wait for a log's first message.
            log = self.store.get_or_create(name)
        if log is None:
            return _render(request, fmt, Reply(_EMPTY, 0, False))

        # A large kaf reply is read from the file as the client takes it.
        pieces = fmt == b"kaf" and request.method == b"GET"

        def read(_: object = None) -> "Deferred[Reply]":
            return maybeDeferred(log.get, from_num, limit, MAX_REPLY_BYTES, pieces)

        def maybe_wait(reply: Reply) -> Any:
            if len(reply.slice) or not wait:
                return reply
            return log.wait(from_num, wait).addCallback(read)

        def render(reply: Reply) -> Any:
            reply.exists = reply.exists and self.store.get(name) is not None
            return _render(request, fmt, reply)

        def release(result: object) -> object:
            # A wait on a log that never came to be leaves nothing behind.
            self.store.release(log)
            return result

        return read().addCallback(maybe_wait).addCallback(render).addBoth(release)

    def _stream(self, request: IRequest, name: str, from_num: Optional[int]) -> Any:
        """A live stream of Server-Sent Events; C{Last-Event-ID} resumes after it."""
        resume = sse.resume_from(request.getHeader(b"Last-Event-ID"))
        if resume is not None:
            from_num = resume
        if from_num is None:
            raise BadRequest("get: missing 'from' message number")
        if request.method == b"HEAD":
            request.setHeader(b"Content-Type", sse.CONTENT_TYPE)
            return b""
        # A stream may wait for a log's first message.
        log = self.store.get_or_create(name)
        sse.LogStream(request, log, from_num, lambda: self.store.release(log)).start()
        return NOT_DONE_YET

    @app.route("/archive/<path:name>")
    def archive(self, request: IRequest, name: str) -> Any:
        _method(request, "archive")
        self.store.check(name, "archive")
        self._allow(request, "archive", name, "archive")
        upto = _int(_args(request), b"upto", "archive", minimum=1,
                    what="'upto' message number")
        if upto is None:
            raise BadRequest("archive: missing 'upto' message number")
        log = self.store.get(name)
        if log is None:
            raise UnknownLog("archive: no log named %r" % (name,))

        def done(result: Tuple[Optional[str], int, int]) -> bytes:
            archive, used, kept = result
            body = json.dumps({"log": name, "archive": archive, "upto": used, "kept": kept})
            return _reply(request, JSON, body.encode())

        return log.archive(upto).addCallback(done)

    @app.route("/logs")
    def logs(self, request: IRequest) -> Any:
        _method(request, "logs")
        self._allow(request, "read", LOGS, "logs")
        return self.store.refresh().addCallback(lambda _: self._list(request))

    def _list(self, request: IRequest) -> Any:
        logs = self.store.logs()
        if self.auth is not None:
            # A token sees only the logs it may read.
            readable = set(self.auth.rules.readable(
                request.getHeader(b"Authorization"), [log.name for log in logs]))
            logs = [log for log in logs if log.name in readable]

        def listed(_: object) -> bytes:
            out = []
            for log in logs:
                first, last, count, size, error = log.summary()
                entry: dict = {"name": log.name, "first": first, "last": last,
                               "count": count, "bytes": size}
                if error is not None:
                    entry["error"] = error
                out.append(entry)
            return _reply(request, JSON, json.dumps(out).encode())

        # Logs not used since start-up are read first, a few at a time:
        # each holds a descriptor while it is read.
        unread = [log for log in logs if not log.known]

        def read_some(_: object = None) -> Any:
            some = [unread.pop().described() for _ in range(min(16, len(unread)))]
            if not some:
                return listed(None)
            return gatherResults(some, consumeErrors=True).addCallbacks(
                read_some, lambda failure: failure.value.subFailure)

        return read_some()

    @app.route("/console")
    def console_page(self, request: IRequest) -> bytes:
        return self.console_file(request, "index.html")

    @app.route("/console/<string:name>")
    def console_file(self, request: IRequest, name: str) -> bytes:
        _method(request, "console")
        found = console.files().get(name)
        if found is None:
            return _text(request, 404, "console: no file %r" % (name,))
        kind, body = found
        # The console talks to this server only, and is never framed.
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'self'; frame-ancestors 'none'")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-cache")
        return _reply(request, kind, body)

    @app.route("/health")
    def health(self, request: IRequest) -> bytes:
        _method(request, "health")
        return _reply(request, TEXT, b"ok\n")

    @app.route("/ready")
    def ready(self, request: IRequest) -> Any:
        _method(request, "ready")
        if self.readiness is None:
            return _reply(request, TEXT, b"ready\n")

        def answer(problem: Optional[str]) -> bytes:
            if problem is None:
                return _reply(request, TEXT, b"ready\n")
            return _text(request, 503, problem)

        return self.readiness.check().addCallback(answer)

    @app.route("/metrics")
    def metrics_page(self, request: IRequest) -> bytes:
        _method(request, "metrics")
        self._allow(request, "read", METRICS, "metrics")
        if self.metrics is None:
            return _text(request, 404, "metrics: off (the server runs with --no-metrics)")
        return _reply(request, METRICS_TYPE, self.metrics.exposition())

    @app.route("/", branch=True)
    def unknown(self, request: IRequest) -> bytes:
        path = request.path.decode("latin-1")
        if path in ("/", "/console/") and console.wants_html(request.getHeader(b"Accept")):
            # A browser opening the server's address gets the console; an
            # API client (curl sends Accept: */*) gets what it always got.
            request.setResponseCode(302)
            request.setHeader(b"Location", b"/console")
            return _text(request, 302, "the console is at /console")
        for op in ("put", "get", "archive"):
            if path in ("/" + op, "/" + op + "/"):
                raise BadRequest("%s: empty log name" % (op,))
            if path.startswith("/" + op + "/"):
                # Only a name the router could not match gets here.
                self.store.check(unquote(path[len(op) + 2:]), op)
        return _text(request, 404, "unknown path %r: use /put/LOG, /get/LOG, "
                     "/archive/LOG, /logs or /console" % (path,))


class KafResource(KleinResource):
    """
    The Klein resource of Kaf's routes, doing less work a request than
    Klein's own:
      - Kaf's routes depend on neither host nor scheme, so the URL map is
        bound once, not per request, and its answers for the paths seen
        most are remembered (matching cost more than the rest of a put);
      - a route that answers at once is written at once, without a
        Deferred; only an answer still to come (a put being written, a
        long poll) is cancelled when its client goes away.
      - a route that is not a branch is called as Klein's executor
        calls it (the app's instance first; a coroutine made a Deferred)
        without the executor's three calls in between.
    Routes and error handlers are Klein's, declared and matched by it.
    """

    def __init__(self, app: Klein, cors: Optional[Cors] = None) -> None:
        KleinResource.__init__(self, app)
        self._cors = cors
        #: endpoint -> the route's own function, for routes Klein's executor
        #: only calls (a branch route's also moves the path's segments).
        self._direct: Dict[str, Callable[..., Any]] = {}
        for rule in app.url_map.iter_rules():
            executor = app.endpoints.get(rule.endpoint)
            f = getattr(executor, "__wrapped__", None)
            if f is not None and "__rest__" not in rule.arguments and not getattr(
                    f, "__klein_bound__", False):
                self._direct[rule.endpoint] = f
        self._instance = app._instance
        self._match = partial(app.url_map.bind("kaf").match, return_rule=True)
        # Paths no longer than a route with the longest log name: at most
        # about a megabyte, whatever paths clients make up.
        self._route = lru_cache(maxsize=4096)(self._match)

    def render(self, request: IRequest) -> Any:
        if self._cors is not None:
            # Before routing: a preflight is answered here, and every other
            # reply (errors included) carries the headers a page needs.
            preflight = self._cors.answer(request)
            if preflight is not None:
                return preflight
        try:
            # A path that is not UTF-8 is routed all the same, so that a bad
            # log name in it gets the reason a bad log name gets.
            path = request.path if not request.prepath else (  # type: ignore[attr-defined]
                b"/" + b"/".join(request.postpath))  # type: ignore[attr-defined]
            path_info = path.decode("utf-8", "surrogateescape")
            route = self._route if len(path_info) <= 256 else self._match
            rule, kwargs = route(path_info, request.method.decode("latin-1"))
            f = self._direct.get(rule.endpoint)
            if f is None:
                result = self._app.execute_endpoint(rule.endpoint, request, **kwargs)
            else:
                result = f(self._instance, request, **kwargs)
                if type(result) is CoroutineType:
                    result = ensureDeferred(result)
        except Exception:
            result = self._failed(Failure(), request)
        if isinstance(result, Deferred):
            gone: List[bool] = []
            when_gone = getattr(request, "when_gone", None)
            if when_gone is not None:
                when_gone(self._gone, result, gone)
            else:  # twisted.web's Request
                request.notifyFinish().addErrback(  # type: ignore[attr-defined]
                    self._gone, result, gone)
            result.addCallbacks(self._write, self._failed_then_write,
                                callbackArgs=(request, gone), errbackArgs=(request, gone))
            return NOT_DONE_YET
        if isinstance(result, Failure):
            request.processingFailed(result)  # type: ignore[attr-defined]
            return NOT_DONE_YET
        return result

    @staticmethod
    def _gone(reason: Failure, result: "Deferred[Any]", gone: List[bool]) -> None:
        gone.append(True)
        result.cancel()

    def _failed(self, failure: Failure, request: IRequest) -> Any:
        # As Klein does: the first handler for the error answers; an error
        # it raises goes on to the handlers after it.
        for kinds, handler in self._app._error_handlers:
            if failure.check(*kinds):
                try:
                    return self._app.execute_error_handler(handler, request, failure)
                except Exception:
                    failure = Failure()
        return failure

    def _failed_then_write(self, failure: Failure, request: IRequest, gone: List[bool]) -> None:
        # Nobody is left to tell of an error once the client has gone.
        if gone:
            self._unwritten(failure)
            return
        try:
            body = self._failed(failure, request)
            if isinstance(body, Failure):
                request.processingFailed(body)  # type: ignore[attr-defined]
                return
        except Exception:
            self._unwritten(Failure())
            return
        self._write(body, request, gone)

    @staticmethod
    def _write(body: Any, request: IRequest, gone: List[bool]) -> None:
        # NOT_DONE_YET: the route sends the rest itself (a streamed reply).
        if gone or body is NOT_DONE_YET:
            return
        try:
            if body:
                request.write(body)
            request.finish()
        except Exception:
            KafResource._unwritten(Failure())

    @staticmethod
    def _unwritten(failure: Failure) -> None:
        if not failure.check(CancelledError):
            KafWeb.log.failure("unhandled error writing a reply", failure)


def _method(request: IRequest, op: str) -> None:
    allowed, hint = _HINTS[op]
    method = request.method
    if method in (b"GET", b"HEAD") and "GET" in allowed:
        return
    if method == b"POST" and allowed == "POST":
        return
    url = request.uri.decode("latin-1").split("?")[0]
    request.setHeader(b"Allow", allowed.encode())
    raise _MethodNotAllowed(hint.format(url="http://HOST" + url))


class _MethodNotAllowed(KafError):
    status = 405


def _args(request: IRequest) -> dict:
    return request.args or {}


def _one(args: dict, key: bytes, op: str) -> Optional[bytes]:
    values = args.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("%s: '%s' given more than once" % (op, key.decode()))
    return values[0]


def _int(args: dict, key: bytes, op: str, minimum: int,
         what: Optional[str] = None) -> Optional[int]:
    value = _one(args, key, op)
    if value is None:
        return None
    what = what or "'%s'" % (key.decode(),)
    if not _INT.match(value) or int(value) < minimum or int(value) > _MAX_INT:
        raise BadRequest("%s: invalid %s (must be an integer ≥ %d)" % (op, what, minimum))
    return int(value)


def _seconds(args: dict, key: bytes, op: str, maximum: float) -> float:
    value = _one(args, key, op)
    if value is None:
        return 0.0
    if not _NUMBER.match(value) or float(value) > maximum:
        raise BadRequest("%s: invalid 'wait' (must be a number of seconds from 0 to %g)"
                         % (op, maximum))
    return float(value)


def _reply(request: IRequest, content_type: bytes, body: bytes) -> bytes:
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    return body


def _text(request: IRequest, status: int, reason: str) -> bytes:
    request.setResponseCode(status)
    line = reason.replace("\r", " ").replace("\n", " ") + "\n"
    return _reply(request, TEXT, line.encode("utf-8"))


#: Records shorter than this are joined to their header and sent in one write.
_JOIN_BELOW = 1 << 14


def _render(request: IRequest, fmt: bytes, reply: Reply) -> Any:
    """The reply's body, or NOT_DONE_YET when its pieces are being sent."""
    s = reply.slice
    if reply.exists:
        request.setHeader(b"X-Kaf-LastMsg", b"%d" % (reply.last,))
    if len(s):
        request.setHeader(b"X-Kaf-FirstMsg", b"%d" % (s.nums[0],))
        request.setHeader(b"X-Kaf-LastMsgSent", b"%d" % (s.nums[-1],))
    if fmt == b"kaf":
        # The header goes first on its own: the records, often one read of
        # the file, are sent as they are, without a copy to join them.
        head = _format.reply_header(len(s))
        request.setHeader(b"Content-Type", OCTETS)
        if reply.pieces is not None:
            request.setHeader(b"Content-Length", b"%d" % (len(head) + reply.pieces.length,))
            request.write(head)
            PiecesProducer(request, reply.pieces).start()
            return NOT_DONE_YET
        records = s.kaf_records()
        request.setHeader(b"Content-Length", b"%d" % (len(head) + len(records),))
        if len(records) <= _JOIN_BELOW:
            # A small reply goes in one write (one segment, one syscall).
            return head + records
        request.write(head)
        return records
    if fmt == b"raw":
        return _reply(request, OCTETS, s.raw_body())
    return _reply(request, JSON, s.json_body())


# -- body limits, decided from the request line before the body is read ----

def body_limit_for(max_message_size: int) -> Callable[[bytes, bytes], Optional[int]]:
    """The largest body accepted for a request line's method and path."""

    def limit(command: bytes, path: bytes) -> Optional[int]:
        if not path.startswith(b"/put/"):
            return 1 << 16
        if b"batch=" in path:
            return max(MAX_BATCH_BODY, max_message_size)
        return max_message_size

    return limit


def make_site(web: KafWeb, reactor: IReactorTime,
              watchers: Sequence[Callable[[Any], None]] = ()) -> HTTPFactory:
    """
    The HTTP server of Kaf's routes, with their body limits; C{watchers}
    are called with each request answered (see L{HTTPFactory}), after the
    metrics' own when they are on.
    """
    metrics = web.metrics
    if metrics is not None:
        watchers = (metrics.request_done,) + tuple(watchers)
    site = HTTPFactory(web.resource(), body_limit_for(web.max_message_size), reactor,
                       watchers=watchers)
    if metrics is not None:
        metrics.connections = lambda: site.connections
    return site
