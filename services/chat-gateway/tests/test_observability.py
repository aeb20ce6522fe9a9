"""Gateway metrics and request ids: gRPC calls by method and code, per-answer figures by backend kind, the
``x-request-id`` metadata echoed, all read from the real gateway's /metrics."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelhub.chat.v1 import chat_pb2

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_chat_turn_is_counted_by_method_code_and_backend(gateway: Gateway, ollama_double: OllamaDouble) -> None:
    before = _samples(gateway.http_url)
    result = await gateway.chat(["echo-a:latest"], f"hello {uuid.uuid4().hex[:6]}")
    assert all(a.error is None for a in result.answers.values())
    after = _samples(gateway.http_url)

    assert _value(after, "modelhub_grpc_server_calls_total", method="Chat", code="OK") == (
        _value(before, "modelhub_grpc_server_calls_total", method="Chat", code="OK") + 1
    )
    ttft = "modelhub_gateway_time_to_first_token_seconds_count"
    assert _value(after, ttft, backend="ollama") == _value(before, ttft, backend="ollama") + 1
    total = "modelhub_gateway_answer_duration_seconds_count"
    assert _value(after, total, backend="ollama") == _value(before, total, backend="ollama") + 1
    tokens_out = _value(after, "modelhub_gateway_tokens_total", backend="ollama", direction="out")
    assert tokens_out > _value(before, "modelhub_gateway_tokens_total", backend="ollama", direction="out")
    assert _value(after, "modelhub_gateway_active_streams") == 0
    # No model id or name ever becomes a label value.
    assert not any("echo-a" in value for _, labels in after for _, value in labels)


async def test_an_openai_compatible_answer_is_counted_like_a_grpc_one(
    gateway: Gateway, ollama_double: OllamaDouble
) -> None:
    before = _samples(gateway.http_url)
    headers = {"Authorization": gateway.metadata()[0][1]}
    body = {"model": "echo-a:latest", "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex[:6]}"}]}
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers, timeout=30) as client:
        plain = await client.post("/v1/chat/completions", json=body)
        streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert plain.status_code == 200 and streamed.status_code == 200, (plain.text, streamed.text)
    after = _samples(gateway.http_url)

    for name in (
        "modelhub_gateway_time_to_first_token_seconds_count",
        "modelhub_gateway_answer_duration_seconds_count",
    ):
        assert _value(after, name, backend="ollama") == _value(before, name, backend="ollama") + 2, name
    done = "modelhub_gateway_answers_total"
    assert _value(after, done, backend="ollama", outcome="done") == (
        _value(before, done, backend="ollama", outcome="done") + 2
    )
    tokens_out = _value(after, "modelhub_gateway_tokens_total", backend="ollama", direction="out")
    assert tokens_out > _value(before, "modelhub_gateway_tokens_total", backend="ollama", direction="out")


async def test_a_call_without_a_token_counts_as_unauthenticated(gateway: Gateway) -> None:
    before = _samples(gateway.http_url)
    try:
        await gateway.stub.ListConversations(chat_pb2.ListConversationsRequest(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("the call without a token was answered")
    key = {"method": "ListConversations", "code": "UNAUTHENTICATED"}
    after = _samples(gateway.http_url)
    assert _value(after, "modelhub_grpc_server_calls_total", **key) == (
        _value(before, "modelhub_grpc_server_calls_total", **key) + 1
    )


async def test_the_request_id_is_echoed_in_initial_metadata(gateway: Gateway) -> None:
    call = gateway.stub.ListConversations(
        chat_pb2.ListConversationsRequest(), metadata=[*gateway.metadata(), ("x-request-id", "grpc-req-7")], timeout=10
    )
    await call
    assert dict(await call.initial_metadata())["x-request-id"] == "grpc-req-7"
    fresh = gateway.stub.ListConversations(chat_pb2.ListConversationsRequest(), metadata=gateway.metadata(), timeout=10)
    await fresh
    made = dict(await fresh.initial_metadata())["x-request-id"]
    assert len(made) == 32 and made != "grpc-req-7"


async def test_grpc_calls_are_traced_when_tracing_is_on(gateway_factory: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from modelhub_common import tracing

    exporter = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(exporter))
    try:
        gateway = await gateway_factory()  # built while tracing is on: its gRPC server is instrumented
        call = gateway.stub.ListConversations(
            chat_pb2.ListConversationsRequest(), metadata=[*gateway.metadata(), ("x-request-id", "traced-1")]
        )
        await call
        assert dict(await call.initial_metadata())["x-request-id"] == "traced-1"
    finally:
        tracing.uninstall()
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER and "ListConversations" in s.name]
    assert servers, [s.name for s in exporter.get_finished_spans()]
    # The call's SQL ran inside it, in the same trace.
    trace_id = servers[0].context.trace_id
    assert any(
        s.context.trace_id == trace_id and s.kind is SpanKind.CLIENT and "db.system" in str(dict(s.attributes or {}))
        for s in exporter.get_finished_spans()
    )


async def test_a_two_model_turn_is_one_trace_with_the_answers_as_sibling_spans(
    gateway_factory: Any, ollama_double: OllamaDouble
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from modelhub_common import tracing

    exporter = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(exporter))
    try:
        gateway = await gateway_factory()
        text = f"traced {uuid.uuid4().hex[:6]}"
        result = await gateway.chat(["echo-a:latest", "fail-x:latest"], text)
        assert result.answers["echo-a:latest"].error is None and result.answers["fail-x:latest"].error
    finally:
        tracing.uninstall()
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.kind is SpanKind.SERVER and s.name.endswith("/Chat")]
    in_trace = [s for s in spans if s.context.trace_id == call.context.trace_id]
    answers = {
        (s.attributes or {})["modelhub.model.id"]: s
        for s in in_trace
        if s.name == "answer" and s.parent is not None and s.parent.span_id == call.context.span_id
    }
    # Both models answer under the call, side by side; the failing one says so.
    assert set(answers) == {"echo-a:latest", "fail-x:latest"}
    assert answers["fail-x:latest"].status.status_code is StatusCode.ERROR
    assert answers["echo-a:latest"].status.status_code is not StatusCode.ERROR
    for model, answer in answers.items():
        [backend] = [
            s
            for s in in_trace
            if s.kind is SpanKind.CLIENT
            and s.parent is not None
            and s.parent.span_id == answer.context.span_id
            and s.name == "chat ollama"
        ]
        assert (backend.attributes or {})["gen_ai.request.model"] == model
        # The backend was sent that span as its parent: a traced model server continues the same trace.
        sent = [header.rsplit("-", 1)[0] for name, header in ollama_double.traceparents if name == model and header]
        assert f"00-{call.context.trace_id:032x}-{backend.context.span_id:016x}" in sent
