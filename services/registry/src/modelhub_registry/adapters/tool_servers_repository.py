"""Tool servers in PostgreSQL. Every method runs in the caller's transaction."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from modelhub_registry.domain.tool_server import ToolServer

_WRITABLE = (
    "name",
    "description",
    "kind",
    "url",
    "base_url",
    "auth",
    "secret",
    "timeout_seconds",
    "max_result_bytes",
    "access_control",
    "tools",
    "refreshed_at",
    "last_error",
    "updated_at",
    "version",
)


def _values(server: ToolServer) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(server, name) for name in ("id", "created_at", *_WRITABLE)}
    values["access_control"] = (
        Jsonb(server.access_control.model_dump(mode="json")) if server.access_control is not None else None
    )
    values["tools"] = Jsonb(server.tools)
    return values


class ToolServersRepository:
    async def get(self, conn: AsyncConnection[Any], server_id: str, *, for_update: bool = False) -> ToolServer | None:
        sql = "SELECT * FROM tool_servers WHERE id = %s" + (" FOR UPDATE" if for_update else "")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, (server_id,))
            row = await cur.fetchone()
        return ToolServer.model_validate(row) if row else None

    async def list_all(self, conn: AsyncConnection[Any]) -> list[ToolServer]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM tool_servers ORDER BY id")
            rows = await cur.fetchall()
        return [ToolServer.model_validate(row) for row in rows]

    async def ids(self, conn: AsyncConnection[Any]) -> list[str]:
        cur = await conn.execute("SELECT id FROM tool_servers ORDER BY id")
        return [row[0] for row in await cur.fetchall()]

    async def existing_ids(self, conn: AsyncConnection[Any], ids: list[str]) -> set[str]:
        cur = await conn.execute("SELECT id FROM tool_servers WHERE id = ANY(%s)", (ids,))
        return {row[0] for row in await cur.fetchall()}

    async def count(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute("SELECT count(*) FROM tool_servers")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def insert(self, conn: AsyncConnection[Any], server: ToolServer) -> None:
        columns = ("id", "created_at", *_WRITABLE)
        placeholders = ", ".join(f"%({name})s" for name in columns)
        await conn.execute(
            f"INSERT INTO tool_servers ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608 - fixed names
            _values(server),
        )

    async def update(self, conn: AsyncConnection[Any], server: ToolServer) -> None:
        assignments = ", ".join(f"{name} = %({name})s" for name in _WRITABLE)
        await conn.execute(f"UPDATE tool_servers SET {assignments} WHERE id = %(id)s", _values(server))  # noqa: S608

    async def delete(self, conn: AsyncConnection[Any], server_id: str) -> ToolServer | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("DELETE FROM tool_servers WHERE id = %s RETURNING *", (server_id,))
            row = await cur.fetchone()
        return ToolServer.model_validate(row) if row else None
