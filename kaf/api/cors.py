"""
Cross-origin requests (C{--cors ORIGIN[,ORIGIN…]}): the headers that let a
page served from a listed origin put and read, and the answers to the
browser's preflight requests.  Pure rules over a request's headers; the
web layer calls L{Cors.answer} before it routes a request.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

#: What a page may send and see.
ALLOW_METHODS = b"GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Kaf-Msg-Id, Last-Event-ID, Accept"
EXPOSE_HEADERS = (b"Kaf-Msg-Id, Kaf-Duplicate, X-Kaf-LastMsgSent, X-Kaf-LastMsg, "
                  b"X-Kaf-FirstMsg, X-Kaf-Count, Retry-After, WWW-Authenticate, Allow")
#: Seconds a browser may remember a preflight's answer.
MAX_AGE = b"600"

ANY = "*"


class CorsOptionError(ValueError):
    """The C{--cors} value is not a list of origins; the message says why."""


def parse_origins(text: str) -> Tuple[str, ...]:
    """The origins of C{--cors}: C{scheme://host[:port]} each, or C{*} (any)."""
    origins = []
    for part in text.split(","):
        origin = part.strip()
        if not origin:
            raise CorsOptionError("empty origin in %r" % (text,))
        if origin != ANY:
            scheme, sep, host = origin.partition("://")
            if (not sep or scheme not in ("http", "https") or not host or "/" in host
                    or any(c.isspace() for c in host)):
                raise CorsOptionError(
                    "%r is not an origin (scheme://host[:port], e.g. https://app.example, "
                    "or *)" % (origin,))
            origin = origin.lower()
        origins.append(origin)
    return tuple(origins)


class Cors:
    """The origins allowed, and the headers each request of theirs gets."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(o.encode("ascii") for o in origins)
        self.any = ANY.encode() in self.origins

    def allowed(self, origin: Optional[bytes]) -> bool:
        return origin is not None and (self.any or origin.lower() in self.origins)

    def answer(self, request: object) -> Optional[bytes]:
        """
        Set the CORS headers of C{request}'s reply; for a preflight, the
        whole reply's body (None: route the request as usual).  A preflight
        carries no token: it is answered without one.
        """
        get = request.getHeader  # type: ignore[attr-defined]
        set_header = request.setHeader  # type: ignore[attr-defined]
        origin = get(b"Origin")
        if not self.any:
            # The reply depends on the origin: caches must keep one per origin.
            set_header(b"Vary", b"Origin")
        preflight = request.method == b"OPTIONS" and (  # type: ignore[attr-defined]
            get(b"Access-Control-Request-Method") is not None)
        if not self.allowed(origin):
            if preflight:
                return _refuse(request, "cors: origin %s is not allowed"
                               % (origin.decode("latin-1") if origin else "(none)",))
            return None
        assert origin is not None
        set_header(b"Access-Control-Allow-Origin", b"*" if self.any else origin)
        if not preflight:
            set_header(b"Access-Control-Expose-Headers", EXPOSE_HEADERS)
            return None
        set_header(b"Access-Control-Allow-Methods", ALLOW_METHODS)
        set_header(b"Access-Control-Allow-Headers", ALLOW_HEADERS)
        set_header(b"Access-Control-Max-Age", MAX_AGE)
        request.setResponseCode(204)  # type: ignore[attr-defined]
        return b""


def _refuse(request: object, reason: str) -> bytes:
    body = (reason.replace("\r", " ").replace("\n", " ") + "\n").encode("utf-8")
    request.setResponseCode(403)  # type: ignore[attr-defined]
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")  # type: ignore[attr-defined]
    request.setHeader(b"Content-Length", b"%d" % (len(body),))  # type: ignore[attr-defined]
    return body
