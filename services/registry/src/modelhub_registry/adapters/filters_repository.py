"""Filters in PostgreSQL. Every method runs in the caller's transaction."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from modelhub_registry.domain.filter import Filter

_WRITABLE = ("name", "description", "kind", "direction", "config", "enabled", "updated_at", "version")


def _values(item: Filter) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(item, name) for name in ("id", "created_at", *_WRITABLE)}
    values["config"] = Jsonb(item.config)
    return values


class FiltersRepository:
    async def get(self, conn: AsyncConnection[Any], filter_id: str, *, for_update: bool = False) -> Filter | None:
        sql = "SELECT * FROM filters WHERE id = %s" + (" FOR UPDATE" if for_update else "")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, (filter_id,))
            row = await cur.fetchone()
        return Filter.model_validate(row) if row else None

    async def list_all(self, conn: AsyncConnection[Any]) -> list[Filter]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM filters ORDER BY id")
            rows = await cur.fetchall()
        return [Filter.model_validate(row) for row in rows]

    async def get_many(self, conn: AsyncConnection[Any], ids: list[str]) -> list[Filter]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM filters WHERE id = ANY(%s)", (ids,))
            rows = await cur.fetchall()
        return [Filter.model_validate(row) for row in rows]

    async def existing_ids(self, conn: AsyncConnection[Any], ids: list[str]) -> set[str]:
        cur = await conn.execute("SELECT id FROM filters WHERE id = ANY(%s)", (ids,))
        return {row[0] for row in await cur.fetchall()}

    async def count(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute("SELECT count(*) FROM filters")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def insert(self, conn: AsyncConnection[Any], item: Filter) -> None:
        columns = ("id", "created_at", *_WRITABLE)
        placeholders = ", ".join(f"%({name})s" for name in columns)
        await conn.execute(
            f"INSERT INTO filters ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608 - fixed names
            _values(item),
        )

    async def update(self, conn: AsyncConnection[Any], item: Filter) -> None:
        assignments = ", ".join(f"{name} = %({name})s" for name in _WRITABLE)
        await conn.execute(f"UPDATE filters SET {assignments} WHERE id = %(id)s", _values(item))  # noqa: S608

    async def delete(self, conn: AsyncConnection[Any], filter_id: str) -> Filter | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("DELETE FROM filters WHERE id = %s RETURNING *", (filter_id,))
            row = await cur.fetchone()
        return Filter.model_validate(row) if row else None
