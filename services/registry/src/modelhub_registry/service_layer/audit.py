"""The audit log: who did what to which target, from where, and how it ended.

Every API request that changes something, and every security-relevant read (exports, credentials, filter
secrets, the audit log itself), leaves one row once its answer is known: ``ok`` for 2xx/3xx, ``denied`` for
401/403/404 on a target the caller may not see, ``failed`` for the rest. A change that rolled back answers
with an error, so its row says ``failed`` (or ``denied``): an ``ok`` row is never written for a change that
was not committed. The row is written after the change's own transaction; a registry killed between the two
loses that row (the change's event in the outbox is still there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from modelhub_common.errors import DependencyError
from modelhub_registry.errors import InvalidModelError

logger = logging.getLogger(__name__)

_COLUMNS = "id, at, actor, actor_role, action, target, outcome, status, source_address, request_id"


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    actor_role: str
    action: str
    target: str
    outcome: str
    status: int
    source_address: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "failed"


def _cursor(row: dict[str, Any]) -> str:
    return f"{row['at'].isoformat()}|{row['id']}"


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool, *, retention_days: int) -> None:
        self._pool = pool
        self._retention = retention_days

    async def record(self, entry: AuditEntry) -> None:
        """Never raises: a request must not fail because its audit row could not be written (it is logged)."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO audit_log (actor, actor_role, action, target, outcome, status, source_address,"
                    " request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        entry.actor,
                        entry.actor_role,
                        entry.action,
                        entry.target,
                        entry.outcome,
                        entry.status,
                        entry.source_address,
                        entry.request_id,
                    ),
                )
        except (psycopg.Error, OSError) as exc:
            logger.error("could not write an audit row", extra={"action": entry.action, "error": repr(exc)})

    async def query(self, q: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("actor", q.actor), ("action", q.action), ("target", q.target)):
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
