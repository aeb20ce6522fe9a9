"""Wires the chat gateway: gRPC ChatService (+ health, reflection) and an HTTP port for probes and the
OpenAI-compatible API. The one place adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from modelhub_chat_gateway import __version__
from modelhub_chat_gateway.adapters.backends.base import ChatBackend
from modelhub_chat_gateway.adapters.backends.http_stream import StreamingHttpClient
from modelhub_chat_gateway.adapters.backends.local_llama import LocalLlamaBackend, ModelFileCache
from modelhub_chat_gateway.adapters.backends.ollama import OllamaBackend
from modelhub_chat_gateway.adapters.backends.openai_compat import OpenAICompatBackend
from modelhub_chat_gateway.adapters.conversation_repository import ConversationRepository
from modelhub_chat_gateway.adapters.image_store import ImageStore
from modelhub_chat_gateway.adapters.rag_client import RagClient
from modelhub_chat_gateway.adapters.registry_client import RegistryClient
from modelhub_chat_gateway.entrypoints.chat_servicer import ChatServicer, ImageFetcher
from modelhub_chat_gateway.entrypoints.grpc_server import GrpcServer
from modelhub_chat_gateway.entrypoints.model_events import ModelEventsListener
from modelhub_chat_gateway.entrypoints.openai_http import OpenAIApiDeps, install_openai_errors, openai_router
from modelhub_chat_gateway.metrics import GatewayMetrics
from modelhub_chat_gateway.service_layer.chat import ChatService, TurnLimits
from modelhub_chat_gateway.service_layer.completions import CompletionService
from modelhub_chat_gateway.service_layer.filter_directory import FilterDirectory
from modelhub_chat_gateway.service_layer.filters import FilterRunner
from modelhub_chat_gateway.service_layer.generation import ContextDefaults, Generator, Timeouts
from modelhub_chat_gateway.service_layer.model_catalog import ModelCatalog
from modelhub_chat_gateway.service_layer.selector_catalog import SelectorCatalog
from modelhub_chat_gateway.service_layer.tool_directory import ToolDirectory
from modelhub_chat_gateway.service_layer.tool_loop import ToolLimits, ToolRunner
from modelhub_chat_gateway.settings import ChatGatewaySettings
from modelhub_common import jetstream
from modelhub_common.auth import VerifiedTokens, issue_token
from modelhub_common.errors import DependencyError
from modelhub_common.events import MODELS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.objectstore import ObjectStore
from modelhub_common.runtime import open_runtime
from modelhub_common.tools import McpSessionCache
from modelhub_common.webapp import create_app, serve_http

SERVICE = "chat-gateway"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="gateway", package="modelhub_chat_gateway"))
_SERVICE_TOKEN_TTL = 600
logger = logging.getLogger(__name__)


@dataclass
class Services:
    chat: ChatService
    catalog: ModelCatalog
    completions: CompletionService


def service_token(settings: ChatGatewaySettings) -> Callable[[], str]:
    """The admin token for reading connections: the configured one, or one the gateway signs for itself."""
    if settings.registry_service_token is not None:
        configured = settings.registry_service_token.get_secret_value()
        return lambda: configured
    cached: dict[str, float | str] = {}

    def token() -> str:
        if float(cached.get("expires", 0)) - time.time() < 60:
            cached["token"] = issue_token(
                settings.jwt_secret.get_secret_value(),
                subject=f"service:{SERVICE}",
                role="admin",
                ttl_seconds=_SERVICE_TOKEN_TTL,
                issuer=settings.jwt_issuer,
            )
            cached["expires"] = time.time() + _SERVICE_TOKEN_TTL
        return str(cached["token"])

    return token


def build_local_backend(settings: ChatGatewaySettings, store: ObjectStore) -> LocalLlamaBackend:
    return LocalLlamaBackend(
        ModelFileCache(store, settings.local_model_dir),
        workers=settings.local_workers,
        max_resident=settings.local_max_resident,
        threads_per_worker=settings.local_threads_per_worker,
        default_ctx=settings.default_num_ctx,
        max_ctx=settings.local_max_ctx,
        default_max_tokens=settings.local_default_max_tokens,
        flush_seconds=settings.local_stream_flush_ms / 1000,
    )


async def _keep_replica_alive(
    repository: ConversationRepository, stop: asyncio.Event, interval: float, stale_seconds: float
) -> None:
    """Records this replica's heartbeat and marks answers of dead replicas interrupted, until shutdown.
    A database outage is logged and retried at the next beat: it must not take the service down."""
    while not stop.is_set():
        try:
            await repository.heartbeat()
            swept = await repository.sweep_interrupted(stale_seconds)
            if swept:
                logger.warning("answers of a stopped replica marked interrupted", extra={"answers": swept})
        except DependencyError as exc:
            logger.warning("replica heartbeat failed", extra={"error": str(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    with contextlib.suppress(DependencyError):
        await repository.retire()


async def _follow_readiness(
    readiness: Readiness,
    grpc_server: GrpcServer,
    stop: asyncio.Event,
    interval: float,
    *,
    serving: bool,
    sooner: asyncio.Event | None = None,
) -> None:
    """Keeps the gRPC health status equal to what /readyz says, so gRPC probes and balancers see outages.
    ``serving`` is the status set now; ``sooner``, once set, makes the next check happen at once (once)."""
    while not stop.is_set():
        waiters = [asyncio.ensure_future(stop.wait())]
        if sooner is not None:
            waiters.append(asyncio.ensure_future(sooner.wait()))
        await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if stop.is_set():
            return
        if sooner is not None and sooner.is_set():
            sooner = None
        ready, report = await readiness.run()
        if ready != serving:
            logger.warning("gRPC health changes", extra={"serving": ready, "checks": report})
            await grpc_server.set_serving(ready)
            serving = ready


def build_app(
    settings: ChatGatewaySettings,
    *,
    local_backend: LocalLlamaBackend | None = None,
    extra_backends: dict[str, ChatBackend] | None = None,
) -> FastAPI:
    """``local_backend`` may be given to share loaded models between apps (tests); otherwise one is built
    and closed with the app. ``extra_backends`` adds or replaces backends by name (benchmarks)."""
    readiness = Readiness()
    holder: dict[str, Services] = {}
    tokens = VerifiedTokens(settings.jwt_secret.get_secret_value, settings.jwt_issuer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replicas = settings.stream_replicas
        streams = [
            jetstream.service_stream_spec(MODELS, replicas=replicas),
            jetstream.dead_letter_stream_spec(replicas=replicas),
        ]
        async with contextlib.AsyncExitStack() as stack:
            # Opened before the runtime so that it closes after the runtime's tasks (the catalog's) have stopped.
            registry_http = await stack.enter_async_context(
                httpx.AsyncClient(timeout=settings.registry_timeout_seconds)
            )
            runtime = await stack.enter_async_context(
                open_runtime(
                    SERVICE, settings, readiness, streams=streams, buckets=[settings.bucket], metrics=app.state.metrics
                )
            )
            app.state.runtime = runtime
            store = runtime.require_store()
            backend_http = await stack.enter_async_context(
                StreamingHttpClient(connect_timeout=settings.connect_timeout_seconds)
            )
            local = local_backend
            if local is None:
                local = build_local_backend(settings, store.sync)
                stack.callback(local.close)
            backends: dict[str, ChatBackend] = {
                "ollama": OllamaBackend(backend_http),
                "openai": OpenAICompatBackend(backend_http),
                "local": local,
                **(extra_backends or {}),
            }
            registry = RegistryClient(registry_http, settings.registry_url, service_token(settings))
            selector = SelectorCatalog(
                registry,
                page_size=settings.catalog_page_size,
                fetch_concurrency=settings.catalog_fetch_concurrency,
                max_backlog=settings.catalog_max_backlog,
                resync_seconds=settings.catalog_resync_seconds,
                retry_seconds=settings.catalog_retry_seconds,
                log_seconds=settings.catalog_log_seconds,
            )
            readiness.add("catalog", selector.readiness_check)
            catalog = ModelCatalog(
                registry,
                ttl=settings.model_cache_seconds,
                selector=selector,
                selector_wait_seconds=settings.catalog_wait_seconds,
            )
            rag = RagClient(
                await stack.enter_async_context(httpx.AsyncClient(timeout=settings.rag_timeout_seconds)),
                settings.rag_url,
            )
            generator = Generator(
                backends,
                Timeouts(settings.first_token_timeout_seconds, settings.idle_timeout_seconds),
                ContextDefaults(settings.default_num_ctx, settings.default_max_tokens),
            )
            tools = ToolDirectory(
                registry, ttl=settings.tool_cache_seconds, allow_private_urls=settings.allow_private_urls
            )
            tool_http = await stack.enter_async_context(
                httpx.AsyncClient(limits=httpx.Limits(max_connections=settings.tool_max_parallel * 4))
            )
            # MCP sessions stay open between calls: a call then costs one round trip instead of three.
            sessions = McpSessionCache(tool_http)
            stack.push_async_callback(sessions.aclose)
            gateway_metrics = app.state.gateway_metrics = app.state.metrics.extension(GatewayMetrics)
            runner = ToolRunner(
                tool_http,
                ToolLimits(settings.tool_max_steps, settings.tool_max_parallel),
                sessions,
                on_step=lambda step: gateway_metrics.record_tool_step(
                    "ok" if step.ok else step.error_code, step.duration_seconds
                ),
            )
            filters = FilterDirectory(registry, ttl=settings.filter_cache_seconds)
            filter_runner = FilterRunner(
                tool_http, allow_private_urls=settings.allow_private_urls, max_text_chars=settings.filter_max_text_chars
            )
            repository = ConversationRepository(runtime.require_pool(), replica_id=str(uuid.uuid4()))
            chat = ChatService(
                repository=repository,
                catalog=catalog,
                images=ImageStore(store, settings.bucket),
                rag=rag,
                generator=generator,
                limits=TurnLimits(settings.max_models_per_turn, settings.max_image_bytes, settings.rag_top_k),
                tools=tools,
                runner=runner,
                filters=filters,
                filter_runner=filter_runner,
            )
            completions = CompletionService(
                catalog,
                rag,
                generator,
                settings.rag_top_k,
                tools=tools,
                runner=runner,
                filters=filters,
                filter_runner=filter_runner,
                metrics=gateway_metrics,
            )
            holder["services"] = Services(chat, catalog, completions)
            # Subscribed before the catalog's first load starts (run), so no event between the two is lost.
            listener = ModelEventsListener(
                runtime.nc,
                runtime.js,
                catalog,
                selector,
                check_seconds=settings.catalog_check_seconds,
                max_backlog=settings.catalog_max_backlog,
                invalidators={"tool_server": tools.invalidate, "filter": filters.invalidate},
            )
            await listener.start()
            stack.push_async_callback(listener.stop)
            runtime.spawn("model-catalog", selector.run(runtime.stop))
            runtime.spawn("model-events-watch", listener.watch(runtime.stop))
            app.state.selector = selector
            app.state.model_events = listener

            grpc_server = GrpcServer(
                host=settings.host,
                port=settings.grpc_port,
                tokens=tokens,
                servicer=ChatServicer(
                    chat,
                    catalog,
                    ImageFetcher(registry_http, settings.image_url_allowed_hosts, settings.max_image_bytes),
                    metrics=gateway_metrics,
                ),
                metrics=gateway_metrics,
            )
            app.state.grpc_port = grpc_server.port
            app.state.services = holder["services"]
            await grpc_server.start()
            readiness.started = True
            # Not serving until ready: the model catalog may still be loading (or the registry down).
            serving, _ = await readiness.run()
            await grpc_server.set_serving(serving)
            runtime.spawn(
                "replica-heartbeat",
                _keep_replica_alive(
                    repository, runtime.stop, settings.replica_heartbeat_seconds, settings.replica_stale_seconds
                ),
            )
            runtime.spawn(
                "grpc-health",
                _follow_readiness(
                    readiness,
                    grpc_server,
                    runtime.stop,
                    settings.health_check_seconds,
                    serving=serving,
                    sooner=selector.loaded_event,
                ),
            )
            logger.info("gateway started", extra={"grpc_port": grpc_server.port, "port": settings.port})
            try:
                yield
            finally:
                readiness.stopping = True
                await grpc_server.stop(settings.shutdown_grace_seconds)

    app = create_app(
        title="modelhub chat gateway",
        version=__version__,
        description="Health endpoints and an OpenAI-compatible API; conversations are served over gRPC.",
        readiness=readiness,
        lifespan=lifespan,
        openai_prefixes=("/v1/",),
    )
    install_openai_errors(app)
    app.state.openai = OpenAIApiDeps(
        tokens=tokens,
        catalog=lambda: holder["services"].catalog,
        completions=lambda: holder["services"].completions,
    )
    app.include_router(openai_router())
    return app


async def serve(settings: ChatGatewaySettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: ChatGatewaySettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)
