"""The consumer loop against a real nats-server: ack, nak with back-off, dead letters, graceful stop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from modelhub.events.v1 import events_pb2
from modelhub_common import events
from modelhub_common.consumer import (
    DLQ_CONSUMER_HEADER,
    DLQ_DELIVERIES_HEADER,
    DLQ_ERROR_CODE_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_MSG_ID_HEADER,
    DLQ_SEQUENCE_HEADER,
    DLQ_STREAM_HEADER,
    DLQ_SUBJECT_HEADER,
    Consumer,
    Handler,
    MsgContext,
    run_consumer,
)
from modelhub_common.errors import PermanentError, TransientError
from modelhub_common.events import DEAD_LETTER_PREFIX
from modelhub_common.jetstream import (
    DEAD_LETTER_STREAM,
    MSG_ID_HEADER,
    ConsumerSpec,
    StreamSpec,
    connect,
    dead_letter_stream_spec,
    dead_letter_subject,
    drain,
    ensure_stream,
    publish,
)
from modelhub_devstack.nats import NatsServer

DURABLE = "test-worker"
# Generous for a loaded CI machine; the outcome, not the speed, is asserted.
DEADLINE = 20.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="test-consumer")
    yield client
    await drain(client)


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    js = nc.jetstream()
    await ensure_stream(js, dead_letter_stream_spec())
    return js


@dataclass
class Topic:
    """A private stream for one test: its name and the subject events are published on."""

    stream: str
    subject: str


@pytest.fixture
async def topic(js: JetStreamContext) -> Topic:
    token = uuid.uuid4().hex[:12]
    stream, subject = f"TEST_{token.upper()}", f"mhtest.{token}.v1.deleted"
    await ensure_stream(js, StreamSpec(name=stream, subjects=(f"mhtest.{token}.>",), max_age=3600.0))
    return Topic(stream=stream, subject=subject)


def spec(**overrides: Any) -> ConsumerSpec:
    """Short back-off so retries happen quickly; ack_wait long enough that only naks cause redeliveries."""
    return replace(ConsumerSpec(durable=DURABLE, ack_wait=10.0, max_deliver=3, backoff=(0.05, 0.1)), **overrides)


def envelope(subject: str) -> events.EventEnvelope:
    return events.new_envelope(
        subject,
        actor="tester",
        role="service",
        source="test",
        payload=events_pb2.ModelDeleted(model_id="m-1", last_version=3),
    )


@dataclass
class Calls:
    """What the handler saw: (event id, delivery count) per call."""

    seen: list[tuple[str, int]] = field(default_factory=list)
    contexts: list[MsgContext] = field(default_factory=list)

    def record(self, env: events.EventEnvelope, ctx: MsgContext) -> None:
        self.seen.append((env.id, ctx.num_delivered))
        self.contexts.append(ctx)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Waits until ``check`` holds; fails (never hangs) if it does not within DEADLINE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.05)


class Running:
    """A consumer loop running in the background for the duration of a test."""

    def __init__(
        self,
        js: JetStreamContext,
        topic: Topic,
        consumer_spec: ConsumerSpec,
        handler: Handler,
        *,
        batch: int = 1,
        dead_letter_prefix: str = DEAD_LETTER_PREFIX,
    ) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_consumer(
                js,
                topic.stream,
                consumer_spec,
                handler,
                stop=self.stop,
                batch=batch,
                fetch_timeout=0.5,
                dead_letter_prefix=dead_letter_prefix,
            )
        )

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, DEADLINE)


async def consumer_settled(js: JetStreamContext, stream: str, last_seq: int) -> bool:
    """Every message up to ``last_seq`` was acked or terminated and nothing is waiting for redelivery."""
    try:
        info = await js.consumer_info(stream, DURABLE)
    except nats.js.errors.NotFoundError:
        return False
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return floor >= last_seq and not info.num_ack_pending and not info.num_redelivered


async def dead_letter(js: JetStreamContext, subject: str) -> api.RawStreamMsg | None:
    try:
        return await js.get_last_msg(DEAD_LETTER_STREAM, dead_letter_subject(subject))
    except nats.js.errors.NotFoundError:
        return None


# ---- outcomes ------------------------------------------------------------------------------------------


async def test_success_is_acked(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)

    sent = [envelope(topic.subject) for _ in range(3)]
    for event in sent:
        await publish(js, topic.subject, event)
    async with Running(js, topic, spec(), handler, batch=2):
        await eventually(lambda: consumer_settled(js, topic.stream, 3), "all three acked")

    assert calls.seen == [(event.id, 1) for event in sent]
    assert [ctx.stream_sequence for ctx in calls.contexts] == [1, 2, 3]
    first = calls.contexts[0]
    assert (first.subject, first.stream, first.consumer) == (topic.subject, topic.stream, DURABLE)
    assert first.headers[MSG_ID_HEADER] == sent[0].id
    assert await dead_letter(js, topic.subject) is None


@pytest.mark.parametrize("failure", [TransientError("try later"), RuntimeError("bug")], ids=["transient", "bug"])
async def test_failure_is_nakked_redelivered_and_then_succeeds(
    js: JetStreamContext, topic: Topic, failure: Exception
) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)
        if ctx.num_delivered == 1:
            raise failure

    event = envelope(topic.subject)
    await publish(js, topic.subject, event)
    async with Running(js, topic, spec(), handler):
        await eventually(lambda: consumer_settled(js, topic.stream, 1), "acked on the second delivery")

    assert calls.seen == [(event.id, 1), (event.id, 2)]
    assert await dead_letter(js, topic.subject) is None


async def test_poison_message_is_dead_lettered_after_max_deliver(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()
    good = envelope(topic.subject)

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)
        if env.id != good.id:
            raise TransientError("still broken\r\nsecond line", code="model_store_down")

    poison = envelope(topic.subject)
    raw = poison.SerializeToString()
    await publish(js, topic.subject, poison)
    async with Running(js, topic, spec(max_deliver=3), handler):
        await eventually(lambda: consumer_settled(js, topic.stream, 1), "poison message terminated")
        # A later message still flows, and the poison one does not come back.
        await publish(js, topic.subject, good)
        await eventually(lambda: consumer_settled(js, topic.stream, 2), "good message acked")

    assert calls.seen == [(poison.id, 1), (poison.id, 2), (poison.id, 3), (good.id, 1)]
    letter = await dead_letter(js, topic.subject)
    assert letter is not None
    assert letter.data == raw
    headers = letter.headers or {}
    assert headers[DLQ_SUBJECT_HEADER] == topic.subject
    assert headers[DLQ_STREAM_HEADER] == topic.stream
    assert headers[DLQ_SEQUENCE_HEADER] == "1"
    assert headers[DLQ_CONSUMER_HEADER] == DURABLE
    assert headers[DLQ_DELIVERIES_HEADER] == "3"
    assert headers[DLQ_ERROR_CODE_HEADER] == "model_store_down"
    assert headers[DLQ_ERROR_HEADER].startswith("still broken")
    assert headers[DLQ_MSG_ID_HEADER] == poison.id
    assert headers[MSG_ID_HEADER] == f"dlq.{topic.stream}.{DURABLE}.1"
    info = await js.consumer_info(topic.stream, DURABLE)
    assert info.num_pending == 0


async def test_permanent_error_is_dead_lettered_on_first_delivery(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)
        raise PermanentError("model m-1 is gone", code="model_gone")

    event = envelope(topic.subject)
    await publish(js, topic.subject, event)
    async with Running(js, topic, spec(max_deliver=5), handler):
        await eventually(lambda: consumer_settled(js, topic.stream, 1), "terminated")

    assert calls.seen == [(event.id, 1)]
    letter = await dead_letter(js, topic.subject)
    assert letter is not None
    headers = letter.headers or {}
    assert headers[DLQ_DELIVERIES_HEADER] == "1"
    assert headers[DLQ_ERROR_CODE_HEADER] == "model_gone"
    assert headers[DLQ_ERROR_HEADER] == "model m-1 is gone"


async def test_undecodable_message_is_dead_lettered_without_calling_the_handler(
    js: JetStreamContext, topic: Topic
) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)

    garbage = b"\xff\xfe not protobuf"
    await js.publish(topic.subject, garbage, headers={MSG_ID_HEADER: "garbage-1"})
    async with Running(js, topic, spec(), handler):
        await eventually(lambda: consumer_settled(js, topic.stream, 1), "terminated")

    assert calls.seen == []
    letter = await dead_letter(js, topic.subject)
    assert letter is not None
    assert letter.data == garbage
    assert (letter.headers or {})[DLQ_ERROR_CODE_HEADER] == "bad_envelope"


async def test_message_is_not_terminated_when_dead_lettering_fails(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)
        raise PermanentError("cannot handle")

    event = envelope(topic.subject)
    await publish(js, topic.subject, event)
    # No stream listens on this prefix, so every dead-letter publish fails.
    nowhere = f"mhtest-nowhere.{uuid.uuid4().hex[:12]}"
    async with Running(js, topic, spec(max_deliver=3), handler, dead_letter_prefix=nowhere):

        async def all_attempts_made() -> bool:
            return len(calls.seen) == 3

        await eventually(all_attempts_made, "three attempts")

    # Nak-ed each time (so it came back), never terminated, and still stored for recovery.
    assert calls.seen == [(event.id, 1), (event.id, 2), (event.id, 3)]
    assert (await js.stream_info(topic.stream)).state.messages == 1


async def test_a_context_can_be_built_without_a_message_for_handler_unit_tests() -> None:
    ctx = MsgContext(
        subject="modelhub.models.v1.deleted",
        headers={},
        stream="MODELHUB_MODELS",
        consumer="svc-x",
        stream_sequence=7,
        num_delivered=3,
        max_deliver=3,
    )

    assert ctx.is_last_delivery
    await ctx.in_progress()  # a no-op without a message


# ---- lifecycle -----------------------------------------------------------------------------------------


async def test_stop_finishes_the_message_in_flight_and_releases_the_rest(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)
        entered.set()
        await release.wait()

    first, second = envelope(topic.subject), envelope(topic.subject)
    await publish(js, topic.subject, first)
    await publish(js, topic.subject, second)
    stop = asyncio.Event()
    consumer = Consumer(js, topic.stream, spec(), slow_handler, batch=2, fetch_timeout=0.5)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(entered.wait(), DEADLINE)

    stop.set()
    release.set()
    await asyncio.wait_for(task, DEADLINE)

    assert task.exception() is None
    assert calls.seen == [(first.id, 1)]
    # The in-flight message was acked; the other one was handed back and is delivered again at once.
    later = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        later.record(env, ctx)

    async with Running(js, topic, spec(), handler):
        await eventually(lambda: consumer_settled(js, topic.stream, 2), "second message acked")
    assert later.seen == [(second.id, 2)]


async def test_stop_ends_an_idle_loop(js: JetStreamContext, topic: Topic) -> None:
    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        raise AssertionError("no message was published")

    async with Running(js, topic, spec(), handler) as running:
        await eventually(lambda: consumer_exists(js, topic.stream), "consumer provisioned")

    assert running.task.done()
    assert running.task.exception() is None


async def consumer_exists(js: JetStreamContext, stream: str) -> bool:
    try:
        await js.consumer_info(stream, DURABLE)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_a_deleted_consumer_is_provisioned_again(js: JetStreamContext, topic: Topic) -> None:
    calls = Calls()

    async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
        calls.record(env, ctx)

    async with Running(js, topic, spec(), handler):
        await eventually(lambda: consumer_exists(js, topic.stream), "consumer provisioned")
        await js.delete_consumer(topic.stream, DURABLE)

        event = envelope(topic.subject)
        await publish(js, topic.subject, event)
        await eventually(lambda: consumer_exists(js, topic.stream), "consumer provisioned again")
        await eventually(lambda: consumer_settled(js, topic.stream, 1), "acked after re-provisioning")

    assert calls.seen == [(event.id, 1)]


async def test_consumer_carries_on_after_a_nats_restart(tmp_path: Path) -> None:
    # Private servers, since the session one must not be restarted under other tests. The second one
    # reuses the first one's JetStream store on new ports (the old port may linger in TIME_WAIT), so the
    # client sees a server going away and the stream, consumer and its state coming back elsewhere.
    first_server = NatsServer(tmp_path / "nats")
    second_server = NatsServer(tmp_path / "nats")
    await asyncio.to_thread(first_server.start)
    try:
        client = await connect([first_server.url, second_server.url], name="test-restart", reconnect_time_wait=1)
        js = client.jetstream()
        token = uuid.uuid4().hex[:12]
        topic = Topic(stream=f"TEST_{token.upper()}", subject=f"mhtest.{token}.v1.deleted")
        await ensure_stream(js, StreamSpec(name=topic.stream, subjects=(f"mhtest.{token}.>",), max_age=3600.0))
        calls = Calls()

        async def handler(env: events.EventEnvelope, ctx: MsgContext) -> None:
            calls.record(env, ctx)

        before, after = envelope(topic.subject), envelope(topic.subject)
        async with Running(js, topic, spec(), handler):
            await publish(js, topic.subject, before)
            await eventually(lambda: consumer_settled(js, topic.stream, 1), "acked before the restart")

            await asyncio.to_thread(first_server.stop)
            await asyncio.to_thread(second_server.start)

            async def reconnected() -> bool:
                return client.is_connected

            await eventually(reconnected, "client reconnected")
            await publish(js, topic.subject, after)
            await eventually(lambda: consumer_settled(js, topic.stream, 2), "acked after the restart")

        assert [event_id for event_id, _ in calls.seen] == [before.id, after.id]
        await drain(client)
    finally:
        await asyncio.to_thread(first_server.stop)
        await asyncio.to_thread(second_server.stop)
