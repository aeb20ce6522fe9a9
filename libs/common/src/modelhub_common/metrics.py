"""Prometheus metrics of a service: HTTP requests, events, the database pool, and gauges read at scrape time.

Every service gets :class:`ServiceMetrics` from :func:`modelhub_common.webapp.create_app` (``app.state.metrics``)
and serves it on ``GET /metrics`` on its HTTP port. Names start with ``modelhub_``; labels are bounded: route
*templates* (``/api/v1/models/{model_id}``, a request that matches no route is ``unmatched``), methods, status
classes (``2xx``), consumer names, backend kinds and outcomes, never ids, model names or user names.

Each app owns its own :class:`~prometheus_client.CollectorRegistry` rather than the process-wide default one:
tests (and benchmarks) run several apps in one process, and a shared registry would both refuse the second
app's metrics and mix their counts.

``/metrics`` needs no bearer token, by decision and as Prometheus expects: it holds counts and durations only
(no ids, names, tokens or request contents), and in Kubernetes it is reached on the pod network by the
ServiceMonitor, never routed by the public ingress (see ``deploy/k8s/components/monitoring``).

A service running several worker processes (``modelhub_common.workers``) is one service to Prometheus: the
supervisor gives its workers a directory (``PROMETHEUS_MULTIPROC_DIR``), each worker keeps its values in files
there (prometheus_client's multiprocess mode), and whichever worker answers a scrape reports the sums of all of
them, so counters never jump between workers. Gauges say how workers combine: requests in flight are summed
over the live workers, the outbox backlog and consumer lag (the same for every worker) are the most recent
reading, pool gauges carry a ``pid`` label per worker. Process metrics (CPU, memory) are those of the worker
that answered.

Gauges whose value lives elsewhere (the outbox backlog in PostgreSQL, a consumer's lag in JetStream) are
refreshed by async callbacks registered with :meth:`ServiceMetrics.on_scrape`; ``/metrics`` awaits them (each
with a time limit, a failure only logged) before rendering, so a slow dependency never fails a scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DURATION_BUCKETS",
    "MULTIPROCESS_DIR_VARIABLE",
    "UNMATCHED_ROUTE",
    "HttpMetricsMiddleware",
    "ScrapeCallback",
    "ServiceMetrics",
    "metrics_router",
    "status_class",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route matched (so 1,000 distinct unknown paths make one series)."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds; the buckets of request and processing durations."""

ScrapeCallback = Callable[[], Awaitable[None]]

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Set by the worker supervisor for its workers: where they keep their metric values."""


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def status_class(status: int) -> str:
    """``2xx`` for 200..299, and so on: five values whatever the codes."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class _WorkerInfo(Collector):
    def __init__(self, service: str) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "modelhub_worker_info",
            "Always 1; pid is the process that answered this scrape (its process metrics are its own; the other "
            "series count every worker of the service).",
            labels=("service", "pid"),
        )
        family.add_metric((self._service, str(os.getpid())), 1)
        yield family


