"""
The floor: the least a Twisted web server can do for each benchmark case,
run beside Kaf in the same benchmark run so that Kaf's figures become
ratios that hold on any machine.

A bare twisted.web resource on a plain Site (no access log, no routing,
no checks):

* C{POST /put/<log>}: append the body to one file per log and answer a
  counter, the number of bodies that log has received.
* C{GET /get/<log>?from=N} (with C{--source FILE --messages M}): answer the
  bytes of about 1,000 records of a log file of M same-sized messages,
  read with one pread at an offset computed from N, with the header
  X-Kaf-LastMsgSent, as a reader of that log would get them.
* C{GET /get/<log>?from=N&wait=S}: hold the request until that log's
  counter reaches N, then answer the body of that POST.
* C{GET /ready}: C{ok}.

Run: C{python benchmarks/floor.py --port PORT --data DIR [--source FILE --messages M]}
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

#: Messages in one get reply, as Kaf's default batch.
BATCH = 1000


class Floor(Resource):
    isLeaf = True

    def __init__(self, folder: str, source: Optional[str], messages: int) -> None:
        Resource.__init__(self)
        self.folder = folder
        self.files: Dict[bytes, int] = {}
        self.counts: Dict[bytes, int] = {}
        self.bodies: Dict[bytes, bytes] = {}
        self.waiters: Dict[bytes, List[Tuple[int, Request]]] = {}
        self.source = os.open(source, os.O_RDONLY) if source else None
        self.messages = messages
        if self.source is not None:
            size = os.fstat(self.source).st_size
            self.header = len(b"KAF_DB|v1|0")
            self.record = (size - self.header) // max(messages, 1)

    def render_POST(self, request: Request) -> bytes:
        log = _log_name(request)
        body = request.content.read()
        fd = self.files.get(log)
        if fd is None:
            name = os.path.join(self.folder, "%d" % (len(self.files),))
            fd = self.files[log] = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, body)
        count = self.counts[log] = self.counts.get(log, 0) + 1
        self.bodies[log] = body
        waiters = self.waiters.get(log)
        if waiters:
            self.waiters[log] = [(want, w) for want, w in waiters if want > count]
            for want, waiting in waiters:
                if want <= count:
                    self._answer(waiting, body, count)
        return b"%d" % (count,)

    def render_GET(self, request: Request) -> object:
        if request.path == b"/ready":
            return b"ok"
        args = request.args
        start = int(args[b"from"][0])
        if b"wait" in args:
            name = _log_name(request)
            if self.counts.get(name, 0) >= start:
                return self._answer(request, self.bodies.get(name, b""),
                                    self.counts[name], finish=False)
            self.waiters.setdefault(name, []).append((start, request))
            return NOT_DONE_YET
        assert self.source is not None, "GET needs --source and --messages"
        start = max(1, min(start, self.messages))
        last = min(start + BATCH - 1, self.messages)
        at = self.header + (start - 1) * self.record
        data = os.pread(self.source, (last - start + 1) * self.record, at)
        request.setHeader(b"X-Kaf-LastMsgSent", b"%d" % (last,))
        return data

    @staticmethod
    def _answer(request: Request, body: bytes, count: int, finish: bool = True) -> bytes:
        request.setHeader(b"X-Kaf-LastMsgSent", b"%d" % (count,))
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        if finish:
            request.write(body)
            request.finish()
        return body


def _log_name(request: Request) -> bytes:
    """The log a request is for: the last segment of its path."""
    return request.path.rsplit(b"/", 1)[-1]


class QuietSite(Site):
    """A Site without the access log, as Kaf runs by default."""

    def log(self, request: Request) -> None:
        pass


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--source", help="a log file to answer gets from")
    parser.add_argument("--messages", type=int, default=0,
                        help="how many same-sized messages the source holds")
    parser.add_argument("--backlog", type=int, default=50)
    options = parser.parse_args(argv)
    os.makedirs(options.data, exist_ok=True)
    site = QuietSite(Floor(options.data, options.source, options.messages))
    reactor.listenTCP(options.port, site, backlog=options.backlog,  # type: ignore[attr-defined]
                      interface="127.0.0.1")
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
