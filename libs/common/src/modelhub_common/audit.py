"""The audit trail every service keeps: who did what to which target, from where, and how it ended.

Every API request that changes something, and every security-relevant read a service names (exports,
credentials, secrets, knowledge downloads, the audit log itself), leaves one ``AuditRecorded`` event on
``modelhub.audit.v1.recorded`` (stream ``MODELHUB_AUDIT``), and in the registry one ``audit_log`` row:

* **A change that commits** is recorded *in its own transaction*: :class:`AuditMiddleware` puts an
  :class:`AuditTrail` in a context variable, and the first :func:`modelhub_common.outbox.enqueue` (or
  :func:`~modelhub_common.outbox.enqueue_with`) of the request adds the audit event (and, where the service
  keeps the table, the row) next to the change's own event. A change that rolls back takes its audit row and
  event with it, so an ``ok`` row never describes a change that did not happen, and a crash after the commit
  cannot lose the row.
* **Everything else** (a denied or failed attempt, a read, a change that emitted no event) is recorded once
  its answer is known, in a transaction of its own: ``ok`` for 2xx/3xx, ``denied`` for 401/403, ``failed``
  for the rest.

The registry keeps the rows of every service: the others publish only the event, and the registry's
consumer stores it (de-duplicated by event id). Recording never fails a request: an error is logged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhub.events.v1 import events_pb2
from modelhub_common.events import AUDIT, EventEnvelope, new_envelope
from modelhub_common.request_ids import current_request_id
from modelhub_common.webapp import PRINCIPAL_SCOPE_KEY

__all__ = [
    "RECORDED_SUBJECT",
    "AuditEntry",
    "AuditMiddleware",
    "AuditTrail",
    "AuditWriter",
    "audit_app",
    "current_trail",
    "entry_from_event",
    "outcome_of",
]

logger = logging.getLogger(__name__)

RECORDED_SUBJECT = AUDIT.subject("recorded")
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

current_trail: contextvars.ContextVar[AuditTrail | None] = contextvars.ContextVar("modelhub_audit", default=None)
"""The trail of the request being served, if it is audited (set by :class:`AuditMiddleware`)."""


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "failed"


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

    def to_event(self, service: str) -> EventEnvelope:
        payload = events_pb2.AuditRecorded(
            actor=self.actor,
            actor_role=self.actor_role,
            action=self.action,
            target=self.target,
            outcome=self.outcome,
            status=self.status,
            source_address=self.source_address,
            request_id=self.request_id,
        )
        return new_envelope(
            RECORDED_SUBJECT,
            actor=self.actor,
            role=self.actor_role or "anonymous",
            source=service,
            payload=payload,
        )


def entry_from_event(envelope: EventEnvelope) -> AuditEntry:
    row = envelope.audit_recorded
    return AuditEntry(
        actor=row.actor,
        actor_role=row.actor_role,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        status=row.status,
        source_address=row.source_address,
        request_id=row.request_id,
    )


async def insert_row(
    conn: psycopg.AsyncConnection[Any],
    entry: AuditEntry,
    *,
    source: str,
    event_id: str,
    at: datetime | None = None,
) -> bool:
    """Adds one ``audit_log`` row (the registry's table); ``False`` if the event's row was there already."""
    cur = await conn.execute(
        "INSERT INTO audit_log (at, actor, actor_role, action, target, outcome, status, source_address,"
        " request_id, source, event_id) VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (event_id) DO NOTHING",
        (
            at,
            entry.actor,
            entry.actor_role,
            entry.action,
            entry.target,
            entry.outcome,
            entry.status,
            entry.source_address,
            entry.request_id,
            source,
            event_id,
        ),
    )
    return cur.rowcount == 1


class AuditWriter:
    """Writes a service's audit records: the event always (through the outbox), the ``audit_log`` row too
    when ``keeps_rows`` (the registry)."""

    def __init__(self, service: str, *, keeps_rows: bool) -> None:
        self.service = service
        self.keeps_rows = keeps_rows

    async def write_in(self, conn: psycopg.AsyncConnection[Any], entry: AuditEntry) -> None:
        """Adds the record inside the caller's transaction."""
        from modelhub_common.outbox import enqueue  # the outbox calls back into this module

        envelope = entry.to_event(self.service)
        if self.keeps_rows:
            await insert_row(conn, entry, source=self.service, event_id=envelope.id)
        await enqueue(conn, RECORDED_SUBJECT, envelope)

    async def write(self, pool: AsyncConnectionPool, entry: AuditEntry) -> None:
        """Records in a transaction of its own; never raises (the failure is logged)."""
        try:
            async with pool.connection() as conn, conn.transaction():
                await self.write_in(conn, entry)
        except (psycopg.Error, OSError) as exc:
            logger.error("could not write an audit record", extra={"action": entry.action, "error": repr(exc)})


class AuditTrail:
    """What is known of the request being served, for a record written before its answer."""

    def __init__(self, scope: Scope, writer: AuditWriter) -> None:
        self.scope = scope
        self.writer = writer
        self.recorded = False

    def entry(self, status: int) -> AuditEntry | None:
        """The record of this request answered with ``status``; ``None`` before it was routed."""
        route = self.scope.get("route")
        template = getattr(route, "path", None)
        if not isinstance(template, str):
            return None
        principal = self.scope.get(PRINCIPAL_SCOPE_KEY)
        params = self.scope.get("path_params") or {}
        client = self.scope.get("client")
        return AuditEntry(
            actor=getattr(principal, "subject", "anonymous"),
            actor_role=getattr(principal, "role", ""),
            action=f"{self.scope.get('method', '')} {template}",
            target="/".join(str(v) for v in params.values()),
            outcome=outcome_of(status),
            status=status,
            source_address=client[0] if client else "",
            request_id=current_request_id.get() or "",
        )

    async def record_with_change(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Called by the outbox inside the transaction of the request's first event: records the change as
        answered with its route's success status."""
        if self.recorded:
            return
        route = self.scope.get("route")
        entry = self.entry(int(getattr(route, "status_code", None) or 200))
        if entry is None:
            return
        self.recorded = True  # before writing: the audit event is itself enqueued
        try:
            await self.writer.write_in(conn, entry)
        except BaseException:
            self.recorded = False
            raise


class AuditMiddleware:
    """ASGI middleware recording audited requests of ``/api/`` routes: changes and ``sensitive_reads``
    (route templates). ``pool`` gives the database once the app has started (``None`` until then)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        writer: AuditWriter,
        pool: Callable[[], AsyncConnectionPool | None],
        sensitive_reads: Collection[str] = (),
    ) -> None:
        self.app = app
        self.writer = writer
        self.pool = pool
        self.sensitive_reads = frozenset(sensitive_reads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/api/"):
            await self.app(scope, receive, send)
            return
        status = 500
        request_id = ""
        trail = AuditTrail(scope, self.writer)
        token = current_trail.set(trail)

        async def capture(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            current_trail.reset(token)
            await self._after(trail, status, request_id)

    async def _after(self, trail: AuditTrail, status: int, request_id: str) -> None:
        if trail.recorded and status < 400:
            return  # written with the change
        entry = trail.entry(status)
        if entry is None:
            return
        method, _, template = entry.action.partition(" ")
        if method not in _CHANGES and template not in self.sensitive_reads:
            return
        pool = self.pool()
        if pool is None:
            return
        if request_id and not entry.request_id:
            entry = AuditEntry(**{**entry.__dict__, "request_id": request_id})
        await self.writer.write(pool, entry)


async def record_in(conn: psycopg.AsyncConnection[Any]) -> None:
    """The outbox's hook: records the current request's change in ``conn``'s transaction, once."""
    trail = current_trail.get()
    if trail is not None and not trail.recorded:
        await trail.record_with_change(conn)


def audit_app(app: Any, service: str, *, keeps_rows: bool = False, sensitive_reads: Collection[str] = ()) -> None:
    """Adds :class:`AuditMiddleware` to a service's FastAPI ``app``, outermost (added last), so that it sees
    every answer, the boundary's refusals and authentication errors included. The database is the pool of
    the service's runtime (``app.state.runtime``), once it has started."""

    def pool() -> AsyncConnectionPool | None:
        runtime = getattr(app.state, "runtime", None)
        return getattr(runtime, "pool", None)

    app.add_middleware(
        AuditMiddleware,
        writer=AuditWriter(service, keeps_rows=keeps_rows),
        pool=pool,
        sensitive_reads=sensitive_reads,
    )
