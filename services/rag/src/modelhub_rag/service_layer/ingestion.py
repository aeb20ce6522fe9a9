"""Indexing one file: extract, split, embed in batches, write all chunks in one transaction.

The steps and what makes them safe to repeat:

1. **Claim** (short transaction): the file must still exist, not be indexed already under its collection's
   embedder, and not have failed; it is marked ``indexing``. Its ``generation`` is remembered.
2. **Reuse**: an indexed file with the same content hash, embedder and chunking elsewhere has its chunks and
   vectors copied instead of embedding the same text again.
3. **Work** outside any transaction: fetch the object, extract and split (in a thread), embed batch by batch
   (the embedder keeps inference off the event loop), extending the message's ack deadline between batches.
4. **Write** (one transaction): lock the file row; if it was deleted, re-indexed (another generation) or
   indexed meanwhile, drop the work. Otherwise replace its chunks, mark it ``indexed`` and add the
   ``file_indexed`` event to the outbox, all in one commit.

A worker killed anywhere before that commit leaves the file without chunks (status ``indexing``); the message
is redelivered after ``ack_wait`` and the next worker starts over. Nothing is ever half-written.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from modelhub_common.errors import DependencyError, TransientError
from modelhub_common.objectstore import AsyncObjectStore, ObjectNotFoundError
from modelhub_rag.adapters.chunks_repository import ChunksRepository
from modelhub_rag.adapters.knowledge_repository import KnowledgeRepository
from modelhub_rag.adapters.vector_types import VectorTypes
from modelhub_rag.domain import chunking, extraction
from modelhub_rag.domain.chunking import Chunk, ChunkingPolicy
from modelhub_rag.domain.collection import KnowledgeFile
from modelhub_rag.domain.embedding import Embedder, Vectors
from modelhub_rag.domain.filetypes import FileKind
from modelhub_rag.errors import EmbedderError, EmbedderUnavailableError, FileProcessingError
from modelhub_rag.service_layer import events

logger = logging.getLogger(__name__)

Heartbeat = Callable[[], Awaitable[None]]
T = TypeVar("T")
_HEARTBEAT_SECONDS = 2.0


class Outcome(enum.Enum):
    INDEXED = "indexed"
    REUSED = "reused"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class IngestionConfig:
    chunking: ChunkingPolicy
    batch_size: int
    max_chunks_per_file: int
    max_extracted_chars: int


async def _no_heartbeat() -> None:
    return None


async def _beating(work: Awaitable[T], heartbeat: Heartbeat) -> T:
    """Awaits ``work``, calling ``heartbeat`` every few seconds until it is done."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_HEARTBEAT_SECONDS)
            if done:
                return task.result()
            await heartbeat()
    finally:
        task.cancel()


