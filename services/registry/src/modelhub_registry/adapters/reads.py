"""Pooled connections for reads that need no transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


@contextlib.asynccontextmanager
async def autocommit_connection(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection in autocommit mode, so a read is one round trip per query, with no ``BEGIN`` and
    ``COMMIT`` around it. At the pool's READ COMMITTED level every statement sees its own snapshot anyway, so
    reads lose nothing; writes keep ``conn.transaction()``."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            # The pool hands connections out as it made them; a broken one is discarded by the pool anyway.
            with contextlib.suppress(psycopg.Error):
                await conn.set_autocommit(False)
