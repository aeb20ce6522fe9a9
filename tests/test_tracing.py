"""One trace from a registry request to another service's consumer: create → outbox → relay → NATS → the RAG
service's model-events consumer, recorded by the SDK's in-memory exporter (tracing on, in this process)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelhub_common import tracing
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.ports import pick_free_port

WAIT = 60.0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(exporter))
    yield exporter
    tracing.uninstall()


@pytest.fixture
def rag_consuming_model_events(
    spans: InMemorySpanExporter, service_settings: Callable[..., Any], postgres_admin_url: str, onnx_embedder: Any
) -> Iterator[str]:
    from modelhub_rag import bootstrap as rag_bootstrap
    from modelhub_rag.settings import RagSettings

    name = f"rag_{uuid.uuid4().hex[:12]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        settings: RagSettings = service_settings(
            RagSettings, port=pick_free_port(), database_url=database_url(postgres_admin_url, name)
        )
        asyncio.run(rag_bootstrap.run_migrations(settings))
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        app = rag_bootstrap.build_app(settings, embedder=onnx_embedder)
        with serve_in_thread(app, name="rag-traced", port=settings.port, start_timeout=120) as url:
            yield url
    finally:
        drop_database(postgres_admin_url, name)


def _find(exporter: InMemorySpanExporter, match: Callable[[ReadableSpan], bool]) -> ReadableSpan:
    deadline = time.monotonic() + WAIT
    while True:
        found = [s for s in exporter.get_finished_spans() if match(s)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the span never finished"
        time.sleep(0.1)


def test_a_model_create_and_the_rag_consumer_share_one_trace(
    spans: InMemorySpanExporter,
    rag_consuming_model_events: str,
    registry_service: str,
    make_token: Callable[..., str],
) -> None:
    admin = {"Authorization": f"Bearer {make_token()}", "X-Request-ID": "trace-test-1"}
    model_id = f"traced-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=registry_service, headers=admin, timeout=30) as registry:
        assert registry.post("/api/v1/base-models", json={"id": "llama3.1:8b"}).status_code == 201
        created = registry.post("/api/v1/models", json={"id": model_id, "name": "T", "base_model_id": "llama3.1:8b"})
        assert created.status_code == 201, created.text

    server = _find(
        spans,
        lambda s: (
            s.kind is SpanKind.SERVER
            and s.attributes is not None
            and s.attributes.get("http.route") == "/api/v1/models"
            and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
        ),
    )
    trace_id = server.context.trace_id
    subject = "modelhub.models.v1.created"
    publish = _find(spans, lambda s: s.name == f"publish {subject}" and s.context.trace_id == trace_id)
    consume = _find(
        spans,
        lambda s: (
            s.name == f"consume {subject}"
            and s.context.trace_id == trace_id
            and s.attributes is not None
            and s.attributes.get("messaging.consumer.group.name") == "rag-model-events"
        ),
    )
    assert publish.kind is SpanKind.PRODUCER and consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None and consume.parent.span_id == publish.context.span_id
    # With psycopg instrumented, the heavier database paths still work: RAG's ingest (binary COPY of
    # vectors) and the registry's export (a server-side cursor).
    with httpx.Client(base_url=rag_consuming_model_events, headers=admin, timeout=60) as rag:
        kid = rag.post("/api/v1/knowledge", json={"name": "traced"}).json()["id"]
        text = b"Traces join a request to the consumers of its events.\n" * 30
        assert (
            rag.post(f"/api/v1/knowledge/{kid}/files", files={"file": ("t.txt", text, "text/plain")}).status_code == 202
        )
        deadline = time.monotonic() + WAIT
        while (status := rag.get(f"/api/v1/knowledge/{kid}/files").json()["items"][0]["status"]) not in (
            "indexed",
            "failed",
        ):
            assert time.monotonic() < deadline, "the file was never indexed"
            time.sleep(0.2)
        assert status == "indexed"
        query = rag.post(f"/api/v1/knowledge/{kid}/query", json={"query": "what joins a request?"})
        assert query.status_code == 200 and query.json()["results"], query.text
    with httpx.Client(base_url=registry_service, headers=admin, timeout=30) as registry:
        exported = registry.get("/api/v1/models/export")
        assert exported.status_code == 200 and model_id in exported.text

    # The database work of the request is in the trace too (psycopg instrumentation).
    assert any(
        s.context.trace_id == trace_id and s.attributes and "db.system" in str(dict(s.attributes))
        for s in spans.get_finished_spans()
    )
