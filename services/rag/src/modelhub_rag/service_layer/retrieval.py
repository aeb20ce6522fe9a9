"""Hybrid retrieval: nearest chunks by vector and best chunks by full-text rank, fused by reciprocal rank.

The text ranker and the query embedding run at the same time (the embedding on its own thread, the text
query on its own connection); the vector query follows the embedding. Latency is the longer of the two
paths, not their sum. Every read goes through the search pool (autocommit, HNSW settings already in the
session; see ``adapters/search_pool.py``): one round trip per query.

Scores: ``hybrid`` (the default) reports the fused RRF score; ``vector`` the cosine similarity; ``text`` the
``ts_rank_cd`` rank. Only ``hybrid`` is meant for production; the others exist to compare and debug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import Principal
from modelhub_rag.adapters.chunks_repository import Candidate, ChunksRepository
from modelhub_rag.adapters.knowledge_repository import KnowledgeRepository
from modelhub_rag.domain.access import can_read
from modelhub_rag.domain.embedding import Embedder, Vectors
from modelhub_rag.domain.fusion import reciprocal_rank_fusion
from modelhub_rag.errors import InvalidRequestError, KnowledgeNotFoundError, ReindexRequiredError

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "vector", "text"]


@dataclass(frozen=True)
class RetrievalConfig:
    default_k: int
    max_k: int
    max_query_chars: int
    max_knowledge_ids: int
    candidates: int
    rrf_k: int
    common_fraction: float = 0.01


@dataclass(frozen=True)
class RetrievedChunk:
    knowledge_id: str
    file_id: str
    file_name: str
    text: str
    score: float
    page: int | None
    start_offset: int
    end_offset: int


def _problem(field: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{field}: {message}", details=[{"field": field, "message": message}])


class RetrievalService:
    def __init__(
        self,
        search_pool: AsyncConnectionPool,
        embedder: Embedder,
        *,
        config: RetrievalConfig,
        repo: KnowledgeRepository | None = None,
        chunks: ChunksRepository | None = None,
    ) -> None:
        """``search_pool`` is built by :func:`modelhub_rag.adapters.search_pool.search_pool`."""
        self.pool = search_pool
        self.embedder = embedder
        # Set by the bootstrap to record each query's step timings (in milliseconds) as metrics.
        self.on_timings: Callable[[Mapping[str, float]], None] | None = None
        self.config = config
        self.repo = repo or KnowledgeRepository()
        self.chunks = chunks or ChunksRepository()

    def _validate(self, knowledge_ids: Sequence[str], query: str, k: int | None) -> tuple[list[str], str, int]:
        ids = list(dict.fromkeys(i for i in knowledge_ids))
        if not ids:
            raise _problem("knowledge_ids", "name at least one knowledge collection")
        if len(ids) > self.config.max_knowledge_ids:
            raise _problem("knowledge_ids", f"at most {self.config.max_knowledge_ids} collections per query")
        text = query.strip()
        if not text:
            raise _problem("query", "must not be empty")
        if len(text) > self.config.max_query_chars:
            raise _problem("query", f"at most {self.config.max_query_chars} characters")
        wanted = self.config.default_k if k is None else k
        if not 1 <= wanted <= self.config.max_k:
            raise _problem("k", f"must be between 1 and {self.config.max_k}")
        return ids, text, wanted

    async def retrieve(
        self,
        principal: Principal,
        knowledge_ids: Sequence[str],
        query: str,
        k: int | None = None,
        *,
        file_ids: Sequence[str] | None = None,
        mode: Mode = "hybrid",
        timings: dict[str, float] | None = None,
    ) -> list[RetrievedChunk]:
        """Best chunks first. ``timings``, when given, receives the milliseconds each step took (``access``,
        ``embed``, ``text``, ``vector``, ``total``), for the response's ``Server-Timing`` header."""
        ids, text, wanted = self._validate(knowledge_ids, query, k)
        steps: dict[str, float] = {} if timings is None else timings
        started = time.perf_counter()
        # The query's embedding does not depend on the access check: start it now, drop it if access fails.
        embedding = asyncio.ensure_future(self._embed_query(text, steps)) if mode != "text" else None
        try:
            await self._check_readable(ids, principal)
        except BaseException:
            if embedding is not None:
                embedding.cancel()
            raise
        steps["access"] = (time.perf_counter() - started) * 1000
        limit = max(self.config.candidates, wanted)

        async def by_vector() -> list[Candidate]:
            if embedding is None:
                return []
            vector = await embedding
            began = time.perf_counter()
            async with self.pool.connection() as conn:
                hits = await self.chunks.vector_candidates(
                    conn,
                    vector=vector,
                    dimensions=self.embedder.dimensions,
                    embedder=self.embedder.name,
                    collection_ids=ids,
                    file_ids=file_ids,
                    limit=limit,
                )
            steps["vector"] = (time.perf_counter() - began) * 1000
            return hits

        async def by_text() -> list[Candidate]:
            if mode == "vector":
                return []
            began = time.perf_counter()
            async with self.pool.connection() as conn:
                hits = await self.chunks.text_candidates(
                    conn,
                    text=text,
                    collection_ids=ids,
                    file_ids=file_ids,
                    limit=limit,
                    common_fraction=self.config.common_fraction,
                )
            steps["text"] = (time.perf_counter() - began) * 1000
            return hits

        vector_hits, text_hits = await asyncio.gather(by_vector(), by_text())
        scored = self._rank(mode, vector_hits, text_hits, wanted)
        rows = {c.chunk_id: c.row for c in (*vector_hits, *text_hits)}
        steps["total"] = (time.perf_counter() - started) * 1000
        if self.on_timings is not None:
            self.on_timings(steps)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "retrieval timings",
                extra={"knowledge_ids": ids, "mode": mode, **{f"{n}_ms": round(v, 2) for n, v in steps.items()}},
            )
        return [
            RetrievedChunk(
                knowledge_id=row.collection_id,
                file_id=row.file_id,
                file_name=row.file_name,
                text=row.text,
                score=round(score, 6),
                page=row.page,
                start_offset=row.start_offset,
                end_offset=row.end_offset,
            )
            for chunk_id, score in scored
            if (row := rows.get(chunk_id)) is not None
        ]

    async def _embed_query(self, text: str, steps: dict[str, float]) -> Vectors:
        began = time.perf_counter()
        vectors = await self.embedder.embed([text])
        steps["embed"] = (time.perf_counter() - began) * 1000
        vector: Vectors = vectors[0]
        return vector

    async def _check_readable(self, ids: list[str], principal: Principal) -> None:
        """404 naming unknown or unreadable ids (one answer for both: no existence oracle), 409 for collections
        needing a re-index."""
        async with self.pool.connection() as conn:
            collections = await self.repo.get_collections(conn, ids)
        hidden = [i for i in ids if i not in collections or not can_read(collections[i], principal)]
        if hidden:
            raise KnowledgeNotFoundError(
                f"knowledge '{hidden[0]}' does not exist or you cannot read it", details={"knowledge_ids": hidden}
            )
        stale = [i for i in ids if collections[i].embedder != self.embedder.name]
        if stale:
            raise ReindexRequiredError(
                f"knowledge '{stale[0]}' was embedded with {collections[stale[0]].embedder}, but this service now"
                f" embeds with {self.embedder.name}; re-index it (modelhub knowledge reindex {stale[0]})",
                details={"knowledge_ids": stale},
            )

    def _rank(
        self, mode: Mode, by_vector: list[Candidate], by_text: list[Candidate], k: int
    ) -> list[tuple[int, float]]:
        if mode == "vector":
            return [(c.chunk_id, 1.0 - c.value) for c in by_vector[:k]]
        if mode == "text":
            return [(c.chunk_id, c.value) for c in by_text[:k]]
        rankings = [[c.chunk_id for c in by_vector], [c.chunk_id for c in by_text]]
        return reciprocal_rank_fusion(rankings, k=self.config.rrf_k, limit=k)
