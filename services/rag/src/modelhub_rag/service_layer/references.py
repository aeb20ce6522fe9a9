"""What the rag service learns from model-file events: which models use which collections.

A model file lists the knowledge collections it is grounded on (``knowledge_ids`` in ``ModelChanged``). The
service keeps that list per model so that a collection shows the models using it, a delete can warn about
them, and a model referring to a collection that does not exist is logged loudly: that is how attached
knowledge "silently stops being used". Events may arrive out of order; an older version never overwrites a
newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from modelhub_rag.adapters.references_repository import ReferencesRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceUpdate:
    applied: bool
    unknown: list[str]


class ReferenceService:
    def __init__(self, pool: AsyncConnectionPool, repo: ReferencesRepository | None = None) -> None:
        self.pool = pool
        self.repo = repo or ReferencesRepository()

    async def model_changed(self, model_id: str, version: int, knowledge_ids: Sequence[str]) -> ReferenceUpdate:
        ids = [k for k in dict.fromkeys(knowledge_ids) if k]
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.accept_version(conn, model_id, version, deleted=False):
                logger.info("ignored an older model event", extra={"model_id": model_id, "version": version})
                return ReferenceUpdate(False, [])
            await self.repo.replace(conn, model_id, ids)
            unknown = await self.repo.unknown_among(conn, ids)
        if unknown:
            logger.warning(
                "model file refers to knowledge collections that do not exist",
                extra={"model_id": model_id, "version": version, "knowledge_ids": unknown},
            )
        elif ids:
            logger.info("model knowledge recorded", extra={"model_id": model_id, "knowledge_ids": ids})
        return ReferenceUpdate(True, unknown)

    async def model_deleted(self, model_id: str, last_version: int) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.accept_version(conn, model_id, last_version, deleted=True):
                return False
            await self.repo.replace(conn, model_id, [])
        return True

    async def dangling(self) -> list[tuple[str, str]]:
        async with self.pool.connection() as conn:
            return await self.repo.dangling(conn)
