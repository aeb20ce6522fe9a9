"""OpenTelemetry traces, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set.

:func:`configure_tracing` runs once per process (``service_main`` calls it after logging is configured). It
builds an SDK tracer provider that exports over OTLP/HTTP in batches; the standard variables apply
(``OTEL_SERVICE_NAME`` — default ``modelhub-<service>`` —, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SDK_DISABLED``...). Then
:func:`install` instruments psycopg (:mod:`modelhub_common.db_spans`) and httpx, :func:`instrument_app`
(called by ``create_app``) adds a server span to each FastAPI app's requests, and gRPC servers start theirs
with :func:`start_server_span`.

Across NATS the W3C trace context travels in message headers (``traceparent``/``tracestate``):
:func:`inject_headers` on publish, :func:`consume_span` around a handler. The outbox stores the creating
request's context with its row (:func:`current_carrier`), and the relay publishes under it, so a trace runs
request → outbox → relay → consumer even when the relay publishes after a restart.

When tracing is off, each helper costs one check of a module flag.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from modelhub_common import db_spans

__all__ = [
    "configure_tracing",
    "consume_span",
    "current_carrier",
    "enabled",
    "inject_headers",
    "internal_span",
    "Span",
    "install",
    "instrument_app",
    "mark_failed",
    "produce_span",
    "ServerSpanMiddleware",
    "span_in_context",
    "start_server_span",
    "start_client_span",
    "uninstall",
]

logger = logging.getLogger(__name__)

_TRACER_NAME = "modelhub"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_state: dict[str, Any] = {"provider": None, "tracer": None, "instrumentors": []}


def enabled() -> bool:
    """True once :func:`install` ran (and until :func:`uninstall`)."""
    return _state["provider"] is not None


def configure_tracing(service: str, *, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Turns tracing on when an OTLP endpoint is configured; returns the provider, or None (off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES):
        return None
    # Imported only when used: the exporter pulls in protobuf and requests machinery.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": f"modelhub-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    logger.info("tracing on", extra={"service_name": provider.resource.attributes.get("service.name")})
    return provider


def install(provider: TracerProvider, *processors: SpanProcessor) -> None:
    """Makes ``provider`` the process's tracer provider and instruments psycopg and httpx.

    Tests pass a provider with an in-memory exporter. Calling it again only adds ``processors``.
    """
    if _state["provider"] is None:
        trace.set_tracer_provider(provider)
        # set_tracer_provider refuses a second provider in one process (a test installing again after
        # uninstall): keep using the one in place.
        effective = trace.get_tracer_provider()
        _state["provider"] = effective if isinstance(effective, TracerProvider) else provider
        # One tracer for the process: the SDK builds a new one on every get_tracer call.
        _state["tracer"] = trace.get_tracer(_TRACER_NAME, tracer_provider=_state["provider"])
    for processor in processors:
        _state["provider"].add_span_processor(processor)
    if _state["instrumentors"]:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # gRPC servers make their spans in their own interceptor (one already wraps every call for metrics):
    # a second interceptor per call cost more than the span itself. psycopg's statements get theirs from
    # db_spans, a fraction of the cost of the library instrumentation.
    db_spans.patch(_state["tracer"])
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=_state["provider"])
    _state["instrumentors"].append(instrumentor)


def uninstall() -> None:
    """Removes the library instrumentation again (tests: later apps in the process run untraced)."""
    for instrumentor in _state["instrumentors"]:
        with contextlib.suppress(Exception):
            instrumentor.uninstrument()
    db_spans.unpatch()
    _state["instrumentors"] = []
    _state["provider"] = None
    _state["tracer"] = None


def instrument_app(app: Any) -> None:
    """Traces a FastAPI app's requests when tracing is on (``/healthz``, ``/readyz`` and ``/metrics`` are
    probes and scrapes: not traced), with :class:`ServerSpanMiddleware` as the outermost middleware."""
    if not enabled():
        return
    app.add_middleware(ServerSpanMiddleware)


#: Paths never traced: probes and scrapes, called every few seconds, would drown the requests.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})


class ServerSpanMiddleware:
    """ASGI middleware: one SERVER span per HTTP request, child of the caller's ``traceparent``.

    The OpenTelemetry ASGI instrumentation does the same with much more work on every request, sampled or
    not (it builds the full attribute set before the sampler decides, wraps every message, matches the path
    against all routes for the span's name): on a registry GET that was most of tracing's cost. Here an
    unsampled request costs the sampler's decision and one context switch; a recorded one gets the
    semantic-convention attributes (method, route template, path, status, scheme, peer) named after the
    route the router matched, read from the scope after the app ran, as the metrics middleware does.
    """

    def __init__(self, app: Any, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.app = app
        # A provider of its own (the benchmark compares several in one process); else the process's.
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider) if tracer_provider else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tracer = self._tracer or _state["tracer"]
        if scope["type"] != "http" or tracer is None or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        parent = _parent_context(
            {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in scope["headers"]
                if name in _TRACE_HEADERS
            }
        )
        method = scope["method"]
        span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        if not span.is_recording():
            try:
                await self.app(scope, receive, send)
            finally:
                otel_context.detach(token)
            return
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.record_exception(exc)  # the status stays 500 unless an answer had started
            raise
        finally:
            _finish_server_span(span, scope, method, status)
            otel_context.detach(token)


def _finish_server_span(span: Span, scope: Any, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "http.response.status_code": status,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    if isinstance(route, str) and route:
        attributes["http.route"] = route
        span.update_name(f"{method} {route}")
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    span.set_attributes(attributes)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    span.end()


def _tracer() -> trace.Tracer:
    tracer: trace.Tracer = _state["tracer"]
    return tracer


def _parent_context(carrier: Mapping[str, Any]) -> otel_context.Context | None:
    """The context a caller sent (``traceparent``/``tracestate``), or None when it sent none."""
    headers = {key: value for key in ("traceparent", "tracestate") if isinstance(value := carrier.get(key), str)}
    return propagate.extract(headers) if headers else None


def current_carrier() -> dict[str, str]:
    """The current trace context as headers (``traceparent``...), empty when none is being recorded."""
    if not enabled():
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def inject_headers(headers: MutableMapping[str, str]) -> None:
    """Adds the current trace context to NATS headers about to be published."""
    if enabled():
        propagate.inject(headers)


@contextlib.contextmanager
def produce_span(subject: str, parent: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Span | None]:
    """A PRODUCER span for one publish, child of ``parent`` (a stored carrier) or of the current span; the
    caller injects it into the message's headers inside the block."""
    if not enabled():
        yield None
        return
    ctx = propagate.extract(dict(parent)) if parent else None
    with _tracer().start_as_current_span(
        f"publish {subject}",
        context=ctx,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject, **attributes},
    ) as span:
        yield span


