"""Events through the outbox, users/groups/tokens, connections and pulled models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats
import pytest
from fastapi import FastAPI
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelhub.events.v1 import events_pb2
from modelhub_common.events import MODELS, PULLS, decode_envelope, new_envelope
from modelhub_devstack.asgi import serve_in_thread

if TYPE_CHECKING:
    from conftest import Registry


async def _events_since(nats_url: str, since: datetime, model_id: str, want: int, timeout: float = 15) -> list[Any]:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            "modelhub.models.v1.>",
            durable=None,
            stream=MODELS.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat()),
        )
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < want:
            try:
                msgs = await sub.fetch(50, timeout=1)
            except TimeoutError:  # nats raises its own subclass, or asyncio.TimeoutError from fetch
                continue
            for msg in msgs:
                envelope = decode_envelope(msg.data)
                if envelope.subject_ids.model_id == model_id:
                    found.append((msg.subject, envelope, msg.headers))
        return found
    finally:
        await nc.close()


def test_every_change_is_published_once_in_order(registry: Registry, nats_url: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    alice = registry.as_user("alice")
    registry.create(alice, id="evented")
    registry.client.patch("/api/v1/models/evented", json={"params": {"temperature": 1}}, headers=alice)
    registry.client.post("/api/v1/models/evented/hide", headers=alice)
    registry.client.post("/api/v1/models/evented/clone", headers=alice)
    registry.client.delete("/api/v1/models/evented", headers=alice)
    events = asyncio.run(_events_since(nats_url, since, "evented", want=4))
    assert [subject for subject, _, _ in events] == [
        "modelhub.models.v1.created",
        "modelhub.models.v1.updated",
        "modelhub.models.v1.hidden",
        "modelhub.models.v1.deleted",
    ]
    created, updated = events[0][1], events[1][1]
    assert created.actor.subject == "alice" and created.model_changed.version == 1
    assert updated.model_changed.version == 2 and list(updated.model_changed.changed_fields) == ["params.temperature"]
    assert events[3][1].model_deleted.last_version == 3
    assert all(headers["Nats-Msg-Id"].startswith("registry-") for _, _, headers in events)


def test_users_groups_and_tokens(registry: Registry) -> None:
    admin = registry.admin
    client = registry.client
    assert client.post("/api/v1/users", json={"id": "dana", "name": "Dana"}, headers=admin).status_code == 201
    assert client.post("/api/v1/users", json={"id": "dana", "name": "Dana"}, headers=admin).status_code == 409
    assert client.post("/api/v1/groups", json={"id": "ml", "name": "ML"}, headers=admin).status_code == 201
    assert client.put("/api/v1/groups/ml/members/dana", headers=admin).status_code == 204
    assert client.put("/api/v1/groups/ml/members/nobody", headers=admin).status_code == 404
    users = client.get("/api/v1/users", headers=admin).json()["items"]
    assert users == [{**users[0], "id": "dana", "groups": ["ml"], "role": "user"}]
    assert client.get("/api/v1/users", headers=registry.as_user("dana")).status_code == 403

    registry.create(
        registry.as_user("alice"),
        id="team-model",
        access={"grants": [{"principal_type": "group", "principal_id": "ml", "permission": "read"}]},
    )
    issued = client.post("/api/v1/tokens", json={"user_id": "dana", "ttl_seconds": 600}, headers=admin)
    assert issued.status_code == 201
    dana = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert client.get("/api/v1/models/team-model", headers=dana).status_code == 200
    assert client.post("/api/v1/tokens", json={"user_id": "ghost"}, headers=admin).status_code == 404
    assert client.delete("/api/v1/groups/ml/members/dana", headers=admin).status_code == 204
    assert client.delete("/api/v1/users/dana", headers=admin).status_code == 204


class _OllamaDouble:
    """Stands in for a remote Ollama server (which cannot run on this machine): only ``GET /api/tags``."""

    def __init__(self) -> None:
        self.models = [
            {
                "name": "llama3.2:1b",
                "size": 1,
                "digest": "sha256:a",
                "details": {"family": "llama", "families": ["llama"]},
            },
            {
                "name": "llava:7b",
                "size": 2,
                "digest": "sha256:b",
                "details": {"family": "llama", "families": ["llama", "clip"]},
            },
        ]
        app = FastAPI()

        @app.get("/api/tags")
        async def tags() -> dict[str, Any]:
            return {"models": self.models}

        self.app = app
        self.url = ""


@pytest.fixture
def ollama() -> Iterator[_OllamaDouble]:
    double = _OllamaDouble()
    with serve_in_thread(double.app, name="ollama-double") as url:
        double.url = url
        yield double


def test_connection_sync_adds_and_retires_base_models(registry: Registry, ollama: _OllamaDouble) -> None:
    admin = registry.admin
    created = registry.client.post(
        "/api/v1/connections",
        json={"type": "ollama", "url": ollama.url, "api_key": "sekret"},
        headers=admin,
    )
    assert created.status_code == 201 and created.json()["has_api_key"] is True
    assert "sekret" not in registry.client.get("/api/v1/connections", headers=admin).text
    connection_id = created.json()["id"]
    credentials = registry.client.get(f"/api/v1/connections/{connection_id}/credentials", headers=admin)
    assert credentials.json()["api_key"] == "sekret" and credentials.json()["url"] == ollama.url
    forbidden = registry.client.get(f"/api/v1/connections/{connection_id}/credentials", headers=registry.as_user("u"))
    assert forbidden.status_code == 403 and "sekret" not in forbidden.text
    synced = registry.client.post(f"/api/v1/connections/{connection_id}/sync", headers=admin).json()
    assert sorted(synced["added"]) == ["llama3.2:1b", "llava:7b"]
    bases = {
        b["id"]: b for b in registry.client.get("/api/v1/base-models", headers=registry.as_user("u")).json()["items"]
    }
    assert bases["llava:7b"]["capabilities"]["vision"] is True and bases["llava:7b"]["source"] == "ollama"

    ollama.models = ollama.models[:1]
    synced = registry.client.post(f"/api/v1/connections/{connection_id}/sync", headers=admin).json()
    assert synced["unavailable"] == ["llava:7b"]
    visible = [b["id"] for b in registry.client.get("/api/v1/base-models", headers=admin).json()["items"]]
    assert "llava:7b" not in visible
    assert (
        registry.client.post(
            "/api/v1/connections", json={"type": "ollama", "url": "file:///etc"}, headers=admin
        ).status_code
        == 422
    )
    unreachable = registry.client.post(
        "/api/v1/connections", json={"type": "ollama", "url": "http://127.0.0.1:9"}, headers=admin
    )
    failed = registry.client.post(f"/api/v1/connections/{unreachable.json()['id']}/sync", headers=admin)
    assert failed.status_code == 502 and "cannot reach" in failed.json()["error"]["message"]
    assert registry.client.delete(f"/api/v1/connections/{connection_id}", headers=admin).status_code == 204


async def _publish(nats_url: str, event: str, payload: Any) -> None:
    nc = await nats.connect(nats_url)
    try:
        envelope = new_envelope(PULLS.subject(event), actor="puller", role="service", source="puller", payload=payload)
        await nc.jetstream().publish(
            PULLS.subject(event), envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id}
        )
    finally:
        await nc.close()


async def _publish_pull_completed(nats_url: str, model: str, target: int = events_pb2.PULL_TARGET_STORE) -> None:
    details = events_pb2.BaseModelDetails(
        family="gemma3", parameter_size="270M", quantization_level="Q4_K_M", vision=True
    )
    payload = events_pb2.PullCompleted(pull_id="p1", model=model, target=target, details=details)
    await _publish(nats_url, "completed", payload)


def _wait_for_base(registry: Registry, model: str, present: bool) -> dict[str, Any] | None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = registry.client.get("/api/v1/base-models", headers=registry.admin).json()["items"]
        found = next((b for b in items if b["id"] == model), None)
        if (found is not None) == present:
            return found
        time.sleep(0.2)
    raise AssertionError(f"base model {model} did not {'appear' if present else 'go away'}")


def test_pulled_models_become_local_base_models(registry: Registry, nats_url: str) -> None:
    model = f"gemma3-{time.time_ns()}:270m"
    ollama_model = f"ollama-only-{time.time_ns()}:1b"
    asyncio.run(_publish_pull_completed(nats_url, ollama_model, events_pb2.PULL_TARGET_OLLAMA))
    asyncio.run(_publish_pull_completed(nats_url, model))
    found = _wait_for_base(registry, model, present=True)
    assert found is not None and found["source"] == "local" and found["capabilities"]["vision"] is True
    assert found["details"]["quantization_level"] == "Q4_K_M"
    # The pull into Ollama came first and was handled first: it is left to that server's connection.
    assert ollama_model not in [
        b["id"] for b in registry.client.get("/api/v1/base-models", headers=registry.admin).json()["items"]
    ]

    asyncio.run(_publish(nats_url, "model_deleted", events_pb2.StoredModelDeleted(model=model, base_model_id=model)))
    _wait_for_base(registry, model, present=False)
