"""Builds the gRPC server: ChatService, the standard health service and server reflection."""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway.entrypoints.auth_interceptor import BearerAuthInterceptor
from modelhub_chat_gateway.entrypoints.chat_servicer import ChatServicer
from modelhub_chat_gateway.entrypoints.grpc_observability import ObservabilityInterceptor
from modelhub_chat_gateway.metrics import GatewayMetrics
from modelhub_common.auth import VerifiedTokens

CHAT_SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
HEALTH_NAMES = ("", CHAT_SERVICE_NAME)


class GrpcServer:
    """Owns the server and its health status: SERVING only between ``start`` and ``begin_shutdown``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tokens: VerifiedTokens,
        servicer: ChatServicer,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        # The observability interceptor comes first: it wraps whatever handler auth chose, denials included.
        self.server = aio.server(interceptors=[ObservabilityInterceptor(metrics), BearerAuthInterceptor(tokens)])
        self.health = health_aio.HealthServicer()
        _add_chat_service(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (CHAT_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")

    async def start(self) -> None:
        for name in HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in HEALTH_NAMES:
            await self.health.set(name, status)

    async def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING first so load balancers move away, then finish in-flight calls within the grace."""
        await self.set_serving(False)
        await self.server.stop(grace_seconds)


class _Handlers:
    """Catches the method handlers the generated code would register, so that one can be changed."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = dict(handlers)


def _bytes_or_message(response: bytes | Any) -> bytes:
    return response if isinstance(response, bytes) else bytes(response.SerializeToString())


def _add_chat_service(servicer: ChatServicer, server: aio.Server) -> None:
    """ChatService as generated, except that ``ListModels`` may answer with bytes already serialized: the
    selector's catalog holds every entry encoded, and a response is their concatenation (no message is built)."""
    caught = _Handlers()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, caught)
    generated = caught.handlers["ListModels"]
    caught.handlers["ListModels"] = grpc.unary_unary_rpc_method_handler(
        generated.unary_unary,
        request_deserializer=generated.request_deserializer,
        response_serializer=_bytes_or_message,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(CHAT_SERVICE_NAME, caught.handlers),))
    server.add_registered_method_handlers(CHAT_SERVICE_NAME, caught.handlers)