@contextlib.contextmanager
def consume_span(subject: str, headers: Mapping[str, str], consumer: str) -> Iterator[Span | None]:
    """A CONSUMER span around a handler, child of the context the message carries."""
    if not enabled():
        yield None
        return
    parent = propagate.extract(dict(headers))
    token = otel_context.attach(parent)
    try:
        with _tracer().start_as_current_span(
            f"consume {subject}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "messaging.consumer.group.name": consumer,
            },
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


def start_server_span(name: str, carrier: Mapping[str, Any], **attributes: Any) -> Span | None:
    """A SERVER span, child of the context ``carrier`` (request metadata) holds; not made current — wrap the
    handler in :func:`span_in_context` — and ended by the caller. None when tracing is off."""
    if not enabled():
        return None
    return _tracer().start_span(name, context=_parent_context(carrier), kind=SpanKind.SERVER, attributes=attributes)


@contextlib.contextmanager
def internal_span(name: str, **attributes: Any) -> Iterator[Span | None]:
    """An INTERNAL span around a block, current inside it (a step of a request: one model's answer)."""
    if not enabled():
        yield None
        return
    with _tracer().start_as_current_span(
        name, attributes=attributes, record_exception=True, set_status_on_exception=True
    ) as span:
        yield span


def start_client_span(name: str, **attributes: Any) -> Span | None:
    """A CLIENT span that is not made current: for a call driven by an async generator, which must not leave
    its span current in the consumer between items. Make it current around each step with
    :func:`span_in_context`; the caller ends it."""
    if not enabled():
        return None
    return _tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


@contextlib.contextmanager
def span_in_context(span: Span | None) -> Iterator[None]:
    """Makes ``span`` current for the block (nothing when it is None)."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def mark_failed(span: Span | None, description: str) -> None:
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, description))
