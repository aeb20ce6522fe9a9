"""The HTTP server span (:class:`ServerSpanMiddleware`): named after the matched route, child of the caller's
``traceparent``, honouring the caller's sampling decision, errors marked, probes left out. Driven through
ASGI in-process with the SDK's in-memory exporter (no server is needed to see what the middleware records)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from modelhub_common.tracing import ServerSpanMiddleware

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _app(provider: TracerProvider, seen: list[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        seen.append(get_current_span().get_span_context().trace_id)
        return {"id": thing_id}

    @app.get("/api/v1/broken")
    async def broken() -> None:
        raise RuntimeError("boom")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(ServerSpanMiddleware, tracer_provider=provider)
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def _provider(exporter: InMemorySpanExporter, **options: Any) -> TracerProvider:
    provider = TracerProvider(**options)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_a_request_is_one_server_span_named_after_its_route_and_child_of_the_callers_context(
    exporter: InMemorySpanExporter,
) -> None:
    seen: list[int] = []
    async with _client(_app(_provider(exporter), seen)) as client:
        answer = await client.get("/api/v1/things/7", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"})
        assert answer.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    [span] = exporter.get_finished_spans()
    assert span.name == "GET /api/v1/things/{thing_id}" and span.kind is SpanKind.SERVER
    assert span.context.trace_id == int(TRACE_ID, 16) and span.parent is not None
    assert span.parent.span_id == int(PARENT_SPAN, 16)
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "http.route": "/api/v1/things/{thing_id}",
        "url.path": "/api/v1/things/7",
        "url.scheme": "http",
        "client.address": "127.0.0.1",
    }
    # The handler ran inside the span: what it calls (SQL, HTTP, publishes) joins the same trace.
    assert seen == [int(TRACE_ID, 16)]


async def test_a_failing_handler_gives_an_error_span_with_the_exception(exporter: InMemorySpanExporter) -> None:
    async with _client(_app(_provider(exporter), [])) as client:
        assert (await client.get("/api/v1/broken")).status_code == 500
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["http.response.status_code"] == 500
    assert any(event.name == "exception" for event in span.events)


async def test_the_callers_decision_not_to_sample_is_kept_and_passed_on(exporter: InMemorySpanExporter) -> None:
    # Sampling everything of our own: only the caller's flag can make the request unrecorded.
    seen: list[int] = []
    async with _client(_app(_provider(exporter, sampler=ParentBased(TraceIdRatioBased(1.0))), seen)) as client:
        answer = await client.get("/api/v1/things/8", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-00"})
        assert answer.status_code == 200
        assert (await client.get("/api/v1/things/9")).status_code == 200
    spans = exporter.get_finished_spans()
    # The unsampled request recorded nothing but still ran in the caller's trace (its id goes downstream).
    assert [span.attributes["url.path"] for span in spans if span.attributes] == ["/api/v1/things/9"]
    assert seen[0] == int(TRACE_ID, 16) and seen[1] not in (0, int(TRACE_ID, 16))
