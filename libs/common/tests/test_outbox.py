"""The transactional outbox against real PostgreSQL and NATS JetStream (devstack plugin fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from modelhub.events.v1 import events_pb2
from modelhub_common.audit import RECORDED_SUBJECT, AuditEntry
from modelhub_common.events import AUDIT, EventEnvelope, decode_envelope, new_envelope
from modelhub_common.jetstream import MSG_ID_HEADER, StreamSpec, connect, drain, ensure_stream, service_stream_spec
from modelhub_common.migrations import COMMON_MIGRATIONS, migrate
from modelhub_common.outbox import OutboxPublishError, OutboxRelay, enqueue, enqueue_with
from modelhub_devstack.nats import NatsServer
from modelhub_devstack.ports import pick_free_ports

WAIT_SECONDS = 60.0


@dataclass
class Area:
    """A stream of its own per test, so tests sharing the session's NATS server never see each other."""

    stream: str
    prefix: str

    def subject(self, event: str = "deleted") -> str:
        return f"{self.prefix}.{event}"


def envelope(subject: str, n: int) -> EventEnvelope:
    return new_envelope(
        subject,
        actor="tester",
        role="service",
        source="test-outbox",
        payload=events_pb2.ModelDeleted(model_id=f"model-{n}", last_version=n),
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Waits until ``check`` holds (bounded, so a broken relay fails the test instead of hanging it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def db(pg_url: str) -> str:
    await migrate(pg_url, [COMMON_MIGRATIONS])
    return pg_url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="test-outbox")
    yield client
    await drain(client)


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def area(js: JetStreamContext) -> AsyncIterator[Area]:
    suffix = uuid.uuid4().hex[:10]
    area = Area(stream=f"OUTBOX_TEST_{suffix}", prefix=f"modelhub.outboxtest{suffix}.v1")
    await ensure_stream(js, StreamSpec(name=area.stream, subjects=(f"{area.prefix}.>",), storage="memory"))
    yield area
    await js.delete_stream(area.stream)


async def add_events(url: str, subject: str, numbers: range) -> list[int]:
    """Commits one transaction per event, each with a data row, and returns the outbox ids."""
    ids = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS things (n int PRIMARY KEY)")
        await conn.commit()
        for n in numbers:
            async with conn.transaction():
                await conn.execute("INSERT INTO things VALUES (%s)", (n,))
                ids.append(await enqueue(conn, subject, envelope(subject, n)))
    return ids


_instances: dict[str, str] = {}


def mid(db: str, row_id: int) -> str:
    """The Nats-Msg-Id the relay named ``svc`` gives a row of this database."""
    if db not in _instances:
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT id::text FROM outbox_instance").fetchone()
            assert row is not None
            _instances[db] = row[0]
    return f"svc-{_instances[db]}-{row_id}"


async def stream_messages(js: JetStreamContext, stream: str) -> list[tuple[str, int]]:
    """(Nats-Msg-Id, event number) of every message in the stream, in stream order."""
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    result = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        assert msg.headers is not None
        event = decode_envelope(msg.data or b"")
        result.append((msg.headers[MSG_ID_HEADER], event.model_deleted.last_version))
    return result


async def unpublished(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id")
        return [row[0] for row in await cursor.fetchall()]


def all_published(url: str) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`eventually`: no row of the outbox is left unpublished."""

    async def check() -> bool:
        return await unpublished(url) == []

    return check


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    """The relay's run loop in the background for the block; stopped on the way out, within
    ``WAIT_SECONDS`` (a relay that never stops fails the test instead of hanging it)."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_SECONDS)


def new_relay(url: str, js: JetStreamContext, name: str = "svc", **options: Any) -> OutboxRelay:
    """A relay with short intervals, so retries and take-overs happen quickly in tests."""
    defaults: dict[str, Any] = {"poll_interval": 0.2, "retry_interval": 0.2, "publish_timeout": 2.0}
    return OutboxRelay(url, js, name=name, **{**defaults, **options})


# ---------------------------------------------------------------------------------------------------------


# The child runs a relay whose publish pass stalls at the named step, so the test can SIGKILL it there.
CRASHING_RELAY = textwrap.dedent(
    """
    import asyncio, sys
    from modelhub_common.jetstream import connect
    from modelhub_common.outbox import OutboxRelay

    database_url, nats_url, crash_point = sys.argv[1:4]

    class CrashingRelay(OutboxRelay):
        async def _publish_run(self, run):
            if crash_point == "before_publish":
                await self._stall(f"about to publish {run[-1].id}")
            return await super()._publish_run(run)

        async def _mark_published(self, conn, row_ids):
            if crash_point == "before_mark":
                await self._stall(f"published {row_ids[-1]}")
            await super()._mark_published(conn, row_ids)

        async def _stall(self, line):
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()
            await asyncio.Event().wait()

    async def main():
        nc = await connect(nats_url, name="crashing-relay")
        await CrashingRelay(database_url, nc.jetstream(), name="svc").publish_pending()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(("crash_point", "expect_duplicate"), [("before_mark", True), ("before_publish", False)])
async def test_event_committed_with_its_row_is_published_exactly_once_when_the_relay_is_killed(
    db: str, nats_url: str, js: JetStreamContext, area: Area, crash_point: str, expect_duplicate: bool
) -> None:
    [row_id] = await add_events(db, area.subject(), range(1, 2))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_RELAY, db, nats_url, crash_point, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), WAIT_SECONDS)
    assert line.decode().split()[-1] == str(row_id)
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert await unpublished(db) == [row_id], "the killed relay never marked the row"

    async def child_session_gone() -> bool:
        # The dead relay's PostgreSQL session (and with it the relay lock) ends when Postgres sees the EOF.
        async with await psycopg.AsyncConnection.connect(db) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'outbox-relay:svc' AND datname = current_database()"
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 0

    await eventually(child_session_gone, "the killed relay's database session to end")

    relay = new_relay(db, js)
    assert await relay.publish_pending() == 1

    assert relay.stats.duplicates == (1 if expect_duplicate else 0)
    assert relay.stats.published == (0 if expect_duplicate else 1)
    assert await unpublished(db) == []
    assert await stream_messages(js, area.stream) == [(mid(db, row_id), 1)]

    # A consumer sees the event once: after the first delivery nothing is pending.
    sub = await js.pull_subscribe(area.subject(), durable=f"test-{uuid.uuid4().hex[:8]}", stream=area.stream)
    [msg] = await sub.fetch(1, timeout=10)
    assert msg.headers is not None and msg.headers[MSG_ID_HEADER] == mid(db, row_id)
    assert msg.metadata.num_pending == 0
    await msg.ack_sync()
    await sub.unsubscribe()


async def test_rolled_back_transaction_leaves_no_event(db: str, js: JetStreamContext, area: Area) -> None:
    async with await psycopg.AsyncConnection.connect(db) as conn:
        await conn.execute("CREATE TABLE things (n int PRIMARY KEY)")
        await conn.commit()
        async with conn.transaction(force_rollback=True):
            await conn.execute("INSERT INTO things VALUES (1)")
            await enqueue(conn, area.subject(), envelope(area.subject(), 1))
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await conn.execute("INSERT INTO things VALUES (2)")
                await enqueue(conn, area.subject(), envelope(area.subject(), 2))
                await conn.execute("INSERT INTO things VALUES (2)")

    relay = new_relay(db, js)
    assert await relay.publish_pending() == 0
    assert await stream_messages(js, area.stream) == []
    async with await psycopg.AsyncConnection.connect(db) as conn:
        cursor = await conn.execute("SELECT count(*) FROM outbox")
        assert await cursor.fetchone() == (0,)


async def test_enqueue_with_writes_data_and_event_in_one_statement(db: str, js: JetStreamContext, area: Area) -> None:
    subject = area.subject()
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS things (n int PRIMARY KEY)")
        row_id = await enqueue_with(
            conn, "thing AS (INSERT INTO things VALUES (%(n)s))", {"n": 7}, subject, envelope(subject, 7)
        )
        # The same key again: the statement fails as a whole, so no event is left without its data.
        with pytest.raises(psycopg.errors.UniqueViolation):
            await enqueue_with(
                conn, "thing AS (INSERT INTO things VALUES (%(n)s))", {"n": 7}, subject, envelope(subject, 8)
            )
        with pytest.raises(ValueError, match="reserved"):
            await enqueue_with(conn, "x AS (SELECT 1)", {"outbox_subject": 1}, subject, envelope(subject, 9))

    assert await unpublished(db) == [row_id]
    assert await new_relay(db, js).publish_pending() == 1
    assert await stream_messages(js, area.stream) == [(mid(db, row_id), 7)]


async def test_enqueue_refuses_to_commit_on_its_own(db: str, area: Area) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await enqueue(conn, area.subject(), envelope(area.subject(), 1))
        async with conn.transaction():
            assert await enqueue(conn, area.subject(), envelope(area.subject(), 1)) > 0


async def test_headers_are_published_and_any_row_factory_works(db: str, js: JetStreamContext, area: Area) -> None:
    event = envelope(area.subject(), 7)
    async with await psycopg.AsyncConnection.connect(db, row_factory=dict_row) as conn:
        async with conn.transaction():
            row_id = await enqueue(conn, area.subject(), event, headers={"traceparent": "00-abc-def-01"})

    assert await new_relay(db, js).publish_pending() == 1

    msg = await js.get_msg(area.stream, 1)
    assert msg.headers == {"traceparent": "00-abc-def-01", MSG_ID_HEADER: mid(db, row_id)}
    assert decode_envelope(msg.data or b"") == event


async def test_many_rows_are_published_in_order(db: str, js: JetStreamContext, area: Area) -> None:
    ids = await add_events(db, area.subject(), range(1, 61))

    relay = new_relay(db, js, batch_size=7)
    assert await relay.publish_pending() == 60

    assert await stream_messages(js, area.stream) == [(mid(db, i), n) for i, n in zip(ids, range(1, 61), strict=True)]
    assert await unpublished(db) == []
    assert await relay.publish_pending() == 0


async def test_a_failed_publish_stops_the_pass_and_never_skips_a_row(db: str, js: JetStreamContext, area: Area) -> None:
    orphan = f"modelhub.outboxorphan{uuid.uuid4().hex[:10]}.v1"
    ids = await add_events(db, area.subject(), range(1, 2))
    ids += await add_events(db, f"{orphan}.deleted", range(2, 3))  # no stream captures this subject yet
    ids += await add_events(db, area.subject(), range(3, 4))
    relay = new_relay(db, js, publish_timeout=1.0)

    with pytest.raises(OutboxPublishError, match=f"row {ids[1]}"):
        await relay.publish_pending()

    assert await unpublished(db) == ids[1:]
    assert await stream_messages(js, area.stream) == [(mid(db, ids[0]), 1)]

    orphan_stream = f"OUTBOX_ORPHAN_{uuid.uuid4().hex[:10]}"
    await ensure_stream(js, StreamSpec(name=orphan_stream, subjects=(f"{orphan}.>",), storage="memory"))
    try:
        assert await relay.publish_pending() == 2
        assert await stream_messages(js, orphan_stream) == [(mid(db, ids[1]), 2)]
        assert await stream_messages(js, area.stream) == [(mid(db, ids[0]), 1), (mid(db, ids[2]), 3)]
    finally:
        await js.delete_stream(orphan_stream)


async def test_a_refused_row_stops_the_rows_sent_after_it_in_the_same_run(db: str, js: JetStreamContext) -> None:
    # The rows after the refused one were already on the wire (one run, one stream); the stream must refuse
    # them too, or they would be stored ahead of it.
    suffix = uuid.uuid4().hex[:10]
    small = Area(stream=f"OUTBOX_SMALL_{suffix}", prefix=f"modelhub.outboxsmall{suffix}.v1")
    await ensure_stream(
        js, StreamSpec(name=small.stream, subjects=(f"{small.prefix}.>",), storage="memory", max_msg_size=2048)
    )
    try:
        ids = await add_events(db, small.subject(), range(1, 2))
        async with await psycopg.AsyncConnection.connect(db) as conn, conn.transaction():
            big = envelope(small.subject(), 2)
            big.model_deleted.model_id = "x" * 4096  # larger than the stream takes
            ids.append(await enqueue(conn, small.subject(), big))
        ids += await add_events(db, small.subject(), range(3, 6))
        relay = new_relay(db, js)

        with pytest.raises(OutboxPublishError, match=f"row {ids[1]}"):
            await relay.publish_pending()

        assert await stream_messages(js, small.stream) == [(mid(db, ids[0]), 1)]
        assert await unpublished(db) == ids[1:]
        assert (relay.stats.published, relay.stats.failures) == (1, 1)
    finally:
        await js.delete_stream(small.stream)


async def test_a_run_interleaved_with_another_publisher_is_sent_again(
    db: str, js: JetStreamContext, area: Area
) -> None:
    ids = await add_events(db, area.subject(), range(1, 4))
    # The first row is already in the stream (a relay died before marking it), then someone else published.
    await js.publish(
        area.subject(), envelope(area.subject(), 1).SerializeToString(), headers={MSG_ID_HEADER: mid(db, ids[0])}
    )
    other = envelope(area.subject(), 99)
    await js.publish(area.subject(), other.SerializeToString(), headers={MSG_ID_HEADER: "someone-else-1"})

    relay = new_relay(db, js)
    assert await relay.publish_pending() == 3

    assert await stream_messages(js, area.stream) == [
        (mid(db, ids[0]), 1),
        ("someone-else-1", 99),
        (mid(db, ids[1]), 2),
        (mid(db, ids[2]), 3),
    ]
    assert (relay.stats.duplicates, relay.stats.published, relay.stats.resent, relay.stats.failures) == (1, 2, 1, 0)
    assert await unpublished(db) == []


async def test_a_run_already_in_the_stream_comes_back_as_duplicates(db: str, js: JetStreamContext, area: Area) -> None:
    # As after a relay died between publishing a run and marking it: the stream de-duplicates before it checks
    # the expected last message id, so the chained rows are acked as duplicates, not refused.
    ids = await add_events(db, area.subject(), range(1, 5))
    for row_id, n in zip(ids[:3], range(1, 4), strict=True):
        await js.publish(
            area.subject(), envelope(area.subject(), n).SerializeToString(), headers={MSG_ID_HEADER: mid(db, row_id)}
        )

    relay = new_relay(db, js)
    assert await relay.publish_pending() == 4

    assert (relay.stats.duplicates, relay.stats.published, relay.stats.resent, relay.stats.failures) == (3, 1, 0, 0)
    assert await stream_messages(js, area.stream) == [(mid(db, i), n) for i, n in zip(ids, range(1, 5), strict=True)]


async def test_notify_wakes_an_idle_relay(db: str, js: JetStreamContext, area: Area) -> None:
    # With an hour-long poll interval, only the NOTIFY sent on commit can make the relay publish.
    relay = new_relay(db, js, poll_interval=3600.0)
    async with running(relay):
        await eventually(lambda: _true(relay.active), "the relay to become active")
        await asyncio.sleep(0.2)  # let it reach its idle wait; the outcome does not depend on this
        ids = await add_events(db, area.subject(), range(1, 4))
        await eventually(all_published(db), "the relay to publish the new rows")
        assert await stream_messages(js, area.stream) == [(mid(db, i), n) for i, n in zip(ids, (1, 2, 3), strict=True)]


async def test_two_relays_publish_each_row_once_in_order_and_take_over(
    db: str, js: JetStreamContext, area: Area
) -> None:
    first, second = new_relay(db, js), new_relay(db, js)
    stops = {first: asyncio.Event(), second: asyncio.Event()}
    tasks = {relay: asyncio.create_task(relay.run(stop)) for relay, stop in stops.items()}
    try:
        await eventually(lambda: _true(first.active or second.active), "one relay to become active")
        ids = await add_events(db, area.subject(), range(1, 41))
        await eventually(all_published(db), "the first 40 rows to be published")
        leader, standby = (first, second) if first.active else (second, first)
        assert not standby.active
        assert (leader.stats.published, standby.stats.published) == (40, 0)

        # The active relay stops (as on a crash, its session ends); the standby takes over.
        stops[leader].set()
        await tasks[leader]
        ids += await add_events(db, area.subject(), range(41, 61))
        await eventually(all_published(db), "the standby to take over and publish the rest")

        assert standby.active
        assert (leader.stats.published, standby.stats.published) == (40, 20)
        assert leader.stats.duplicates == standby.stats.duplicates == 0
        expected = [(mid(db, i), n) for i, n in zip(ids, range(1, 61), strict=True)]
        assert await stream_messages(js, area.stream) == expected
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*tasks.values())


async def test_relay_catches_up_after_a_nats_outage(db: str, tmp_path: Path) -> None:
    # The server comes back on another port with the same store directory (the old port may linger in
    # TIME_WAIT); the client knows both addresses, as it would know the members of a cluster.
    first_port, second_port, first_monitor, second_monitor = pick_free_ports(4)
    workdir = tmp_path / "nats"
    before = NatsServer(workdir, port=first_port, monitor_port=first_monitor, name="nats-before")
    after = NatsServer(workdir, port=second_port, monitor_port=second_monitor, name="nats-after")
    before.start()
    try:
        client = await connect([before.url, after.url], name="outage-test", reconnect_time_wait=1)
        js = client.jetstream()
        subject = "modelhub.outage.v1.deleted"
        await ensure_stream(js, StreamSpec(name="OUTAGE", subjects=("modelhub.outage.v1.>",)))
        relay = new_relay(db, js, publish_timeout=0.5)
        try:
            async with running(relay):
                ids = await add_events(db, subject, range(1, 6))
                await eventually(all_published(db), "the first rows to be published")

                before.stop()
                ids += await add_events(db, subject, range(6, 16))
                await eventually(lambda: _true(relay.stats.failures > 0), "a publish to fail while NATS is down")
                assert len(await unpublished(db)) > 0

                after.start()
                await eventually(all_published(db), "the relay to catch up after NATS is back")

                expected = [(mid(db, i), n) for i, n in zip(ids, range(1, 16), strict=True)]
                assert await stream_messages(js, "OUTAGE") == expected
                assert relay.stats.published + relay.stats.duplicates >= 15
        finally:
            await drain(client)
    finally:
        before.stop()
        after.stop()


async def test_relay_reconnects_when_its_database_session_is_killed(db: str, js: JetStreamContext, area: Area) -> None:
    relay = new_relay(db, js)
    async with running(relay):
        ids = await add_events(db, area.subject(), range(1, 3))
        await eventually(all_published(db), "the first rows to be published")
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'outbox-relay:svc' AND datname = current_database()"
            )
            assert await cursor.fetchall() == [(True,)]

        ids += await add_events(db, area.subject(), range(3, 6))
        await eventually(all_published(db), "the relay to reconnect and publish the rest")

        expected = [(mid(db, i), n) for i, n in zip(ids, range(1, 6), strict=True)]
        assert await stream_messages(js, area.stream) == expected


class FreezingProxy:
    """A TCP hop in front of PostgreSQL whose established connections can be frozen: from then on their bytes
    are dropped both ways while both sockets stay open, as behind a load balancer or NAT that lost the flow, or
    on a half-open connection after a restart. Connections opened later pass normally."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        self._target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self._url = url
        self._frozen: set[int] = set()
        self._open: list[int] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        """Starts listening on loopback and returns ``url`` pointed at the proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return make_conninfo(self._url, host="127.0.0.1", port=port)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()

    def freeze(self) -> None:
        """Freezes every connection open now."""
        self._frozen.update(self._open)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self._target)
        self._writers += [client_w, server_w]
        number = len(self._open)
        self._open.append(number)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if number not in self._frozen:
                    writer.write(data)
                    await writer.drain()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))


async def relay_sessions(db: str) -> int:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'outbox-relay:svc' AND datname = current_database()"
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_silent_database_session_is_dropped_and_its_lock_released(
    db: str, js: JetStreamContext, area: Area
) -> None:
    """The relay's session stops answering without being closed: the relay drops it after the step timeout,
    ends its server process (which holds the publisher lock) from a new session, and publishes the rest."""
    proxy = FreezingProxy(db)
    async with proxy as proxied:
        relay = new_relay(proxied, js, step_timeout=1.0)
        async with running(relay):
            ids = await add_events(db, area.subject(), range(1, 3))
            await eventually(all_published(db), "the first rows to be published")
            proxy.freeze()
            ids += await add_events(db, area.subject(), range(3, 6))
            await eventually(all_published(db), "the relay to drop its silent session and publish the rest")

            expected = [(mid(db, i), n) for i, n in zip(ids, range(1, 6), strict=True)]
            assert await stream_messages(js, area.stream) == expected
            assert relay.active and relay.stats.dropped == 1
            assert await relay_sessions(db) == 1  # the silent session's server process was ended


async def test_purge_deletes_only_published_rows_past_retention(db: str, js: JetStreamContext, area: Area) -> None:
    ids = await add_events(db, area.subject(), range(1, 5))
    relay = new_relay(db, js, retention=timedelta(days=7))
    assert await relay.publish_pending() == 4
    more = await add_events(db, area.subject(), range(5, 6))  # stays unpublished
    async with await psycopg.AsyncConnection.connect(db) as conn:
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '8 days',"
            " created_at = now() - interval '8 days' WHERE id = ANY(%s)",
            (ids[:2],),
        )
        await conn.execute("UPDATE outbox SET created_at = now() - interval '30 days' WHERE id = %s", (more[0],))

    assert await relay.purge_published() == 2

    async with await psycopg.AsyncConnection.connect(db) as conn:
        cursor = await conn.execute("SELECT id FROM outbox ORDER BY id")
        assert [row[0] for row in await cursor.fetchall()] == [*ids[2:], *more]


async def _true(value: bool) -> bool:
    return value


async def test_audit_records_between_events_do_not_cut_the_events_runs(
    db: str, js: JetStreamContext, area: Area
) -> None:
    await ensure_stream(js, service_stream_spec(AUDIT))
    ids: list[int] = []
    async with await psycopg.AsyncConnection.connect(db) as conn:
        for n in range(1, 11):  # each change: its event, then its audit record, as a request writes them
            async with conn.transaction():
                ids.append(await enqueue(conn, area.subject(), envelope(area.subject(), n)))
                record = AuditEntry("outbox-test", "user", "POST /api/v1/things", str(n), "ok", 201)
                await enqueue(conn, RECORDED_SUBJECT, record.to_event("outbox-test"))

    runs: list[tuple[str, int]] = []

    class Recording(OutboxRelay):
        async def _publish_run(self, run: Any) -> Any:
            runs.append((run[0].area, len(run)))
            return await super()._publish_run(run)

    relay = Recording(db, js, name="svc", poll_interval=0.2, retry_interval=0.2, publish_timeout=2.0)
    assert await relay.publish_pending() == 20
    assert runs == [(area.prefix, 10), (RECORDED_SUBJECT.rpartition(".")[0], 10)]
    assert await stream_messages(js, area.stream) == [(mid(db, i), n) for i, n in zip(ids, range(1, 11), strict=True)]
    assert await unpublished(db) == []
