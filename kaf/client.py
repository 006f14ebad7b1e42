"""
The Kaf client library, on treq: one L{KafClient} per server, whose methods
are the HTTP API of SPEC section 3 with Python values in and out; a
L{Follower} that follows a log with long polls and survives dropped
connections; L{copy_log}, which copies a log between servers and can be
resumed; and the named exceptions a server's refusals become.

The treq-like object and the reactor are injected, so tests drive a real
server in memory through C{treq.testing.StubTreq} with a C{task.Clock}.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar
from urllib.parse import quote, urlencode

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from kaf import _format

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:7749"

#: Largest body of one batch put (SPEC 3.1), less room for the framing.
MAX_BATCH_BYTES = (64 << 20) - (1 << 16)
#: Most messages sent in one batch put: big enough for speed, small enough
#: that one request never holds the server's log for long.
MAX_BATCH_COUNT = 10000
#: Framing bytes a message adds to a batch body, at most ("\nKAF_MSG|n|size\n").
_RECORD_OVERHEAD = 50

#: The largest message number the server accepts in 'from'; asking from
#: there returns no message but the log's numbers in the headers.
_MAX_NUM = (1 << 63) - 1

_DECIMAL = re.compile(rb"\d{1,19}\Z")


# -- errors ---------------------------------------------------------------------

class KafClientError(Exception):
    """Anything that kept a request from succeeding; C{reason} is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KafConnectionError(KafClientError):
    """No reply: the server could not be reached, went away, or timed out."""


class KafProtocolError(KafClientError):
    """A reply that does not follow the API (not a Kaf server?)."""


class KafHTTPError(KafClientError):
    """The server refused the request; C{reason} is its one-line reply."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class BadRequest(KafHTTPError):
    """400: a malformed parameter, name or body."""


class Forbidden(KafHTTPError):
    """403: the log belongs to Kaf itself (C{_kaf})."""


class NotFound(KafHTTPError):
    """404: no such log, or not a Kaf URL."""


class ExpectFailed(KafHTTPError):
    """409: C{expect} did not match; C{last} is the log's actual last number."""

    def __init__(self, status: int, reason: str, last: Optional[int]) -> None:
        super().__init__(status, reason)
        self.last = last


class TooLarge(KafHTTPError):
    """413: a message or a body over the server's limit."""


class ServerError(KafHTTPError):
    """5xx: the server could not do it (unreadable log, disk full, stopping)."""


_BY_STATUS = {400: BadRequest, 403: Forbidden, 404: NotFound, 413: TooLarge}


def _http_error(status: int, reason: str, last: Optional[int]) -> KafHTTPError:
    if status == 409:
        return ExpectFailed(status, reason, last)
    if status >= 500:
        return ServerError(status, reason)
    return _BY_STATUS.get(status, KafHTTPError)(status, reason)


# -- replies --------------------------------------------------------------------

class GetResult:
    """
    One C{get} reply.

    @ivar messages: C{[(number, data), …]}, for the C{kaf} format (empty for
        the others: their body is in C{body}).
    @ivar body: the reply body as the server sent it.
    @ivar last_sent: number of the last message in this reply
        (C{X-Kaf-LastMsgSent}), or None when it holds none.
    @ivar first: number of the first message in this reply
        (C{X-Kaf-FirstMsg}), or None when it holds none.
    @ivar last: the log's last number (C{X-Kaf-LastMsg}), or None when the
        log does not exist.
    """

    __slots__ = ("messages", "body", "last_sent", "first", "last")

    def __init__(self, messages: List[Tuple[int, bytes]], body: bytes,
                 last_sent: Optional[int], first: Optional[int], last: Optional[int]) -> None:
        self.messages = messages
        self.body = body
        self.last_sent = last_sent
        self.first = first
        self.last = last

    def __repr__(self) -> str:
        return "<GetResult %d messages, first=%r last_sent=%r last=%r>" % (
            len(self.messages), self.first, self.last_sent, self.last)


def parse_kaf_reply(body: bytes) -> List[Tuple[int, bytes]]:
    """
    The messages of a C{kaf} reply body (SPEC 3.2) with their numbers,
    strictly: the header, every record's place and size, the count, and
    increasing numbers must all be exact.
    """
    try:
        return _format.parse_kaf_records(body, increasing=True)
    except _format.MalformedBatch as e:
        raise KafProtocolError("reply: %s" % (e,))


