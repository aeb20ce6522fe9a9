"""Checks the bearer token on every ChatService call; health and reflection stay open for probes."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from modelhub_common.auth import Principal, VerifiedTokens, parse_authorization_header
from modelhub_common.errors import AuthError

PROTECTED_PREFIX = "/modelhub.chat.v1.ChatService/"

# The verified caller of the current RPC, set by the interceptor before the servicer runs.
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("current_principal")
# Its bearer token, forwarded to the registry and the RAG service so that their access rules apply.
current_token: contextvars.ContextVar[str] = contextvars.ContextVar("current_token")


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def abort_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def abort_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator like the real handler

    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            abort_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        abort_unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class BearerAuthInterceptor(aio.ServerInterceptor):
    def __init__(self, tokens: VerifiedTokens) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PROTECTED_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        raw = metadata.get("authorization")
        try:
            token = parse_authorization_header(raw if isinstance(raw, str) else None)
            principal = self._tokens.verify(token)
        except AuthError as exc:
            return _deny(handler, exc.message)
        current_principal.set(principal)
        current_token.set(token)
        return handler
