"""
The C{kaf} command: put, get, tail, archive, logs and copy from a shell, on
the client library (L{kaf.client}) and C{task.react}.

Data goes to stdout and nothing else does; errors are one line on stderr,
C{kaf: <reason>}; progress of long operations goes to stderr only when it
is a terminal.  Exit codes: 0 done, 1 error, 2 bad usage, 3 C{put
--expect} did not match.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import IO, Any, Callable, Dict, List, NoReturn, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from kaf import client as kc
from kaf.client import KafClient

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_EXPECT = 3

#: Bytes of stdin read for one batch of C{put --lines}.
LINES_READ = 1 << 20


class Progress:
    """A one-line meter of messages, bytes and rate, redrawn on a terminal."""

    def __init__(self, stream: IO[str], what: str = "messages",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._what = what
        self._clock = clock
        self._shown = stream.isatty()
        self._start = clock()
        self._drawn = 0.0
        self.messages = 0
        self.bytes = 0

    def update(self, messages: int, bytes_: int) -> None:
        self.messages, self.bytes = messages, bytes_
        now = self._clock()
        if self._shown and now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(now)

    def add(self, messages: int, bytes_: int) -> None:
        self.update(self.messages + messages, self.bytes + bytes_)

    def finish(self) -> None:
        if self._shown and self.messages:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        self._stream.write("\r%s %s, %s, %s %s/s  " % (
            format(self.messages, ","), self._what, _size(self.bytes),
            format(int(self.messages / elapsed), ","), self._what))
        self._stream.flush()


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" if unit == "bytes" else "%.1f %s") % (n, unit)
        n /= 1024
    raise AssertionError("unreachable")


def _out() -> IO[bytes]:
    return sys.stdout.buffer


def _message_arg(text: str) -> bytes:
    # The bytes the shell gave, whatever their encoding.
    return os.fsencode(text)


# -- commands -----------------------------------------------------------------

async def cmd_put(client: KafClient, args: argparse.Namespace) -> None:
    if args.lines:
        if args.message is not None:
            raise _Usage("put: --lines reads messages from stdin; give no MESSAGE")
        last = await _put_lines(client, args.log, args.expect)
    else:
        message = (_message_arg(args.message) if args.message is not None
                   else sys.stdin.buffer.read())
        last = await client.put(args.log, message, args.expect)
    _out().write(b"%d\n" % (last,))


async def _put_lines(client: KafClient, log: str, expect: Optional[int]) -> int:
    """Send stdin's lines in batches, as soon as each chunk of input arrives."""
    progress = Progress(sys.stderr)
    stdin = sys.stdin.buffer
    partial = b""
    last: Optional[int] = None
    while True:
        # read1 returns what is there: a live stream is sent as it comes,
        # a file in big batches.
        chunk = stdin.read1(LINES_READ)  # type: ignore[attr-defined]
        if chunk:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
        else:
            lines, partial = [partial], b""
        messages = [line for line in lines if line]
        if messages:
            last = await client.put_batch(log, messages, expect)
            if expect is not None:
                expect = last
            progress.add(len(messages), sum(len(m) for m in messages))
        if not chunk:
            break
    progress.finish()
    if last is None:
        raise kc.KafClientError("put: no messages in the input (empty lines are skipped)")
    return last


async def cmd_get(client: KafClient, args: argparse.Namespace) -> None:
    out = _out()
    progress = Progress(sys.stderr)
    fmt = args.format
    from_ = args.from_
    sent = 0
    if fmt == "json":
        out.write(b"[")
    while True:
        result = await client.fetch(args.log, from_, fmt, limit=args.limit)
        if result.last_sent is None:
            break
        if fmt == "json":
            # Each reply is one JSON array: the items join into one.
            out.write((b",\n" if sent else b"") + result.body[1:-1])
        else:
            out.write(result.body)
        out.flush()
        count = len(result.messages) if fmt == "kaf" else result.last_sent - result.first + 1
        sent += count
        progress.add(count, len(result.body))
        from_ = result.last_sent + 1
    progress.finish()
    if fmt == "json":
        out.write(b"]\n")
    elif fmt == "kaf" and not sent:
        out.write(kc.kaf_batch([]))
    out.flush()


