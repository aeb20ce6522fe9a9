"""Wires the registry service: the one place its adapters are built."""

from __future__ import annotations

from fastapi import FastAPI

from modelhub_common import jetstream
from modelhub_common.events import MODELS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import runtime_lifespan
from modelhub_common.webapp import create_app, serve_http
from modelhub_registry import __version__
from modelhub_registry.settings import RegistrySettings

SERVICE = "registry"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="registry", package="modelhub_registry"))


def streams() -> list[jetstream.StreamSpec]:
    return [jetstream.service_stream_spec(MODELS), jetstream.dead_letter_stream_spec()]


def build_app(settings: RegistrySettings) -> FastAPI:
    readiness = Readiness()
    lifespan = runtime_lifespan(SERVICE, settings, streams=streams(), buckets=[settings.bucket], outbox=True)
    return create_app(
        title="modelhub registry",
        version=__version__,
        description="Model files, base models, users and access.",
        readiness=readiness,
        lifespan=lifespan,
    )


async def serve(settings: RegistrySettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: RegistrySettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
