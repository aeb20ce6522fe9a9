"""Wires the rag service: the one place its adapters are built."""

from __future__ import annotations

from fastapi import FastAPI

from modelhub_common import jetstream
from modelhub_common.events import KNOWLEDGE
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import runtime_lifespan
from modelhub_common.webapp import create_app, serve_http
from modelhub_rag import __version__
from modelhub_rag.settings import RagSettings

SERVICE = "rag"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="rag", package="modelhub_rag"))


def streams() -> list[jetstream.StreamSpec]:
    return [jetstream.service_stream_spec(KNOWLEDGE), jetstream.dead_letter_stream_spec()]


def build_app(settings: RagSettings) -> FastAPI:
    readiness = Readiness()
    lifespan = runtime_lifespan(SERVICE, settings, streams=streams(), buckets=[settings.bucket], outbox=False)
    return create_app(
        title="modelhub rag",
        version=__version__,
        description="Knowledge collections embedded into pgvector; retrieval with citations.",
        readiness=readiness,
        lifespan=lifespan,
    )


async def serve(settings: RagSettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: RagSettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
