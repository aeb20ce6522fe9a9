"""Wires the puller service: the one place its adapters are built."""

from __future__ import annotations

from fastapi import FastAPI

from modelhub_common import jetstream
from modelhub_common.events import PULLS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import runtime_lifespan
from modelhub_common.webapp import create_app, serve_http
from modelhub_puller import __version__
from modelhub_puller.settings import PullerSettings

SERVICE = "puller"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="puller", package="modelhub_puller"))


def streams() -> list[jetstream.StreamSpec]:
    return [jetstream.service_stream_spec(PULLS), jetstream.dead_letter_stream_spec()]


def build_app(settings: PullerSettings) -> FastAPI:
    readiness = Readiness()
    lifespan = runtime_lifespan(SERVICE, settings, streams=streams(), buckets=[settings.bucket], outbox=False)
    return create_app(
        title="modelhub puller",
        version=__version__,
        description="Pulls of Ollama and Hugging Face models into the S3 store or an Ollama server.",
        readiness=readiness,
        lifespan=lifespan,
    )


async def serve(settings: PullerSettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: PullerSettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
