"""What every gRPC call gets besides auth: a request id (``x-request-id`` metadata, echoed in the initial
metadata and on every log line), metrics by method and status code, and, when tracing is on, a server span
continuing the caller's ``traceparent`` metadata, current while the handler runs (so the answers' spans, SQL
and outgoing calls join it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from modelhub_chat_gateway.metrics import GatewayMetrics
from modelhub_common import tracing
from modelhub_common.request_ids import accept_request_id, current_request_id

REQUEST_ID_METADATA = "x-request-id"
OBSERVED_PREFIX = "/modelhub."
_STREAMS = frozenset({"Chat", "Regenerate"})
#: Codes that mean the server failed (OpenTelemetry's rule for gRPC server spans); the rest are the caller's.
_SERVER_FAULTS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


def _code(context: aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return str(grpc.StatusCode.CANCELLED.name)
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some versions keep the numeric code
        return next((str(c.name) for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "UNKNOWN" if error is not None else str(grpc.StatusCode.OK.name)


class ObservabilityInterceptor(aio.ServerInterceptor):
    """Registered first, so it wraps the handler the auth interceptor chose (denials are counted too)."""

    def __init__(self, metrics: GatewayMetrics | None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        # Health and reflection are probes and tools: neither counted nor given request ids.
        if handler is None or not handler_call_details.method.startswith(OBSERVED_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        sent = metadata.get(REQUEST_ID_METADATA)
        request_id = accept_request_id(sent if isinstance(sent, str) else None)
        # The method's name only: the full path is bounded too, but the short one reads better in dashboards.
        method = handler_call_details.method.rpartition("/")[2] or "unknown"
        metrics = self._metrics
        service = handler_call_details.method.strip("/").partition("/")[0]

        def begin() -> tracing.Span | None:
            return tracing.start_server_span(
                handler_call_details.method,
                metadata,
                **{"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
            )

        def finished(
            context: aio.ServicerContext[Any, Any],
            started: float,
            error: BaseException | None,
            span: tracing.Span | None,
        ) -> None:
            code = _code(context, error)
            if metrics is not None:
                metrics.grpc_calls.labels(method, code).inc()
                metrics.grpc_duration.labels(method).observe(time.perf_counter() - started)
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", code)
                if error is not None and not isinstance(error, asyncio.CancelledError | GeneratorExit):
                    span.record_exception(error)
                if code in _SERVER_FAULTS:
                    tracing.mark_failed(span, code)
                span.end()

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                current_request_id.set(request_id)
                await context.send_initial_metadata(((REQUEST_ID_METADATA, request_id),))
                started = time.perf_counter()
                error: BaseException | None = None
                span = begin()
                try:
                    with tracing.span_in_context(span):
                        return await inner_unary(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finished(context, started, error, span)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream
            streaming = method in _STREAMS

            async def stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                current_request_id.set(request_id)
                await context.send_initial_metadata(((REQUEST_ID_METADATA, request_id),))
                started = time.perf_counter()
                error: BaseException | None = None
                if metrics is not None and streaming:
                    metrics.active_streams.inc()
                span = begin()
                try:
                    # The call's one task drives this generator from start to end: the span stays current
                    # for the whole answer, across the yields.
                    with tracing.span_in_context(span):
                        async for response in inner_stream(request, context):
                            yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    if metrics is not None and streaming:
                        metrics.active_streams.dec()
                    finished(context, started, error, span)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client- or bidi-streaming: none in ChatService