class ServiceMetrics:
    """The metrics one service process exposes, in a registry of its own.

    Service-specific metrics (the gateway's, the puller's, RAG's) register into :attr:`registry` from
    their own modules; this class holds what every service shares.
    """

    def __init__(self, service: str, *, scrape_timeout: float = 2.0, process_metrics: bool = True) -> None:
        self.service = service
        self.scrape_timeout = scrape_timeout
        self.registry = CollectorRegistry(auto_describe=True)
        #: Set when this process is one of several workers: the directory all of them write their values to.
        self.multiprocess_dir = multiprocess_dir()
        #: What only this process can say (CPU, memory, GC); apart from :attr:`registry` when the values of
        #: the others are read from the shared directory.
        self._process_registry = CollectorRegistry() if self.multiprocess_dir else self.registry
        if process_metrics:
            ProcessCollector(registry=self._process_registry)
            PlatformCollector(registry=self._process_registry)
            GCCollector(registry=self._process_registry)
            # The worker process that answered this scrape (process metrics are its own). A collector, not a
            # gauge: a gauge's value would go to the shared directory and be reported for every worker.
            self._process_registry.register(_WorkerInfo(service))
        self._scrape_callbacks: dict[str, ScrapeCallback] = {}
        self._extensions: dict[Callable[[ServiceMetrics], Any], Any] = {}
        r = self.registry

        self.http_requests = Counter(
            "modelhub_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            ("service", "route", "method", "status"),
            registry=r,
        )
        self.http_duration = Histogram(
            "modelhub_http_request_duration_seconds",
            "Time from a request's arrival until its response body was sent, by route template and method.",
            ("service", "route", "method"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "modelhub_http_requests_in_flight",
            "HTTP requests being handled now.",
            ("service",),
            registry=r,
            multiprocess_mode="livesum",
        )

        # Events: the outbox (a service that writes rows and emits events) and the consumer loops.
        self.outbox_pending = Gauge(
            "modelhub_outbox_pending_rows",
            "Outbox rows committed but not yet published.",
            ("service",),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.outbox_oldest_age = Gauge(
            "modelhub_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none is pending).",
            ("service",),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.outbox_publish_duration = Histogram(
            "modelhub_outbox_publish_duration_seconds",
            "Time from sending a run of outbox rows to JetStream until their acks were read.",
            ("service",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.outbox_published = Counter(
            "modelhub_outbox_published_rows",
            "Outbox rows published, by outcome (published: stored as new; duplicate: the stream had it).",
            ("service", "outcome"),
            registry=r,
        )
        self.outbox_failures = Counter(
            "modelhub_outbox_publish_failures", "Relay passes stopped by a publish failure.", ("service",), registry=r
        )
        labels = ("service", "consumer")
        self.consumer_delivered = Counter(
            "modelhub_consumer_delivered_messages", "Messages a consumer loop received.", labels, registry=r
        )
        self.consumer_acked = Counter(
            "modelhub_consumer_acked_messages", "Messages handled and acked.", labels, registry=r
        )
        self.consumer_naked = Counter(
            "modelhub_consumer_naked_messages", "Messages handed back for a later redelivery (nak).", labels, registry=r
        )
        self.consumer_dead_lettered = Counter(
            "modelhub_consumer_dead_lettered_messages",
            "Messages given up on: published to the dead-letter stream and terminated.",
            labels,
            registry=r,
        )
        self.consumer_handle_duration = Histogram(
            "modelhub_consumer_handle_duration_seconds",
            "Time a handler took with one message.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.consumer_pending = Gauge(
            "modelhub_consumer_pending_messages",
            "Messages in the stream not yet delivered to the consumer (its lag), from JetStream consumer info.",
            labels,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.consumer_ack_pending = Gauge(
            "modelhub_consumer_ack_pending_messages",
            "Messages delivered to the consumer and not yet acked, from JetStream consumer info.",
            labels,
            registry=r,
            multiprocess_mode="mostrecent",
        )

        # The PostgreSQL pool (psycopg_pool get_stats), read at scrape time.
        self.db_pool_size = Gauge(
            "modelhub_db_pool_connections", "Connections the database pool holds.", ("service", "pool"), registry=r
        )
        self.db_pool_in_use = Gauge(
            "modelhub_db_pool_connections_in_use",
            "Pool connections lent to a task now.",
            ("service", "pool"),
            registry=r,
        )
        self.db_pool_waiting = Gauge(
            "modelhub_db_pool_waiting_requests",
            "Tasks waiting for a pool connection now.",
            ("service", "pool"),
            registry=r,
        )
        self.db_pool_request_errors = Gauge(
            "modelhub_db_pool_request_errors",
            "Requests for a pool connection that failed (timed out, queue full) since start, as the pool counts.",
            ("service", "pool"),
            registry=r,
        )

    def extension(self, factory: Callable[[ServiceMetrics], T]) -> T:
        """The service-specific metrics ``factory`` registers (e.g. ``RagMetrics``), made once per registry:
        an app whose lifespan runs twice (a restart in one process) must not register its series twice."""
        found = self._extensions.get(factory)
        if found is None:
            found = self._extensions[factory] = factory(self)
        return cast(T, found)

    # -- scrape-time gauges --------------------------------------------------------------------------------

    def on_scrape(self, name: str, callback: ScrapeCallback) -> None:
        """Runs ``callback`` before each rendering of ``/metrics``; a second callback of one name replaces it."""
        self._scrape_callbacks[name] = callback

    def remove_scrape_callback(self, name: str) -> None:
        self._scrape_callbacks.pop(name, None)

    async def refresh(self) -> None:
        """Awaits every scrape callback, each within :attr:`scrape_timeout`; failures are logged, not raised."""
        names = list(self._scrape_callbacks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._scrape_callbacks[n](), self.scrape_timeout) for n in names),
            return_exceptions=True,
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("metrics refresh failed", extra={"metrics_source": name, "error": repr(result)})

    async def render(self) -> bytes:
        await self.refresh()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker) + generate_latest(self._process_registry)

    # -- helpers for shared instruments --------------------------------------------------------------------

    def watch_pool(self, pool: Any, name: str = "main") -> None:
        """Reads a psycopg ``AsyncConnectionPool``'s statistics at every scrape (no I/O: it counts in memory).
        ``name`` tells a service's pools apart (``main``, RAG's ``search``)."""

        async def read() -> None:
            stats = pool.get_stats()
            size = stats.get("pool_size", 0)
            available = stats.get("pool_available", 0)
            labels = (self.service, name)
            self.db_pool_size.labels(*labels).set(size)
            self.db_pool_in_use.labels(*labels).set(max(size - available, 0))
            self.db_pool_waiting.labels(*labels).set(stats.get("requests_waiting", 0))
            self.db_pool_request_errors.labels(*labels).set(stats.get("requests_errors", 0))

        self.on_scrape(f"db-pool:{name}", read)

    def consumer(self, durable: str) -> ConsumerMetrics:
        """The counters of one durable consumer, bound to its name."""
        return ConsumerMetrics(self, durable)


class ConsumerMetrics:
    """The instruments of one consumer loop (see :class:`modelhub_common.consumer.Consumer`)."""

    def __init__(self, metrics: ServiceMetrics, durable: str) -> None:
        labels = (metrics.service, durable)
        self.delivered = metrics.consumer_delivered.labels(*labels)
        self.acked = metrics.consumer_acked.labels(*labels)
        self.naked = metrics.consumer_naked.labels(*labels)
        self.dead_lettered = metrics.consumer_dead_lettered.labels(*labels)
        self.handle_duration = metrics.consumer_handle_duration.labels(*labels)
        self.pending = metrics.consumer_pending.labels(*labels)
        self.ack_pending = metrics.consumer_ack_pending.labels(*labels)


class HttpMetricsMiddleware:
    """ASGI middleware: counts every HTTP request and times it, labelled by the route that handled it.

    The route template is read after the app ran (the router stores the matched route in the scope), so a
    request for ``/api/v1/models/123`` counts under ``/api/v1/models/{model_id}``; no route at all gives
    :data:`UNMATCHED_ROUTE`. The status is the one sent with ``http.response.start`` (500 if the app raised
    before sending one); the time runs until the last body chunk was sent, streaming responses included.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        in_flight = metrics.http_in_flight.labels(metrics.service)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            route = _route_template(scope)
            method = _method_label(scope.get("method", ""))
            metrics.http_requests.labels(metrics.service, route, method, status_class(status)).inc()
            metrics.http_duration.labels(metrics.service, route, method).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method_label(method: str) -> str:
    # A client may send any token as a method; only the standard ones become label values.
    return method if method in _METHODS else "other"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    return UNMATCHED_ROUTE


def metrics_router(metrics: ServiceMetrics) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format (no bearer token: see the module docstring)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
