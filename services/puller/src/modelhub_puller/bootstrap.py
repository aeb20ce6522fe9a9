"""Wires the puller service: the one place its adapters are built."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from minio import Minio
from psycopg_pool import AsyncConnectionPool

from modelhub_common import jetstream
from modelhub_common.audit import audit_app
from modelhub_common.consumer import Consumer
from modelhub_common.errors import ModelhubError
from modelhub_common.events import AUDIT, PULLS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.objectstore import AsyncObjectStore, ObjectStore
from modelhub_common.outbox import OutboxRelay
from modelhub_common.runtime import Runtime, open_runtime
from modelhub_common.webapp import create_app, serve_http
from modelhub_puller import __version__
from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.event_bus import PullEventBus
from modelhub_puller.adapters.ollama_client import OllamaClient
from modelhub_puller.adapters.part_spool import PartSpool
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.adapters.registry_client import RegistryClient
from modelhub_puller.domain.pull import LayerProgress, PullJob
from modelhub_puller.entrypoints import http_pulls, http_store
from modelhub_puller.entrypoints.consumers import pull_requested_handler, work_consumer_spec
from modelhub_puller.entrypoints.deps import Services
from modelhub_puller.metrics import PullerMetrics
from modelhub_puller.service_layer import events
from modelhub_puller.service_layer.importer import GgufImporter, ImportResult
from modelhub_puller.service_layer.ollama_pull import OllamaPuller
from modelhub_puller.service_layer.part_helper import PartHelper
from modelhub_puller.service_layer.pulls import PullPolicy, PullService
from modelhub_puller.service_layer.store_models import StoredModelService
from modelhub_puller.service_layer.store_pull import StoreLimits, StorePuller
from modelhub_puller.service_layer.transfer import BlobTransfer, TransferLimits
from modelhub_puller.service_layer.upload_sweeper import SweepResult, UploadSweeper
from modelhub_puller.service_layer.worker import PullWorker, WorkerTiming, worker_id
from modelhub_puller.settings import PullerSettings

SERVICE = "puller"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="puller", package="modelhub_puller"))
logger = logging.getLogger(__name__)


def streams(replicas: int = 1) -> list[jetstream.StreamSpec]:
    return [
        jetstream.service_stream_spec(PULLS, replicas=replicas),
        jetstream.service_stream_spec(AUDIT, replicas=replicas),
        jetstream.dead_letter_stream_spec(replicas=replicas),
    ]


@dataclass
class HttpClients:
    registry: httpx.AsyncClient
    store: httpx.AsyncClient
    ollama: httpx.AsyncClient


@contextlib.asynccontextmanager
async def http_clients(settings: PullerSettings) -> AsyncIterator[HttpClients]:
    parallel = settings.parallel_parts * settings.max_concurrent_pulls
    limits = httpx.Limits(max_connections=parallel + 16, max_keepalive_connections=parallel + 8)
    registry_timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds,
        read=settings.stall_timeout_seconds,
        write=settings.stall_timeout_seconds,
        pool=None,
    )
    store_timeout = httpx.Timeout(connect=settings.connect_timeout_seconds, read=120.0, write=120.0, pool=None)
    # Ollama may be silent for minutes while it verifies a big blob.
    ollama_timeout = httpx.Timeout(connect=settings.connect_timeout_seconds, read=600.0, write=60.0, pool=None)
    async with (
        httpx.AsyncClient(
            timeout=registry_timeout, limits=limits, follow_redirects=False, headers=_agent()
        ) as registry,
        httpx.AsyncClient(timeout=store_timeout, limits=limits, follow_redirects=False) as store,
        httpx.AsyncClient(timeout=ollama_timeout, follow_redirects=False, headers=_agent()) as ollama,
    ):
        yield HttpClients(registry=registry, store=store, ollama=ollama)


def _agent() -> dict[str, str]:
    return {"User-Agent": f"modelhub-puller/{__version__}"}


def build_registry_client(settings: PullerSettings, http: httpx.AsyncClient) -> RegistryClient:
    return RegistryClient(
        http,
        allowed_hosts=settings.allowed_hosts,
        insecure_hosts=settings.insecure_hosts,
        mirrors=settings.registry_mirrors,
        max_manifest_bytes=settings.max_manifest_bytes,
    )


def build_blob_store(settings: PullerSettings, http: httpx.AsyncClient, objects: AsyncObjectStore) -> BlobStore:
    # The SDK client only signs URLs here; constructing it opens no connection.
    signer = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
        region=settings.s3_region,
    )
    return BlobStore(signer, http, objects, settings.bucket)


def policy(settings: PullerSettings) -> PullPolicy:
    return PullPolicy(
        pull_groups=tuple(settings.pull_groups),
        admins_may_pull=settings.admins_may_pull,
        ollama_configured=settings.ollama_url is not None,
    )


@dataclass
class Wiring:
    services: Services
    worker: PullWorker
    sweeper: UploadSweeper
    helper: PartHelper


def build(settings: PullerSettings, runtime: Runtime, http: HttpClients) -> Wiring:
    pool = runtime.require_pool()
    repo = PullRepository()
    registry = build_registry_client(settings, http.registry)
    store = build_blob_store(settings, http.store, runtime.require_store())
    spool = PartSpool(settings.spool_dir)
    transfer = BlobTransfer(
        registry,
        store,
        pool,
        repo,
        TransferLimits(
            part_size=settings.part_size_bytes,
            parallel_parts=settings.parallel_parts,
            reorder_window=settings.reorder_window_parts,
            retries=settings.part_retries,
            backoff_seconds=settings.retry_backoff_seconds,
            backoff_max_seconds=settings.retry_backoff_max_seconds,
            lease_seconds=settings.lease_seconds,
            share_parts=settings.share_parts,
        ),
        worker=(me := worker_id()),
        spool=spool,
    )
    store_puller = StorePuller(
        registry,
        store,
        transfer,
        pool,
        repo,
        StoreLimits(
            max_pull_bytes=settings.max_pull_bytes,
            capacity_bytes=settings.store_capacity_bytes,
            free_space_margin_bytes=settings.free_space_margin_bytes,
        ),
    )
    ollama_puller = (
        OllamaPuller(OllamaClient(http.ollama, settings.ollama_url), insecure_hosts=frozenset(settings.insecure_hosts))
        if settings.ollama_url
        else None
    )
    bus = PullEventBus(runtime.nc, runtime.js, subject=events.ALL, cancel_subject=events.CANCEL_REQUESTED)

    async def publish_progress(job: PullJob, layers: list[LayerProgress]) -> None:
        await bus.publish(events.PROGRESS, events.progress(job, layers))

    worker = PullWorker(
        pool,
        repo,
        store,
        store_puller,
        ollama_puller,
        publish_progress,
        WorkerTiming(
            heartbeat_seconds=settings.heartbeat_seconds,
            lease_seconds=settings.lease_seconds,
            progress_interval_seconds=settings.progress_interval_seconds,
            progress_persist_seconds=settings.progress_persist_seconds,
        ),
        worker=me,
        stop=runtime.stop,
        spool=spool,
    )
    rules = policy(settings)
    services = Services(
        settings=settings,
        pulls=PullService(pool, repo, registry, rules),
        stored=StoredModelService(pool, repo, store, rules),
        bus=bus,
    )
    sweeper = UploadSweeper(pool, repo, store, spool, older_than_seconds=settings.abandoned_upload_seconds)
    helper = PartHelper(
        pool,
        repo,
        registry,
        transfer,
        worker=me,
        has_free_slot=lambda: len(worker.running) < settings.max_concurrent_pulls,
        poll_seconds=settings.share_poll_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        lease_seconds=settings.lease_seconds,
    )
    if runtime.metrics is not None:
        runtime.metrics.extension(PullerMetrics).attach(transfer, worker)
    return Wiring(services=services, worker=worker, sweeper=sweeper, helper=helper)


def build_app(settings: PullerSettings) -> FastAPI:
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            http_clients(settings) as http,
            open_runtime(
                SERVICE,
                settings,
                readiness,
                streams=streams(settings.stream_replicas),
                buckets=[settings.bucket],
                outbox=True,
                metrics=app.state.metrics,
            ) as runtime,
        ):
            wiring = build(settings, runtime, http)
            app.state.runtime = runtime
            app.state.services = wiring.services
            app.state.worker = wiring.worker
            bus = wiring.services.bus
            await bus.start()
            bus.on_cancel(wiring.worker.cancel)
            spec = work_consumer_spec(ack_wait=settings.work_ack_wait_seconds, max_deliver=settings.work_max_deliver)
            handler = pull_requested_handler(wiring.worker)
            for index in range(settings.max_concurrent_pulls):
                consumer = Consumer(runtime.js, PULLS.stream, spec, handler, metrics=runtime.metrics)
                runtime.spawn(f"pull-worker-{index}", consumer.run(runtime.stop))
            runtime.spawn("pull-shutdown-watch", wiring.worker.watch_shutdown())
            runtime.spawn("upload-sweeper", wiring.sweeper.run(runtime.stop, settings.upload_sweep_interval_seconds))
            if settings.share_parts:
                runtime.spawn("part-helper", wiring.helper.run(runtime.stop))
            readiness.started = True
            logger.info("puller started", extra={"port": settings.port, "worker": wiring.worker.worker})
            try:
                yield
            finally:
                logger.info("puller stopping")

    app = create_app(
        title="modelhub puller",
        version=__version__,
        description="Pulls of Ollama and Hugging Face models into the S3 store or an Ollama server. "
        "Every route needs `Authorization: Bearer <token>`.",
        readiness=readiness,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(http_pulls.router)
    app.include_router(http_store.router)
    # Outermost: records changes (in their own transactions) and every refused attempt.
    audit_app(app, SERVICE)
    return app


async def serve(settings: PullerSettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


async def run_migrations(settings: PullerSettings) -> list[str]:
    return await migrate(settings.database_url.get_secret_value(), MIGRATIONS)


async def sweep_abandoned_uploads(settings: PullerSettings, *, older_than_seconds: float) -> SweepResult:
    """One sweep of abandoned uploads, outside the service (operations, tests)."""
    database_url = settings.database_url.get_secret_value()
    async with (
        AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": False}) as pool,
        httpx.AsyncClient(timeout=120.0) as http,
    ):
        store = build_blob_store(settings, http, build_object_store(settings))
        sweeper = UploadSweeper(
            pool, PullRepository(), store, PartSpool(settings.spool_dir), older_than_seconds=older_than_seconds
        )
        return await sweeper.sweep()


def build_object_store(settings: PullerSettings) -> AsyncObjectStore:
    return AsyncObjectStore(
        ObjectStore(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
    )


async def import_gguf(
    settings: PullerSettings,
    *,
    name: str,
    path: Path,
    template: str | None = None,
    system: str | None = None,
    params: dict[str, Any] | None = None,
) -> ImportResult:
    """Stores a local GGUF file as a pull would, then tries to publish the completed event at once.

    If NATS is unreachable the event stays in the outbox and the running puller's relay publishes it.
    """
    objects = build_object_store(settings)
    await objects.ensure_bucket(settings.bucket)
    database_url = settings.database_url.get_secret_value()
    async with (
        AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": False}) as pool,
        httpx.AsyncClient(timeout=120.0) as http,
    ):
        store = build_blob_store(settings, http, objects)
        result = await GgufImporter(pool, PullRepository(), store).run(
            name=name, path=path, template=template, system=system, params=params
        )
    if result.created:
        await _publish_outbox(settings)
    return result


async def _publish_outbox(settings: PullerSettings) -> None:
    try:
        nc = await jetstream.connect(settings.nats_url, name=f"{SERVICE}-import", initial_connect_deadline=5.0)
    except ModelhubError as exc:
        logger.warning("NATS unreachable; the puller's relay will publish the event", extra={"error": exc.message})
        return
    try:
        for spec in streams(settings.stream_replicas):
            await jetstream.ensure_stream(nc.jetstream(), spec)
        relay = OutboxRelay.for_service(settings, nc.jetstream(), name=SERVICE)
        published = await relay.publish_pending()
        logger.info("outbox flushed", extra={"published": published})
    except ModelhubError as exc:
        logger.warning("could not publish now; the puller's relay will", extra={"error": exc.message})
    finally:
        await jetstream.drain(nc)
