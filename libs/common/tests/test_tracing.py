"""Trace context across NATS with the SDK's in-memory exporter: the outbox stores the creating span's context,
a relay started later (a restart) publishes under it, and the consumer loop continues the same trace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelhub.events.v1 import events_pb2
from modelhub_common import tracing
from modelhub_common.consumer import Consumer, MsgContext
from modelhub_common.events import EventEnvelope, new_envelope
from modelhub_common.jetstream import ConsumerSpec, StreamSpec, connect, drain, ensure_stream
from modelhub_common.migrations import COMMON_MIGRATIONS, migrate
from modelhub_common.outbox import OutboxRelay, enqueue


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(exporter))
    yield exporter
    tracing.uninstall()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="test-tracing")
    yield client
    await drain(client)


def _envelope(subject: str) -> EventEnvelope:
    return new_envelope(
        subject, actor="t", role="service", source="test", payload=events_pb2.ModelDeleted(model_id="m", last_version=1)
    )


async def test_the_relay_after_a_restart_publishes_under_the_stored_context_and_the_consumer_continues_it(
    spans: InMemorySpanExporter, pg_url: str, nc: Client
) -> None:
    await migrate(pg_url, [COMMON_MIGRATIONS])
    token = uuid.uuid4().hex[:8]
    stream, subject = f"TRACE_{token}", f"trace{token}.v1.deleted"
    js = nc.jetstream()
    await ensure_stream(js, StreamSpec(name=stream, subjects=(f"trace{token}.v1.>",), storage="memory"))

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("create request") as request_span:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.transaction():
            await enqueue(conn, subject, _envelope(subject))
    request_trace = request_span.get_span_context().trace_id
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        stored = await (await conn.execute("SELECT trace_context FROM outbox ORDER BY id DESC LIMIT 1")).fetchone()
    assert stored is not None and stored[0]["traceparent"].split("-")[1] == format(request_trace, "032x")

    # No relay ran while the row was added; a new one (as after a restart) publishes it outside any span.
    assert trace.get_current_span().get_span_context().is_valid is False
    relay = OutboxRelay(pg_url, js, name=f"trace-{token}")
    assert await relay.publish_pending() == 1

    seen: list[tuple[int, dict[str, str]]] = []
    done = asyncio.Event()
    stop = asyncio.Event()

    async def handler(envelope: EventEnvelope, ctx: MsgContext) -> None:
        seen.append((trace.get_current_span().get_span_context().trace_id, dict(ctx.headers)))
        done.set()

    consumer = Consumer(js, stream, ConsumerSpec(durable=f"trace-{token}"), handler, fetch_timeout=0.5)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(done.wait(), 30)
    stop.set()
    await task

    assert seen[0][0] == request_trace
    assert seen[0][1]["traceparent"].split("-")[1] == format(request_trace, "032x")
    finished = {s.name: s for s in spans.get_finished_spans() if s.context.trace_id == request_trace}
    publish, consume = finished[f"publish {subject}"], finished[f"consume {subject}"]
    assert publish.kind is SpanKind.PRODUCER and consume.kind is SpanKind.CONSUMER
    assert publish.parent is not None and publish.parent.span_id == request_span.get_span_context().span_id
    assert consume.parent is not None and consume.parent.span_id == publish.context.span_id


async def test_without_tracing_nothing_is_stored_or_sent(pg_url: str, nc: Client) -> None:
    assert not tracing.enabled()
    await migrate(pg_url, [COMMON_MIGRATIONS])
    with trace.get_tracer("test").start_as_current_span("untraced"):
        async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.transaction():
            await enqueue(conn, "untraced.v1.deleted", _envelope("untraced.v1.deleted"))
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        stored = await (await conn.execute("SELECT trace_context FROM outbox ORDER BY id DESC LIMIT 1")).fetchone()
    assert stored == (None,)
    assert tracing.current_carrier() == {}


async def test_statements_get_a_span_only_inside_a_sampled_trace(spans: InMemorySpanExporter, pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("SELECT 1")  # no trace: no span
        assert spans.get_finished_spans() == ()
        with trace.get_tracer("test").start_as_current_span("request") as request:
            await conn.execute("select %s::int", (2,))
            with pytest.raises(psycopg.errors.UndefinedTable):
                await conn.execute("SELECT * FROM no_such_table")
    with psycopg.connect(pg_url, autocommit=True) as sync_conn, trace.get_tracer("test").start_as_current_span("job"):
        sync_conn.execute("UPDATE pg_settings SET setting = setting WHERE false")

    statements = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert [s.name for s in statements] == ["SELECT", "SELECT", "UPDATE"]
    first, failed, sync = statements
    assert first.parent is not None and first.parent.span_id == request.get_span_context().span_id
    assert first.attributes is not None and first.attributes["db.system"] == "postgresql"
    assert first.attributes["db.statement"] == "select %s::int"
    assert not failed.status.is_ok and "UndefinedTable" in (failed.status.description or "")
    assert sync.attributes is not None and sync.attributes["db.statement"].startswith("UPDATE pg_settings")