def kaf_batch(messages: Sequence[bytes]) -> bytes:
    """A C{batch=kaf} body holding C{messages} (their numbers are ignored)."""
    return _format.reply_header(len(messages)) + _format.records(1, list(messages))


def batches(messages: Sequence[bytes], max_bytes: int = MAX_BATCH_BYTES,
            max_count: int = MAX_BATCH_COUNT) -> List[Sequence[bytes]]:
    """
    C{messages} cut into runs that each make one batch put: at most
    C{max_count} messages and about C{max_bytes} of body (a single message
    larger than that goes alone).
    """
    out: List[Sequence[bytes]] = []
    start = 0
    size = 0
    for i, m in enumerate(messages):
        cost = len(m) + _RECORD_OVERHEAD
        if i > start and (i - start >= max_count or size + cost > max_bytes):
            out.append(messages[start:i])
            start, size = i, 0
        size += cost
    if start < len(messages):
        out.append(messages[start:])
    return out


class _Answer:
    """A reply's status, numbered headers and body."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def number(self, name: bytes) -> Optional[int]:
        values = self.headers.getRawHeaders(name)
        if not values:
            return None
        if not _DECIMAL.match(values[0]):
            raise KafProtocolError("reply header %s is not a number: %r"
                                   % (name.decode(), values[0]))
        return int(values[0])


# -- the client -----------------------------------------------------------------

class KafClient:
    """
    A client of one Kaf server at C{url} (e.g. C{http://127.0.0.1:7749}).

    Every method returns a Deferred; a refusal fails it with a
    L{KafHTTPError} subclass carrying the server's reason, no reply with
    L{KafConnectionError}.  Cancelling a Deferred abandons the request.

    @param treq: the treq-like object that makes requests (C{request} and
        C{content}): the C{treq} module by default, C{StubTreq} in tests.
    @param reactor: the clock for timeouts and retry delays.
    @param timeout: seconds a request may take, beyond any long-poll wait;
        None for no limit.

    Every put carries a new C{Kaf-Msg-Id}; a put whose connection drops
    (or whose reply does not come in time), or that is answered 503 (not
    now: try again), is sent again with the same id, up to L{PUT_RETRIES}
    times: a put the server had written is answered
    with its first number, not written twice (within the server's
    C{--dedupe-window}).
    """

    #: Times a put is sent again after a dropped connection or a 503, and
    #: the seconds before the first retry (doubling after each).
    PUT_RETRIES = 3
    PUT_RETRY_DELAY = 0.5

    def __init__(self, url: str = DEFAULT_URL, treq: Any = None,
                 reactor: Optional[IReactorTime] = None,
                 timeout: Optional[float] = 300.0, token: Optional[str] = None) -> None:
        """C{token}: sent as C{Authorization: Bearer} to a server with C{--auth}."""
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        if treq is None:
            import treq as treq_module

            treq = treq_module
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default  # type: ignore[assignment]
        self._treq = treq
        self.reactor: IReactorTime = reactor  # type: ignore[assignment]
        self.timeout = timeout
        self.token = token

    def __repr__(self) -> str:
        return "KafClient(%r)" % (self.url,)

    # -- the API ------------------------------------------------------------

    def put(self, log: str, message: bytes, expect: Optional[int] = None) -> "Deferred[int]":
        """Append one message; fire with its number."""
        params = {} if expect is None else {"expect": expect}
        return self._put(log, message, params)

    def put_batch(self, log: str, messages: Sequence[bytes],
                  expect: Optional[int] = None) -> "Deferred[int]":
        """
        Append C{messages} in order (any bytes: C{batch=kaf} framing); fire
        with the number of the last.

        Each request is atomic; a list too big for one request (64 MiB,
        L{MAX_BATCH_COUNT} messages) is sent in several, each expecting the
        last number the one before it returned when C{expect} is given, so
        no other writer can slip between them unnoticed.  An empty list is
        a C{ValueError}.
        """
        if not messages:
            raise ValueError("put_batch: no messages")
        return Deferred.fromCoroutine(self._put_batches(log, batches(messages), expect))

    async def _put_batches(self, log: str, runs: List[Sequence[bytes]],
                           expect: Optional[int]) -> int:
        last = 0
        for run in runs:
            last = await self.put_kaf_body(log, kaf_batch(run), expect)
            if expect is not None:
                expect = last
        return last

    def put_kaf_body(self, log: str, body: bytes, expect: Optional[int] = None,
                     first: Optional[int] = None) -> "Deferred[int]":
        """
        Append the messages of a body already in the C{kaf} framing (a
        C{get} reply body, for instance) in one atomic request; fire with
        the number of the last.  C{first} numbers them from C{first}: the
        next number, or a later one while the log holds no message.
        """
        params: Dict[str, Any] = {"batch": "kaf"}
        if expect is not None:
            params["expect"] = expect
        if first is not None:
            params["first"] = first
        return self._put(log, body, params)

    def _put(self, log: str, body: bytes, params: Dict[str, Any]) -> "Deferred[int]":
        def number(answer: _Answer) -> int:
            if not _DECIMAL.match(answer.body):
                raise KafProtocolError("put: reply is not a message number: %r"
                                       % (answer.body[:80],))
            return int(answer.body)

        msg_id = uuid.uuid4().hex
        return Deferred.fromCoroutine(self._put_retrying(log, body, params, msg_id)
                                      ).addCallback(number)

    async def _put_retrying(self, log: str, body: bytes, params: Dict[str, Any],
                            msg_id: str) -> _Answer:
        headers = {b"Kaf-Msg-Id": [msg_id.encode("ascii")]}
        delay = self.PUT_RETRY_DELAY
        for retries_left in range(self.PUT_RETRIES, -1, -1):
            try:
                return await self._call(b"POST", "/put/", log, params, body, headers=headers)
            except KafConnectionError as e:
                if not retries_left or not _maybe_sent(e):
                    raise
            except ServerError as e:
                # 503: not now (a NATS stream electing a leader, no file
                # descriptor left): nothing is known to be written, and the
                # same id makes a second write impossible.
                if not retries_left or e.status != 503:
                    raise
            await deferLater(self.reactor, delay)
            delay *= 2
        raise AssertionError("unreachable")

    def get(self, log: str, from_: int, limit: Optional[int] = None,
            wait: Optional[float] = None) -> "Deferred[GetResult]":
        """
        The messages numbered C{from_} and after, one batch (SPEC 3.2); with
        C{wait}, hold until one exists or C{wait} seconds pass.
        """
        return self.fetch(log, from_, "kaf", limit, wait)

    def fetch(self, log: str, from_: int, format: str = "kaf", limit: Optional[int] = None,
              wait: Optional[float] = None) -> "Deferred[GetResult]":
        """Like L{get}, in any C{format} (kaf, raw, json); the body is kept."""
        params: Dict[str, Any] = {"from": from_, "format": format}
        if limit is not None:
            params["limit"] = limit
        if wait:
            # Plain decimal: the server takes no exponents.
            params["wait"] = ("%.3f" % (wait,)).rstrip("0").rstrip(".")

        def result(answer: _Answer) -> GetResult:
            messages = parse_kaf_reply(answer.body) if format == "kaf" else []
            return GetResult(messages, answer.body, answer.number(b"X-Kaf-LastMsgSent"),
                             answer.number(b"X-Kaf-FirstMsg"), answer.number(b"X-Kaf-LastMsg"))

        return self._call(b"GET", "/get/", log, params, None, wait or 0.0).addCallback(result)

    def last_number(self, log: str) -> "Deferred[int]":
        """
        The log's last number (SPEC 3.1): 0 for a log that does not exist.
        Costs one request and no message data.
        """
        return self.fetch(log, _MAX_NUM, limit=1).addCallback(
            lambda r: 0 if r.last is None else r.last)

    def archive(self, log: str, upto: int) -> "Deferred[Dict[str, Any]]":
        """
        Archive the messages numbered C{upto} and below (SPEC 3.3); fire with
        the server's C{{"log", "archive", "upto", "kept"}}.
        """
        return self._call(b"POST", "/archive/", log, {"upto": upto}).addCallback(
            lambda a: self._json(a, "archive"))

    def logs(self) -> "Deferred[List[Dict[str, Any]]]":
        """Every log: C{[{"name", "first", "last", "count", "bytes"[, "error"]}, …]}."""
        return self._call(b"GET", "/logs", None).addCallback(lambda a: self._json(a, "logs"))

    def follow(self, log: str, from_: int,
               on_message: Callable[[int, bytes], Optional["Deferred[Any]"]],
               wait: float = 30.0, limit: Optional[int] = None,
               on_retry: Optional[Callable[[KafClientError, float], None]] = None,
               ) -> "Follower":
        """
        Follow C{log} from message C{from_}: call C{on_message(number, data)}
        for each message there is and each one appended later, in order,
        until L{Follower.stop}.  See L{Follower}.
        """
        return Follower(self, log, from_, on_message, wait, limit, on_retry)

    # -- plumbing -------------------------------------------------------------

    @staticmethod
    def _json(answer: _Answer, op: str) -> Any:
        try:
            return json.loads(answer.body)
        except ValueError:
            raise KafProtocolError("%s: reply is not JSON" % (op,))

    def _call(self, method: bytes, path: str, log: Optional[str],
              params: Optional[Dict[str, Any]] = None, body: Optional[bytes] = None,
              wait: float = 0.0, headers: Optional[Dict[bytes, List[bytes]]] = None
              ) -> "Deferred[_Answer]":
        url = self.url + path
        if log is not None:
            # Quoted whole: a bad name reaches the server, which says why.
            url += quote(log, safe="")
        if params:
            url += "?" + urlencode(params)
        d = Deferred.fromCoroutine(self._exchange(method, url, body, headers))
        if self.timeout is not None:
            d.addTimeout(self.timeout + wait, self.reactor)
        return d.addErrback(self._no_reply, url)

    async def _exchange(self, method: bytes, url: str, body: Optional[bytes],
                        extra: Optional[Dict[bytes, List[bytes]]] = None) -> _Answer:
        headers = {b"Content-Type": [b"application/octet-stream"]} if body is not None else {}
        if extra:
            headers.update(extra)
        if self.token:
            headers[b"Authorization"] = [b"Bearer " + self.token.encode("utf-8")]
        response = await self._treq.request(method.decode(), url, data=body, headers=headers)
        content = await self._treq.content(response)
        answer = _Answer(response.code, content, response.headers)
        if response.code != 200:
            reason = content.decode("utf-8", "replace").strip()
            if not reason or "\n" in reason:
                reason = "HTTP %d from %s" % (response.code, url.split("?")[0])
            raise _http_error(response.code, reason, answer.number(b"X-Kaf-LastMsg"))
        return answer

    def _no_reply(self, failure: Failure, url: str) -> Failure:
        """Name a transport failure; the API's own errors pass as they are."""
        if failure.check(KafClientError, CancelledError):
            return failure
        where = url.split("?")[0]
        if failure.check(TimeoutError):
            reason = "no reply from %s within the time limit" % (where,)
        elif failure.check(ConnectionRefusedError):
            reason = "cannot connect to %s: connection refused" % (self.url,)
        elif failure.check(DNSLookupError):
            reason = "cannot find the host of %s" % (where,)
        elif failure.check(ConnectError):
            reason = "cannot connect to %s: %s" % (self.url, _describe(failure.value))
        else:
            reason = "connection to %s failed: %s" % (where, _describe(failure.value))
        error = KafConnectionError(reason)
        error.__cause__ = failure.value
        return Failure(error)


def _maybe_sent(error: KafConnectionError) -> bool:
    """Might the server have got the request (the connection dropped, no reply in time)?"""
    cause = error.__cause__
    return isinstance(cause, (ResponseFailed, ResponseNeverReceived, TimeoutError))


def _describe(error: BaseException) -> str:
    """A one-line description of a transport error."""
    inner = getattr(error, "reasons", None)
    if inner:
        # twisted.web's ResponseFailed & co wrap a list of Failures.
        return "; ".join(_describe(f.value) for f in inner)
    text = str(error).strip().rstrip(".")
    name = type(error).__name__
    if not text or text == name:
        return name
    return text.splitlines()[0]


# -- following a log ------------------------------------------------------------

class Follower:
    """
    Follows a log with long polls (C{wait=}): delivers every message from
    C{from_} on, in order, to C{on_message(number, data)}, each exactly
    once, and keeps going as messages are appended.

    A dropped connection, a timeout or a 5xx reply is retried after a
    delay that doubles from L{MIN_BACKOFF} up to L{MAX_BACKOFF} seconds (on
    the client's reactor), resuming after the last message delivered;
    C{on_retry(error, delay)} hears about each.  If C{on_message} returns a
    Deferred, the next message waits for it.

    L{stop} ends it cleanly: the request under way is abandoned, and
    L{done} fires with the number to resume from (L{next}).  L{done} fails
    when the server refuses the request (4xx: a bad name, a wait over its
    limit) or C{on_message} raises.
    """

    MIN_BACKOFF = 0.5
    MAX_BACKOFF = 30.0

    def __init__(self, client: KafClient, log: str, from_: int,
                 on_message: Callable[[int, bytes], Optional["Deferred[Any]"]],
                 wait: float = 30.0, limit: Optional[int] = None,
                 on_retry: Optional[Callable[[KafClientError, float], None]] = None) -> None:
        self.client = client
        self.log = log
        #: The number of the next message to ask for.
        self.next = from_
        self._on_message = on_message
        self._wait = wait
        self._limit = limit
        self._on_retry = on_retry
        self._stopped = False
        self._current: Optional["Deferred[Any]"] = None
        self.done: "Deferred[int]" = Deferred.fromCoroutine(self._run())

    def stop(self) -> "Deferred[int]":
        """Stop following; return L{done}."""
        self._stopped = True
        if self._current is not None:
            self._current.cancel()
        return self.done

    async def _await(self, d: "Deferred[T]") -> T:
        """Wait for C{d}, which L{stop} cancels."""
        self._current = d
        try:
            return await d
        finally:
            self._current = None

    async def _run(self) -> int:
        delay = 0.0
        while not self._stopped:
            try:
                result = await self._await(self.client.get(
                    self.log, self.next, limit=self._limit, wait=self._wait))
            except CancelledError:
                if self._stopped:
                    break
                raise
            except (KafConnectionError, ServerError) as e:
                if self._stopped:
                    break
                delay = min(max(delay * 2, self.MIN_BACKOFF), self.MAX_BACKOFF)
                if self._on_retry is not None:
                    self._on_retry(e, delay)
                try:
                    await self._await(deferLater(self.reactor, delay))
                except CancelledError:
                    break
                continue
            delay = 0.0
            for num, data in result.messages:
                if self._stopped:
                    break
                waited = self._on_message(num, data)
                if isinstance(waited, Deferred):
                    await waited
                self.next = num + 1
        return self.next

    @property
    def reactor(self) -> IReactorTime:
        return self.client.reactor


# -- copying a log ------------------------------------------------------------------

class CopyRefused(KafClientError):
    """A copy that would not keep the source's message numbers."""


class CopyResult:
    """What a copy did: messages and bytes copied, and the last number."""

    __slots__ = ("messages", "bytes", "last")

    def __init__(self, messages: int, bytes_: int, last: int) -> None:
        self.messages = messages
        self.bytes = bytes_
        self.last = last

    def __repr__(self) -> str:
        return "<CopyResult %d messages, %d bytes, last %d>" % (
            self.messages, self.bytes, self.last)


ProgressCallback = Callable[[int, int], None]


def copy_log(source: KafClient, source_log: str, dest: KafClient, dest_log: str,
             on_progress: Optional[ProgressCallback] = None,
             limit: int = 10000) -> "Deferred[CopyResult]":
    """
    Copy every message of C{source_log} that C{dest_log} lacks, in batches
    (C{get format=kaf} piped into C{put batch=kaf}), keeping the numbers.

    Resumable: it starts after the destination's last number, so running
    it again after an interruption continues where it stopped.  Each
    batch is put with C{expect}, so a concurrent writer to the destination
    stops the copy (L{ExpectFailed}) instead of interleaving with it.
    A source whose first message is not 1 (it was archived) is copied
    into an empty destination from that number on.  Refused
    (L{CopyRefused}) when the destination is ahead of the source, when the
    source begins after a destination that holds messages, or when the
    source's numbers skip some later on, as the copy could not keep them.  C{on_progress(messages, bytes)} is
    called after each batch.
    """
    return Deferred.fromCoroutine(
        _copy(source, source_log, dest, dest_log, on_progress, limit))


async def _copy(source: KafClient, source_log: str, dest: KafClient, dest_log: str,
                on_progress: Optional[ProgressCallback], limit: int) -> CopyResult:
    dest_last = await dest.last_number(dest_log)
    source_last = await source.last_number(source_log)
    if dest_last > source_last:
        raise CopyRefused(
            "copy: the destination's last message (%d) is ahead of the source's (%d)"
            % (dest_last, source_last))
    copied = size = 0
    # One batch is read ahead while the one before is written.
    ahead: "Deferred[GetResult]" = source.get(source_log, dest_last + 1, limit=limit)
    try:
        while True:
            batch = await ahead
            if not batch.messages:
                break
            start = batch.messages[0][0]
            # The source may begin after dest_last + 1 (it was archived):
            # an empty destination then continues from there.
            if start != dest_last + 1 and copied:
                raise CopyRefused(_gap_reason(dest_last))
            run = _run_length(batch.messages, start)
            last = batch.messages[run - 1][0]
            if run == len(batch.messages):
                body = batch.body
                ahead = source.get(source_log, last + 1, limit=limit)
            else:
                body = kaf_batch([m for _, m in batch.messages[:run]])
            try:
                written = await _put_run([m for _, m in batch.messages[:run]], body,
                                         dest, dest_log, start, dest_last)
            except ExpectFailed as e:
                if start == dest_last + 1 or e.last != dest_last:
                    raise
                raise CopyRefused(
                    "copy: the source begins at message %d, and the destination, which "
                    "holds messages up to %d, cannot continue from there" % (start, dest_last))
            if written != last:
                raise KafProtocolError("copy: the destination numbered the batch up to %d, "
                                       "not %d" % (written, last))
            dest_last = last
            copied += run
            size += sum(len(m) for _, m in batch.messages[:run])
            if on_progress is not None:
                on_progress(copied, size)
            if run < len(batch.messages):
                raise CopyRefused(_gap_reason(dest_last))
    finally:
        if not ahead.called:
            ahead.cancel()
            ahead.addErrback(lambda f: None)
    return CopyResult(copied, size, dest_last)


async def _put_run(messages: List[bytes], body: Optional[bytes], dest: KafClient,
                   dest_log: str, start: int, expect: int) -> int:
    """
    Put C{messages} (numbered from C{start}) as one batch, or, when the
    destination refuses a batch that large (a NATS engine takes at most
    1,000 messages a batch), as two halves, each atomic.
    """
    try:
        return await dest.put_kaf_body(dest_log, body if body is not None
                                       else kaf_batch(messages), expect=expect, first=start)
    except TooLarge:
        if len(messages) < 2:
            raise
    half = len(messages) // 2
    mid = await _put_run(messages[:half], None, dest, dest_log, start, expect)
    return await _put_run(messages[half:], None, dest, dest_log, start + half, mid)


def _run_length(messages: List[Tuple[int, bytes]], first: int) -> int:
    """How many of C{messages} are numbered C{first}, C{first + 1}, … without a gap."""
    n = 0
    for num, _ in messages:
        if num != first + n:
            break
        n += 1
    return n


def _gap_reason(last: int) -> str:
    return ("copy: the source has no message %d (archived, or a gap in its numbers); "
            "a copy keeps message numbers, so it stops after %d" % (last + 1, last))


def split_log_url(url: str) -> Tuple[str, str]:
    """C{http://host:port[/prefix]/LOG} → (server URL, log name)."""
    base, _, log = url.rstrip("/").rpartition("/")
    if not log or not base or base.endswith(":/") or base.endswith(":"):
        raise ValueError("%r is not SERVER_URL/LOG" % (url,))
    return base, log


__all__ = [
    "KafClient", "Follower", "GetResult", "CopyResult", "copy_log", "parse_kaf_reply",
    "kaf_batch", "batches", "split_log_url", "KafClientError", "KafConnectionError",
    "KafProtocolError", "KafHTTPError", "BadRequest", "Forbidden", "NotFound",
    "ExpectFailed", "TooLarge", "ServerError", "CopyRefused", "DEFAULT_URL",
]
