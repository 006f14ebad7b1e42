"""
twistd options and makeService: parse and check the options of SPEC
section 1, then wire the store, the web site, the stats timer and the
listening endpoints into one service.
"""
from __future__ import annotations

import gc
import math
import os
import re
import signal
import sys
import tempfile
from typing import Any, Callable, List, NoReturn, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from kaf.api.accesslog import AccessLog, AccessLogService
from kaf.api.auth import Auth, AuthFileError
from kaf.api.cors import Cors, CorsOptionError, parse_origins
from kaf.api.health import Readiness
from kaf.engines.file.log import Runner
from kaf.engines.file.msgids import DEFAULT_MAX_IDS, Dedupe
from kaf.engines.file.retention import Retention, RetentionService, duration, parse_rule
from kaf.api.metrics import Metrics
from kaf.dispatch import direct_dispatch
from kaf.stats import Stats, StatsService
from kaf.engines.file.store import Store
from kaf.engines.file.syncer import SyncProcesses

_ADDR = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})\Z")


def addr_endpoint(addr: str) -> str:
    """The endpoint string for a Go-style C{HOST:PORT}."""
    m = _ADDR.match(addr)
    if m is None or int(m.group("port")) > 65535:
        raise usage.UsageError("--addr must be HOST:PORT, e.g. 127.0.0.1:7749 (got %r)" % (addr,))
    host = m.group("v6") or m.group("host") or ""
    port = m.group("port")
    # A backlog of 1024, not Twisted's 50: many clients connecting at once
    # must not overflow it (the Go version used the kernel's maximum).
    if not host:
        return "tcp:%s:backlog=1024" % (port,)
    return "tcp:%s:interface=%s:backlog=1024" % (port, host.replace(":", r"\:"))


def _positive(name: str, value: str, cast: Any = int, zero: bool = False) -> Any:
    try:
        number = cast(value)
    except ValueError:
        raise usage.UsageError("--%s must be a number (got %r)" % (name, value))
    if number < 0 or (number == 0 and not zero) or not math.isfinite(number):
        raise usage.UsageError("--%s must be %s (got %r)"
                               % (name, "≥ 0" if zero else "> 0", value))
    return number


def data_folder(data: str) -> None:
    """
    Make sure Kaf can keep its logs in C{data}: created if missing, and a
    folder Kaf can write in; else a one-line OSError naming the problem.
    """
    existing = os.path.abspath(data)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OSError("cannot be a folder: %r is a file" % (existing,))
    try:
        os.makedirs(data, exist_ok=True)
    except OSError as e:
        raise OSError("cannot create the folder: %s" % (e.strerror,))
    # Permission bits do not tell (root ignores them, a read-only mount
    # does not show in them): try a file.
    try:
        tempfile.TemporaryFile(dir=data).close()
    except OSError as e:
        raise OSError("cannot write in the folder: %s" % (e.strerror,))


