"""
Access control (C{--auth FILE}): bearer tokens, each with a name and the
logs it may read, write and archive, as glob patterns.  The file is JSON:

    {"tokens": [
      {"name": "ingest", "token": "s3cret", "write": ["orders-*"]},
      {"name": "ops", "sha256": "<hex digest of the token>",
       "read": ["*"], "write": ["*"], "archive": ["*"]}
    ]}

C{/logs} is granted like a log named C{/logs}, C{/metrics} like one named
C{/metrics}, C{_kaf} like any log, so
C{"read": ["*"]} covers them.  Tokens are compared in constant time and
never logged; a token may be stored as its SHA-256 instead.  Pure: no
Twisted, no HTTP; the web layer asks L{Rules.check}.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from fnmatch import fnmatchcase
from typing import Dict, List, Optional, Sequence, Tuple

RIGHTS = ("read", "write", "archive")

#: The names /logs and /metrics are granted under.
LOGS = "/logs"
METRICS = "/metrics"


class AuthFileError(Exception):
    """The auth file cannot be used; the message says why, in one line."""


class Refused(Exception):
    """A request the rules refuse: C{status} 401 (no or unknown token) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Token:
    __slots__ = ("name", "secret", "hashed", "grants")

    def __init__(self, name: str, secret: bytes, hashed: bool,
                 grants: Dict[str, Tuple[str, ...]]) -> None:
        self.name = name
        self.secret = secret
        self.hashed = hashed
        self.grants = grants

    def matches(self, given: bytes, digest: bytes) -> bool:
        return hmac.compare_digest(digest if self.hashed else given, self.secret)

    def may(self, right: str, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.grants[right])


class Rules:
    """The tokens of one auth file."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = list(tokens)

    def check(self, authorization: Optional[bytes], right: str, name: str, op: str) -> str:
        """The name of the token that may do C{right} on C{name}; else L{Refused}."""
        token = self.identify(authorization, op)
        if not token.may(right, name):
            what = {LOGS: "the log list", METRICS: "the metrics"}.get(name, "log %r" % (name,))
            raise Refused(403, "%s: token %r may not %s %s" % (op, token.name, right, what))
        return token.name

    def identify(self, authorization: Optional[bytes], op: str) -> Token:
        if authorization is None:
            raise Refused(401, "%s: a token is needed (Authorization: Bearer TOKEN)" % (op,))
        scheme, _, given = authorization.strip().partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            raise Refused(401, "%s: a token is needed (Authorization: Bearer TOKEN)" % (op,))
        digest = hashlib.sha256(given).hexdigest().encode()
        found = None
        # Every token is compared, so the time taken says nothing of which matched.
        for token in self.tokens:
            if token.matches(given, digest) and found is None:
                found = token
        if found is None:
            raise Refused(401, "%s: unknown token" % (op,))
        return found

    def readable(self, authorization: Optional[bytes], names: List[str]) -> List[str]:
        """Of C{names}, those the request's token may read."""
        token = self.identify(authorization, "logs")
        return [n for n in names if token.may("read", n)]


def parse(text: str) -> Rules:
    """The rules of an auth file's text; L{AuthFileError} when it is not one."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise AuthFileError("not JSON: %s" % (e,))
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise AuthFileError('expected {"tokens": [...]}')
    tokens = []
    names = set()
    for i, entry in enumerate(data["tokens"], 1):
        where = "token %d" % (i,)
        if not isinstance(entry, dict):
            raise AuthFileError("%s: not an object" % (where,))
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise AuthFileError("%s: needs a name" % (where,))
        if name in names:
            raise AuthFileError("%s: the name %r is used twice" % (where, name))
        names.add(name)
        unknown = set(entry) - {"name", "token", "sha256"} - set(RIGHTS)
        if unknown:
            raise AuthFileError("token %r: unknown keys %s" % (name, ", ".join(sorted(unknown))))
        if ("token" in entry) == ("sha256" in entry):
            raise AuthFileError("token %r: give one of token and sha256" % (name,))
        if "token" in entry:
            secret, hashed = entry["token"], False
            if not isinstance(secret, str) or len(secret) < 8 or not secret.isprintable() \
                    or " " in secret:
                raise AuthFileError("token %r: a token is 8 or more printable characters, "
                                    "no spaces" % (name,))
        else:
            secret, hashed = entry["sha256"], True
            if not isinstance(secret, str) or len(secret) != 64 or any(
                    c not in "0123456789abcdef" for c in secret.lower()):
                raise AuthFileError("token %r: sha256 must be 64 hex digits" % (name,))
            secret = secret.lower()
        grants = {}
        for right in RIGHTS:
            patterns = entry.get(right, [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise AuthFileError("token %r: %s must be a list of patterns" % (name, right))
            grants[right] = tuple(patterns)
        tokens.append(Token(name, secret.encode(), hashed, grants))
    return Rules(tokens)


def load(path: str) -> Rules:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise AuthFileError("cannot read %s: %s" % (path, e.strerror))
    except UnicodeDecodeError:
        raise AuthFileError("%s is not UTF-8" % (path,))
    return parse(text)


class Auth:
    """The rules in force, read from C{path}, and read again on L{reload}."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rules = load(path)

    def reload(self) -> Optional[str]:
        """Read the file again; on a broken file keep the old rules and say why."""
        try:
            self.rules = load(self.path)
        except AuthFileError as e:
            return str(e)
        return None
