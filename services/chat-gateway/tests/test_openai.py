"""The OpenAI-compatible backend against llama-cpp-python's own server, and the gateway's OpenAI-compatible
HTTP API driven by the official ``openai`` SDK."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RegistryHandle

A = "echo-a:latest"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_openai_backend_streams_from_llama_cpp_server(
    gateway: Gateway, registry: RegistryHandle, llama_openai_server: str
) -> None:
    admin = {"Authorization": f"Bearer {gateway.metadata('root', 'admin')[0][1].removeprefix('Bearer ')}"}
    connection = registry.http.post(
        "/api/v1/connections", json={"type": "openai", "url": f"{llama_openai_server}/v1"}, headers=admin
    )
    assert connection.status_code == 201, connection.text
    assert registry.http.post(f"/api/v1/connections/{connection.json()['id']}/sync", headers=admin).status_code == 200
    model = unique("via-openai")
    registry.create_model(
        id=model,
        base_model_id="gemma-openai",
        params={"system": "Be brief.", "max_tokens": 5, "temperature": 0, "seed": 1},
    )
    first = await gateway.chat([model], "Hello")
    answer = first.answers[model]
    assert answer.error is None, answer.error
    assert answer.text and answer.done is not None and answer.done.finish_reason in ("length", "stop")
    # temperature 0 and the seed reached the server: asked again, it answers the same. (The first answer
    # may differ from both: llama-cpp-python's server evaluates a prompt it has seen before from its cached
    # prefix, whose last bits differ from a whole-prompt evaluation.)
    again = await gateway.chat([model], "Hello")
    third = await gateway.chat([model], "Hello")
    assert again.answers[model].text and third.answers[model].text == again.answers[model].text


@pytest.fixture
async def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    api_key = gateway.metadata()[0][1].removeprefix("Bearer ")
    return openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key=api_key, max_retries=0)


async def test_openai_sdk_lists_models_and_completes_with_the_model_file_applied(
    sdk: openai.AsyncOpenAI, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    model = unique("sdk-model")
    registry.create_model(id=model, base_model_id=A, params={"system": "You are {{ USER_NAME }}'s helper."})
    hidden = unique("sdk-hidden")
    registry.create_model(id=hidden, base_model_id=A, hidden=True)
    ids = {m.id async for m in sdk.models.list()}
    assert model in ids and "gemma3:270m" in ids and hidden not in ids

    marker = unique("plain")
    completion = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Client system."}, {"role": "user", "content": marker}],
        max_tokens=33,
    )
    assert completion.choices[0].message.content.strip() == f"[{A}] {marker}"
    assert completion.choices[0].finish_reason == "stop" and completion.usage is not None
    request = next(r for r in reversed(ollama_double.requests_for(A)) if r["messages"][-1]["content"] == marker)
    assert request["messages"][:2] == [
        {"role": "system", "content": "You are alice's helper."},
        {"role": "system", "content": "Client system."},
    ]
    assert request["options"]["num_predict"] == 33

    marker = unique("streamed")
    stream = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": marker}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text.strip() == f"[{A}] {marker}" and finish == "stop" and usage is not None

    # A hidden model is not listed, but works by id.
    hidden_reply = await sdk.chat.completions.create(model=hidden, messages=[{"role": "user", "content": "hi"}])
    assert hidden_reply.choices[0].message.content


async def test_openai_sdk_errors_are_openai_shaped(sdk: openai.AsyncOpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "nope" in str(missing.value)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(
            model=A, messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}]
        )
    assert refused.value.code == "vision_not_supported"
    bad = openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{gateway.http_url}/healthz")).status_code == 200
