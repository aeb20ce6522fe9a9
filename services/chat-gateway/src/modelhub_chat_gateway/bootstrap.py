"""Wires the chat gateway: gRPC ChatService (+ health, reflection) and an HTTP port for probes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from modelhub_chat_gateway import __version__
from modelhub_chat_gateway.entrypoints.grpc_server import GrpcServer
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common import jetstream
from modelhub_common.events import MODELS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import open_runtime
from modelhub_common.webapp import create_app, serve_http

SERVICE = "chat-gateway"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="gateway", package="modelhub_chat_gateway"))
logger = logging.getLogger(__name__)


def build_app(settings: ChatGatewaySettings) -> FastAPI:
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        streams = [jetstream.service_stream_spec(MODELS), jetstream.dead_letter_stream_spec()]
        async with open_runtime(SERVICE, settings, readiness, streams=streams, buckets=[settings.bucket]) as runtime:
            app.state.runtime = runtime
            grpc_server = GrpcServer(
                host=settings.host,
                port=settings.grpc_port,
                secret=settings.jwt_secret.get_secret_value,
                issuer=settings.jwt_issuer,
            )
            app.state.grpc_port = grpc_server.port
            await grpc_server.start()
            readiness.started = True
            await grpc_server.set_serving(True)
            logger.info("gateway started", extra={"grpc_port": grpc_server.port, "port": settings.port})
            try:
                yield
            finally:
                readiness.stopping = True
                await grpc_server.stop(settings.shutdown_grace_seconds)

    return create_app(
        title="modelhub chat gateway (HTTP probes)",
        version=__version__,
        description="Health endpoints of the gRPC chat gateway; chats are served over gRPC.",
        readiness=readiness,
        lifespan=lifespan,
    )


async def serve(settings: ChatGatewaySettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: ChatGatewaySettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
