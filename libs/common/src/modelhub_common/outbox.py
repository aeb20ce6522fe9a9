"""The transactional outbox: events commit or roll back with the rows they describe.

A service never commits and then publishes (an event would be lost on a crash in between). Instead it calls
:func:`enqueue` inside the transaction that changes its data; the event row commits with it, and
:class:`OutboxRelay` publishes committed rows to JetStream afterwards. A change that fits in one statement
can use :func:`enqueue_with` instead: its data-modifying queries and the event row are one statement, atomic
on its own, so it needs no ``BEGIN``/``COMMIT`` (one round trip for the whole write).

Guarantees of the relay:

* **At least once, de-duplicated.** A row is marked published only after JetStream acked it. Each publish
  carries ``Nats-Msg-Id = "<relay name>-<row id>"``, so a row re-published after a crash between the ack and
  the mark is dropped by the stream's duplicate window (the ack says ``duplicate=True``). Rows must be
  retried within that window (10 minutes by default, see :mod:`modelhub_common.jetstream`); a relay that is
  down longer than that may store a row twice, which idempotent consumers tolerate.
* **One publisher per database, in id order.** The active relay holds a session-level advisory lock; other
  replicas stand by and take over when its session ends (crash, stop, lost connection). A publish failure
  stops the pass: the row is retried later, never skipped, so no row overtakes an earlier one. Rows from
  *concurrent* transactions are published in id order as they become visible, so a transaction that commits
  late is published after higher ids that committed earlier; causally ordered writes (one transaction after
  another) are always published in order.
* **Pipelined.** A run of rows for one stream (consecutive rows whose subjects share everything but the last
  token) is sent without waiting for each ack; the acks are then read in order and the acked prefix is marked
  with one ``UPDATE``. Every row of a run but the first carries ``Nats-Expected-Last-Msg-Id`` (the previous
  row's message id), so if a row is refused or lost the stream refuses every later row of the run too: no
  row is stored ahead of an earlier one that was not. A row refused only because another publisher wrote to
  the stream in between is sent again at once. When the subject prefix changes, the relay waits for the acks
  of the run before it sends the next one, so rows of different streams keep their order as well. Audit
  records (``modelhub.audit.v1``) are the exception: they are sent as a lane of their own after the other
  rows of a batch, in their own order, so that the one each change adds does not cut its events' runs.
* **Prompt.** :func:`enqueue` also sends a ``NOTIFY`` (delivered on commit), which wakes the relay at once;
  a poll interval catches anything a lost notification would miss.
* **Never stuck on a silent session.** Every statement of the relay's session is bounded by ``step_timeout``.
  A session that stops answering (a connection left half-open by a restart, a failover or a load balancer)
  is dropped: its socket is shut down, the relay reconnects, and the new session terminates the old one's
  server process if it still lives, which releases the publisher lock it held.

The relay name must be the same on every replica for one database (use the service name), and stay stable:
it is part of the message id that de-duplication relies on.

The ``outbox`` table is created by :data:`modelhub_common.migrations.COMMON_MIGRATIONS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nats.errors
import psycopg
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from modelhub_common import audit, tracing
from modelhub_common.errors import DependencyError, ModelhubError
from modelhub_common.events import EventEnvelope, decode_envelope
from modelhub_common.jetstream import MSG_ID_HEADER, PubAck
from modelhub_common.metrics import ServiceMetrics
from modelhub_common.settings import DatabaseSettings

__all__ = [
    "NOTIFY_CHANNEL",
    "OutboxError",
    "OutboxPublishError",
    "OutboxRelay",
    "RelayStats",
    "enqueue",
    "enqueue_with",
    "watch_outbox",
]

logger = logging.getLogger(__name__)

_AUDIT_AREA = audit.RECORDED_SUBJECT.rpartition(".")[0]

NOTIFY_CHANNEL = "modelhub_outbox"
"""The channel :func:`enqueue` notifies and the relay listens on."""

# One relay publishes per database, whatever its name: the lock belongs to the outbox table.
RELAY_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"modelhub.outbox.relay", digest_size=8).digest(), "big", signed=True)
_PURGE_BATCH = 10_000
# JetStream's error code for a publish whose Nats-Expected-Last-Msg-Id is not the stream's last message id.
_WRONG_LAST_MSG_ID = 10070

Connection = psycopg.AsyncConnection[TupleRow]

# A new relay session's first statement: who it is (server process and start time, to end it should it go
# silent), the outbox instance id, and the end of a dropped session of this relay if it still lives.
_SESSION_QUERY = (
    "SELECT pg_backend_pid(),"
    " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),"
    " (SELECT id::text FROM outbox_instance),"
    " (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    "  WHERE pid = %s AND backend_start = %s AND application_name = current_setting('application_name'))"
)


class OutboxError(DependencyError):
    """The outbox table could not be written or read."""

    code = "outbox_unavailable"


class OutboxPublishError(DependencyError):
    """A row could not be published; the pass stopped at it and it is retried later."""

    code = "outbox_publish_failed"


async def enqueue(
    conn: psycopg.AsyncConnection[Any],
    subject: str,
    envelope: EventEnvelope,
    *,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Adds an event to the outbox in the caller's transaction and returns its row id.

    Nothing is published until the caller commits; a rollback discards the event with the data. ``headers``
    are extra NATS headers to publish with it (``Nats-Msg-Id`` is set by the relay).
    """
    _check_subject(subject)
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        # In autocommit mode outside a transaction the event would commit on its own, apart from the data.
        raise RuntimeError("enqueue must run inside the caller's transaction (use conn.transaction())")
    try:
        # The caller's connection may use any row factory; this cursor always returns tuples.
        async with conn.cursor(row_factory=tuple_row) as cursor:
            # The notification is delivered when (and only if) the transaction commits, and several in one
            # transaction fold into one.
            await cursor.execute(
                "WITH added AS ("
                " INSERT INTO outbox (subject, payload, headers, trace_context) VALUES (%s, %s, %s, %s) RETURNING id)"
                " SELECT id, pg_notify(%s, '') FROM added",
                (subject, envelope.SerializeToString(), Jsonb(dict(headers or {})), _trace_context(), NOTIFY_CHANNEL),
            )
            row = await cursor.fetchone()
    except psycopg.Error as exc:
        raise OutboxError(f"cannot add event to the outbox: {exc.__class__.__name__}: {exc}") from exc
    row_id = _returned_id(row)
    logger.debug("event added to outbox", extra={"outbox_id": row_id, "subject": subject, "event_id": envelope.id})
    await audit.record_in(conn)
    return row_id


