"""
C{GET /metrics}: Kaf's counters in the Prometheus text format, through
prometheus-client's registry and exposition.

Nothing here runs on a put's path but two dictionary and list updates a
request: the per-log counts are those the log services keep already (for
C{_kaf}), and a L{KafCollector} reads them, and the counts of requests and
latencies kept here, when the server is scraped.  Each server has its own
registry, not prometheus-client's global one, made at the first scrape:
prometheus-client is imported then, not at start-up (it costs a start
10 ms and 1 MB on CPython, twice that on PyPy).
"""
from __future__ import annotations

from bisect import bisect_left
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

from kaf.engine import IEngine

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import HistogramMetricFamily, Metric

#: prometheus-client's CONTENT_TYPE_LATEST, the format generate_latest writes
#: (tests/test_metrics.py holds them equal).
CONTENT_TYPE = b"text/plain; version=1.0.0; charset=utf-8"

#: The routes requests are counted by; any other path counts as "other".
ROUTES = frozenset([b"put", b"get", b"archive", b"logs", b"console", b"health", b"ready",
                    b"metrics"])

#: Seconds: from 100 microseconds (a put with --fsync never) to 10 s.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations by bucket, and their sum: what a scrape reports."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        # One more than the bounds: the observations over the largest.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to its bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily

        buckets: List[Tuple[str, float]] = []
        total = 0
        for bound, count in zip(self.bounds, self.counts):
            total += count
            buckets.append((_float(bound), total))
        total += self.counts[-1]
        buckets.append(("+Inf", total))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


def _float(bound: float) -> str:
    return repr(float(bound))


def hidden(name: str) -> bool:
    """Is C{name} a hidden file's (an archive, a dot file), never exposed?"""
    return name.startswith(".") or name.startswith("--")


class Metrics:
    """
    What /metrics reports, beyond the log services' own counts: requests
    by route and status, put and fsync latencies, open connections (from
    the HTTP server), and the fsync helpers' starts and losses.
    """

    def __init__(self, store: IEngine, syncing: Any = None) -> None:
        """C{syncing}: the L{kaf.engines.file.syncer.SyncProcesses} in use, if any."""
        self.store = store
        self.syncing = syncing
        self.requests: Dict[Tuple[bytes, int], int] = {}
        self.put_latency = Histogram()
        self.fsync_latency = Histogram()
        #: Open connections now (set by the HTTP server).
        self.connections: Optional[Callable[[], int]] = None
        if syncing is not None:
            syncing.timed = self.fsync_latency.observe
        self._registry: Optional[CollectorRegistry] = None

    def request_done(self, request: Any) -> None:
        """Count a request whose reply is whole (a watcher of kaf.api.http)."""
        path = request.path
        # The route is the path's first segment: /put/orders -> put.
        end = path.find(b"/", 1)
        key = (path[1:end] if end > 0 else path[1:], request.code)
        requests = self.requests
        try:
            requests[key] += 1
        except KeyError:
            if key[0] not in ROUTES:
                key = (b"other", key[1])
            requests[key] = requests.get(key, 0) + 1
        if end == 4 and path.startswith(b"/put") and request.started is not None:
            self.put_latency.observe(request.channel.factory.reactor.seconds()
                                     - request.started)

    def exposition(self) -> bytes:
        """The text format, scraped now."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(KafCollector(self))
        return generate_latest(self._registry)


class KafCollector:
    """Reads Kaf's counters when the registry is collected."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self._metrics
        logs = [log for log in m.store.used() if not hidden(log.name)]
        families = {
            "puts": CounterMetricFamily(
                "kaf_log_puts", "Messages appended to the log since start-up.", labels=["log"]),
            "gets": CounterMetricFamily(
                "kaf_log_gets", "Reads (gets) of the log since start-up.", labels=["log"]),
            "errs": CounterMetricFamily(
                "kaf_log_errors", "Puts and gets of the log that failed since start-up.",
                labels=["log"]),
            "served": CounterMetricFamily(
                "kaf_log_messages_served", "Messages read from the log by gets.",
                labels=["log"]),
            "in": CounterMetricFamily(
                "kaf_log_bytes_in", "Bytes of records appended to the log file.",
                labels=["log"]),
            "out": CounterMetricFamily(
                "kaf_log_bytes_out", "Bytes of records read from the log file by gets.",
                labels=["log"]),
            "last": GaugeMetricFamily(
                "kaf_log_last_message", "The log's last message number.", labels=["log"]),
        }
        waiters = 0
        for log in logs:
            gets, puts, errs = log.totals()
            label = [log.name]
            families["puts"].add_metric(label, puts)
            families["gets"].add_metric(label, gets)
            families["errs"].add_metric(label, errs)
            families["served"].add_metric(label, log.served)
            families["in"].add_metric(label, log.bytes_in)
            families["out"].add_metric(label, log.bytes_out)
            families["last"].add_metric(label, log.last)
            waiters += log.waiting
        yield from families.values()

        requests = CounterMetricFamily("kaf_http_requests", "HTTP requests answered.",
                                       labels=["route", "status"])
        for (route, status), count in sorted(m.requests.items()):
            requests.add_metric([route.decode("ascii"), str(status)], count)
        yield requests
        yield m.put_latency.family(
            "kaf_put_latency_seconds",
            "Seconds from a put's arrival to its answer (with --fsync always, after its fsync).")
        yield m.fsync_latency.family(
            "kaf_fsync_latency_seconds", "Seconds of each fsync of a group commit.")
        if m.connections is not None:
            yield GaugeMetricFamily("kaf_http_open_connections", "HTTP connections open now.",
                                    value=m.connections())
        yield GaugeMetricFamily("kaf_long_poll_waiters", "Gets waiting for a message now.",
                                value=waiters)
        if m.syncing is not None:
            yield GaugeMetricFamily("kaf_fsync_helpers", "fsync helper processes running now.",
                                    value=m.syncing.running)
            yield CounterMetricFamily(
                "kaf_fsync_helper_restarts",
                "fsync helper processes that ended while in use (each is replaced when "
                "next needed).", value=m.syncing.lost)