class IngestionService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        store: AsyncObjectStore,
        *,
        bucket: str,
        embedder: Embedder,
        config: IngestionConfig,
        vector_types: VectorTypes,
        repo: KnowledgeRepository | None = None,
        chunks: ChunksRepository | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.bucket = bucket
        self.embedder = embedder
        self.config = config
        self.vector_types = vector_types
        self.repo = repo or KnowledgeRepository()
        self.chunks = chunks or ChunksRepository()
        self.chunker = config.chunking.signature(embedder.tokenizer.tokenizer_name)
        # Set by the bootstrap to count embedded chunks as a metric.
        self.on_embedded: Callable[[int], None] | None = None

    # ---- the steps

    def prepare(self, kind: FileKind, data: bytes) -> list[Chunk]:
        """Extraction and splitting; CPU-bound, run in a thread."""
        document = extraction.extract(kind, data, max_chars=self.config.max_extracted_chars)
        pieces = chunking.split(document, self.config.chunking, self.embedder.tokenizer)
        if not pieces:
            raise FileProcessingError("the file contains no text to index", code="no_text")
        if len(pieces) > self.config.max_chunks_per_file:
            raise FileProcessingError(
                f"the file splits into {len(pieces)} chunks; the limit is {self.config.max_chunks_per_file}",
                code="too_many_chunks",
            )
        return pieces

    async def embed(self, texts: list[str], heartbeat: Heartbeat = _no_heartbeat) -> Vectors:
        parts: list[Vectors] = []
        last_beat = time.monotonic()
        for start in range(0, len(texts), self.config.batch_size):
            parts.append(await self.embedder.embed(texts[start : start + self.config.batch_size]))
            if time.monotonic() - last_beat >= _HEARTBEAT_SECONDS:
                await heartbeat()
                last_beat = time.monotonic()
        if not parts:
            return np.zeros((0, self.embedder.dimensions), dtype=np.float32)
        vectors = np.concatenate(parts)
        if self.on_embedded is not None:
            self.on_embedded(len(texts))
        if vectors.shape != (len(texts), self.embedder.dimensions):
            raise EmbedderError(f"the embedder returned {vectors.shape} for {len(texts)} texts")
        return vectors

    async def ingest(
        self, file_id: str, *, heartbeat: Heartbeat = _no_heartbeat, last_attempt: bool = False
    ) -> Outcome:
        """Indexes ``file_id``; idempotent. Raises :class:`TransientError` when a retry may succeed."""
        extra: dict[str, Any] = {"file_id": file_id}
        try:
            claimed = await self._claim(file_id, last_attempt=last_attempt)
            if not isinstance(claimed, KnowledgeFile):
                return claimed
            extra["knowledge_id"] = claimed.collection_id
            reused = await self._reuse(claimed)
            if reused is not None:
                return reused
            return await self._index(claimed, heartbeat, extra)
        except FileProcessingError as exc:
            await self._fail(file_id, exc.code, exc.message, extra)
            return Outcome.FAILED
        except EmbedderError as exc:
            await self._fail(file_id, exc.code, exc.message, extra)
            return Outcome.FAILED
        except (EmbedderUnavailableError, DependencyError, psycopg.OperationalError, PoolTimeout) as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            code = getattr(exc, "code", "dependency_unavailable")
            if last_attempt:
                await self._fail(file_id, code, f"gave up after repeated failures: {message}", extra)
                return Outcome.FAILED
            raise TransientError(message, code=code) from exc

    async def _claim(self, file_id: str, *, last_attempt: bool) -> KnowledgeFile | Outcome:
        async with self.pool.connection() as conn, conn.transaction():
            file = await self.repo.get_file(conn, file_id, for_update=True)
            if file is None:
                logger.info("file was deleted before it was indexed", extra={"file_id": file_id})
                return Outcome.SKIPPED
            collection = await self.repo.get_collection(conn, file.collection_id)
            assert collection is not None  # files cascade with their collection
            if file.status == "indexed" and file.embedder == collection.embedder:
                logger.info("file already indexed (a redelivery)", extra={"file_id": file_id})
                return Outcome.SKIPPED
            if file.status == "failed":
                logger.info("file already failed; re-index the collection to retry it", extra={"file_id": file_id})
                return Outcome.SKIPPED
            if collection.embedder != self.embedder.name or collection.dimensions != self.embedder.dimensions:
                message = (
                    f"knowledge '{collection.id}' is set to the embedder {collection.embedder} but this worker runs"
                    f" {self.embedder.name}; re-index the collection or run a worker with that embedder"
                )
                if not last_attempt:
                    # During a rollout another replica may still run the collection's embedder: let it try.
                    raise TransientError(message, code="embedder_mismatch")
                await self._mark_failed(conn, file, "embedder_mismatch", message)
                return Outcome.FAILED
            await self.repo.mark_indexing(conn, file.id)
            return file

    async def _current(self, conn: AsyncConnection[Any], claimed: KnowledgeFile) -> KnowledgeFile | None:
        """The locked file row if this worker's result still belongs to it, else None (drop the work)."""
        file = await self.repo.get_file(conn, claimed.id, for_update=True)
        if file is None:
            logger.info("file was deleted while it was indexed; dropping the work", extra={"file_id": claimed.id})
            return None
        if file.generation != claimed.generation or file.status != "indexing":
            logger.info(
                "file changed while it was indexed; dropping the work",
                extra={"file_id": claimed.id, "status": file.status, "generation": file.generation},
            )
            return None
        return file

    async def _reuse(self, claimed: KnowledgeFile) -> Outcome | None:
        """Copies the chunks of an identical indexed file; None when there is none to copy."""
        async with self.pool.connection() as conn, conn.transaction():
            donor = await self.repo.reuse_donor(
                conn, sha256=claimed.sha256, embedder=self.embedder.name, chunker=self.chunker, exclude=claimed.id
            )
            if donor is None:
                return None
            file = await self._current(conn, claimed)
            if file is None:
                return Outcome.SKIPPED
            await self.chunks.delete_for_file(conn, file.id)
            count = await self.chunks.copy_from(
                conn, donor_file_id=donor, collection_id=file.collection_id, file_id=file.id
            )
            await self.repo.mark_indexed(
                conn, file.id, chunk_count=count, embedder=self.embedder.name, chunker=self.chunker
            )
            await events.file_indexed(conn, file, chunks=count, embedder=self.embedder.name)
        logger.info(
            "file indexed by reusing identical content",
            extra={"file_id": claimed.id, "knowledge_id": claimed.collection_id, "donor": donor, "chunks": count},
        )
        return Outcome.REUSED

    async def _index(self, claimed: KnowledgeFile, heartbeat: Heartbeat, extra: dict[str, Any]) -> Outcome:
        started = time.perf_counter()
        try:
            data = await _beating(self.store.get_bytes(self.bucket, claimed.object_key), heartbeat)
        except ObjectNotFoundError as exc:
            raise FileProcessingError(
                "the uploaded file is missing from the object store", code="object_missing"
            ) from exc
        # A large PDF can take longer to extract than ack_wait: keep telling JetStream the work goes on.
        kind: Any = claimed.kind
        pieces = await _beating(asyncio.to_thread(self.prepare, kind, data), heartbeat)
        prepared = time.perf_counter()
        vectors = await self.embed([p.text for p in pieces], heartbeat)
        embedded = time.perf_counter()
        async with self.pool.connection() as conn, conn.transaction():
            await self.vector_types.register(conn)
            file = await self._current(conn, claimed)
            if file is None:
                return Outcome.SKIPPED
            await self.chunks.delete_for_file(conn, file.id)
            await self.chunks.write(
                conn,
                collection_id=file.collection_id,
                file_id=file.id,
                chunks=pieces,
                vectors=vectors,
                embedder=self.embedder.name,
            )
            await self.repo.mark_indexed(
                conn, file.id, chunk_count=len(pieces), embedder=self.embedder.name, chunker=self.chunker
            )
            await events.file_indexed(conn, file, chunks=len(pieces), embedder=self.embedder.name)
        logger.info(
            "file indexed",
            extra={
                **extra,
                "chunks": len(pieces),
                "extract_seconds": round(prepared - started, 3),
                "embed_seconds": round(embedded - prepared, 3),
                "write_seconds": round(time.perf_counter() - embedded, 3),
            },
        )
        return Outcome.INDEXED

    async def _fail(self, file_id: str, code: str, message: str, extra: dict[str, Any]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            file = await self.repo.get_file(conn, file_id, for_update=True)
            if file is None or file.status == "indexed":
                return
            await self._mark_failed(conn, file, code, message)
        logger.warning("file failed to index", extra={**extra, "error_code": code, "error": message})

    async def _mark_failed(self, conn: AsyncConnection[Any], file: KnowledgeFile, code: str, message: str) -> None:
        await self.repo.mark_failed(conn, file.id, code, message)
        await events.file_failed(conn, file, code=code, message=message)
