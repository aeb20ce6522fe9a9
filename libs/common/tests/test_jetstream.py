"""Connect, provisioning and publish against a real nats-server (the ``nats_url`` session fixture)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from modelhub.events.v1 import events_pb2
from modelhub_common import events
from modelhub_common.errors import ConfigurationError, DependencyError
from modelhub_common.jetstream import (
    DEAD_LETTER_STREAM,
    DEFAULT_DUPLICATE_WINDOW,
    MSG_ID_HEADER,
    ConsumerSpec,
    StreamSpec,
    connect,
    dead_letter_stream_spec,
    dead_letter_subject,
    drain,
    ensure_consumer,
    ensure_stream,
    publish,
    service_stream_spec,
    standard_stream_specs,
)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="test-jetstream")
    yield client
    await drain(client)


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


def unique_stream() -> tuple[str, str]:
    """A stream name and a subject root nobody else uses."""
    token = uuid.uuid4().hex[:12]
    return f"TEST_{token.upper()}", f"mhtest.{token}"


def stream_spec(name: str, root: str, **overrides: Any) -> StreamSpec:
    return replace(StreamSpec(name=name, subjects=(f"{root}.>",), max_age=3600.0), **overrides)


def envelope(subject: str, event_id: str | None = None) -> events.EventEnvelope:
    return events.new_envelope(
        subject,
        actor="tester",
        role="service",
        source="test",
        payload=events_pb2.ModelDeleted(model_id="m-1", last_version=3),
        event_id=event_id,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- connect / drain -----------------------------------------------------------------------------------


async def test_connect_and_drain(nats_url: str) -> None:
    client = await connect(nats_url, name="test-connect")
    assert client.is_connected
    await drain(client)
    assert client.is_closed
    await drain(client)  # a second drain is a no-op


async def test_connect_to_nothing_raises_dependency_error() -> None:
    with pytest.raises(DependencyError):
        await connect(f"nats://127.0.0.1:{free_port()}", name="test-unreachable", initial_connect_deadline=0.5)


# ---- specs ---------------------------------------------------------------------------------------------


def test_standard_specs_cover_service_streams_and_dead_letters() -> None:
    specs = {spec.name: spec for spec in standard_stream_specs()}

    assert set(specs) == {"MODELHUB_MODELS", "MODELHUB_PULLS", "MODELHUB_KNOWLEDGE", DEAD_LETTER_STREAM}
    assert specs["MODELHUB_MODELS"].subjects == ("modelhub.models.v1.>",)
    assert specs[DEAD_LETTER_STREAM].subjects == ("modelhub.dlq.>",)
    assert all(spec.duplicate_window == DEFAULT_DUPLICATE_WINDOW == 600 for spec in specs.values())
    assert dead_letter_subject("modelhub.models.v1.created") == "modelhub.dlq.modelhub.models.v1.created"


def test_specs_refuse_unsafe_values() -> None:
    with pytest.raises(ValueError):
        ConsumerSpec(durable="svc-x", max_deliver=0)
    with pytest.raises(ValueError):
        ConsumerSpec(durable="svc.x")
    with pytest.raises(ValueError):
        StreamSpec(name="S", subjects=("s.>",), max_age=60, duplicate_window=120)


def test_retry_delay_follows_backoff_and_repeats_the_last_value() -> None:
    spec = ConsumerSpec(durable="svc-x", backoff=(1, 5, 30))

    assert [spec.retry_delay(n) for n in (1, 2, 3, 4, 9)] == [1, 5, 30, 30, 30]
    assert ConsumerSpec(durable="svc-x", backoff=()).retry_delay(3) == 0


# ---- ensure_stream -------------------------------------------------------------------------------------


async def test_ensure_stream_creates_then_leaves_it_alone(js: JetStreamContext) -> None:
    name, root = unique_stream()
    spec = stream_spec(name, root)

    first = await ensure_stream(js, spec)
    second = await ensure_stream(js, spec)

    assert first.config.subjects == [f"{root}.>"]
    assert first.config.duplicate_window == DEFAULT_DUPLICATE_WINDOW
    assert second.created == first.created
    assert second.config == first.config


async def test_ensure_stream_concurrently_from_several_replicas(js: JetStreamContext) -> None:
    name, root = unique_stream()
    spec = stream_spec(name, root)

    infos = await asyncio.gather(*(ensure_stream(js, spec) for _ in range(6)))

    assert {info.config.name for info in infos} == {name}
    assert len({info.created for info in infos}) == 1


async def test_ensure_stream_updates_a_changed_config(js: JetStreamContext) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))

    changed = stream_spec(name, root, max_age=7200.0, subjects=(f"{root}.>", f"{root}x.>"))
    await ensure_stream(js, changed)

    info = await js.stream_info(name)
    assert info.config.max_age == 7200.0
    assert sorted(info.config.subjects or []) == [f"{root}.>", f"{root}x.>"]


async def test_ensure_stream_survives_replicas_racing_with_different_configs(js: JetStreamContext) -> None:
    name, root = unique_stream()
    old, new = stream_spec(name, root, max_age=3600.0), stream_spec(name, root, max_age=5400.0)

    await asyncio.gather(ensure_stream(js, old), ensure_stream(js, new), ensure_stream(js, old))

    info = await js.stream_info(name)
    assert info.config.max_age in (3600.0, 5400.0)


@pytest.mark.parametrize("change", [{"storage": "memory"}, {"retention": "workqueue"}], ids=["storage", "retention"])
async def test_ensure_stream_refuses_changes_the_server_cannot_make(
    js: JetStreamContext, change: dict[str, str]
) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))

    with pytest.raises(ConfigurationError):
        await ensure_stream(js, stream_spec(name, root, **change))


async def test_work_queue_retention(js: JetStreamContext) -> None:
    name, root = unique_stream()

    info = await ensure_stream(js, stream_spec(name, root, retention="workqueue"))

    assert info.config.retention == "workqueue"
    assert (await ensure_stream(js, stream_spec(name, root, retention="workqueue"))).created == info.created


async def test_service_and_dead_letter_streams_provision_idempotently(js: JetStreamContext) -> None:
    # The real shared names: other tests on this server may have created them with the same specs.
    for spec in (dead_letter_stream_spec(), service_stream_spec(events.PULLS)):
        await asyncio.gather(ensure_stream(js, spec), ensure_stream(js, spec))
        assert (await js.stream_info(spec.name)).config.subjects == list(spec.subjects)


# ---- ensure_consumer -----------------------------------------------------------------------------------


async def test_ensure_consumer_is_idempotent_and_concurrent(js: JetStreamContext) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))
    spec = ConsumerSpec(durable="test-worker", ack_wait=7.0, max_deliver=4, backoff=(0.5, 2.0))

    infos = await asyncio.gather(*(ensure_consumer(js, name, spec) for _ in range(5)))
    again = await ensure_consumer(js, name, spec)

    assert len({info.created for info in [*infos, again]}) == 1
    config = again.config
    assert config.durable_name == "test-worker"
    assert config.ack_policy == "explicit"
    assert config.deliver_policy == "all"
    assert config.ack_wait == 7.0  # not replaced by backoff[0]: the backoff is applied by nak(delay)
    assert config.backoff is None
    assert config.max_deliver == 4
    assert (config.metadata or {})["modelhub.backoff"] == "0.5,2"


async def test_ensure_consumer_updates_a_changed_config(js: JetStreamContext) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))
    await ensure_consumer(js, name, ConsumerSpec(durable="test-worker", filter_subjects=(f"{root}.a",)))

    changed = ConsumerSpec(
        durable="test-worker", filter_subjects=(f"{root}.a", f"{root}.b"), max_deliver=9, max_ack_pending=7
    )
    await ensure_consumer(js, name, changed)

    info = await js.consumer_info(name, "test-worker")
    assert info.config.max_deliver == 9
    assert info.config.max_ack_pending == 7
    assert sorted(info.config.filter_subjects or []) == [f"{root}.a", f"{root}.b"]


async def test_ensure_consumer_on_a_missing_stream_is_a_configuration_error(js: JetStreamContext) -> None:
    name, _ = unique_stream()

    with pytest.raises(ConfigurationError):
        await ensure_consumer(js, name, ConsumerSpec(durable="test-worker"))


# ---- publish -------------------------------------------------------------------------------------------


async def test_publish_sets_msg_id_and_suppresses_duplicates(js: JetStreamContext) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))
    subject = f"{root}.v1.deleted"
    event = envelope(subject)

    first = await publish(js, subject, event)
    second = await publish(js, subject, event)

    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    stored = await js.get_msg(name, first.seq)
    assert (stored.headers or {})[MSG_ID_HEADER] == event.id
    assert events.decode_envelope(stored.data or b"") == event
    assert (await js.stream_info(name)).state.messages == 1


async def test_publish_with_an_explicit_msg_id(js: JetStreamContext) -> None:
    name, root = unique_stream()
    await ensure_stream(js, stream_spec(name, root))
    subject = f"{root}.v1.deleted"

    # An outbox relay passes its row id: two envelopes for the same row are one message.
    first = await publish(js, subject, envelope(subject), msg_id="outbox-row-42")
    second = await publish(js, subject, envelope(subject), msg_id="outbox-row-42")

    assert second.duplicate
    stored = await js.get_msg(name, first.seq)
    assert (stored.headers or {})[MSG_ID_HEADER] == "outbox-row-42"
    assert (await js.stream_info(name)).state.messages == 1


async def test_publish_without_a_stream_is_a_dependency_error(js: JetStreamContext) -> None:
    _, root = unique_stream()
    subject = f"{root}.v1.deleted"

    with pytest.raises(DependencyError) as caught:
        await publish(js, subject, envelope(subject), timeout=1.0)
    assert isinstance(caught.value.__cause__, nats.errors.Error | TimeoutError)


async def test_publish_refuses_to_go_without_a_msg_id(js: JetStreamContext) -> None:
    with pytest.raises(ValueError):
        await publish(js, "mhtest.none", events.EventEnvelope(type="x"))


async def test_nats_errors_are_not_leaked_by_ensure(js: JetStreamContext) -> None:
    name, _ = unique_stream()

    with pytest.raises(ConfigurationError) as caught:
        await ensure_stream(js, StreamSpec(name=name, subjects=("$JS.API.>",)))
    assert isinstance(caught.value.__cause__, nats.js.errors.APIError)
