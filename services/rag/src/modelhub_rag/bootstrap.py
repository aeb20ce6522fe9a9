"""Wires the rag service: the one place its adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import httpx
import psycopg
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from modelhub_common import jetstream
from modelhub_common.audit import audit_app
from modelhub_common.consumer import Consumer
from modelhub_common.errors import ConfigurationError
from modelhub_common.events import AUDIT, KNOWLEDGE, MODELS
from modelhub_common.health import Readiness
from modelhub_common.migrations import COMMON_MIGRATIONS, MigrationSource, migrate
from modelhub_common.runtime import Runtime, open_runtime
from modelhub_common.webapp import create_app, serve_http
from modelhub_common.workers import worker_process_app
from modelhub_rag import __version__
from modelhub_rag.adapters.chunks_repository import vector_index_name, vector_index_sql
from modelhub_rag.adapters.embedders import (
    OllamaEmbedder,
    OnnxMiniLMEmbedder,
    OpenAICompatibleEmbedder,
    WordPieceTokenizer,
    onnx_minilm,
)
from modelhub_rag.adapters.object_deletions import ObjectSweeper
from modelhub_rag.adapters.search_pool import search_pool
from modelhub_rag.adapters.vector_types import VectorTypes
from modelhub_rag.domain.embedding import Embedder
from modelhub_rag.entrypoints import http_knowledge, http_retrieve
from modelhub_rag.entrypoints.consumers import MODEL_EVENTS, file_added_handler, ingest_spec, model_events_handler
from modelhub_rag.entrypoints.deps import Services
from modelhub_rag.metrics import RagMetrics
from modelhub_rag.service_layer.collections import (
    ActiveEmbedder,
    CollectionLimits,
    CollectionService,
    ReindexResult,
)
from modelhub_rag.service_layer.files import FileLimits, FileService
from modelhub_rag.service_layer.ingestion import IngestionConfig, IngestionService
from modelhub_rag.service_layer.references import ReferenceService
from modelhub_rag.service_layer.retrieval import RetrievalConfig, RetrievalService
from modelhub_rag.settings import RagSettings

SERVICE = "rag"
MIGRATIONS = (COMMON_MIGRATIONS, MigrationSource(name="rag", package="modelhub_rag"))
# Special tokens ([CLS], [SEP]) the model reads besides a chunk's own tokens.
_SPECIAL_TOKENS = 2
logger = logging.getLogger(__name__)


def streams(replicas: int = 1) -> list[jetstream.StreamSpec]:
    # MODELS is provisioned here too (idempotently) because the rag service consumes the registry's events.
    return [
        jetstream.service_stream_spec(KNOWLEDGE, replicas=replicas),
        jetstream.service_stream_spec(MODELS, replicas=replicas),
        jetstream.service_stream_spec(AUDIT, replicas=replicas),
        jetstream.dead_letter_stream_spec(replicas=replicas),
    ]


def active_embedder(settings: RagSettings) -> ActiveEmbedder:
    """Name and size of the configured embedder, known without loading it."""
    if settings.embedder == "onnx-minilm":
        return ActiveEmbedder(onnx_minilm.NAME, onnx_minilm.DIMENSIONS)
    assert settings.embedder_model is not None and settings.embedder_dimensions is not None
    return ActiveEmbedder(f"{settings.embedder}:{settings.embedder_model}", settings.embedder_dimensions)


def build_embedder(settings: RagSettings, http: httpx.AsyncClient) -> Embedder:
    if settings.embedder == "onnx-minilm":
        return OnnxMiniLMEmbedder(threads=settings.onnx_threads())
    assert settings.embedder_url and settings.embedder_model and settings.embedder_dimensions
    tokenizer = WordPieceTokenizer()
    if settings.embedder == "ollama":
        return OllamaEmbedder(
            http,
            base_url=settings.embedder_url,
            model=settings.embedder_model,
            dimensions=settings.embedder_dimensions,
            tokenizer=tokenizer,
        )
    api_key = settings.embedder_api_key.get_secret_value() if settings.embedder_api_key else None
    return OpenAICompatibleEmbedder(
        http,
        base_url=settings.embedder_url,
        model=settings.embedder_model,
        dimensions=settings.embedder_dimensions,
        tokenizer=tokenizer,
        api_key=api_key,
    )


def check_embedder(settings: RagSettings, embedder: Embedder) -> None:
    expected = active_embedder(settings)
    if (embedder.name, embedder.dimensions) != (expected.name, expected.dimensions):
        raise ConfigurationError(
            f"the embedder is {embedder.name} ({embedder.dimensions} dimensions) but the settings say"
            f" {expected.name} ({expected.dimensions})"
        )
    if settings.chunk_tokens + _SPECIAL_TOKENS > embedder.max_input_tokens:
        raise ConfigurationError(
            f"MODELHUB_RAG_CHUNK_TOKENS={settings.chunk_tokens} does not fit {embedder.name}, which reads"
            f" {embedder.max_input_tokens} tokens per text; use at most {embedder.max_input_tokens - _SPECIAL_TOKENS}"
        )


def build_services(
    settings: RagSettings,
    pool: AsyncConnectionPool,
    search: AsyncConnectionPool,
    runtime: Runtime,
    embedder: Embedder,
    sweeper: ObjectSweeper,
    vector_types: VectorTypes,
) -> Services:
    active = ActiveEmbedder(embedder.name, embedder.dimensions)
    return Services(
        settings=settings,
        collections=CollectionService(
            pool,
            embedder=active,
            limits=CollectionLimits(
                max_name_length=settings.max_name_length,
                max_description_length=settings.max_description_length,
                max_grants=settings.max_grants,
            ),
            sweeper=sweeper,
        ),
        files=FileService(
            pool,
            runtime.require_store(),
            bucket=settings.bucket,
            limits=FileLimits(
                max_file_bytes=settings.max_file_bytes,
                max_files_per_collection=settings.max_files_per_collection,
                max_name_length=settings.max_name_length,
            ),
            sweeper=sweeper,
        ),
        retrieval=RetrievalService(
            search,
            embedder,
            config=RetrievalConfig(
                default_k=settings.default_k,
                max_k=settings.max_k,
                max_query_chars=settings.max_query_chars,
                max_knowledge_ids=settings.max_knowledge_ids,
                candidates=settings.candidates_per_ranker,
                rrf_k=settings.rrf_k,
                common_fraction=settings.text_common_fraction,
            ),
        ),
        ingestion=IngestionService(
            pool,
            runtime.require_store(),
            bucket=settings.bucket,
            embedder=embedder,
            config=IngestionConfig(
                chunking=settings.chunking(),
                batch_size=settings.embed_batch_size,
                max_chunks_per_file=settings.max_chunks_per_file,
                max_extracted_chars=settings.max_extracted_chars,
            ),
            vector_types=vector_types,
        ),
        references=ReferenceService(pool),
    )


def build_app(settings: RagSettings, *, embedder: Embedder | None = None) -> FastAPI:
    """The service as an ASGI app. ``embedder`` replaces the configured one (tests share one loaded model)."""
    readiness = Readiness()
    vector_types = VectorTypes()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_runtime(
                SERVICE,
                settings,
                readiness,
                streams=streams(settings.stream_replicas),
                buckets=[settings.bucket],
                outbox=True,
                metrics=app.state.metrics,
            ) as runtime,
            httpx.AsyncClient(timeout=settings.embedder_timeout_seconds) as http,
            search_pool(
                settings.database_url.get_secret_value(),
                min_size=settings.database_pool_min,
                max_size=settings.database_pool_max,
                timeout=settings.database_pool_timeout_seconds,
                ef_search=settings.hnsw_ef_search,
                vector_types=vector_types,
            ) as search,
        ):
            own_embedder = embedder is None
            # Loading the ONNX model reads and checks 23 MB: not on the event loop.
            active: Embedder = (
                embedder if embedder is not None else await asyncio.to_thread(build_embedder, settings, http)
            )
            try:
                check_embedder(settings, active)
                pool = runtime.require_pool()
                sweeper = ObjectSweeper(pool, runtime.require_store(), bucket=settings.bucket)
                svc = build_services(settings, pool, search, runtime, active, sweeper, vector_types)
                app.state.runtime = runtime
                app.state.services = svc
                rag_metrics = app.state.metrics.extension(RagMetrics)
                rag_metrics.watch_files(pool)
                app.state.metrics.watch_pool(search, "search")
                svc.retrieval.on_timings = rag_metrics.observe_retrieval
                svc.ingestion.on_embedded = rag_metrics.count_embedded
                runtime.spawn("object-sweeper", sweeper.run(runtime.stop, settings.object_sweep_seconds))
                if settings.worker_enabled:
                    spec = ingest_spec(settings)
                    for index in range(settings.ingest_concurrency):
                        worker = Consumer(
                            runtime.js,
                            KNOWLEDGE.stream,
                            spec,
                            file_added_handler(svc.ingestion),
                            metrics=runtime.metrics,
                        )
                        runtime.spawn(f"ingest-worker-{index}", worker.run(runtime.stop))
                if settings.consume_model_events:
                    models = Consumer(
                        runtime.js,
                        MODELS.stream,
                        MODEL_EVENTS,
                        model_events_handler(svc.references),
                        metrics=runtime.metrics,
                    )
                    runtime.spawn("model-events-consumer", models.run(runtime.stop))
                readiness.started = True
                logger.info(
                    "rag started",
                    extra={"port": settings.port, "embedder": active.name, "worker": settings.worker_enabled},
                )
                yield
            finally:
                if own_embedder:
                    await active.aclose()

    app = create_app(
        title="modelhub rag",
        version=__version__,
        description="Knowledge collections embedded into pgvector; hybrid retrieval with citations. "
        "Every route needs `Authorization: Bearer <token>`.",
        readiness=readiness,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(http_knowledge.router)
    app.include_router(http_retrieve.router)
    # Outermost: records changes (in their own transactions) and every refused attempt.
    audit_app(app, SERVICE)
    return app


async def serve(settings: RagSettings) -> None:
    await serve_http(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        grace_seconds=settings.shutdown_grace_seconds,
    )


#: What each worker process imports when ``MODELHUB_RAG_WORKERS`` is above 1.
WORKER_APP = "modelhub_rag.bootstrap:worker_app"


def worker_app() -> FastAPI:
    """The app of one worker process, with settings read from the environment the supervisor passed on."""
    return worker_process_app(SERVICE, lambda: RagSettings(), build_app)


async def ensure_vector_index(database_url: str, dimensions: int) -> bool:
    """The partial HNSW index for vectors of ``dimensions`` (384 comes with the migrations); True if created."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (vector_index_name(dimensions),))
        if await cur.fetchone() is not None:
            return False
        await conn.execute(vector_index_sql(dimensions))
    logger.info("created the vector index for the configured embedder", extra={"dimensions": dimensions})
    return True


async def run_migrations(settings: RagSettings) -> list[str]:
    url = settings.database_url.get_secret_value()
    applied = await migrate(url, MIGRATIONS)
    await ensure_vector_index(url, active_embedder(settings).dimensions)
    return applied


async def reindex(settings: RagSettings, knowledge_ids: Sequence[str]) -> list[ReindexResult]:
    """Queues a re-index of the given collections (all when empty) onto the configured embedder.

    Only the database is touched: the events go to the outbox, which a running rag replica publishes.
    """
    async with AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=2,
        timeout=settings.database_pool_timeout_seconds,
        open=False,
        kwargs={"autocommit": False},
    ) as pool:
        service = CollectionService(
            pool,
            embedder=active_embedder(settings),
            limits=CollectionLimits(settings.max_name_length, settings.max_description_length, settings.max_grants),
        )
        ids = list(knowledge_ids) or await service.all_ids()
        return [await service.reindex(knowledge_id, None) for knowledge_id in ids]
