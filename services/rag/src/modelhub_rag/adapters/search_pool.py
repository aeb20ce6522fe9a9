"""The connections retrieval searches on: autocommit, pgvector's types registered, HNSW settings in the session.

Retrieval only reads, and each of its queries is one statement. On the service's main pool (transactions
on) every such read costs three round trips (``BEGIN``, the query, ``COMMIT``), and a vector search two more
to set ``hnsw.*`` for its transaction. Here a read is one round trip: the connection is in autocommit and
carries the search settings from the moment it opens.

A request waits at most ``timeout`` seconds for a connection (``MODELHUB_RAG_DATABASE_POOL_TIMEOUT_SECONDS``,
as on the main pool): while PostgreSQL is down a search fails with ``PoolTimeout`` after that long, which the
shared error handlers answer 503 with ``Retry-After``, instead of waiting psycopg's default 30 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from modelhub_rag.adapters.chunks_repository import configure_search_session
from modelhub_rag.adapters.vector_types import VectorTypes


@contextlib.asynccontextmanager
async def search_pool(
    database_url: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    ef_search: int,
    vector_types: VectorTypes,
) -> AsyncIterator[AsyncConnectionPool]:
    async def configure(conn: AsyncConnection[Any]) -> None:
        await vector_types.register(conn)
        await configure_search_session(conn, ef_search=ef_search)

    pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        kwargs={"autocommit": True},
        configure=configure,
        name="rag-search",
    )
    # Like the main pool: the service starts while PostgreSQL is down (the main pool's check reports it).
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()