async def cmd_tail(client: KafClient, args: argparse.Namespace) -> None:
    out = _out()
    last = await client.last_number(args.log)
    from_ = max(1, last - args.n + 1)
    while args.n and from_ <= last:
        result = await client.get(args.log, from_)
        if result.last_sent is None:
            break
        for num, data in result.messages:
            if num <= last:
                out.write(data + b"\n")
        out.flush()
        from_ = result.last_sent + 1
    if not args.follow:
        return

    def show(num: int, data: bytes) -> None:
        out.write(data + b"\n")
        out.flush()

    def retrying(error: kc.KafClientError, delay: float) -> None:
        sys.stderr.write("kaf: %s; retrying in %gs\n" % (error.reason, delay))
        sys.stderr.flush()

    follower = client.follow(args.log, last + 1, show, wait=args.wait, on_retry=retrying)
    # Ctrl-C stops the reactor: let the follower end its long poll first.
    client.reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown", follower.stop)
    await follower.done


async def cmd_archive(client: KafClient, args: argparse.Namespace) -> None:
    result = await client.archive(args.log, args.upto)
    if result.get("archive") is None:
        line = "%s: nothing to archive up to %d" % (args.log, args.upto)
    else:
        line = "%s: archived up to %d into %s; %d messages kept" % (
            result["log"], result["upto"], result["archive"], result["kept"])
    _out().write(line.encode("utf-8") + b"\n")


async def cmd_logs(client: KafClient, args: argparse.Namespace) -> None:
    logs = await client.logs()
    if args.json:
        _out().write(json.dumps(logs, indent=1).encode() + b"\n")
        return
    _out().write(logs_table(logs).encode("utf-8"))


def logs_table(logs: List[Dict[str, Any]]) -> str:
    """A readable table of C{/logs}: name, numbers, size, and any error."""
    header = ["NAME", "FIRST", "LAST", "COUNT", "BYTES"]
    errors = any(log.get("error") for log in logs)
    if errors:
        header.append("ERROR")
    rows = [header]
    for log in logs:
        row = [str(log.get("name", "?"))]
        for key in ("first", "last", "count", "bytes"):
            value = log.get(key)
            row.append("-" if value is None else str(value))
        if errors:
            row.append(str(log.get("error") or ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:5], widths[1:5])]
        cells += row[5:]
        lines.append("  ".join(cells).rstrip())
    if not logs:
        lines.append("(no logs)")
    return "\n".join(lines) + "\n"


async def cmd_copy(client: KafClient, args: argparse.Namespace) -> None:
    try:
        source_url, source_log = kc.split_log_url(args.source)
        dest_url, dest_log = kc.split_log_url(args.dest)
    except ValueError as e:
        raise _Usage("copy: %s" % (e,))
    source = KafClient(source_url, reactor=client.reactor, token=client.token)
    dest = KafClient(dest_url, reactor=client.reactor, token=client.token)
    progress = Progress(sys.stderr)
    started = time.monotonic()
    result = await kc.copy_log(source, source_log, dest, dest_log, progress.update,
                               limit=args.limit)
    progress.finish()
    elapsed = time.monotonic() - started
    _out().write(("copied %d messages (%s) in %.1fs; %s/%s is at message %d\n" % (
        result.messages, _size(result.bytes), elapsed, dest_url, dest_log,
        result.last)).encode("utf-8"))


COMMANDS: Dict[str, Callable[[KafClient, argparse.Namespace], Any]] = {
    "put": cmd_put, "get": cmd_get, "tail": cmd_tail, "archive": cmd_archive,
    "logs": cmd_logs, "copy": cmd_copy,
}


# -- arguments ----------------------------------------------------------------

class _Usage(Exception):
    """Arguments that parse but do not make sense together."""