class KafOptions(usage.Options):
    """Kaf's options (SPEC 1), checked; a bad value raises UsageError."""

    optParameters = [
        ["addr", None, "127.0.0.1:7749", "where to listen, HOST:PORT"],
        ["data", None, "./kaf-data", "the data folder (created if missing)"],
        ["stats-interval", None, "300", "seconds between records in the _kaf log"],
        ["fsync", None, "always", "always: answer a put once it is on disk; never: once "
                                  "the operating system has it"],
        ["max-message-size", None, "5242880", "largest message accepted, in bytes"],
        ["max-wait", None, "60", "longest long-poll a client may ask for, in seconds"],
        ["max-open-logs", None, None, "most log files open at once (default: half of the "
                                      "open-file limit left after Kaf's own)"],
        ["auth", None, None, "a JSON file of tokens and the logs each may read, write and "
                             "archive; read again on SIGHUP (default: no access control)"],
        ["dedupe-window", None, "2m", "how long a put's Kaf-Msg-Id is remembered: a repeat "
                                      "within it writes nothing (45s, 2m, 1h; 0: off)"],
        ["dedupe-max-ids", None, str(DEFAULT_MAX_IDS),
         "most message ids remembered, all logs together; beyond it a put with a new id "
         "is refused (503)"],
        ["access-log", None, None, "write a line a request to this file, in the combined "
                                   "log format; opened again on SIGHUP (default: none; it "
                                   "costs throughput)"],
        ["cors", None, None, "ORIGIN[,ORIGIN...]: pages from these origins (or *) may put "
                             "and read; preflights are answered (default: none)"],
        ["archive-keep", None, None, "after an archive made by --retain, delete the log's "
                                     "oldest archive files beyond this many (default: keep all)"],
        ["store", None, None, "nats://HOST:PORT[,HOST:PORT...]: keep the logs in a NATS "
                              "JetStream cluster, a stream a log, instead of in --data "
                              "(default: the data folder); tls://HOST:PORT for TLS"],
        ["replicas", None, "3", "with --store nats://: copies of each log in the cluster "
                                "(fewer when the cluster has fewer servers)"],
        ["nats-creds", None, None, "with --store nats://: a NATS credentials file (.creds)"],
        ["nats-ca", None, None, "with --store nats://: the CA certificate file that signs "
                                "the cluster's (turns TLS on)"],
        ["nats-cert", None, None, "with --store nats://: this client's certificate file "
                                  "for TLS (with --nats-key)"],
        ["nats-key", None, None, "with --store nats://: the key file of --nats-cert"],
    ]
    optFlags = [
        ["no-metrics", None, "serve no /metrics (it is on by default)"],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []
        self["retain"] = []

    def opt_retain(self, rule: str) -> None:
        try:
            self["retain"].append(parse_rule(rule))
        except ValueError as e:
            raise usage.UsageError("--retain %s" % (e,))

    # One paragraph in twistd kaf --help.
    opt_retain.__doc__ = (
        "GLOB:max-messages=N,max-bytes=B,max-age=D: archive the logs matching GLOB by "
        "themselves when one passes a limit, keeping the newest messages within it; B in "
        "bytes or kB, MB, GB (1000s), KiB, MiB, GiB (1024s); D in s, m, h or d; "
        "repeatable, the first matching rule counts (default: none)")

    def opt_listen(self, endpoint: str) -> None:
        """An endpoint string (tcp:7749, unix:/run/kaf.sock); repeatable; replaces --addr."""
        self["listen"].append(endpoint)

    def postOptions(self) -> None:
        self["tls-loaded"] = not skip_tls(self["listen"])
        if self["store"] is not None:
            prefer_asyncio_reactor()
        from twisted.internet import reactor
        # Imported after skip_tls: the endpoints module imports pyOpenSSL.
        from twisted.internet.endpoints import serverFromString

        if self["fsync"] not in ("always", "never"):
            raise usage.UsageError("--fsync must be always or never (got %r)" % (self["fsync"],))
        self["stats-interval"] = _positive("stats-interval", self["stats-interval"], float)
        self["max-message-size"] = _positive("max-message-size", self["max-message-size"])
        self["max-wait"] = _positive("max-wait", self["max-wait"], float, zero=True)
        window = duration(self["dedupe-window"])
        if window is None:
            raise usage.UsageError("--dedupe-window must be a duration like 45s, 2m or 1h, "
                                   "or 0 (got %r)" % (self["dedupe-window"],))
        self["dedupe-window"] = window
        self["dedupe-max-ids"] = _positive("dedupe-max-ids", self["dedupe-max-ids"])
        if self["archive-keep"] is not None:
            self["archive-keep"] = _positive("archive-keep", self["archive-keep"])
        if self["max-open-logs"] is not None:
            self["max-open-logs"] = _positive("max-open-logs", self["max-open-logs"])
        # A data folder under a file is refused now; whether the folder
        # can be created and written is checked before anything listens.
        existing = os.path.abspath(self["data"])
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise usage.UsageError("--data %r cannot be a folder: %r is a file"
                                   % (self["data"], existing))
        if self["cors"] is not None:
            try:
                self["cors"] = Cors(parse_origins(self["cors"]))
            except CorsOptionError as e:
                raise usage.UsageError("--cors: %s" % (e,))
        if self["access-log"] is not None:
            try:
                open(self["access-log"], "ab").close()
            except OSError as e:
                raise usage.UsageError("--access-log %r cannot be written: %s"
                                       % (self["access-log"], e.strerror or e))
        if self["auth"] is not None:
            try:
                self["auth"] = Auth(self["auth"])
            except AuthFileError as e:
                raise usage.UsageError("--auth: %s" % (e,))
        self["replicas"] = _positive("replicas", self["replicas"])
        if self["store"] is not None:
            self["store"] = nats_urls(self["store"])
            if self["retain"]:
                raise usage.UsageError("--retain works with the data folder only, not with "
                                       "--store nats:// (give the streams limits instead)")
            self["nats-tls"] = nats_tls(self["nats-ca"], self["nats-cert"], self["nats-key"])
            for name in ("nats-creds",):
                if self[name] is not None and not os.path.isfile(self[name]):
                    raise usage.UsageError("--%s %r is not a file" % (name, self[name]))
        else:
            for name in ("nats-creds", "nats-ca", "nats-cert", "nats-key"):
                if self[name] is not None:
                    raise usage.UsageError("--%s needs --store nats://" % (name,))
        if not self["listen"]:
            self["listen"] = [addr_endpoint(self["addr"])]
        for endpoint in self["listen"]:
            try:
                serverFromString(reactor, endpoint)
            except (ValueError, TypeError, KeyError) as e:
                raise usage.UsageError("--listen %r is not an endpoint: %s" % (endpoint, e))


#: Listeners that serve no TLS: --addr's, and these endpoint strings.
PLAIN_ENDPOINTS = ("tcp:", "tcp6:", "unix:")


def skip_tls(listen: List[str]) -> bool:
    """
    Keep pyOpenSSL (and cryptography under it) out of a server whose
    listeners all speak plain TCP or UNIX sockets; True when it is kept out.

    Twisted's TCP module imports its TLS support whenever pyOpenSSL is
    installed (the Kaf package needs it for ssl: listeners), and that
    costs 12 MB of memory on CPython (RSS with a 1,000,000-message log:
    57 -> 45 MB) for code such a server never runs.  Done before the
    reactor is imported, and only then: a process that has it already (a
    test runner, a reactor chosen with twistd -r) keeps what it has.  The
    NATS engine's TLS is the ssl module's, which this leaves alone.
    """
    if "twisted.internet.tcp" in sys.modules or "OpenSSL" in sys.modules:
        return False
    if not all(endpoint.startswith(PLAIN_ENDPOINTS) for endpoint in listen):
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    return True


def prefer_asyncio_reactor() -> None:
    """
    Install Twisted's asyncio reactor, unless a reactor is installed already
    (C{twistd -r ...}): the NATS client then runs on the reactor's own loop,
    which took 1.7 times the puts of a loop in a thread of its own (see
    README.rst, Scaling out).
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet import asyncioreactor

    asyncioreactor.install()


_NATS_URL = re.compile(r"(?:(?P<scheme>nats|tls)://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])"
                       r":(?P<port>\d{1,5})\Z")


def nats_urls(store: str) -> List[str]:
    """The server URLs of C{--store nats://HOST:PORT[,HOST:PORT...]}."""
    if not store.startswith(("nats://", "tls://")):
        raise usage.UsageError("--store must be nats://HOST:PORT[,HOST:PORT...] (got %r)"
                               % (store,))
    scheme = store.split("://", 1)[0]
    urls = []
    for part in store.split(","):
        m = _NATS_URL.match(part.strip())
        if m is None or int(m.group("port")) > 65535:
            raise usage.UsageError("--store: %r is not HOST:PORT" % (part,))
        urls.append("%s://%s:%s" % (m.group("scheme") or scheme, m.group("host"),
                                    m.group("port")))
    return urls


def nats_tls(ca: Optional[str], cert: Optional[str], key: Optional[str]) -> Any:
    """The TLS context of the --nats-* options, or None when none is given."""
    if ca is None and cert is None and key is None:
        return None
    import ssl

    if (cert is None) != (key is None):
        raise usage.UsageError("--nats-cert and --nats-key go together")
    try:
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise usage.UsageError("--nats-ca/--nats-cert/--nats-key: %s" % (e,))
    return context


class Options(KafOptions):
    """The options as twistd parses them: a bad value exits with status 1."""

    def parseOptions(self, options: Optional[List[str]] = None) -> None:
        try:
            KafOptions.parseOptions(self, options)
        except usage.UsageError as e:
            # One line, not the whole usage text, and exit 1 (twistd before
            # 26.10 exits 0 on a usage error, so a service manager would take
            # the failed start for a clean one).
            stop("twistd kaf: %s (see twistd kaf --help)" % (e,))


class StoreService(Service):
    """Loads the store at start-up; at shutdown finishes writes and closes files."""

    log = Logger()

    def __init__(self, store: Store, reactor: Any) -> None:
        self.store = store
        self._reactor = reactor

    loaded = False

    def privilegedStartService(self) -> None:
        # Before any listener starts (this service comes first), so a data
        # folder Kaf cannot use stops start-up with nothing listening.
        self._load()

    def startService(self) -> None:
        Service.startService(self)
        self._reactor.addSystemEventTrigger("after", "shutdown", self._clean_exit)
        self._load()

    def _load(self) -> None:
        if self.loaded:
            return
        try:
            data_folder(self.store.folder)
            self.log.info("data folder {folder}", folder=self.store.folder)
            self.store.load()
        except OSError as e:
            stop("kaf: --data %r: %s" % (self.store.folder, e.strerror or e))
        self.loaded = True

    def _clean_exit(self) -> None:
        # twistd re-raises a SIGTERM or SIGINT on itself once stopped, so
        # the exit status would say "killed"; a clean stop (SPEC 1: SIGTERM
        # and Ctrl-C alike) is a clean exit.
        if getattr(self._reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT):
            self._reactor._exitSignal = None

    def stopService(self) -> "Deferred[object]":
        Service.stopService(self)
        d = self.store.close()
        # Answers to long polls woken by the close are only buffered: give
        # the reactor a moment to send them before it drops connections.
        d.addCallback(lambda _: deferLater(self._reactor, 0.2, lambda: None))
        return d


class EngineService(Service):
    """Connects to the NATS cluster at start-up and lists its logs; closes at shutdown."""

    log = Logger()
    loaded = False

    def __init__(self, engine: Any, reactor: Any) -> None:
        self.engine = engine
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        self._load()

    def startService(self) -> None:
        Service.startService(self)
        self._load()

    def _load(self) -> None:
        if self.loaded:
            return
        from kaf.errors import EngineUnavailable

        try:
            self.engine.load()
        except EngineUnavailable as e:
            stop("kaf: --store: %s" % (e.reason,))
        self.log.info("storage: {engine}, {n} logs", engine=self.engine.describe(),
                      n=len(self.engine.logs()))
        self.loaded = True

    def stopService(self) -> "Deferred[object]":
        Service.stopService(self)
        d = self.engine.close()
        d.addCallback(lambda _: deferLater(self._reactor, 0.2, lambda: None))
        return d


class Listener(Service):
    """
    Listens on one endpoint; an address it cannot use stops start-up.

    What twisted.application.internet's StreamServerEndpointService does,
    without that module: it imports automat's state machines for its
    ClientService, which cost every start 24 ms on CPython, 20 on PyPy.
    """

    log = Logger()

    def __init__(self, endpoint: Any, factory: Any, endpoint_text: str = "") -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.endpoint_text = endpoint_text
        self._port: "Optional[Deferred[Any]]" = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        Service.startService(self)
        if self._port is None:
            self._listen()

    def _listen(self) -> None:
        failed: List[Failure] = []
        listening = False

        def failure(f: Failure) -> None:
            if not listening:
                failed.append(f)
            elif not f.check(CancelledError):
                self.log.failure("cannot listen on {endpoint}", f, endpoint=self.endpoint_text)

        self._port = self.endpoint.listen(self.factory)
        self._port.addErrback(failure)
        if failed:
            e = failed[0].value
            if isinstance(e, CannotListenError):
                stop("kaf: cannot listen on %s (--listen/--addr): %s"
                     % (self.endpoint_text, e.socketError or e))
            if isinstance(e, OSError):
                stop("kaf: cannot listen on %s (--listen/--addr): %s" % (self.endpoint_text, e))
            failed[0].raiseException()
        listening = True
        self.log.info("listening on {endpoint}", endpoint=self.endpoint_text)

    def stopService(self) -> "Optional[Deferred[Any]]":
        Service.stopService(self)
        if self._port is None:
            return None
        # Not listening yet: the attempt is cancelled (and its error dropped).
        self._port.cancel()
        return self._port.addCallback(lambda port: port and port.stopListening())


def stop(reason: str) -> NoReturn:
    """
    Stop start-up with one line on the real stderr (twistd sends
    C{sys.stderr} to its log) and exit status 1.
    """
    err = sys.__stderr__ or sys.stderr
    err.write(reason + "\n")
    err.flush()
    raise SystemExit(1)


class AuthService(Service):
    """Reads the C{--auth} file again on SIGHUP; a broken file keeps the old rules."""

    log = Logger()

    def __init__(self, auth: Auth, reactor: Any) -> None:
        self.auth = auth
        self._reactor = reactor

    def startService(self) -> None:
        Service.startService(self)
        self.log.info("access control: {n} tokens from {path}",
                      n=len(self.auth.rules.tokens), path=self.auth.path)

    def reload(self) -> None:
        problem = self.auth.reload()
        if problem is None:
            self.log.info("access control: {n} tokens read again from {path}",
                          n=len(self.auth.rules.tokens), path=self.auth.path)
        else:
            self.log.warn("access control: {path} not used, the rules before stay: {problem}",
                          path=self.auth.path, problem=problem)


class HangupService(Service):
    """On SIGHUP, runs each of its actions (read --auth again, reopen --access-log)."""

    def __init__(self, reactor: Any, actions: List[Callable[[], None]]) -> None:
        self._reactor = reactor
        self.actions = actions

    def startService(self) -> None:
        Service.startService(self)
        signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        Service.stopService(self)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    def _hangup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.hangup)

    def hangup(self) -> None:
        for action in self.actions:
            action()


#: The cyclic collector's first threshold once Kaf runs: allocations of
#: tracked objects between collections of the youngest generation.
GC_THRESHOLD = 5000


class CollectorService(Service):
    """
    Tunes CPython's cyclic garbage collector once start-up is done.

    A put allocates a few dozen short-lived objects (its request, its
    Deferred, its reply) and makes almost no reference cycle, yet with the
    default threshold of 700 the youngest generation was collected every
    dozen puts, and the whole heap (Twisted's modules and Kaf's loaded
    state) about every 4,000: measured in-process, a put cost 23.8 us of
    CPU with the defaults and 18.3 with what this does.  It moves what
    start-up made (modules, the store's state) out of the collector's sight
    with C{gc.freeze()}, so full collections look only at what came after,
    and collects the youngest generation every L{GC_THRESHOLD} allocations.
    Cycles are still collected; only less often.  PyPy has no such
    collector: nothing is done there.
    """

    def __init__(self, reactor: Any, threshold: int = GC_THRESHOLD) -> None:
        self._reactor = reactor
        self._threshold = threshold

    def startService(self) -> None:
        Service.startService(self)
        self._reactor.callWhenRunning(self.tune)

    def tune(self) -> bool:
        """Freeze what is alive and raise the threshold; False where there is no such GC."""
        if not hasattr(gc, "freeze"):
            return False
        gc.collect()
        gc.freeze()
        _, second, third = gc.get_threshold()
        gc.set_threshold(self._threshold, second, third)
        return True


def loopback_only(endpoint: str) -> bool:
    """Does a server endpoint string listen on a loopback address (or a UNIX socket) only?"""
    kind, _, rest = endpoint.partition(":")
    if kind in ("unix", "systemd"):
        return True
    for part in re.split(r"(?<!\\):", rest):
        key, eq, value = part.partition("=")
        if eq and key == "interface":
            value = value.replace("\\:", ":")
            return value in ("::1", "localhost") or value.startswith("127.")
    return False


def thread_runner(reactor: Any) -> Runner:
    def run(f: Any, *args: Any) -> "Deferred[Any]":
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
    return run


def makeService(config: KafOptions, reactor: Optional[Any] = None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor as default

        reactor = default
        # The server's own reactor (twistd's), never one a caller passes.
        if direct_dispatch(reactor):
            Logger().info("epoll events handed to their connections directly (see kaf.dispatch)")
    top = MultiService()
    if config["store"] is not None:
        return _nats_service(top, config, reactor)
    blocking = thread_runner(reactor)
    # fsyncs run in helper processes: a thread for them cost the reactor
    # thread GIL handoffs on every group commit (most on PyPy), and they are
    # never queued behind a large read in the reactor's pool.
    syncing = SyncProcesses(reactor, blocking)
    reactor.addSystemEventTrigger("after", "shutdown", syncing.stop)
    store = Store(config["data"], reactor, blocking,
                  fsync=config["fsync"] == "always", gather=True, syncing=syncing,
                  max_open=config["max-open-logs"],
                  dedupe=Dedupe(config["dedupe-window"], config["dedupe-max-ids"]))
    StoreService(store, reactor).setServiceParent(top)

    if config["retain"]:
        retention = Retention(store, config["retain"], reactor, blocking,
                              archive_keep=config["archive-keep"])
        store.watch = retention.written
        RetentionService(retention, reactor).setServiceParent(top)

    fsync = config["fsync"] == "always"
    # With --fsync never no helper is ever used, so none is asked.
    readiness = Readiness(config["data"], reactor, ping=syncing.ping if fsync else None)
    metrics = None if config["no-metrics"] else Metrics(store, syncing if fsync else None)
    _serve(top, config, reactor, store, readiness, metrics)
    return top


def _nats_service(top: MultiService, config: KafOptions, reactor: Any) -> MultiService:
    """The services of a Kaf whose logs are streams of a NATS cluster."""
    from kaf.engines.nats.engine import NatsEngine

    engine = NatsEngine(config["store"], reactor, replicas=config["replicas"],
                        tls=config["nats-tls"], creds=config["nats-creds"],
                        dedupe_window=config["dedupe-window"] or 0.0)
    EngineService(engine, reactor).setServiceParent(top)
    readiness = Readiness(None, reactor, engine=engine.ping)
    metrics = None if config["no-metrics"] else Metrics(engine, None)
    _serve(top, config, reactor, engine, readiness, metrics)
    return top


def _serve(top: MultiService, config: KafOptions, reactor: Any, store: Any,
           readiness: Readiness, metrics: Optional[Metrics]) -> None:
    """The services every engine shares: stats, access control, the web site, listeners."""
    # Imported here, not with this module: Klein imports (and so installs)
    # the default reactor, and the options may yet choose another.
    from kaf.api.web import KafWeb, make_site
    from twisted.internet.endpoints import serverFromString

    stats = Stats(store, reactor)
    StatsService(stats, config["stats-interval"], reactor).setServiceParent(top)
    if not config.get("tls-loaded", True):
        Logger().info("TLS support not loaded: no listener serves TLS (see --listen)")

    hangup: List[Callable[[], None]] = []
    auth = config["auth"]
    if auth is not None:
        auth_service = AuthService(auth, reactor)
        auth_service.setServiceParent(top)
        hangup.append(auth_service.reload)
    else:
        for endpoint in config["listen"]:
            if not loopback_only(endpoint):
                Logger().warn("listening on {endpoint} to every host, with no --auth: "
                              "anyone who reaches it may read, write and archive",
                              endpoint=endpoint)
    web = KafWeb(store, max_message_size=config["max-message-size"],
                 max_wait=config["max-wait"], auth=auth, readiness=readiness, metrics=metrics,
                 cors=config["cors"])
    watchers: List[Callable[[Any], None]] = []
    if config["access-log"] is not None:
        access = AccessLog(config["access-log"], reactor)
        access_service = AccessLogService(access, reactor)
        access_service.setServiceParent(top)
        watchers.append(access.request_done)
        hangup.append(access_service.reopen)
    if hangup:
        HangupService(reactor, hangup).setServiceParent(top)
    site = make_site(web, reactor, watchers)
    CollectorService(reactor).setServiceParent(top)
    for endpoint in config["listen"]:
        Listener(serverFromString(reactor, endpoint), site, endpoint).setServiceParent(top)
