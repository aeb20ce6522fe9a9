"""The PostgreSQL connection pool of a service, with its readiness check."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool

from modelhub_common.health import Readiness
from modelhub_common.settings import DatabaseSettings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def database_pool(settings: DatabaseSettings, readiness: Readiness) -> AsyncIterator[AsyncConnectionPool]:
    """A psycopg pool; the service starts while Postgres is down and reports not-ready until it is back."""
    pool = AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        # A request waiting longer than this for a connection (PostgreSQL down) gets PoolTimeout: a 503.
        timeout=settings.database_pool_timeout_seconds,
        open=False,
        kwargs={"autocommit": False},
    )
    await pool.open(wait=False)

    async def check() -> None:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    readiness.add("postgres", check)
    try:
        yield pool
    finally:
        await pool.close()