def _number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError("must be an integer ≥ %d (got %r)"
                                             % (minimum, text))
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kaf", description="Client of a Kaf event store.",
        epilog="Exit codes: 0 done, 1 error, 2 bad usage, 3 put --expect did not match.")
    p.add_argument("--url", default=os.environ.get("KAF_URL", kc.DEFAULT_URL),
                   help="the server (default: $KAF_URL or %s)" % (kc.DEFAULT_URL,))
    p.add_argument("--token", default=os.environ.get("KAF_TOKEN"),
                   help="the token for a server with --auth (default: $KAF_TOKEN; "
                        "prefer the variable: a command line is visible to others)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    put = sub.add_parser("put", help="append a message",
                         description="Append MESSAGE, or stdin, to LOG; print its number.")
    put.add_argument("log", metavar="LOG")
    put.add_argument("message", metavar="MESSAGE", nargs="?",
                     help="the message (default: all of stdin)")
    put.add_argument("--lines", action="store_true",
                     help="one message per line of stdin, sent in batches; empty lines "
                          "are skipped; prints the last number")
    put.add_argument("--expect", type=_number(0), metavar="N",
                     help="append only if the log's last number is N (exit 3 if not)")

    get = sub.add_parser(
        "get", help="print messages",
        description="Print the messages of LOG from --from on, until caught up.",
        epilog="raw: each message and a newline.  json: one JSON array.  kaf: the "
               "server's replies as they came (KAF_MSGS|v1|<count> and its records, "
               "one after another; a lone KAF_MSGS|v1|0 when there are none).")
    get.add_argument("log", metavar="LOG")
    get.add_argument("--from", dest="from_", type=_number(1), default=1, metavar="N",
                     help="first message number (default 1)")
    get.add_argument("--format", choices=("kaf", "raw", "json"), default="raw",
                     help="output format (default raw)")
    get.add_argument("--limit", type=_number(1), default=None, metavar="M",
                     help="messages per request (the server's default if not given)")

    tail = sub.add_parser("tail", help="print the last messages, and follow",
                          description="Print the messages numbered above LAST - N, one "
                                      "a line; with -f, then those appended later.")
    tail.add_argument("log", metavar="LOG")
    tail.add_argument("-n", type=_number(0), default=10, metavar="N",
                      help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing messages as they are appended (long polls; "
                           "reconnects after a failure)")
    tail.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                      help="longest long poll with -f (default 30; the server's "
                           "--max-wait limits it)")

    archive = sub.add_parser("archive", help="archive old messages",
                             description="Move the messages of LOG numbered N and "
                                         "below to an archive file.")
    archive.add_argument("log", metavar="LOG")
    archive.add_argument("--upto", type=_number(1), required=True, metavar="N")

    logs = sub.add_parser("logs", help="list the logs", description="List every log.")
    logs.add_argument("--json", action="store_true", help="the server's JSON")

    copy = sub.add_parser(
        "copy", help="copy a log between servers",
        description="Copy SOURCE to DEST (each SERVER_URL/LOG), keeping the message "
                    "numbers.  Resumable: it continues after DEST's last message.  "
                    "Refused when DEST is ahead of SOURCE.  --url is not used.")
    copy.add_argument("source", metavar="SOURCE")
    copy.add_argument("dest", metavar="DEST")
    copy.add_argument("--limit", type=_number(1), default=10000, metavar="M",
                      help="messages per batch (default 10000)")
    return p


# -- running -------------------------------------------------------------------

async def run(reactor: Any, args: argparse.Namespace,
              treq: Any = None) -> None:
    """Run one command; turn its failures into a line on stderr and an exit code."""
    code = 0
    try:
        client = KafClient(args.url, treq=treq, reactor=reactor, token=args.token)
        await COMMANDS[args.command](client, args)
    except _Usage as e:
        _error("%s" % (e,))
        code = EXIT_USAGE
    except kc.ExpectFailed as e:
        _error(e.reason)
        code = EXIT_EXPECT
    except kc.KafClientError as e:
        _error(e.reason)
        code = EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as cat does.
        _silence_stdout()
        code = EXIT_ERROR
    except Exception as e:
        # A bug: still one line, not a traceback lost in an unstarted log.
        _error("unexpected error: %s: %s" % (type(e).__name__, e))
        code = EXIT_ERROR
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    if code:
        raise SystemExit(code)


def _error(reason: str) -> None:
    sys.stderr.write("kaf: %s\n" % (reason,))
    sys.stderr.flush()


def _silence_stdout() -> None:
    # Later flushes (at exit) would fail again on the closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """The console script: C{kaf COMMAND …}."""
    cli = parser()
    args, extra = cli.parse_known_args(argv)
    # argparse gives an optional positional nothing when an option stands
    # between it and the one before (`kaf put LOG --expect 3 MESSAGE`).
    if (args.command == "put" and args.message is None and len(extra) == 1
            and not extra[0].startswith("-")):
        args.message, extra = extra[0], []
    if extra:
        cli.error("unrecognized arguments: %s" % (" ".join(extra),))

    def start(reactor: Any) -> "Deferred[None]":
        return Deferred.fromCoroutine(run(reactor, args))

    react(start)

