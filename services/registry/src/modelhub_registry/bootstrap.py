"""Wires the registry service: the one place its adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from modelhub_common import jetstream
from modelhub_common.audit import audit_app
from modelhub_common.consumer import Consumer
from modelhub_common.events import AUDIT, MODELS, PULLS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import Runtime, open_runtime
from modelhub_common.webapp import create_app, serve_http
from modelhub_common.workers import worker_process_app
from modelhub_registry import __version__
from modelhub_registry.adapters.knowledge_client import KnowledgeClient
from modelhub_registry.entrypoints import http_admin, http_audit, http_auth, http_filters, http_models, http_tools
from modelhub_registry.entrypoints.consumers import AUDIT_EVENTS, PULL_EVENTS, audit_events_handler, pull_events_handler
from modelhub_registry.entrypoints.deps import Services
from modelhub_registry.entrypoints.http_audit import SENSITIVE_READS
from modelhub_registry.service_layer.audit import AuditLog
from modelhub_registry.service_layer.base_models import BaseModelService
from modelhub_registry.service_layer.directory import DirectoryService
from modelhub_registry.service_layer.filters import FilterService
from modelhub_registry.service_layer.models import ModelService
from modelhub_registry.service_layer.passwords import PasswordService
from modelhub_registry.service_layer.tool_servers import ToolServerService
from modelhub_registry.service_layer.transfer import TransferService
from modelhub_registry.settings import RegistrySettings

SERVICE = "registry"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="registry", package="modelhub_registry"))
logger = logging.getLogger(__name__)


def streams(settings: RegistrySettings) -> list[jetstream.StreamSpec]:
    # PULLS is provisioned here too (idempotently) because the registry consumes the puller's events.
    replicas = settings.stream_replicas
    return [
        jetstream.service_stream_spec(MODELS, replicas=replicas),
        jetstream.service_stream_spec(PULLS, replicas=replicas),
        jetstream.service_stream_spec(AUDIT, replicas=replicas),
        jetstream.dead_letter_stream_spec(replicas=replicas),
    ]


def _knowledge_client(settings: RegistrySettings, http: httpx.AsyncClient) -> KnowledgeClient | None:
    if not settings.rag_url:
        return None
    return KnowledgeClient(
        http, settings.rag_url, timeout=settings.rag_timeout_seconds, concurrency=settings.rag_concurrency
    )


def build_services(settings: RegistrySettings, runtime: Runtime, http: httpx.AsyncClient) -> Services:
    models = ModelService(
        runtime.require_pool(), runtime.require_store(), bucket=settings.bucket, limits=settings.limits()
    )
    tool_servers = ToolServerService(
        runtime.require_pool(),
        http,
        limits=settings.tool_server_limits(),
        allow_private_urls=settings.allow_private_urls,
    )
    filters = FilterService(
        runtime.require_pool(), limits=settings.filter_limits(), allow_private_urls=settings.allow_private_urls
    )
    directory = DirectoryService(
        runtime.require_pool(),
        secret=settings.jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        max_token_ttl=settings.max_token_ttl_seconds,
    )
    return Services(
        passwords=PasswordService(runtime.require_pool(), directory, settings.login_policy()),
        tool_servers=tool_servers,
        filters=filters,
        settings=settings,
        models=models,
        transfer=TransferService(
            models, knowledge=_knowledge_client(settings, http), tool_servers=tool_servers, filters=filters
        ),
        base_models=BaseModelService(runtime.require_pool(), http, allow_private_urls=settings.allow_private_urls),
        directory=directory,
    )


async def _refresh_tool_servers(tool_servers: ToolServerService, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            await tool_servers.refresh_all()
        except Exception as exc:  # the loop must outlive one bad round; the error is logged
            logger.warning("tool server refresh round failed", extra={"error": repr(exc)})


async def _sweep_audit_log(audit: AuditLog, stop: asyncio.Event, interval: float = 3600.0) -> None:
    while not stop.is_set():
        try:
            deleted = await audit.sweep(datetime.now(UTC))
            if deleted:
                logger.info("audit log rows past their retention deleted", extra={"deleted": deleted})
        except Exception as exc:  # the loop must outlive one bad round; the error is logged
            logger.warning("audit log sweep failed", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _sync_connections(base_models: BaseModelService, interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await base_models.sync_all()
        except Exception as exc:  # the loop must outlive one bad round; the error is logged
            logger.warning("connection sync round failed", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def build_app(settings: RegistrySettings) -> FastAPI:
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_runtime(
                SERVICE,
                settings,
                readiness,
                streams=streams(settings),
                buckets=[settings.bucket],
                outbox=True,
                metrics=app.state.metrics,
            ) as runtime,
            httpx.AsyncClient(timeout=settings.connection_timeout_seconds, follow_redirects=False) as http,
        ):
            svc = build_services(settings, runtime, http)
            app.state.runtime = runtime
            app.state.services = svc
            app.state.audit = audit = AuditLog(runtime.require_pool(), retention_days=settings.audit_retention_days)
            if settings.audit_retention_days > 0:
                runtime.spawn("audit-retention", _sweep_audit_log(audit, runtime.stop))
            audit_consumer = Consumer(
                runtime.js, AUDIT.stream, AUDIT_EVENTS, audit_events_handler(audit, SERVICE), metrics=runtime.metrics
            )
            runtime.spawn("audit-events-consumer", audit_consumer.run(runtime.stop))
            consumer = Consumer(
                runtime.js, PULLS.stream, PULL_EVENTS, pull_events_handler(svc.base_models), metrics=runtime.metrics
            )
            runtime.spawn("pull-events-consumer", consumer.run(runtime.stop))
            if settings.connection_sync_seconds > 0:
                runtime.spawn(
                    "connection-sync",
                    _sync_connections(svc.base_models, settings.connection_sync_seconds, runtime.stop),
                )
            if settings.tool_refresh_seconds > 0 and svc.tool_servers is not None:
                runtime.spawn(
                    "tool-server-refresh",
                    _refresh_tool_servers(svc.tool_servers, settings.tool_refresh_seconds, runtime.stop),
                )
            readiness.started = True
            logger.info("registry started", extra={"port": settings.port})
            yield

    app = create_app(
        title="modelhub registry",
        version=__version__,
        description="Model files, base models, users and access. Every route needs `Authorization: Bearer <token>`.",
        readiness=readiness,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(http_models.router)
    app.include_router(http_admin.router)
    app.include_router(http_tools.router)
    app.include_router(http_filters.router)
    app.include_router(http_audit.router)
    app.include_router(http_auth.router)
    # Outermost, so that it sees every answer, including the boundary's refusals and authentication errors.
    audit_app(app, SERVICE, keeps_rows=True, sensitive_reads=SENSITIVE_READS)
    return app


async def serve(settings: RegistrySettings) -> None:
    await serve_http(
        build_app(settings), host=settings.host, port=settings.port, grace_seconds=settings.shutdown_grace_seconds
    )


#: What each worker process imports when ``MODELHUB_REGISTRY_WORKERS`` is above 1.
WORKER_APP = "modelhub_registry.bootstrap:worker_app"


def worker_app() -> FastAPI:
    """The app of one worker process, with settings read from the environment the supervisor passed on."""
    return worker_process_app(SERVICE, lambda: RegistrySettings(), build_app)


async def run_migrations(settings: RegistrySettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
