"""The RAG service's own Prometheus metrics, registered into the app's :class:`ServiceMetrics` registry.

Labels are bounded: file statuses (four), retrieval steps (five), ingest outcomes; never collection, file or
user ids.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from modelhub_common.metrics import ServiceMetrics
from modelhub_rag.domain.collection import FILE_STATUSES

RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RETRIEVAL_STEPS = frozenset({"access", "embed", "text", "vector", "total"})


class RagMetrics:
    def __init__(self, metrics: ServiceMetrics, *, status_cache_seconds: float = 5.0) -> None:
        r = metrics.registry
        self._metrics = metrics
        self._status_cache_seconds = status_cache_seconds
        self._status_read_at: float | None = None
        self.files = Gauge("modelhub_rag_files", "Knowledge files by status.", ("status",), registry=r)
        self.ingest_queue_depth = Gauge(
            "modelhub_rag_ingest_queue_depth",
            "Files uploaded and waiting to be indexed (status pending); see also the rag-ingest consumer's lag.",
            registry=r,
        )
        self.chunks_embedded = Counter(
            "modelhub_rag_chunks_embedded", "Chunks embedded while indexing files (reused chunks excluded).", registry=r
        )
        self.retrieval_duration = Histogram(
            "modelhub_rag_retrieval_step_duration_seconds",
            "Time of each retrieval step (access, embed, text, vector) and of the whole query (total).",
            ("step",),
            buckets=RETRIEVAL_BUCKETS,
            registry=r,
        )

    def observe_retrieval(self, timings_ms: Mapping[str, float]) -> None:
        for step, ms in timings_ms.items():
            if step in RETRIEVAL_STEPS:
                self.retrieval_duration.labels(step).observe(ms / 1000)

    def count_embedded(self, chunks: int) -> None:
        self.chunks_embedded.inc(chunks)

    def watch_files(self, pool: AsyncConnectionPool) -> None:
        """Files by status at scrape time, from one grouped count, read at most every few seconds."""

        async def read() -> None:
            now = time.monotonic()
            if self._status_read_at is not None and now - self._status_read_at < self._status_cache_seconds:
                return
            self._status_read_at = now
            async with (
                pool.connection(timeout=self._metrics.scrape_timeout) as conn,
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                await cur.execute("SELECT status, count(*) FROM files GROUP BY status")
                counts = {str(status): int(n) for status, n in await cur.fetchall()}
            for status in FILE_STATUSES:
                self.files.labels(status).set(counts.get(status, 0))
            self.ingest_queue_depth.set(counts.get("pending", 0))

        self._metrics.on_scrape("rag-files", read)
