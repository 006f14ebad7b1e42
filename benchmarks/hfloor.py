"""
The parser floor: the least a Twisted server can do for a put, with the
parser Kaf's HTTP server uses.  A bare Protocol that parses requests with
httptools (llhttp) -- or, where httptools does not load (PyPy), with
kaf.api.http's pure-Python parser -- appends each POST body to one file per
log (no fsync, no routing, no request object) and answers that log's
count in one write.  Any GET answers ``ok``.  With C{--fsync}, each append
is fsynced before its answer (no group commit: the floor of one
connection's puts with fsyncs, where a commit's group is one put).

Run: C{python benchmarks/hfloor.py --port PORT --data DIR [--backlog N] [--fsync]}
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

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
        if self.parser.get_method() == b"POST":
            log = b"".join(self.url).split(b"?")[0].rsplit(b"/", 1)[-1]
            answer = b"%d" % (self.folder.append(log, b"".join(self.body)),)
        else:
            answer = b"ok"
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--backlog", type=int, default=50)
    parser.add_argument("--fsync", action="store_true", help="fsync each append before its answer")
    options = parser.parse_args(argv)
    os.makedirs(options.data, exist_ok=True)
    factory = Factory.forProtocol(FloorProtocol)
    FloorProtocol.folder = Folder(options.data, options.fsync)
    reactor.listenTCP(options.port, factory, backlog=options.backlog,  # type: ignore[attr-defined]
                      interface="127.0.0.1")
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
