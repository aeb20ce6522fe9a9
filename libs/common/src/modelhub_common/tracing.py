"""OpenTelemetry traces, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set.

:func:`configure_tracing` runs once per process (``service_main`` calls it after logging is configured). It
builds an SDK tracer provider that exports over OTLP/HTTP in batches; the standard variables apply
(``OTEL_SERVICE_NAME`` — default ``modelhub-<service>`` —, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SDK_DISABLED``...). Then
:func:`install` instruments psycopg, httpx and the gRPC aio server, and :func:`instrument_app` (called by
``create_app``) each FastAPI app.

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

__all__ = [
    "configure_tracing",
    "consume_span",
    "current_carrier",
    "enabled",
    "inject_headers",
    "Span",
    "install",
    "instrument_app",
    "mark_failed",
    "produce_span",
    "uninstall",
]

logger = logging.getLogger(__name__)

_TRACER_NAME = "modelhub"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_state: dict[str, Any] = {"provider": None, "instrumentors": []}


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
    """Makes ``provider`` the process's tracer provider and instruments psycopg, httpx and gRPC servers.

    Tests pass a provider with an in-memory exporter. Calling it again only adds ``processors``.
    """
    if _state["provider"] is None:
        trace.set_tracer_provider(provider)
        # set_tracer_provider refuses a second provider in one process (a test installing again after
        # uninstall): keep using the one in place.
        effective = trace.get_tracer_provider()
        _state["provider"] = effective if isinstance(effective, TracerProvider) else provider
    for processor in processors:
        _state["provider"].add_span_processor(processor)
    if _state["instrumentors"]:
        return
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    grpc_server = GrpcAioInstrumentorServer()  # type: ignore[no-untyped-call]
    for instrumentor in (PsycopgInstrumentor(), HTTPXClientInstrumentor(), grpc_server):
        instrumentor.instrument(tracer_provider=_state["provider"])
        _state["instrumentors"].append(instrumentor)


def uninstall() -> None:
    """Removes the library instrumentation again (tests: later apps in the process run untraced)."""
    for instrumentor in _state["instrumentors"]:
        with contextlib.suppress(Exception):
            instrumentor.uninstrument()
    _state["instrumentors"] = []
    _state["provider"] = None


def instrument_app(app: Any) -> None:
    """Traces a FastAPI app's requests when tracing is on (``/healthz``, ``/readyz`` and ``/metrics`` are
    probes and scrapes: not traced)."""
    if not enabled():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One span per request: the ASGI instrumentation's extra spans for each message received and sent
    # (three on a plain GET) cost more than they tell.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_state["provider"],
        excluded_urls="/healthz,/readyz,/metrics",
        exclude_spans=["receive", "send"],
    )


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME, tracer_provider=_state["provider"])


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


def mark_failed(span: Span | None, description: str) -> None:
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, description))
