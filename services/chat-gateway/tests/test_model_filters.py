"""A model file's filters (``filterIds`` and ``defaultFilterIds``) applied by the gateway in a chat turn and on
the OpenAI-compatible API: filters registered in the real registry, the Ollama double (a stand-in for an
Ollama server, which cannot run here) recording what the backend was sent, and a real webhook server on
loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI, Request

from modelhub_devstack.asgi import serve_in_thread

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RegistryHandle

ECHO = "echo-a:latest"


@pytest.fixture(scope="module")
def webhook_url() -> Iterator[str]:
    """``/upper`` answers the text upper-cased; ``/slow`` answers after 3 s."""
    app = FastAPI()

    @app.post("/upper")
    async def upper(request: Request) -> Any:
        body = await request.json()
        return {"text": body["text"].upper()}

    @app.post("/slow")
    async def slow() -> Any:
        await asyncio.sleep(3)
        return {"text": "too late"}

    with serve_in_thread(app, name="model-filter-webhooks", log_level="warning", timeout_graceful_shutdown=2) as url:
        yield url


@pytest.fixture
async def gateway(gateway_factory: Any) -> Gateway:
    started: Gateway = await gateway_factory(allow_private_urls=True)  # the webhooks listen on loopback
    return started


def _filter(registry: RegistryHandle, gateway: Gateway, kind: str, config: dict[str, Any], **extra: Any) -> str:
    filter_id = f"{kind}-{uuid.uuid4().hex[:8]}"
    body = {"id": filter_id, "kind": kind, "config": config, **extra}
    admin = {"Authorization": gateway.metadata("root", "admin")[0][1]}
    response = registry.http.post("/api/v1/filters", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return filter_id


def _model(registry: RegistryHandle, **meta: Any) -> str:
    model_id = f"filtered-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=model_id, base_model_id=ECHO, meta=meta)
    return model_id


async def test_an_inlet_redaction_changes_what_the_backend_receives_and_says_so(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    redact = _filter(registry, gateway, "redact", {"patterns": ["email"], "replacement": "[email]"}, direction="inlet")
    note = _filter(registry, gateway, "append", {"text": "(be brief)"}, direction="inlet")
    model_id = _model(registry, filterIds=[redact], defaultFilterIds=[note, "ghost-filter"])

    first = await gateway.chat([model_id], "write to bob@example.com please")
    answer = first.answers[model_id]
    assert answer.error is None
    sent = ollama_double.requests_for(ECHO)[-1]["messages"][-1]["content"]
    assert sent == "write to [email] please\n\n(be brief)"
    codes = [w.code for w in answer.warnings]
    assert "filter_changed" in codes and "filter_unavailable" in codes
    # The user's message is stored as typed; an earlier message is redacted again before a later turn.
    second = await gateway.chat([model_id], "and again", conversation_id=first.conversation_id)
    assert second.answers[model_id].error is None
    history = ollama_double.requests_for(ECHO)[-1]["messages"]
    assert all("bob@example.com" not in m["content"] for m in history)
    conversation = await gateway.conversation(first.conversation_id)
    assert any(m.content == "write to bob@example.com please" for m in conversation.messages)


async def test_a_block_filter_refuses_the_turn_with_its_message(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    block = _filter(
        registry, gateway, "block", {"patterns": ["api_key"], "message": "do not paste keys here"}, direction="inlet"
    )
    model_id = _model(registry, filterIds=[block])
    before = len(ollama_double.requests_for(ECHO))

    answer = (await gateway.chat([model_id], "my key is sk-" + "a" * 32)).answers[model_id]

    assert answer.error is not None and answer.error.code == "filter_blocked"
    assert answer.error.message == "do not paste keys here"
    assert len(ollama_double.requests_for(ECHO)) == before  # the backend never saw it


async def test_an_outlet_webhook_changes_the_answer_before_the_client_sees_it(
    gateway: Gateway, registry: RegistryHandle, webhook_url: str
) -> None:
    upper = _filter(registry, gateway, "webhook", {"url": f"{webhook_url}/upper"}, direction="outlet")
    model_id = _model(registry, filterIds=[upper])

    turn = await gateway.chat([model_id], "quiet words")

    answer = turn.answers[model_id]
    assert answer.text.strip() == f"[{ECHO.upper()}] QUIET WORDS"
    deltas = [e for e in turn.events if e.model_id == model_id and e.WhichOneof("event") == "delta"]
    assert len(deltas) == 1  # held back until whole, then sent once
    conversation = await gateway.conversation(turn.conversation_id)
    stored = next(m for m in conversation.messages if m.id == answer.message_id)
    assert stored.content.strip() == answer.text.strip()

    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        reply = await http.post(
            "/v1/chat/completions",
            json={"model": model_id, "messages": [{"role": "user", "content": "hello there"}]},
            headers={"Authorization": gateway.metadata()[0][1]},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip() == f"[{ECHO.upper()}] HELLO THERE"


async def test_a_webhook_that_times_out_fails_the_answer_clearly(
    gateway: Gateway, registry: RegistryHandle, webhook_url: str
) -> None:
    slow = _filter(registry, gateway, "webhook", {"url": f"{webhook_url}/slow", "timeout_seconds": 1})
    model_id = _model(registry, filterIds=[slow])

    answer = (await gateway.chat([model_id], "anything")).answers[model_id]

    assert answer.error is not None and answer.error.code == "filter_failed"
    assert slow in answer.error.message
    assert not answer.text

    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        reply = await http.post(
            "/v1/chat/completions",
            json={"model": model_id, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": gateway.metadata()[0][1]},
        )
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "filter_failed"
