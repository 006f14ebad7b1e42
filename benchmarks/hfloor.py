"""
The parser floor: the least a Twisted server can do for a put, with the
parser Kaf's HTTP server uses.  A bare Protocol that parses requests with
httptools (llhttp) -- or, where httptools does not load (PyPy), with
kaf.api.http's pure-Python parser -- appends each POST body to one file per
log (no fsync, no routing, no request object) and answers that log's
count in one write.  Any GET answers ``ok``.  With C{--fsync}, each append
is fsynced before its answer (no group commit: the floor of one
connection's puts with fsyncs, where a commit's group is one put).  With
C{--group}, puts are written at once and each log's file is fsynced in a
thread of the reactor's pool, one fsync at a time a log: the puts written
before an fsync began are answered when it ends, those written during it
wait for the next (group commit, the least of it: the floor of many
connections' puts with fsyncs).

Run: C{python benchmarks/hfloor.py --port PORT --data DIR [--backlog N] [--fsync | --group]}
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

from twisted.internet import reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

try:
    import httptools

    make_parser: Any = httptools.HttpRequestParser
except ImportError:
    from kaf.api.http import PythonParser as make_parser


class Folder:
    """The floor's logs: a file and a count each."""

    def __init__(self, folder: str, fsync: bool = False) -> None:
        self.folder = folder
        self.fsync = fsync
        self.files: Dict[bytes, int] = {}
        self.counts: Dict[bytes, int] = {}

    def append(self, log: bytes, body: bytes) -> int:
        fd = self.files.get(log)
        if fd is None:
            name = os.path.join(self.folder, "%d" % (len(self.files),))
            fd = self.files[log] = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, body)
        if self.fsync:
            os.fsync(fd)
        count = self.counts[log] = self.counts.get(log, 0) + 1
        return count


class GroupFolder(Folder):
    """The floor's logs, each fsynced by one thread at a time (group commit)."""

    def __init__(self, folder: str) -> None:
        Folder.__init__(self, folder)
        #: Per log: the answers written and not yet in an fsync.
        self.unsynced: Dict[bytes, List[Any]] = {}
        self.syncing: Dict[bytes, bool] = {}

    def put(self, log: bytes, body: bytes, transport: Any) -> None:
        count = self.append(log, body)
        self.unsynced.setdefault(log, []).append((transport, count))
        if not self.syncing.get(log):
            self._sync(log)

    def _sync(self, log: bytes) -> None:
        batch, self.unsynced[log] = self.unsynced[log], []
        self.syncing[log] = True
        threads.deferToThread(os.fsync, self.files[log]).addBoth(self._synced, log, batch)

    def _synced(self, result: Any, log: bytes, batch: List[Any]) -> None:
        self.syncing[log] = False
        if self.unsynced[log]:
            self._sync(log)
        for transport, count in batch:
            if isinstance(result, Failure):  # not durable: no answer but a closed connection
                transport.loseConnection()
            else:
                answer(transport, b"%d" % (count,))


def answer(transport: Any, body: bytes) -> None:
    transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class FloorProtocol(Protocol):
    folder: Folder

    def connectionMade(self) -> None:
        self.parser = make_parser(self)
        self.url: List[bytes] = []
        self.body: List[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            self.transport.loseConnection()

    def on_message_begin(self) -> None:
        self.url = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_method() != b"POST":
            answer(self.transport, b"ok")
            return
        log = b"".join(self.url).split(b"?")[0].rsplit(b"/", 1)[-1]
        folder = self.folder
        if isinstance(folder, GroupFolder):
            folder.put(log, b"".join(self.body), self.transport)
        else:
            answer(self.transport, b"%d" % (folder.append(log, b"".join(self.body)),))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--backlog", type=int, default=50)
    sync = parser.add_mutually_exclusive_group()
    sync.add_argument("--fsync", action="store_true", help="fsync each append before its answer")
    sync.add_argument("--group", action="store_true",
                        help="fsync each log's appends together, in threads, before their answers")
    options = parser.parse_args(argv)
    os.makedirs(options.data, exist_ok=True)
    factory = Factory.forProtocol(FloorProtocol)
    FloorProtocol.folder = (GroupFolder(options.data) if options.group
                            else Folder(options.data, options.fsync))
    reactor.listenTCP(options.port, factory, backlog=options.backlog,  # type: ignore[attr-defined]
                      interface="127.0.0.1")
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
