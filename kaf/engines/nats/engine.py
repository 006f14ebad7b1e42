"""
The NATS JetStream engine (C{--store nats://HOST:PORT[,HOST:PORT...]}).

Each log is a stream (L{kaf.engines.nats.names}): its messages are the
stream's messages, its numbers their sequence numbers, consecutive from 1.
How each operation of L{kaf.engine.ILog} maps:

  - put: a publish with an ack, the number from the ack; C{expect=N} is
    C{Nats-Expected-Last-Sequence}; every publish carries a
    C{Nats-Msg-Id} (the client's C{Kaf-Msg-Id}, or one of Kaf's), so a
    publish retried after a dropped connection is not appended twice;
  - a batch: one JetStream atomic batch (all or none), C{expect} on its
    first message;
  - get: a batched direct get (C{$JS.API.DIRECT.GET}), the same reply bytes
    as the file engine's;
  - wait: a headers-only push consumer on the log, started at the number
    waited for, shared by the log's waiters: woken by the server, not by
    polling;
  - archive upto=N: the messages up to N are copied into an archive stream
    named as SPEC 3.3 names archive files, then purged from the live
    stream; a crash at any step leaves every message in one or both, and
    the live stream keeps its numbering.

Durability is the cluster's: a put is answered once the stream's replicas
have it (R3 by default).  The NATS client runs on asyncio in a thread of
its own (L{kaf.engines.nats.bridge}); every state of a log here is touched
only in the reactor thread.
"""
from __future__ import annotations

import asyncio
import calendar
import contextvars
import json
import os
import ssl
import time
from itertools import accumulate
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kaf import _format
from kaf.engine import (EMPTY, Duplicate, IEngine, ILog, Reply, Slice, Summary, check_name,
                        name_problem)
from kaf.engines.nats import names
from kaf.engines.nats.bridge import Bridge
from kaf.errors import EngineUnavailable, ExpectMismatch, KafError, MessageTooLarge, UnknownLog

#: JetStream's error codes Kaf answers.
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
WRONG_LAST_SEQUENCE = 10071
NO_MESSAGE_FOUND = 10037

BATCH_DUPLICATE_ID = 10201

#: Seconds an operation may take, retries included, before Kaf answers 503.
DEFAULT_TIMEOUT = 1.8

#: Seconds between a wait consumer's heartbeats while the log is idle; a
#: consumer unheard of for three of them (its server went away) is made again.
HEARTBEAT = 5.0

#: Seconds one request may wait for its answer before it is sent again.
ATTEMPT = 0.6

#: When the operation under way gives up (time.monotonic()).
_deadline: "contextvars.ContextVar[float]" = contextvars.ContextVar("deadline", default=0.0)


class JetStreamError(KafError):
    """
    An error reply of the JetStream API.  One the engine does not turn into
    another answer reaches the client as 502, naming the cluster's reason.
    """

    status = 502

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__("the NATS cluster refused it: %s (%d/%d)"
                         % (description, code, err_code))
        self.code = code
        self.err_code = err_code
        self.description = description


#: JetStream errors that pass: a server of the stream's group is away or not
#: caught up (10005 "no suitable peers for placement", 10008 "JetStream
#: system temporarily unavailable"), or too much is under way.
_TRANSIENT = frozenset([10005, 10008])


def _transient(e: JetStreamError) -> bool:
    return e.code in (503, 429) or e.err_code in _TRANSIENT


class _Unreachable(Exception):
    """No reply from the cluster in time (a timeout, no responders, a lost connection)."""


def _raise_error(reply: Dict[str, Any]) -> Dict[str, Any]:
    error = reply.get("error")
    if error:
        raise JetStreamError(int(error.get("code", 0)), int(error.get("err_code", 0)),
                             str(error.get("description", "")))
    return reply