def _trace_context() -> Jsonb | None:
    carrier = tracing.current_carrier()
    return Jsonb(carrier) if carrier else None


def _check_subject(subject: str) -> None:
    if not subject or any(c in subject for c in " *>"):
        raise ValueError(f"invalid subject {subject!r}")


def _returned_id(row: Any) -> int:
    if row is None:
        raise OutboxError("outbox insert returned no id")
    row_id = row[0]
    if not isinstance(row_id, int):
        raise OutboxError(f"outbox insert returned {row_id!r}, not an id")
    return row_id


async def enqueue_with(
    conn: psycopg.AsyncConnection[Any],
    data_queries: str,
    params: Mapping[str, Any],
    subject: str,
    envelope: EventEnvelope,
    *,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Runs the caller's data-modifying queries and adds the event to the outbox in **one statement**, and
    returns the event's row id.

    ``data_queries`` are ``WITH`` items (``name AS (INSERT ...), name AS (UPDATE ...)``) with named
    ``%(...)s`` placeholders filled from ``params`` (names starting with ``outbox_`` are taken). PostgreSQL
    runs every data-modifying ``WITH`` item whether or not the rest of the statement refers to it, and a
    statement commits or fails as a whole, so this is safe in autocommit mode; inside a transaction it
    commits with it like :func:`enqueue`.
    """
    _check_subject(subject)
    if any(name.startswith("outbox_") for name in params):
        raise ValueError("parameter names starting with outbox_ are reserved")
    query = (
        f"WITH {data_queries}, outbox_row AS ("
        " INSERT INTO outbox (subject, payload, headers, trace_context)"
        " VALUES (%(outbox_subject)s, %(outbox_payload)s, %(outbox_headers)s, %(outbox_trace)s) RETURNING id)"
        " SELECT id, pg_notify(%(outbox_channel)s, '') FROM outbox_row"
    )
    values = {
        **params,
        "outbox_subject": subject,
        "outbox_payload": envelope.SerializeToString(),
        "outbox_headers": Jsonb(dict(headers or {})),
        "outbox_trace": _trace_context(),
        "outbox_channel": NOTIFY_CHANNEL,
    }
    trail = audit.current_trail.get()
    async with contextlib.AsyncExitStack() as stack:
        if trail is not None and not trail.recorded:
            # The request is audited: its record joins the statement's transaction (one of its own in
            # autocommit mode, a savepoint inside the caller's).
            await stack.enter_async_context(conn.transaction())
        async with conn.cursor(row_factory=tuple_row) as cursor:
            # Errors of the caller's queries (a unique violation, say) are the caller's to translate.
            await cursor.execute(query, values)
            row_id = _returned_id(await cursor.fetchone())
        await audit.record_in(conn)
    logger.debug("event added to outbox", extra={"outbox_id": row_id, "subject": subject, "event_id": envelope.id})
    return row_id


@dataclass
class RelayStats:
    """Counters of one relay, for metrics and tests."""

    published: int = 0
    """Rows JetStream stored as new messages."""
    duplicates: int = 0
    """Rows JetStream had already stored (a re-publish after a crash between ack and mark)."""
    failures: int = 0
    """Passes stopped by a publish failure."""
    resent: int = 0
    """Runs cut short because another publisher wrote to the stream between two rows (sent again at once)."""
    purged: int = 0
    """Published rows deleted after the retention period."""
    dropped: int = 0
    """Database sessions dropped because a statement got no answer within the step timeout."""


@dataclass(frozen=True)
class _Row:
    id: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    trace_context: dict[str, str] | None = None

    @property
    def area(self) -> str:
        """The subject without its last token: rows of one area go to one stream."""
        return self.subject.rpartition(".")[0]


@dataclass(frozen=True)
class _RunResult:
    """How a run of rows fared: the first ``acked`` rows are in the stream, in order."""

    acked: int
    error: OutboxPublishError | None = None
    """Why the row after the acked ones was not published (None: the whole run was, or see ``resend``)."""
    resend: bool = False
    """The row after the acked ones was refused only because another publisher wrote in between."""


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, one relay per database at a time.

    ``js`` is a JetStream context of a connected client the caller owns (and drains). The relay keeps its own
    PostgreSQL session (it holds an advisory lock and LISTENs), so it takes a URL rather than a pool.
    """

    def __init__(
        self,
        database_url: str,
        js: JetStreamContext,
        *,
        name: str,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retry_interval: float = 2.0,
        publish_timeout: float = 5.0,
        retention: timedelta = timedelta(days=7),
        cleanup_interval: float = 600.0,
        connect_timeout: int = 5,
        step_timeout: float = 30.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"invalid relay name {name!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval <= 0 or retry_interval <= 0 or cleanup_interval <= 0 or step_timeout <= 0:
            raise ValueError("intervals must be positive")
        if retention < timedelta(0):
            raise ValueError("retention cannot be negative")
        self._database_url = database_url
        self._js = js
        self._name = name
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retry_interval = retry_interval
        self._publish_timeout = publish_timeout
        self._retention = retention
        self._cleanup_interval = cleanup_interval
        self._connect_timeout = connect_timeout
        self._step_timeout = step_timeout
        self._session: tuple[int, datetime] | None = None
        """(server process id, its start time) of the session opened last."""
        self._abandoned: tuple[int, datetime] | None = None
        """The same, of a session dropped because it stopped answering, until a new session has ended it."""
        self._active = False
        self._instance: str | None = None
        self._stats = RelayStats()
        self._log: dict[str, object] = {"relay": name}
        self._metrics = metrics

    @classmethod
    def for_service(
        cls, settings: DatabaseSettings, js: JetStreamContext, *, name: str, metrics: ServiceMetrics | None = None
    ) -> OutboxRelay:
        """The relay of a service, with its settings' database and limits."""
        return cls(
            settings.database_url.get_secret_value(),
            js,
            name=name,
            step_timeout=settings.outbox_step_timeout_seconds,
            metrics=metrics,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def stats(self) -> RelayStats:
        return self._stats

    @property
    def active(self) -> bool:
        """True while :meth:`run` holds the lock and publishes (False while standing by)."""
        return self._active

    def msg_id(self, row_id: int) -> str:
        """The ``Nats-Msg-Id`` of a row: stable across retries, relays and restarts, and unique across
        databases (the outbox instance id is part of it)."""
        if self._instance is None:
            raise OutboxError("the relay has not read its outbox instance id yet")
        return f"{self._name}-{self._instance}-{row_id}"

    async def publish_pending(self) -> int:
        """One pass: publishes every unpublished row, in order, and returns how many it published.

        Returns 0 without publishing when another relay holds the lock. Raises
        :class:`OutboxPublishError` when a publish fails (rows before it stay published, it and later rows
        stay pending) and :class:`OutboxError` when the database fails.
        """
        try:
            async with await self._connect() as conn:
                if not await self._try_lock(conn):
                    logger.debug("another relay holds the outbox lock", extra=self._log)
                    return 0
                return await self._drain(conn, None)
        except psycopg.Error as exc:
            raise OutboxError(f"outbox relay: database failed: {exc.__class__.__name__}: {exc}") from exc

    async def purge_published(self, older_than: timedelta | None = None) -> int:
        """Deletes rows published more than ``older_than`` (default: the retention) ago; returns how many."""
        try:
            async with await self._connect() as conn:
                return await self._purge(conn, self._retention if older_than is None else older_than)
        except psycopg.Error as exc:
            raise OutboxError(f"outbox purge failed: {exc.__class__.__name__}: {exc}") from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Publishes until ``stop`` is set: stands by while another relay is active, then takes over.

        Database and NATS failures are logged and retried; only ``stop`` (or cancellation) ends it. The run
        of rows being published when ``stop`` is set is finished (acks read, rows marked) first.
        """
        logger.info("outbox relay starting", extra=self._log)
        while not stop.is_set():
            try:
                async with await self._connect() as conn:
                    if await self._wait_for_lock(conn, stop):
                        await self._lead(conn, stop)
            except (psycopg.Error, OutboxError) as exc:
                logger.warning(
                    "outbox relay lost its database session; reconnecting",
                    extra={**self._log, "error": f"{exc.__class__.__name__}: {exc}"},
                )
                await _sleep_unless_set(stop, self._retry_interval)
            finally:
                if self._active:
                    logger.info("outbox relay released the outbox", extra=self._log)
                self._active = False
        logger.info("outbox relay stopped", extra={**self._log, "published": self._stats.published})

    # -- internals ---------------------------------------------------------------------------------------

    async def _connect(self) -> Connection:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._database_url,
                autocommit=True,
                application_name=f"outbox-relay:{self._name}"[:63],
                connect_timeout=self._connect_timeout,
            )
        except psycopg.Error as exc:
            raise OutboxError(f"outbox relay cannot connect to PostgreSQL: {exc.__class__.__name__}") from exc
        try:
            row = await (await self._sql(conn, _SESSION_QUERY, self._abandoned or (None, None))).fetchone()
            assert row is not None  # one row, always
            pid, started, instance, ended = row
            if self._abandoned is not None:
                logger.info("outbox relay ended its dropped session", extra={**self._log, "ended": bool(ended)})
                self._abandoned = None
            if instance is None:
                raise OutboxError("the outbox_instance table is empty; run the service's migrations")
            self._session = (pid, started)
            self._instance = str(instance)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _sql(self, conn: Connection, query: Any, params: Any = None) -> psycopg.AsyncCursor[TupleRow]:
        """One statement of the relay's session, bounded by the step timeout: a session that does not answer
        in time is dropped (see "Never stuck on a silent session" above) and :class:`OutboxError` raised."""
        statement = asyncio.ensure_future(conn.execute(query, params))
        done, _ = await asyncio.wait({statement}, timeout=self._step_timeout)
        if statement in done:
            return statement.result()
        await self._drop(conn, statement)
        raise OutboxError(f"the relay's database session did not answer within {self._step_timeout:g} s; dropped it")

    async def _drop(self, conn: Connection, statement: asyncio.Future[Any]) -> None:
        """Shuts the silent session's socket down (its descriptor stays with the connection, so no later
        connection can inherit a stale wait on it), lets the stuck statement end, and remembers the session's
        server process for the next session to terminate."""
        logger.error(
            "outbox relay's database session stopped answering; dropping it",
            extra={**self._log, "timeout_seconds": self._step_timeout},
        )
        self._stats.dropped += 1
        if self._session is not None and self._session[0] == conn.info.backend_pid:
            self._abandoned = self._session
        with contextlib.suppress(OSError, psycopg.Error), socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        statement.cancel()
        statement.add_done_callback(_retrieve)
        await asyncio.wait({statement}, timeout=self._step_timeout)
        if not statement.done():
            logger.error("outbox relay's stuck statement did not end; leaving it behind", extra=self._log)

    async def _try_lock(self, conn: Connection) -> bool:
        row = await (await self._sql(conn, "SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))).fetchone()
        return row is not None and row[0] is True

    async def _wait_for_lock(self, conn: Connection, stop: asyncio.Event) -> bool:
        standing_by = False
        while not stop.is_set():
            if await self._try_lock(conn):
                self._active = True
                logger.info("outbox relay is the active publisher", extra=self._log)
                return True
            if not standing_by:
                logger.info("outbox relay standing by: another relay is publishing", extra=self._log)
                standing_by = True
            await _sleep_unless_set(stop, self._poll_interval)
        return False

    async def _lead(self, conn: Connection, stop: asyncio.Event) -> None:
        await self._sql(conn, sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while not stop.is_set():
            try:
                await self._drain(conn, stop)
            except OutboxPublishError as exc:
                logger.warning("outbox publish failed; retrying", extra={**self._log, "error": exc.message})
                await _sleep_unless_set(stop, self._retry_interval)
                continue
            if loop.time() >= next_purge:
                await self._purge(conn, self._retention)
                next_purge = loop.time() + self._cleanup_interval
            await self._wait_for_notify(conn, stop)

    async def _drain(self, conn: Connection, stop: asyncio.Event | None) -> int:
        published = 0
        while stop is None or not stop.is_set():
            rows = await self._fetch(conn)
            if not rows:
                break
            acked: list[int] = []
            error: OutboxPublishError | None = None
            interrupted = False
            # Audit records need no order against other events: sent as a lane of their own, they do not cut
            # the runs of the events they sit between (each change adds one next to its own event).
            lanes = (
                [row for row in rows if row.area != _AUDIT_AREA],
                [row for row in rows if row.area == _AUDIT_AREA],
            )
            for lane in lanes:
                start = 0
                while start < len(lane) and not (stop is not None and stop.is_set()):
                    end = start + 1
                    while end < len(lane) and lane[end].area == lane[start].area:
                        end += 1
                    result = await self._publish_run(lane[start:end])
                    acked += [row.id for row in lane[start : start + result.acked]]
                    if result.error is not None or result.resend:
                        error = result.error
                        interrupted = True
                        break
                    start = end
                if interrupted:
                    break
            if acked:
                await self._mark_published(conn, acked)
                published += len(acked)
            if error is not None:
                self._stats.failures += 1
                if self._metrics is not None:
                    self._metrics.outbox_failures.labels(self._metrics.service).inc()
                raise error
            if stop is not None and stop.is_set():
                break
        return published

    async def _fetch(self, conn: Connection) -> list[_Row]:
        cursor = await self._sql(
            conn,
            "SELECT id, subject, payload, headers, trace_context FROM outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (self._batch_size,),
        )
        return [
            _Row(
                id=row_id,
                subject=subject,
                payload=bytes(payload),
                headers=dict(headers),
                trace_context=dict(trace_context) if trace_context else None,
            )
            for row_id, subject, payload, headers, trace_context in await cursor.fetchall()
        ]

    async def _publish_run(self, run: list[_Row]) -> _RunResult:
        """Sends every row of the run, then reads the acks in order (see "Pipelined" above)."""
        sends: list[asyncio.Task[PubAck]] = []
        started = time.perf_counter()
        sent_error: OutboxPublishError | None = None
        previous: str | None = None
        for row in run:
            msg_id = self.msg_id(row.id)
            headers = {**row.headers, MSG_ID_HEADER: msg_id}
            if previous is not None:
                headers[Header.EXPECTED_LAST_MSG_ID.value] = previous
            previous = msg_id
            try:
                # A row that is not an envelope can never be published: it blocks the outbox, loudly.
                decode_envelope(row.payload)
            except ModelhubError as exc:
                sent_error = self._failed(row, exc)
                break
            # Tasks start in creation order and the client queues a publish before its first wait, so the
            # rows go out in id order; were they not, the expected-last-id header makes the stream refuse.
            # The publish belongs to the trace of the request that added the row, however late it runs.
            with tracing.produce_span(row.subject, row.trace_context, **{"messaging.message.id": msg_id}):
                tracing.inject_headers(headers)
                sends.append(
                    asyncio.create_task(
                        self._js.publish(row.subject, row.payload, timeout=self._publish_timeout, headers=headers)
                    )
                )
        try:
            for index, send in enumerate(sends):
                row = run[index]
                try:
                    ack = await send
                except APIError as exc:
                    if exc.err_code == _WRONG_LAST_MSG_ID and index > 0:
                        # The previous row is in the stream (its ack came first) but is not the stream's last
                        # message: another publisher wrote after it. Nothing was stored out of order; the
                        # rest is sent again as a new run, whose first row expects nothing.
                        self._stats.resent += 1
                        logger.info("outbox run interleaved with another publisher; resending", extra=self._log)
                        return _RunResult(index, resend=True)
                    return _RunResult(index, self._failed(row, exc))
                except (nats.errors.Error, TimeoutError) as exc:
                    return _RunResult(index, self._failed(row, exc))
                log_extra = {**self._log, "outbox_id": row.id, "subject": row.subject, "seq": ack.seq}
                if ack.duplicate:
                    self._stats.duplicates += 1
                    logger.info("outbox row was already in the stream", extra=log_extra)
                else:
                    self._stats.published += 1
                    logger.debug("outbox row published", extra=log_extra)
                if self._metrics is not None:
                    self._metrics.outbox_published.labels(self._metrics.service, _outcome(ack)).inc()
            if self._metrics is not None and sends:
                self._metrics.outbox_publish_duration.labels(self._metrics.service).observe(
                    time.perf_counter() - started
                )
        finally:
            for send in sends:
                send.cancel()  # acks not waited for because an earlier row failed
            await asyncio.gather(*sends, return_exceptions=True)
        return _RunResult(len(sends), sent_error)

    def _failed(self, row: _Row, exc: Exception) -> OutboxPublishError:
        message = exc.message if isinstance(exc, ModelhubError) else f"{exc.__class__.__name__}: {exc}"
        extra = {**self._log, "outbox_id": row.id, "subject": row.subject, "error": message}
        # A row that can never be published blocks the outbox by design (order); make it loud.
        level = logging.ERROR if isinstance(exc, ModelhubError) else logging.WARNING
        logger.log(level, "outbox row not published", extra=extra)
        return OutboxPublishError(f"outbox row {row.id} not published: {message}")

    async def _mark_published(self, conn: Connection, row_ids: list[int]) -> None:
        await self._sql(conn, "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (row_ids,))

    async def _purge(self, conn: Connection, older_than: timedelta) -> int:
        deleted = 0
        while True:
            cursor = await self._sql(
                conn,
                "DELETE FROM outbox WHERE id IN ( SELECT id FROM outbox WHERE published_at < now() - %s LIMIT %s)",
                (older_than, _PURGE_BATCH),
            )
            deleted += cursor.rowcount
            if cursor.rowcount < _PURGE_BATCH:
                break
        if deleted:
            self._stats.purged += deleted
            logger.info("purged published outbox rows", extra={**self._log, "deleted": deleted})
        return deleted

    async def _wait_for_notify(self, conn: Connection, stop: asyncio.Event) -> None:
        """Returns on a NOTIFY, after the poll interval, or when ``stop`` is set."""

        async def notified() -> None:
            async for _ in conn.notifies(timeout=self._poll_interval, stop_after=1):
                pass

        waiter = asyncio.ensure_future(notified())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
        if waiter.done() and not waiter.cancelled() and (exc := waiter.exception()) is not None:
            raise exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Reads a finished abandoned statement's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _outcome(ack: PubAck) -> str:
    return "duplicate" if ack.duplicate else "published"


def watch_outbox(metrics: ServiceMetrics, pool: AsyncConnectionPool) -> None:
    """Reports the outbox backlog (rows pending, age of the oldest) at every scrape: one query on the
    partial index of unpublished rows, as small as the backlog."""

    async def read() -> None:
        async with pool.connection(timeout=metrics.scrape_timeout) as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8"
                " FROM outbox WHERE published_at IS NULL"
            )
            row = await cur.fetchone()
        pending, age = row if row is not None else (0, 0.0)
        metrics.outbox_pending.labels(metrics.service).set(pending)
        metrics.outbox_oldest_age.labels(metrics.service).set(age)

    metrics.on_scrape("outbox", read)


async def _sleep_unless_set(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
