"""The infrastructure a running service holds: database pool, NATS, object store, background tasks.

``open_runtime`` opens what a service's settings ask for, provisions its streams and buckets, starts the
outbox relay when asked, and registers one readiness check per dependency. Each service's ``bootstrap``
calls it once; tests call it with settings pointing at the fixture servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from modelhub_common import jetstream
from modelhub_common.errors import DependencyError
from modelhub_common.health import Check, Readiness
from modelhub_common.metrics import ServiceMetrics
from modelhub_common.objectstore import AsyncObjectStore, ObjectStore
from modelhub_common.outbox import OutboxRelay, watch_outbox
from modelhub_common.resources import database_pool
from modelhub_common.settings import DatabaseSettings, ObjectStoreSettings, ServiceSettings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    service: str
    readiness: Readiness
    nc: Client
    js: JetStreamContext
    pool: AsyncConnectionPool | None = None
    store: AsyncObjectStore | None = None
    relay: OutboxRelay | None = None
    metrics: ServiceMetrics | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def require_pool(self) -> AsyncConnectionPool:
        if self.pool is None:
            raise DependencyError(f"{self.service} was started without a database")
        return self.pool

    def require_store(self) -> AsyncObjectStore:
        if self.store is None:
            raise DependencyError(f"{self.service} was started without an object store")
        return self.store

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs background work until shutdown; a crash is logged and makes the service not ready."""
        task = asyncio.create_task(work, name=f"{self.service}:{name}")

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None and not self.stop.is_set():
                logger.error("background task died", extra={"task": name, "error": repr(t.exception())})
                self.readiness.add(f"task:{name}", _failed(name))

        task.add_done_callback(done)
        self.tasks.append(task)


def _failed(name: str) -> Check:
    async def check() -> None:
        raise DependencyError(f"background task {name} stopped")

    return check


@contextlib.asynccontextmanager
async def open_runtime(
    service: str,
    settings: ServiceSettings,
    readiness: Readiness,
    *,
    streams: Sequence[jetstream.StreamSpec] = (),
    buckets: Sequence[str] = (),
    outbox: bool = False,
    metrics: ServiceMetrics | None = None,
) -> AsyncIterator[Runtime]:
    """``metrics`` (the app's ``app.state.metrics``), when given, gets the pool's and the outbox's gauges
    and the relay's timings; consumers built from the runtime pass ``runtime.metrics`` on."""
    nc = await jetstream.connect(settings.nats_url, name=service)
    js = nc.jetstream()

    async def nats_ready() -> None:
        if not nc.is_connected:
            raise DependencyError("not connected to NATS")

    readiness.add("nats", nats_ready)
    try:
        for spec in streams:
            await jetstream.ensure_stream(js, spec)
        async with contextlib.AsyncExitStack() as stack:
            runtime = Runtime(service=service, readiness=readiness, nc=nc, js=js, metrics=metrics)
            if isinstance(settings, DatabaseSettings):
                runtime.pool = await stack.enter_async_context(database_pool(settings, readiness))
                if metrics is not None:
                    metrics.watch_pool(runtime.pool)
            if isinstance(settings, ObjectStoreSettings):
                runtime.store = AsyncObjectStore(
                    ObjectStore(
                        settings.s3_endpoint,
                        access_key=settings.s3_access_key.get_secret_value(),
                        secret_key=settings.s3_secret_key.get_secret_value(),
                        secure=settings.s3_secure,
                        region=settings.s3_region,
                    )
                )
                for bucket in buckets:
                    await runtime.store.ensure_bucket(bucket)
                store = runtime.store
                first_bucket = buckets[0] if buckets else None

                async def store_ready() -> None:
                    if first_bucket is not None:
                        await store.exists(first_bucket, ".readyz")

                readiness.add("s3", store_ready)
            if outbox:
                if not isinstance(settings, DatabaseSettings):
                    raise TypeError("the outbox needs a service with a database")
                runtime.relay = OutboxRelay.for_service(settings, js, name=service, metrics=metrics)
                if metrics is not None and runtime.pool is not None:
                    watch_outbox(metrics, runtime.pool)
                runtime.spawn("outbox-relay", runtime.relay.run(runtime.stop))
            try:
                yield runtime
            finally:
                readiness.stopping = True
                runtime.stop.set()
                if runtime.tasks:
                    _, pending = await asyncio.wait(runtime.tasks, timeout=settings.shutdown_grace_seconds)
                    for task in pending:
                        task.cancel()
    finally:
        await jetstream.drain(nc)


def runtime_lifespan(
    service: str,
    settings: ServiceSettings,
    *,
    streams: Sequence[jetstream.StreamSpec] = (),
    buckets: Sequence[str] = (),
    outbox: bool = False,
    on_start: Callable[[Runtime], Awaitable[None]] | None = None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan: opens the runtime, stores it as ``app.state.runtime``, marks the service ready."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        readiness: Readiness = app.state.readiness
        async with open_runtime(
            service,
            settings,
            readiness,
            streams=streams,
            buckets=buckets,
            outbox=outbox,
            metrics=getattr(app.state, "metrics", None),
        ) as runtime:
            app.state.runtime = runtime
            if on_start is not None:
                await on_start(runtime)
            readiness.started = True
            logger.info("service started", extra={"port": settings.port})
            yield
            logger.info("service stopping")

    return lifespan