def _archive_time(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H_%M_%SZ", time.gmtime(now))


def _status(msg: Any) -> Optional[str]:
    headers = msg.headers or {}
    return headers.get("Status")


class _Client:
    """
    What the engine asks of the cluster, as coroutines on the bridge's loop:
    the JetStream API spoken as JSON requests over one nats-py connection.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.nc: Any = None
        self.max_payload = 1 << 20
        self.servers = 1

    async def connect(self, urls: List[str], tls: Optional[ssl.SSLContext],
                      creds: Optional[str], on_event: Callable[[str], None]) -> None:
        import nats

        async def error_cb(e: Exception) -> None:
            on_event("NATS connection error: %s" % (e,))

        async def disconnected_cb() -> None:
            on_event("NATS connection lost; reconnecting")

        async def reconnected_cb() -> None:
            on_event("NATS connection restored (%s)" % (self.nc.connected_url.netloc,))

        options: Dict[str, Any] = dict(
            servers=urls, name="kaf", connect_timeout=self.timeout, allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=error_cb,
            disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
            pending_size=64 << 20)
        if tls is not None:
            options["tls"] = tls
        if creds is not None:
            options["user_credentials"] = creds
        self.nc = await nats.connect(**options)
        self.max_payload = self.nc.max_payload
        info = self.nc._server_info or {}
        self.servers = max(1, len(set(info.get("connect_urls") or [])))
        # JetStream must answer: an account without it is not a store.
        await self.api("$JS.API.INFO", {})

    async def close(self) -> None:
        if self.nc is not None:
            # What is under way may finish, for a moment: a cluster that is
            # away must not hold up a shutdown.
            try:
                await asyncio.wait_for(self.nc.drain(), self.timeout)
            except Exception:
                pass
            if not self.nc.is_closed:
                await self.nc.close()

    async def request(self, subject: str, payload: bytes,
                      headers: Optional[Dict[str, str]] = None,
                      timeout: Optional[float] = None) -> Any:
        import nats.errors

        if timeout is None:
            deadline = _deadline.get()
            timeout = max(0.05, deadline - time.monotonic()) if deadline else self.timeout
        try:
            return await self.nc.request(subject, payload, timeout=timeout, headers=headers)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError, asyncio.TimeoutError) as e:
            raise _Unreachable(type(e).__name__ if not str(e) else str(e))

    async def api(self, subject: str, body: Any,
                  timeout: Optional[float] = None) -> Dict[str, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        if timeout is None and _deadline.get():
            # An API request that a stream being elected a leader (or just
            # made) leaves unanswered is sent again (see NatsEngine.call),
            # not waited for until the deadline.  Publishes and reads wait
            # the whole deadline: sent again under load, they would double it.
            timeout = max(0.05, min(ATTEMPT, _deadline.get() - time.monotonic()))
        msg = await self.request(subject, payload, timeout=timeout)
        if not msg.data:
            raise _Unreachable("empty reply to %s" % (subject,))
        return _raise_error(json.loads(msg.data))

    async def publish(self, subject: str, data: bytes,
                      headers: Dict[str, str]) -> Dict[str, Any]:
        msg = await self.request(subject, data, headers)
        if _status(msg) == "503":
            raise _Unreachable("no responders")
        return _raise_error(json.loads(msg.data))

    async def _pages(self, api: str, key: str = "streams") -> List[Any]:
        """Every item of a paged JetStream listing of Kaf's streams."""
        out: List[Any] = []
        while True:
            reply = await self.api(api, {"offset": len(out),
                                         "subject": names.SUBJECT_PREFIX + ">"})
            got = reply.get(key) or []
            out.extend(got)
            if not got or len(out) >= int(reply.get("total", 0)):
                return out

    async def stream_names(self) -> List[str]:
        """The name of every Kaf stream (pages of 1,024)."""
        return await self._pages("$JS.API.STREAM.NAMES")

    async def stream_list(self) -> List[Dict[str, Any]]:
        """The info of every Kaf stream (pages of 256)."""
        return await self._pages("$JS.API.STREAM.LIST")

    async def info(self, stream: str) -> Optional[Dict[str, Any]]:
        try:
            return await self.api("$JS.API.STREAM.INFO." + stream, None)
        except JetStreamError as e:
            if e.err_code == STREAM_NOT_FOUND:
                return None
            raise

    async def create(self, config: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return await self.api("$JS.API.STREAM.CREATE." + config["name"], config,
                                  self.timeout)
        except JetStreamError as e:
            if e.err_code != STREAM_NAME_IN_USE:
                raise
            # Made by another front end in the meantime (or by us, and the
            # reply was lost): the stream is there, which is what was asked.
            found = await self.info(config["name"])
            if found is None:
                raise
            return found

    async def purge(self, stream: str, keep_from: int) -> Dict[str, Any]:
        return await self.api("$JS.API.STREAM.PURGE." + stream, {"seq": keep_from},
                              self.timeout)

    async def direct_get(self, stream: str, from_num: int, limit: int,
                         max_bytes: int) -> Tuple[List[int], List[bytes], Optional[int]]:
        """
        The messages from C{from_num} (at most C{limit}, about C{max_bytes}),
        and the stream's last number when the reply tells it.
        """
        nc = self.nc
        inbox = nc.new_inbox()
        done: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        nums: List[int] = []
        datas: List[bytes] = []
        last: List[Optional[int]] = [None]

        async def got(msg: Any) -> None:
            if done.done():
                return
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is None:
                seq = int(headers["Nats-Sequence"])
                nums.append(seq)
                datas.append(msg.data)
                pending = headers.get("Nats-Num-Pending")
                if pending is not None:
                    last[0] = seq + int(pending)
                return
            if status == "204" or status == "404":
                done.set_result(None)
            elif status == "503":
                # No stream answers (none by that name, or none now): the
                # caller asks the stream's info to tell which.
                done.set_exception(JetStreamError(404, 0, "no responders"))
            elif status == "408":
                done.set_exception(_Unreachable("direct get: status %s" % (status,)))
            else:
                done.set_exception(JetStreamError(int(status), 0,
                                                  headers.get("Description", "")))

        sub = await nc.subscribe(inbox, cb=got)
        try:
            body = {"seq": from_num, "batch": limit}
            if max_bytes:
                body["max_bytes"] = max_bytes
            await nc.publish("$JS.API.DIRECT.GET." + stream, json.dumps(body).encode(),
                             reply=inbox)
            left = _deadline.get() - time.monotonic() if _deadline.get() else self.timeout
            try:
                await asyncio.wait_for(done, max(0.05, left))
            except asyncio.TimeoutError:
                raise _Unreachable("direct get: no reply in time")
        finally:
            await sub.unsubscribe()
        return nums, datas, last[0]

    async def batch(self, subject: str, messages: List[bytes],
                    first_headers: Dict[str, str], batch_id: str) -> Dict[str, Any]:
        """An atomic batch publish: every message or none."""
        nc = self.nc
        n = len(messages)
        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "1"}
        headers.update(first_headers)
        if n == 1:
            headers["Nats-Batch-Commit"] = "1"
            return await self.publish(subject, messages[0], headers)
        # The first message is answered (empty, or an error); the middle
        # ones are not; the commit is answered with the batch's ack.
        msg = await self.request(subject, messages[0], headers)
        if _status(msg) == "503":
            raise _Unreachable("no responders")
        if msg.data:
            _raise_error(json.loads(msg.data))
        for i in range(1, n - 1):
            await nc.publish(subject, messages[i], headers={
                "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i + 1)})
        return await self.publish(subject, messages[-1], {
            "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n),
            "Nats-Batch-Commit": "1"})

    async def last_on(self, stream: str, subject: str) -> Optional[Any]:
        """The last message of C{stream} on C{subject}, or None."""
        msg = await self.request("$JS.API.DIRECT.GET." + stream,
                                 json.dumps({"last_by_subj": subject}).encode())
        if _status(msg) is not None:
            return None
        return msg

    async def message(self, stream: str, seq: int) -> Optional[Any]:
        """Message C{seq} of C{stream}, or None."""
        msg = await self.request("$JS.API.DIRECT.GET." + stream,
                                 json.dumps({"seq": seq}).encode())
        if _status(msg) is not None:
            return None
        return msg

    async def watch(self, stream: str, start: int, on_seq: Callable[[int], None],
                    on_alive: Callable[[], None]) -> Tuple[Any, str]:
        """
        A headers-only push consumer of C{stream} from C{start}: C{on_seq} is
        called (in the loop thread) with each new message's number, and
        C{on_alive} with each of the server's idle heartbeats (every
        L{HEARTBEAT} seconds without a message).
        """
        nc = self.nc
        inbox = nc.new_inbox()

        async def got(msg: Any) -> None:
            reply = msg.reply or ""
            if reply.startswith("$JS.ACK."):
                tokens = reply.split(".")
                # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
                # or, with a domain and an account hash before the stream
                # (and perhaps a random token after): the stream seq is token 7.
                seq = int(tokens[5] if len(tokens) == 9 else tokens[7])
                on_seq(seq)
            elif msg.headers and msg.headers.get("Status") == "100":
                if msg.reply:
                    await nc.publish(msg.reply, b"")  # flow control
                on_alive()

        sub = await nc.subscribe(inbox, cb=got)
        config = {"deliver_subject": inbox, "deliver_policy": "by_start_sequence",
                  "opt_start_seq": start, "ack_policy": "none", "headers_only": True,
                  "mem_storage": True, "num_replicas": 1,
                  "inactive_threshold": int(30e9), "max_deliver": 1,
                  "idle_heartbeat": int(HEARTBEAT * 1e9),
                  "replay_policy": "instant"}
        try:
            reply = await self.api("$JS.API.CONSUMER.CREATE." + stream,
                                   {"stream_name": stream, "config": config})
        except BaseException:
            await sub.unsubscribe()
            raise
        return sub, reply["name"]

    async def unwatch(self, stream: str, sub: Any, consumer: str) -> None:
        await sub.unsubscribe()
        try:
            await self.api("$JS.API.CONSUMER.DELETE.%s.%s" % (stream, consumer), None)
        except (JetStreamError, _Unreachable):
            pass  # it goes by itself once inactive


def _slice(nums: List[int], datas: List[bytes]) -> Slice:
    if not nums:
        return EMPTY
    span, lengths = _format.records_and_lengths(nums, datas)
    ends = list(accumulate(lengths))
    starts = [e - n for e, n in zip(ends, lengths)]
    return Slice(span, 0, nums, starts, ends, True)


class _Waiter:
    __slots__ = ("from_num", "d", "timer")

    def __init__(self, from_num: int, d: "Deferred[None]", timer: Any) -> None:
        self.from_num = from_num
        self.d = d
        self.timer = timer


@implementer(ILog)
class NatsLog:
    """One log: a stream of the cluster."""

    log = Logger()

    def __init__(self, engine: "NatsEngine", name: str) -> None:
        self.engine = engine
        self.name = name
        self.stream = names.stream(name)
        self.subject = names.subject(name)
        self.clock = engine.reactor
        #: The last number seen (an ack, a read, the consumer).
        self.last = 0
        #: True once the stream is known to exist.
        self.exists = False
        self.generation = object()
        self.archived = 0
        self.served = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.gets = self.puts = self.errs = 0
        self._totals = [0, 0, 0]
        self._summary: Optional[Summary] = None
        self._creating: Optional["Deferred[Any]"] = None
        #: The puts waiting for the stream to be made.
        self._made_for: List["Deferred[Any]"] = []
        self._waiters: List[_Waiter] = []
        self._watch: Optional[Tuple[Any, str]] = None
        self._watching: Optional["Deferred[Any]"] = None
        self._watch_from = 0
        self._seen = 0
        self._unwatch_timer: Any = None
        #: When the consumer was last heard of, and the timer that checks it.
        self._heard = 0.0
        self._checking: Any = None

    # -- what the web layer and the stats read --------------------------------

    @property
    def closing(self) -> bool:
        return self.engine.closing

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def known(self) -> bool:
        return self._summary is not None

    def summary(self) -> Summary:
        return self._summary or Summary(None, self.last, 0, 0, None)  # type: ignore[arg-type]

    def described(self) -> "Deferred[None]":
        def seen(info: Optional[Dict[str, Any]]) -> None:
            if info is None:
                self._summary = Summary(None, 0, 0, 0, None)  # type: ignore[arg-type]
                return
            self._noted(info)

        return self.engine.call(lambda c: c.info(self.stream), "logs").addCallback(seen)

    def _noted(self, info: Dict[str, Any]) -> None:
        state = info.get("state") or {}
        last = int(state.get("last_seq", 0))
        count = int(state.get("messages", 0))
        first = int(state.get("first_seq", 0)) if count else None
        self.exists = True
        self.last = max(self.last, last)
        self._summary = Summary(first, last, count, int(state.get("bytes", 0)),  # type: ignore
                                None)
        self.engine.known(self)

    def reset_counters(self) -> Tuple[int, int, int]:
        out = (self.gets, self.puts, self.errs)
        for i, n in enumerate(out):
            self._totals[i] += n
        self.gets = self.puts = self.errs = 0
        return out

    def totals(self) -> Tuple[int, int, int]:
        t = self._totals
        return (t[0] + self.gets, t[1] + self.puts, t[2] + self.errs)

    # -- writes ---------------------------------------------------------------

    def _ensure(self) -> "Deferred[Any]":
        """A Deferred that fires once the stream exists (made once for all waiting puts)."""
        if self.exists:
            return succeed(None)
        d: "Deferred[Any]" = Deferred()
        self._made_for.append(d)
        if self._creating is None:
            config = self.engine.stream_config(self.stream, self.subject, self.name, None)

            def done(result: Any) -> None:
                self._creating = None
                waiting, self._made_for = self._made_for, []
                if not isinstance(result, Failure):
                    self._noted(result)
                for w in waiting:
                    if isinstance(result, Failure):
                        w.errback(result)
                    else:
                        w.callback(None)

            self._creating = self.engine.call(lambda c: c.create(config), "put")
            self._creating.addBoth(done)
        return d

    def put(self, messages: List[bytes], expect: Optional[int] = None,
            first: Optional[int] = None, msg_id: Optional[str] = None) -> "Deferred[int]":
        engine = self.engine
        if engine.closing:
            return _fail(EngineUnavailable("put: the server is shutting down"))
        size = max(map(len, messages))
        if size > engine.client.max_payload - 1024:
            return _fail(MessageTooLarge(
                "put: a message of %d bytes is over the NATS cluster's limit of %d"
                % (size, engine.client.max_payload - 1024)))
        if len(messages) > 1 and len(messages) > engine.max_batch:
            return _fail(MessageTooLarge(
                "put: a batch of %d messages is over the NATS engine's limit of %d messages"
                % (len(messages), engine.max_batch)))
        d = self._ensure()
        d.addCallback(lambda _: self._numbered(first, expect) if first is not None else None)
        d.addCallback(lambda _: self._publish(messages, expect, first, msg_id))
        return d

    def _numbered(self, first: int, expect: Optional[int]) -> Any:
        """
        Let the next put be numbered C{first} (C{first=}), or refuse it: a
        purge up to C{first} moves an empty stream's numbering on.
        C{expect} is checked against the numbers before.
        """
        def check(info: Optional[Dict[str, Any]]) -> Any:
            state = (info or {}).get("state") or {}
            last = int(state.get("last_seq", 0))
            count = int(state.get("messages", 0))
            self.last = max(self.last, last)
            if expect is not None and expect != last:
                raise ExpectMismatch("put: expected last message %d, but the log's last is %d"
                                     % (expect, last), last)
            if first == last + 1:
                return None
            if first <= last or count:
                raise ExpectMismatch("put: cannot number from %d: the log's last is %d%s" % (
                    first, last, "" if first <= last else " and it holds messages"), last)
            return self.engine.call(lambda c: c.purge(self.stream, first), "put")

        return self.engine.call(lambda c: c.info(self.stream), "put").addCallback(check)

    def _publish(self, messages: List[bytes], expect: Optional[int], first: Optional[int],
                 msg_id: Optional[str]) -> "Deferred[int]":
        engine = self.engine
        headers: Dict[str, str] = {}
        # Kaf's own id when the client gave none: a publish retried after a
        # lost connection is then not written twice.
        own = msg_id is None
        nats_id = ("k:" + os.urandom(12).hex()) if own else ("c:" + str(msg_id))
        headers["Nats-Msg-Id"] = nats_id
        # With first=, expect was checked before the numbering moved on.
        wanted = (first - 1) if first is not None else expect
        if wanted is not None:
            headers["Nats-Expected-Last-Sequence"] = str(wanted)
        n = len(messages)
        stream = self.stream
        if n == 1:
            subject, data = self.subject, messages[0]

            async def publish(c: _Client) -> Any:
                try:
                    return await c.publish(subject, data, headers)
                except JetStreamError as e:
                    if e.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    # The id may be there already (a retry, or the client's
                    # repeat): a single stream checks the expected number
                    # before the id.  The message after the expected one says.
                    found = await c.message(stream, int(wanted or 0) + 1)
                    h = (found.headers or {}) if found is not None else {}
                    if (h.get("Nats-Msg-Id") == nats_id and _age(h.get("Nats-Time-Stamp"))
                            <= max(engine.dedupe_window, 5.0)):
                        return {"seq": int(h["Nats-Sequence"]), "duplicate": True}
                    raise
        else:
            # On a subject of its id: a repeat (refused as a whole by the
            # server) finds the first one's numbers by its last message.
            subject = names.id_subject(self.name, nats_id)

            async def publish(c: _Client) -> Any:
                try:
                    return await c.batch(subject, messages, headers, nats_id[:64])
                except JetStreamError as e:
                    if e.err_code not in (BATCH_DUPLICATE_ID, WRONG_LAST_SEQUENCE):
                        raise
                    found = await c.last_on(stream, subject)
                    if found is None:
                        raise
                    h = found.headers or {}
                    if (e.err_code == WRONG_LAST_SEQUENCE and _age(h.get("Nats-Time-Stamp"))
                            > max(engine.dedupe_window, 5.0)):
                        raise  # written once, but before the dedupe window
                    return {"seq": int(h["Nats-Sequence"]), "duplicate": True,
                            "count": int(h.get("Nats-Batch-Sequence", n))}

        d = engine.call(publish, "put")

        def acked(ack: Dict[str, Any]) -> int:
            seq = int(ack["seq"])
            self.last = max(self.last, seq)
            self._summary = None  # read again when listed
            if ack.get("duplicate") and not own:
                return Duplicate(seq, int(ack.get("count", n)))
            if not ack.get("duplicate"):
                self.puts += n  # messages, as the file engine counts them
                self.bytes_in += sum(map(len, messages))
            self._wake(seq)
            return seq

        def refused(f: Failure) -> Failure:
            self.errs += 1
            e = f.value
            if isinstance(e, JetStreamError) and e.err_code == WRONG_LAST_SEQUENCE:
                last = _last_in(e.description)
                if first is not None:
                    raise ExpectMismatch("put: cannot number from %d: the log's last is %d"
                                         % (first, last), last)
                raise ExpectMismatch("put: expected last message %d, but the log's last is %d"
                                     % (int(wanted or 0), last), last)
            if isinstance(e, JetStreamError) and e.code == 400 and "batch" in e.description:
                raise MessageTooLarge("put: the NATS cluster refused the batch: %s"
                                      % (e.description,))
            return f

        return d.addCallbacks(acked, refused)

    # -- reads ----------------------------------------------------------------

    def get(self, from_num: int, limit: int, max_bytes: int, pieces: bool = False
            ) -> "Deferred[Reply]":
        stream = self.stream

        def got(found: Tuple[List[int], List[bytes], Optional[int]]) -> Any:
            nums, datas, last = found
            if nums:
                self.exists = True
                self.last = max(self.last, last if last is not None else nums[-1])
                self.gets += 1
                self.served += len(nums)
                s = _slice(nums, datas)
                self.bytes_out += len(s.span)
                return Reply(s, self.last, True)
            return self.engine.call(lambda c: c.info(stream), "get").addCallback(empty)

        def empty(info: Optional[Dict[str, Any]]) -> Reply:
            self.gets += 1
            if info is None:
                return Reply(EMPTY, 0, False)
            self._noted(info)
            return Reply(EMPTY, self.last, True)

        def missing(f: Failure) -> Any:
            e = f.value
            if isinstance(e, JetStreamError) and e.code == 404:
                return self.engine.call(lambda c: c.info(stream), "get").addCallback(empty)
            return f

        # No stream was made yet for this name here: the reply may still
        # come (another front end made it).
        return self.engine.call(
            lambda c: c.direct_get(stream, from_num, limit, max_bytes), "get"
        ).addCallbacks(got, missing)

    # -- waits ----------------------------------------------------------------

    def wait(self, from_num: int, timeout: Optional[float]) -> "Deferred[None]":
        # The waits on one log share one consumer: a log object made for
        # one request hands its wait to the log the engine keeps.
        owner = self.engine._logs.setdefault(self.name, self)
        if owner is not self:
            return owner.wait(from_num, timeout)
        if self.engine.closing or (self._watch is not None and self._seen >= from_num):
            return succeed(None)

        def cancel(d: "Deferred[None]") -> None:
            self._drop(waiter)

        d: "Deferred[None]" = Deferred(cancel)
        timer = None
        if timeout is not None:
            timer = self.clock.callLater(timeout, self._timed_out, d)
        waiter = _Waiter(from_num, d, timer)
        self._waiters.append(waiter)
        if self._unwatch_timer is not None and self._unwatch_timer.active():
            self._unwatch_timer.cancel()
            self._unwatch_timer = None
        if self._watch is not None and from_num < self._watch_from:
            # Waits for a number the consumer started after (an archive ran):
            # the reader looks again at once.
            self._fire(waiter)
        elif self._watch is None and self._watching is None:
            self._start_watch(from_num)
        return d

    def _timed_out(self, d: "Deferred[None]") -> None:
        for w in self._waiters:
            if w.d is d:
                w.timer = None
                self._fire(w)
                return

    def _drop(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        if not self._waiters:
            self._stop_watch_later()

    def _fire(self, waiter: _Waiter) -> None:
        self._drop(waiter)
        waiter.d.callback(None)

    def _wake(self, seq: int, heard: bool = False) -> None:
        if heard:
            self._heard = self.clock.seconds()
        if seq > self._seen and self._watch is not None:
            self._seen = seq
        for w in [w for w in self._waiters if w.from_num <= seq]:
            self._fire(w)

    def _start_watch(self, from_num: int) -> None:
        engine = self.engine
        stream = self.stream
        reactor = self.clock

        def on_seq(seq: int) -> None:  # loop thread
            reactor.callFromThread(self._wake, seq, True)

        def on_alive() -> None:  # loop thread
            reactor.callFromThread(self._alive)

        def started(watch: Tuple[Any, str]) -> None:
            self._watching = None
            if not self._waiters or engine.closing:
                engine.call(lambda c: c.unwatch(stream, *watch), "wait")
                return
            self._watch = watch
            self._watch_from = from_num
            self._heard = reactor.seconds()
            if self._checking is None or not self._checking.active():
                self._checking = reactor.callLater(HEARTBEAT, self._check_watch)

        def failed(f: Failure) -> None:
            # No stream yet (a wait for a log's first message), or the
            # cluster is away: look again soon; the waiters' own timeouts
            # still answer them.
            self._watching = None
            if self._waiters and not engine.closing:
                first = min(w.from_num for w in self._waiters)
                self._watching = Deferred()
                reactor.callLater(0.25, self._retry_watch, first)

        self._watching = engine.call(lambda c: c.watch(stream, from_num, on_seq, on_alive),
                                     "wait")
        self._watching.addCallbacks(started, failed)

    def _alive(self) -> None:
        self._heard = self.clock.seconds()

    def _check_watch(self) -> None:
        """Make the consumer again if its server has gone silent (it went away)."""
        self._checking = None
        watch = self._watch
        if watch is None:
            return
        if self.clock.seconds() - self._heard < 3 * HEARTBEAT:
            self._checking = self.clock.callLater(HEARTBEAT, self._check_watch)
            return
        self._watch = None
        stream = self.stream
        self.engine.call(lambda c: c.unwatch(stream, *watch), "wait").addErrback(
            lambda f: None)
        if self._waiters and self._watching is None and not self.engine.closing:
            self.log.info("log {name}: its wait consumer went silent; making it again",
                          name=self.name)
            self._start_watch(max(self._seen + 1, min(w.from_num for w in self._waiters)))

    def _retry_watch(self, from_num: int) -> None:
        self._watching = None
        if self._waiters and self._watch is None:
            # It may have been made meanwhile: the first message may be there.
            self._start_watch(from_num)

    def _stop_watch_later(self) -> None:
        if self._watch is None or (self._unwatch_timer is not None
                                   and self._unwatch_timer.active()):
            return
        self._unwatch_timer = self.clock.callLater(5.0, self._stop_watch)

    def _stop_watch(self) -> None:
        self._unwatch_timer = None
        watch = self._watch
        if watch is None or self._waiters:
            return
        self._watch = None
        self._seen = 0
        if self._checking is not None and self._checking.active():
            self._checking.cancel()
        self._checking = None
        stream = self.stream
        self.engine.call(lambda c: c.unwatch(stream, *watch), "wait").addErrback(
            lambda f: None)

    def close(self) -> None:
        for w in list(self._waiters):
            self._fire(w)
        if self._unwatch_timer is not None and self._unwatch_timer.active():
            self._unwatch_timer.cancel()
        self._stop_watch()

    # -- archive --------------------------------------------------------------

    def archive(self, upto: int) -> "Deferred[Tuple[Optional[str], int, int]]":
        engine = self.engine

        def start(info: Optional[Dict[str, Any]]) -> Any:
            if info is None:
                raise UnknownLog("archive: no log named %r" % (self.name,))
            self._noted(info)
            state = info.get("state") or {}
            count = int(state.get("messages", 0))
            first = int(state.get("first_seq", 0))
            last = int(state.get("last_seq", 0))
            if not count or upto < first:
                return (None, upto, count)
            used = min(upto, last)
            return engine.call(lambda c: engine.archive_stream(c, self, first, used),
                               "archive").addCallback(copied, used, last)

        def copied(archive: Optional[str], used: int, last: int
                   ) -> Tuple[Optional[str], int, int]:
            if archive is None:
                return (None, used, last - used)
            self.archived += 1
            self.generation = object()
            self._summary = None
            return (archive, used, last - used)

        return engine.call(lambda c: c.info(self.stream), "archive").addCallback(start)


def _age(stamp: Optional[str]) -> float:
    """Seconds since a C{Nats-Time-Stamp} (RFC 3339, nanoseconds); infinite if unreadable."""
    if not stamp:
        return float("inf")
    try:
        day, _, clock = stamp.rstrip("Z").partition("T")
        whole, _, fraction = clock.partition(".")
        then = calendar.timegm(time.strptime(day + "T" + whole, "%Y-%m-%dT%H:%M:%S"))
        return time.time() - then - float("0." + (fraction or "0"))
    except ValueError:
        return float("inf")


def _last_in(description: str) -> int:
    """The number in JetStream's "wrong last sequence: N"."""
    digits = "".join(ch if ch.isdigit() else " " for ch in description).split()
    return int(digits[-1]) if digits else 0


def _fail(error: Exception) -> "Deferred[Any]":
    d: "Deferred[Any]" = Deferred()
    d.errback(Failure(error))
    return d


@implementer(IEngine)
class NatsEngine:
    """Every log of one NATS cluster."""

    log = Logger()

    def __init__(self, urls: List[str], reactor: Any, replicas: int = 3,
                 tls: Optional[ssl.SSLContext] = None, creds: Optional[str] = None,
                 dedupe_window: float = 120.0, timeout: float = DEFAULT_TIMEOUT,
                 max_batch: int = 1000) -> None:
        self.urls = urls
        self.reactor = reactor
        self.requested_replicas = replicas
        self.replicas = replicas
        self.tls = tls
        self.creds = creds
        self.dedupe_window = dedupe_window
        self.timeout = timeout
        self.max_batch = max_batch
        self.client = _Client(timeout)
        self.bridge = Bridge(reactor)
        self.closing = False
        self._logs: Dict[str, NatsLog] = {}
        self._events: List[str] = []

    def describe(self) -> str:
        return "NATS JetStream at %s (R%d), its client on %s" % (
            ",".join(self.urls), self.replicas, self.bridge.describe())

    # -- start and stop -------------------------------------------------------

    def load(self) -> None:
        """Connect and list the logs; raise L{EngineUnavailable} when the cluster is not there."""
        self.bridge.start()
        client = self.client

        def event(line: str) -> None:
            self.reactor.callFromThread(self.log.info, "{line}", line=line)

        async def start() -> List[str]:
            await client.connect(self.urls, self.tls, self.creds, event)
            await client.nc.subscribe("$JS.EVENT.ADVISORY.STREAM.CREATED.*", cb=self._created)
            found = []
            for stream in await client.stream_names():
                name = names.log_of(stream)
                if name is None and stream.startswith(names.STREAM_PREFIX):
                    name = await self._named(client, stream)
                if name is not None:
                    found.append(name)
            return found

        try:
            streams = self.bridge.wait(start, self.timeout * 3 + 1)
        except Exception as e:
            self.bridge.wait(client.close, self.timeout)
            self.bridge.stop()
            raise EngineUnavailable("cannot use the NATS cluster at %s: %s"
                                    % (",".join(self.urls), e or type(e).__name__))
        self.replicas = max(1, min(self.requested_replicas, client.servers))
        for name in streams:
            self._exists(name)

    async def _named(self, client: _Client, stream: str) -> Optional[str]:
        """The log of a stream named by a hash: its metadata says."""
        info = await client.info(stream)
        name = (((info or {}).get("config") or {}).get("metadata") or {}).get("kaf_log")
        if name is not None and names.stream(name) == stream:
            return str(name)
        return None

    async def _created(self, msg: Any) -> None:  # loop thread
        stream = msg.subject.rsplit(".", 1)[-1]
        name = names.log_of(stream)
        if name is None and stream.startswith(names.STREAM_PREFIX):
            name = await self._named(self.client, stream)
        if name is not None:
            self.reactor.callFromThread(self._exists, name)

    def _exists(self, name: str) -> None:
        if name_problem(name) is None:
            self._log(name).exists = True

    def close(self) -> "Deferred[Any]":
        self.closing = True
        for log in list(self._logs.values()):
            log.close()
        d = self.bridge.call(self.client.close)
        d.addErrback(lambda f: None)

        def stopped(_: Any) -> None:
            self.bridge.stop()

        return d.addCallback(stopped)

    # -- calls into the cluster -----------------------------------------------

    def call(self, make: Callable[[_Client], Any], op: str,
             retry: bool = True) -> "Deferred[Any]":
        """
        C{make(client)} run on the loop; what the cluster fails to answer
        becomes a 503 with Retry-After.  With C{retry}, a publish that got
        no answer is sent again (with its message id, so never written
        twice) until C{timeout} has passed.
        """
        client = self.client
        timeout = self.timeout

        async def attempt() -> Any:
            deadline = time.monotonic() + timeout
            _deadline.set(deadline)
            while True:
                try:
                    return await make(client)
                except (_Unreachable, JetStreamError) as e:
                    if isinstance(e, JetStreamError) and not _transient(e):
                        raise
                    if not retry or time.monotonic() + 0.1 >= deadline:
                        raise
                    await asyncio.sleep(0.05)

        def unreachable(f: Failure) -> Failure:
            if f.check(_Unreachable):
                raise EngineUnavailable(
                    "%s: the NATS cluster did not answer in %.0f s (%s); try again"
                    % (op, self.timeout, f.getErrorMessage()))
            if f.check(JetStreamError) and _transient(f.value):
                raise EngineUnavailable("%s: the NATS cluster cannot serve it now (%s); "
                                        "try again" % (op, f.value.description))
            return f

        return self.bridge.call(attempt).addErrback(unreachable)

    def stream_config(self, stream: str, subject: str, name: str,
                      first: Optional[int]) -> Dict[str, Any]:
        config: Dict[str, Any] = {
            "name": stream, "subjects": [subject, subject + ".i.*"], "retention": "limits",
            "storage": "file", "num_replicas": self.replicas, "discard": "old",
            "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1,
            # A window of at least 5 s even when --dedupe-window is 0: Kaf's
            # own ids keep a publish retried after a lost connection single.
            "duplicate_window": int(max(self.dedupe_window, 5.0) * 1e9),
            "allow_direct": True, "allow_atomic": True, "deny_delete": True,
            "metadata": {"kaf_log": name},
        }
        if first is not None and first > 1:
            config["first_seq"] = first
        return config

    async def archive_stream(self, client: _Client, log: NatsLog, first: int,
                             upto: int) -> Optional[str]:
        """
        Copy messages C{first}..C{upto} of C{log} into a new archive stream
        (same numbers), then purge them from the live stream: the archive
        path of SPEC 3.3.  Runs on the loop.
        """
        base = "--%s--%s" % (log.name, _archive_time(time.time()))
        archive, n = base, 0
        while await client.info(names.stream(archive)) is not None:
            n += 1
            archive = "%s_%d" % (base, n)
        subject = names.subject(archive)
        config = self.stream_config(names.stream(archive), subject, archive, first)
        config["deny_delete"] = False
        await client.create(config)
        at = first
        copied = 0
        while at <= upto:
            # Each step has the time of one operation: a large archive
            # takes many.
            _deadline.set(time.monotonic() + self.timeout)
            nums, datas, _ = await client.direct_get(log.stream, at, min(1000, upto - at + 1),
                                                     1 << 20)
            nums_datas = [(s, m) for s, m in zip(nums, datas) if s <= upto]
            if not nums_datas:
                break
            # Published in order on one connection: numbered in order; each
            # expects the one before it, so nothing is written twice.
            acks = await asyncio.gather(*[
                client.publish(subject, m, {"Nats-Expected-Last-Sequence": str(s - 1),
                                            "Nats-Msg-Id": "a:%d" % (s,)})
                for s, m in nums_datas])
            for (s, _), ack in zip(nums_datas, acks):
                if int(ack["seq"]) != s:
                    raise JetStreamError(500, 0, "archive copy numbered %s for %d"
                                         % (ack["seq"], s))
            at = nums_datas[-1][0] + 1
            copied += len(nums_datas)
        _deadline.set(time.monotonic() + self.timeout)
        if not copied:
            # Archived meanwhile through another front end: nothing to keep.
            await client.api("$JS.API.STREAM.DELETE." + names.stream(archive), None)
            return None
        await client.purge(log.stream, upto + 1)
        return archive

    # -- IEngine --------------------------------------------------------------

    def check(self, name: str, op: str, write: bool = False) -> None:
        if name in self._logs and not (write and name.startswith("_")):
            return
        check_name(name, op, write)

    def _log(self, name: str) -> NatsLog:
        log = self._logs.get(name)
        if log is None:
            log = self._logs[name] = NatsLog(self, name)
        return log

    def known(self, log: NatsLog) -> None:
        """C{log}'s stream exists: keep it (it is listed and counted)."""
        if self._logs.get(log.name) is not log:
            self._logs.setdefault(log.name, log)

    def get(self, name: str) -> Optional[NatsLog]:
        log = self._logs.get(name)
        if log is not None:
            return log
        # Perhaps made by another front end: a read finds out, and keeps
        # the log once its stream is seen.
        return NatsLog(self, name)

    def get_or_create(self, name: str) -> NatsLog:
        return self._log(name)

    def release(self, log: ILog) -> None:
        if (not log.exists and not log.waiting  # type: ignore[attr-defined]
                and self._logs.get(log.name) is log):
            del self._logs[log.name]

    def logs(self) -> List[NatsLog]:
        return [self._logs[n] for n in sorted(self._logs) if self._logs[n].exists
                and not n.startswith("--")]

    def refresh(self) -> "Deferred[None]":
        """Every log's stream and numbers, as the cluster has them now."""
        def listed(infos: List[Dict[str, Any]]) -> None:
            for info in infos:
                config = info.get("config") or {}
                stream = config.get("name", "")
                name = (config.get("metadata") or {}).get("kaf_log") or names.log_of(stream)
                if (name is not None and name_problem(name) is None
                        and names.stream(name) == stream):
                    self._log(name)._noted(info)

        return self.call(lambda c: c.stream_list(), "logs").addCallback(listed)

    def used(self) -> List[NatsLog]:
        return [self._logs[n] for n in sorted(self._logs)
                if self._logs[n].exists or self._logs[n].waiting]

    def ping(self) -> "Deferred[Optional[str]]":
        """None when the cluster answers JetStream requests, else a one-line reason."""
        return self.call(lambda c: c.api("$JS.API.INFO", {}), "ready").addCallbacks(
            lambda _: None,
            lambda f: "not ready: %s" % (f.getErrorMessage().split(": ", 1)[-1],))
