"""Objects to remove from S3, recorded in the transaction that deletes their rows.

A file's object cannot be removed in the same transaction as its row; removing it first would leave a row
pointing at nothing if the transaction failed, removing it after commit would leak it on a crash. So the key
is queued here with the delete and :class:`ObjectSweeper` removes queued objects afterwards, retrying until
the store confirms. Several replicas may sweep at once (``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from modelhub_common.errors import ModelhubError
from modelhub_common.objectstore import AsyncObjectStore

logger = logging.getLogger(__name__)


async def queue_deletions(conn: AsyncConnection[Any], keys: Sequence[str]) -> None:
    if keys:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO object_deletions (object_key) VALUES (%s) ON CONFLICT DO NOTHING", [(k,) for k in keys]
            )


class ObjectSweeper:
    def __init__(self, pool: AsyncConnectionPool, store: AsyncObjectStore, *, bucket: str, batch: int = 100) -> None:
        self._pool = pool
        self._store = store
        self._bucket = bucket
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sweeps now rather than at the next interval (called after a delete commits)."""
        self._wake.set()

    async def sweep(self) -> int:
        """Removes queued objects; returns how many were removed. A failure leaves the key queued."""
        removed = 0
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT object_key FROM object_deletions ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (self._batch,),
            )
            for (key,) in await cur.fetchall():
                try:
                    await self._store.remove(self._bucket, key)
                except ModelhubError as exc:
                    await conn.execute(
                        "UPDATE object_deletions SET attempts = attempts + 1, last_error = %s WHERE object_key = %s",
                        (exc.message[:500], key),
                    )
                    logger.warning("object not removed yet", extra={"object_key": key, "error": exc.message})
                    continue
                await conn.execute("DELETE FROM object_deletions WHERE object_key = %s", (key,))
                removed += 1
        return removed

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                while await self.sweep() >= self._batch:
                    pass
            except (psycopg.Error, ModelhubError) as exc:
                logger.warning("object sweep failed; retrying later", extra={"error": repr(exc)})
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*waits, return_exceptions=True)
