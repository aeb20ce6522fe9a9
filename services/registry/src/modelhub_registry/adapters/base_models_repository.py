"""Base models and connections in PostgreSQL. Every method runs in the caller's transaction."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from modelhub_registry.domain.base_model import BaseModelRecord, Connection

_CONNECTION_COLUMNS = (
    "id::text AS id, type, name, url, api_key IS NOT NULL AS has_api_key, created_at, last_synced_at, last_error"
)


def _base(row: dict[str, Any]) -> BaseModelRecord:
    row = dict(row)
    if row.get("connection_id") is not None:
        row["connection_id"] = str(row["connection_id"])
    return BaseModelRecord.model_validate(row)


class BaseModelsRepository:
    async def get(self, conn: AsyncConnection[Any], model_id: str) -> BaseModelRecord | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM base_models WHERE id = %s", (model_id,))
            row = await cur.fetchone()
        return _base(row) if row else None

    async def existing_ids(self, conn: AsyncConnection[Any], ids: list[str]) -> set[str]:
        cur = await conn.execute("SELECT id FROM base_models WHERE id = ANY(%s)", (ids,))
        return {r[0] for r in await cur.fetchall()}

    async def list_all(self, conn: AsyncConnection[Any], *, include_unavailable: bool) -> list[BaseModelRecord]:
        sql = "SELECT * FROM base_models"
        if not include_unavailable:
            sql += " WHERE available"
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql + " ORDER BY id")
            rows = await cur.fetchall()
        return [_base(r) for r in rows]

    async def upsert(self, conn: AsyncConnection[Any], record: BaseModelRecord) -> bool:
        """Inserts or refreshes a base model; True when it is new or was unavailable before."""
        cur = await conn.execute("SELECT available FROM base_models WHERE id = %s FOR UPDATE", (record.id,))
        before = await cur.fetchone()
        await conn.execute(
            """
            INSERT INTO base_models (id, name, source, connection_id, capabilities, details, params, available)
            VALUES (%s, %s, %s, %s, %s, %s, %s, true)
            ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, source = EXCLUDED.source,
                connection_id = EXCLUDED.connection_id, capabilities = EXCLUDED.capabilities,
                details = EXCLUDED.details, params = EXCLUDED.params, available = true, updated_at = now()
            """,
            (
                record.id,
                record.name,
                record.source,
                record.connection_id,
                Jsonb(record.capabilities),
                Jsonb(record.details),
                Jsonb(record.params),
            ),
        )
        return before is None or not before[0]

    async def mark_unavailable(self, conn: AsyncConnection[Any], connection_id: str, keep: list[str]) -> list[str]:
        """Marks a connection's base models that it no longer lists; returns their ids."""
        cur = await conn.execute(
            "UPDATE base_models SET available = false, updated_at = now()"
            " WHERE connection_id = %s AND available AND NOT (id = ANY(%s)) RETURNING id",
            (connection_id, keep),
        )
        return [r[0] for r in await cur.fetchall()]

    async def delete(self, conn: AsyncConnection[Any], model_id: str) -> bool:
        cur = await conn.execute("DELETE FROM base_models WHERE id = %s RETURNING id", (model_id,))
        return await cur.fetchone() is not None

    # ---- connections

    async def add_connection(
        self, conn: AsyncConnection[Any], *, type_: str, name: str, url: str, api_key: str | None
    ) -> Connection:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"INSERT INTO connections (type, name, url, api_key) VALUES (%s, %s, %s, %s)"
                f" RETURNING {_CONNECTION_COLUMNS}",
                (type_, name, url, api_key),
            )
            row = await cur.fetchone()
        assert row is not None
        return Connection.model_validate(row)

    async def connections(self, conn: AsyncConnection[Any]) -> list[Connection]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_CONNECTION_COLUMNS} FROM connections ORDER BY created_at, id")
            rows = await cur.fetchall()
        return [Connection.model_validate(r) for r in rows]

    async def connection_secret(self, conn: AsyncConnection[Any], connection_id: str) -> tuple[Connection, str | None]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {_CONNECTION_COLUMNS}, api_key FROM connections WHERE id::text = %s",
                (connection_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise LookupError(connection_id)
        key = row.pop("api_key")
        return Connection.model_validate(row), key

    async def record_sync(self, conn: AsyncConnection[Any], connection_id: str, error: str | None) -> None:
        await conn.execute(
            "UPDATE connections SET last_synced_at = now(), last_error = %s WHERE id::text = %s",
            (error, connection_id),
        )

    async def delete_connection(self, conn: AsyncConnection[Any], connection_id: str) -> list[str]:
        """Deletes a connection and its base models; returns the removed base model ids."""
        cur = await conn.execute(
            "DELETE FROM base_models WHERE connection_id::text = %s RETURNING id", (connection_id,)
        )
        removed = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("DELETE FROM connections WHERE id::text = %s RETURNING id", (connection_id,))
        if await cur.fetchone() is None:
            raise LookupError(connection_id)
        return removed
