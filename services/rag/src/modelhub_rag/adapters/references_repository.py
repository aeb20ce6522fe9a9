"""Which model files use which collections, as learnt from the registry's model events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection


class ReferencesRepository:
    async def accept_version(self, conn: AsyncConnection[Any], model_id: str, version: int, *, deleted: bool) -> bool:
        """Records ``version`` as the newest seen; False (and no change) when a newer one was already recorded."""
        cur = await conn.execute(
            "INSERT INTO model_versions (model_id, version, deleted) VALUES (%s, %s, %s)"
            " ON CONFLICT (model_id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted,"
            " updated_at = now() WHERE model_versions.version <= EXCLUDED.version"
            " RETURNING model_id",
            (model_id, version, deleted),
        )
        return await cur.fetchone() is not None

    async def replace(self, conn: AsyncConnection[Any], model_id: str, knowledge_ids: Sequence[str]) -> None:
        await conn.execute("DELETE FROM model_references WHERE model_id = %s", (model_id,))
        if knowledge_ids:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO model_references (model_id, knowledge_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [(model_id, k) for k in dict.fromkeys(knowledge_ids)],
                )

    async def models_using(self, conn: AsyncConnection[Any], knowledge_ids: Sequence[str]) -> dict[str, list[str]]:
        cur = await conn.execute(
            "SELECT knowledge_id, model_id FROM model_references WHERE knowledge_id = ANY(%s) ORDER BY model_id",
            (list(knowledge_ids),),
        )
        result: dict[str, list[str]] = {k: [] for k in knowledge_ids}
        for knowledge_id, model_id in await cur.fetchall():
            result[knowledge_id].append(model_id)
        return result

    async def unknown_among(self, conn: AsyncConnection[Any], knowledge_ids: Sequence[str]) -> list[str]:
        cur = await conn.execute(
            "SELECT k FROM unnest(%s::text[]) AS k WHERE NOT EXISTS (SELECT 1 FROM collections c WHERE c.id = k)",
            (list(knowledge_ids),),
        )
        return [row[0] for row in await cur.fetchall()]

    async def dangling(self, conn: AsyncConnection[Any]) -> list[tuple[str, str]]:
        """(model, knowledge id) pairs whose collection does not exist here."""
        cur = await conn.execute(
            "SELECT r.model_id, r.knowledge_id FROM model_references r"
            " WHERE NOT EXISTS (SELECT 1 FROM collections c WHERE c.id = r.knowledge_id)"
            " ORDER BY r.model_id, r.knowledge_id"
        )
        return [(row[0], row[1]) for row in await cur.fetchall()]
