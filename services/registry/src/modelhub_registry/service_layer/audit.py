"""The registry's audit log: every service's audit records (see :mod:`modelhub_common.audit` for what is
recorded and when), kept in ``audit_log``, read by admins, and swept after the retention period. The
registry writes its own rows with its changes; other services' rows arrive as ``AuditRecorded`` events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from modelhub_common.audit import entry_from_event, insert_row
from modelhub_common.errors import DependencyError
from modelhub_common.events import EventEnvelope
from modelhub_registry.errors import InvalidModelError

logger = logging.getLogger(__name__)

_COLUMNS = "id, at, actor, actor_role, action, target, outcome, status, source_address, request_id, source"


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None


def _cursor(row: dict[str, Any]) -> str:
    return f"{row['at'].isoformat()}|{row['id']}"


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool, *, retention_days: int) -> None:
        self._pool = pool
        self._retention = retention_days

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    async def store_event(self, envelope: EventEnvelope) -> bool:
        """Stores another service's record; ``False`` when it was stored before (a redelivery)."""
        occurred = envelope.occurred_at.ToDatetime(tzinfo=UTC)
        async with self._pool.connection() as conn:
            return await insert_row(
                conn, entry_from_event(envelope), source=envelope.source, event_id=envelope.id, at=occurred
            )

    async def query(self, q: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("actor", q.actor), ("action", q.action), ("target", q.target), ("source", q.source)):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        if q.since is not None:
            where.append("at >= %s")
            params.append(q.since)
        if q.until is not None:
            where.append("at < %s")
            params.append(q.until)
        if q.cursor:
            stamp, _, row_id = q.cursor.partition("|")
            try:
                after = (datetime.fromisoformat(stamp), int(row_id))
            except ValueError as exc:
                raise InvalidModelError("cursor: not a cursor this API gave out") from exc
            where.append("(at, id) < (%s, %s)")
            params.extend(after)
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC LIMIT %s"
        params.append(q.limit + 1)
        try:
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise DependencyError(f"cannot read the audit log: {type(exc).__name__}") from exc
        next_cursor = _cursor(rows[q.limit - 1]) if len(rows) > q.limit else None
        return rows[: q.limit], next_cursor

    async def sweep(self, now: datetime) -> int:
        """Deletes rows older than the retention; returns how many."""
        if self._retention <= 0:
            return 0
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM audit_log WHERE at < %s", (now - timedelta(days=self._retention),))
            return cur.rowcount
