"""Prometheus metrics of one app, served at ``GET /metrics`` in the text exposition format.

``Metrics`` owns a registry of its own (in-process test apps never share figures) and every metric
fhirbox records; components get it, or the small counters they need, from ``create_app``. The hot
path is cheap: label children are created once per label value and kept.

With ``--workers N``, ``fhirbox serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before the workers start: prometheus_client then keeps each worker's figures in files there, and a
scrape answered by any worker reads them all (``MultiProcessCollector``). The process metrics
(``process_*``) are then the sums over the live workers (``WorkersProcessCollector``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from fhirbox.http.responses import Response

if TYPE_CHECKING:
    from fhirbox.auth.principal import Principal
    from fhirbox.http.request import Request

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# The route label of a request no route matched (404) or whose method the route lacks (405).
UNMATCHED = "unmatched"
# Methods outside this set are counted as "other": a client cannot grow the label set.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_STORE_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class CacheCounts:
    """Counts the hits and misses of one cache (``Metrics.cache``); ``NOT_COUNTED`` counts nothing."""

    __slots__ = ("hit", "miss")

    def __init__(self, hit: Callable[[], None], miss: Callable[[], None]) -> None:
        self.hit = hit
        self.miss = miss


def _nothing() -> None:
    return None


NOT_COUNTED = CacheCounts(_nothing, _nothing)


class Metrics:
    """Every metric of the server, and the figures of the whole server for a scrape."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROCESS_ENV) or None
        self.multiprocess = multiprocess_dir is not None
        # Metric objects are registered with this app's registry, unless the figures live in the
        # multiprocess files: then the scrape reads those files and nothing is registered.
        own = CollectorRegistry()
        target: CollectorRegistry | None = None if self.multiprocess else own
        if multiprocess_dir is not None:
            MultiProcessCollector(own, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            own.register(WorkersProcessCollector(multiprocess_dir))
        else:
            ProcessCollector(registry=own)
        self.registry = own

        self.requests = Counter(
            "fhirbox_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=target,
        )
        self.request_seconds = Histogram(
            "fhirbox_http_request_duration_seconds",
            "Time from the request's arrival to its response sent, by route template.",
            ["route"],
            registry=target,
        )
        self.tokens_issued = Counter(
            "fhirbox_tokens_issued",
            "Access tokens issued, by grant type and token format.",
            ["grant", "format"],
            registry=target,
        )
        self.auth_failures = Counter(
            "fhirbox_client_auth_failures",
            "Failed client authentications (token endpoint, Basic and Bearer), by reason.",
            ["reason"],
            registry=target,
        )
        self.sessions_active = Gauge(
            "fhirbox_sessions_active",
            "Sessions not closed (expired ones count until closed or purged), counted in the store "
            "when /metrics is scraped.",
            registry=target,
            multiprocess_mode="mostrecent",
        )
        self.policy_decisions = Counter(
            "fhirbox_policy_decisions",
            "Authorization decisions of API requests: allowed or denied by AccessPolicies, or root.",
            ["result"],
            registry=target,
        )
        self.store_commit_seconds = Histogram(
            "fhirbox_store_commit_seconds",
            "Time a write transaction of the store took, from its start to its commit.",
            registry=target,
            buckets=_STORE_SECONDS,
        )
        self.store_batch_size = Histogram(
            "fhirbox_store_batch_size",
            "Writes committed together in one transaction (group commit).",
            registry=target,
            buckets=_BATCH_SIZES,
        )
        self.cache_hits = Counter("fhirbox_cache_hits", "Cache hits, by cache.", ["cache"], registry=target)
        self.cache_misses = Counter(
            "fhirbox_cache_misses", "Cache misses, by cache.", ["cache"], registry=target
        )
        self._request_children: dict[tuple[str, str, int], tuple[Callable[[], None], Any]] = {}
        self._children: dict[tuple[MetricWrapperBase, str], Any] = {}

    # -- recording (cheap: label children are looked up in a dict) --------------------------------
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered: ``route`` is the route's template or ``UNMATCHED``."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            label = method if method in METHODS else "other"
            children = (
                self.requests.labels(route, label, str(status)).inc,
                self.request_seconds.labels(route),
            )
            self._request_children[key] = children
        children[0]()
        children[1].observe(seconds)

    def token_issued(self, grant: str, token_format: str) -> None:
        self._child(self.tokens_issued, grant, token_format).inc()

    def auth_failure(self, reason: str) -> None:
        self._child(self.auth_failures, reason).inc()

    def policy_decision(self, result: str) -> None:
        self._child(self.policy_decisions, result).inc()

    def store_commit(self, seconds: float, batch_size: int) -> None:
        """One write transaction committed (called from the store's writer, any thread)."""
        self.store_commit_seconds.observe(seconds)
        self.store_batch_size.observe(batch_size)

    def cache(self, name: str) -> CacheCounts:
        """The hit and miss counters of the cache ``name``."""
        return CacheCounts(self.cache_hits.labels(name).inc, self.cache_misses.labels(name).inc)

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (metric, labels[0] if len(labels) == 1 else "\x00".join(labels))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- scraping ----------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The whole server's figures in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsEndpoint:
    """``GET /metrics``: counts the active Sessions in the store, then answers every figure."""

    def __init__(self, metrics: Metrics, count_sessions: Callable[[], Awaitable[int]]) -> None:
        self.metrics = metrics
        self.count_sessions = count_sessions

    async def handle(self, request: Request, principal: Principal | None) -> Response:
        self.metrics.sessions_active.set(await self.count_sessions())
        # Reading every worker's files takes a moment: off the event loop.
        body = await asyncio.to_thread(self.metrics.exposition)
        return Response(200, body, [(b"content-type", CONTENT_TYPE.encode())])


_WORKER_FILE = re.compile(r"_(\d+)\.db$")


class WorkersProcessCollector:
    """``process_*`` metrics summed over the worker processes that keep multiprocess files.

    Each worker's pid is in the names of its files in ``PROMETHEUS_MULTIPROC_DIR``; its figures are
    read from ``/proc/<pid>`` (Linux), and a pid that has exited is skipped. CPU seconds, memory and
    open files are summed; the start time is the earliest; the file limit is the smallest.
    """

    _COMBINE: dict[str, Callable[[Iterable[float]], float]] = {
        "process_cpu_seconds": sum,
        "process_virtual_memory_bytes": sum,
        "process_resident_memory_bytes": sum,
        "process_open_fds": sum,
        "process_start_time_seconds": min,
        "process_max_fds": min,
    }

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _pids(self) -> set[int]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return set()
        return {int(match.group(1)) for name in names if (match := _WORKER_FILE.search(name))}

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, list[float]] = {}
        for pid in sorted(self._pids()):
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                families.setdefault(family.name, family)
                values.setdefault(family.name, []).extend(sample.value for sample in family.samples)
        for name, family in families.items():
            combine = self._COMBINE.get(name)
            found = values.get(name)
            if combine is None or not found:
                continue
            if family.type == "counter":
                out: Metric = Metric(name, family.documentation, "counter")
                out.add_sample(name + "_total", {}, combine(found))
            else:
                out = GaugeMetricFamily(name, family.documentation, value=combine(found))
            yield out
