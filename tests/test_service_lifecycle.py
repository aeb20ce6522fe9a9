"""Every service migrates, starts against real NATS/PostgreSQL/S3, reports ready and stops cleanly."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import nats
import psycopg
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub.events.v1 import events_pb2
from modelhub_common.events import MODELS, decode_envelope, new_envelope
from modelhub_common.outbox import enqueue

SERVICES = {
    "registry": ("modelhub_registry", "RegistrySettings", "MODELHUB_MODELS"),
    "puller": ("modelhub_puller", "PullerSettings", "MODELHUB_PULLS"),
    "rag": ("modelhub_rag", "RagSettings", "MODELHUB_KNOWLEDGE"),
    "chat-gateway": ("modelhub_chat_gateway", "ChatGatewaySettings", "MODELHUB_MODELS"),
}
GATEWAY_EXTRA = {"rag_url": "http://127.0.0.1:1", "grpc_port": 0}
READY_CHECKS = {"nats": "ok", "postgres": "ok", "s3": "ok"}


def _settings(name: str, service_settings: Callable[..., Any], registry_url: str = "") -> tuple[Any, Any]:
    package, settings_cls, _ = SERVICES[name]
    bootstrap = importlib.import_module(f"{package}.bootstrap")
    cls = getattr(importlib.import_module(f"{package}.settings"), settings_cls)
    extra = {**GATEWAY_EXTRA, "registry_url": registry_url} if name == "chat-gateway" else {}
    return bootstrap, service_settings(cls, **extra)


def _ready(client: TestClient, seconds: float = 30.0) -> Any:
    """``GET /readyz`` once it answers 200 (a gateway loads its model catalog after start-up), or the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        ready = client.get("/readyz")
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.05)


async def _stream_names(nats_url: str) -> set[str]:
    nc = await nats.connect(nats_url)
    try:
        return {s.config.name for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


@pytest.mark.parametrize("name", list(SERVICES))
async def test_service_migrates_starts_ready_and_provisions(
    name: str, service_settings: Callable[..., Any], nats_url: str, pg_url: str, request: pytest.FixtureRequest
) -> None:
    registry = request.getfixturevalue("registry_service") if name == "chat-gateway" else ""
    bootstrap, settings = _settings(name, service_settings, registry)
    applied = await bootstrap.run_migrations(settings)
    assert "common/0001_outbox.sql" in applied
    assert await bootstrap.run_migrations(settings) == []

    app = bootstrap.build_app(settings)
    # Before start-up the service must not claim to be ready.
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = _ready(client)
        assert ready.status_code == 200, ready.text
        expected = {**READY_CHECKS, "catalog": "ok"} if name == "chat-gateway" else READY_CHECKS
        assert ready.json()["checks"] == expected
        assert app.state.runtime.nc.is_connected
    assert app.state.runtime.nc.is_closed
    assert {SERVICES[name][2], "MODELHUB_DLQ"} <= await _stream_names(nats_url)


def test_readiness_is_false_before_start(service_settings: Callable[..., Any]) -> None:
    bootstrap, settings = _settings("registry", service_settings)
    app = bootstrap.build_app(settings)
    client = TestClient(app)  # no context manager: the lifespan has not run
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"] == {"service": "starting"}


async def test_registry_relays_outbox_rows_to_jetstream(
    service_settings: Callable[..., Any], nats_url: str, pg_url: str
) -> None:
    bootstrap, settings = _settings("registry", service_settings)
    await bootstrap.run_migrations(settings)
    envelope = new_envelope(
        MODELS.subject("created"),
        actor="alice",
        role="user",
        source="registry",
        payload=events_pb2.ModelChanged(model_id="lifecycle-test-model", version=1),
    )
    nc = await nats.connect(nats_url)
    started = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    try:
        with TestClient(bootstrap.build_app(settings)):
            async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                await enqueue(conn, MODELS.subject("created"), envelope)
                await conn.commit()
            # Other tests publish on this subject too: read only what arrived from just before our commit.
            sub = await nc.jetstream().pull_subscribe(
                MODELS.subject("created"),
                durable=None,
                stream="MODELHUB_MODELS",
                config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=started),
            )
            found = None
            for _ in range(20):
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except TimeoutError:  # nats raises its own subclass, or asyncio.TimeoutError from fetch
                    continue
                for msg in msgs:
                    event = decode_envelope(msg.data)
                    if event.model_changed.model_id == "lifecycle-test-model":
                        found = (event, msg.headers)
                if found:
                    break
    finally:
        await nc.close()
    assert found is not None, "the relay inside the registry did not publish the committed outbox row"
    event, headers = found
    assert event.id == envelope.id
    assert headers is not None and headers["Nats-Msg-Id"].startswith("registry-")


async def test_gateway_grpc_health_reflection_and_auth(
    service_settings: Callable[..., Any], make_token: Callable[..., str], registry_service: str
) -> None:
    bootstrap, settings = _settings("chat-gateway", service_settings, registry_service)
    await bootstrap.run_migrations(settings)
    app = bootstrap.build_app(settings)
    with TestClient(app) as client:
        assert _ready(client).status_code == 200
        target = f"127.0.0.1:{app.state.grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "modelhub.chat.v1.ChatService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def ask() -> Any:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            async for answer in reflection.ServerReflectionInfo(ask()):
                names = {s.name for s in answer.list_services_response.service}
                assert "modelhub.chat.v1.ChatService" in names
                break

            chat = chat_pb2_grpc.ChatServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as no_token:
                await chat.ListModels(chat_pb2.ListModelsRequest())
            assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as bad_token:
                await chat.ListModels(chat_pb2.ListModelsRequest(), metadata=[("authorization", "Bearer x")])
            assert bad_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as not_yet:
                stream = chat.Chat(
                    chat_pb2.ChatRequest(models=["m"]),
                    metadata=[("authorization", f"Bearer {make_token()}")],
                )
                async for _ in stream:
                    pass
            assert not_yet.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # an empty message is refused
    # After shutdown the port is closed.
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1), 3
            )


async def test_gateway_grpc_health_follows_readiness(
    service_settings: Callable[..., Any], registry_service: str
) -> None:
    bootstrap, _ = _settings("chat-gateway", service_settings)
    settings = service_settings(
        importlib.import_module("modelhub_chat_gateway.settings").ChatGatewaySettings,
        **GATEWAY_EXTRA,
        registry_url=registry_service,
        health_check_seconds=0.1,
    )
    await bootstrap.run_migrations(settings)
    app = bootstrap.build_app(settings)
    broken = asyncio.Event()

    async def dependency() -> None:
        if broken.is_set():
            raise ConnectionError("down")

    with TestClient(app):
        app.state.readiness.add("fake-dependency", dependency)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status_becomes(expected: int) -> bool:
                for _ in range(100):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service="modelhub.chat.v1.ChatService"))
                    if reply.status == expected:
                        return True
                    await asyncio.sleep(0.05)
                return False

            assert await status_becomes(health_pb2.HealthCheckResponse.SERVING)
            broken.set()
            assert await status_becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
            broken.clear()
            assert await status_becomes(health_pb2.HealthCheckResponse.SERVING)
