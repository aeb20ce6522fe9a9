"""Client-supplied tools and response formats on the OpenAI-compatible API, through each kind of backend:

* llama-cpp-python's own OpenAI-compatible server (a real upstream with the Gemma GGUF): ``tools`` and
  ``tool_choice`` reach it and its ``tool_calls`` come back as OpenAI shapes them, streamed and not;
  ``response_format`` reaches it;
* the embedded local backend (the real SmolLM2 GGUF): a forced tool call is generated under a grammar built
  from the tool's schema, a JSON object under the JSON grammar; what it cannot do (choose a tool by itself)
  is a 400 naming ``tool_choice``;
* the Ollama double (no Ollama server can run here): tools are sent in Ollama's shape, Ollama's whole tool
  calls come back as OpenAI ``tool_calls``, a tool result is sent back as a ``tool`` message; a forced tool
  choice, which Ollama cannot do, is a 400.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import openai
import pytest

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RegistryHandle

SMOLLM2 = "smollm2:135m"
TOOL_DOUBLE = "tool-a:latest"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
FORCED = {"type": "function", "function": {"name": "get_weather"}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    api_key = gateway.metadata()[0][1].removeprefix("Bearer ")
    return openai.AsyncOpenAI(base_url=f"{gateway.http_url}/v1", api_key=api_key, max_retries=0)


def weather_arguments(raw: str) -> dict[str, Any]:
    arguments = json.loads(raw)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str)
    assert arguments.get("unit") in ("celsius", "fahrenheit")
    return arguments


async def streamed_tool_calls(stream: Any) -> tuple[dict[int, dict[str, str]], str | None]:
    """Joins the streamed ``delta.tool_calls`` fragments as a client must; returns them and the finish reason."""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for fragment in choice.delta.tool_calls or []:
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = fragment.id or call["id"]
            if fragment.function is not None:
                call["name"] += fragment.function.name or ""
                call["arguments"] += fragment.function.arguments or ""
        finish = choice.finish_reason or finish
    return calls, finish


async def test_tool_calls_from_an_openai_compatible_upstream(
    sdk: openai.AsyncOpenAI, gateway: Gateway, registry: RegistryHandle, llama_openai_server: str
) -> None:
    admin = {"Authorization": f"Bearer {gateway.metadata('root', 'admin')[0][1].removeprefix('Bearer ')}"}
    connection = registry.http.post(
        "/api/v1/connections", json={"type": "openai", "url": f"{llama_openai_server}/v1"}, headers=admin
    )
    assert connection.status_code == 201, connection.text
    assert registry.http.post(f"/api/v1/connections/{connection.json()['id']}/sync", headers=admin).status_code == 200
    model = unique("openai-tools")
    registry.create_model(id=model, base_model_id="gemma-openai", params={"temperature": 0, "seed": 1})
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]

    completion = await sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], tool_choice=FORCED, max_tokens=60
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    assert choice.message.tool_calls[0].id
    weather_arguments(choice.message.tool_calls[0].function.arguments)

    stream = await sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], tool_choice=FORCED, max_tokens=60, stream=True
    )
    calls, finish = await streamed_tool_calls(stream)
    assert finish == "tool_calls" and [c["name"] for c in calls.values()] == ["get_weather"]
    weather_arguments(calls[0]["arguments"])

    # llama-cpp-python's server knows json_object (not json_schema): it reaches the upstream, which then
    # generates under its JSON grammar.
    shaped = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        response_format={"type": "json_object"},
        max_tokens=40,
    )
    assert (shaped.choices[0].message.content or "").lstrip().startswith("{")


async def test_local_backend_makes_forced_tool_calls_and_json_under_a_grammar(
    sdk: openai.AsyncOpenAI,
) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = await sdk.chat.completions.create(
        model=SMOLLM2, messages=messages, tools=[WEATHER], tool_choice=FORCED, max_tokens=48
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    weather_arguments(call.function.arguments)

    # 'required' with one tool is the same as naming it; streamed, the call arrives as one delta.
    stream = await sdk.chat.completions.create(
        model=SMOLLM2, messages=messages, tools=[WEATHER], tool_choice="required", max_tokens=48, stream=True
    )
    calls, finish = await streamed_tool_calls(stream)
    assert finish == "tool_calls" and list(calls) == [0]
    weather_arguments(calls[0]["arguments"])

    # The tool's result goes back and the model answers in text (tool_choice none: no grammar).
    followed = await sdk.chat.completions.create(
        model=SMOLLM2,
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 21}'},
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=24,
    )
    assert followed.choices[0].message.content and not followed.choices[0].message.tool_calls

    shaped = await sdk.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=48,
    )
    # Under the JSON grammar every prefix is valid JSON; a short max_tokens may cut it, so check the start.
    content = shaped.choices[0].message.content or ""
    assert content.lstrip().startswith("{")
    if shaped.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)

    with pytest.raises(openai.BadRequestError) as chooses:
        await sdk.chat.completions.create(model=SMOLLM2, messages=messages, tools=[WEATHER], max_tokens=8)
    assert "tool_choice" in chooses.value.message and "local backend" in chooses.value.message


async def test_ollama_tools_round_trip_and_what_ollama_cannot_do(
    sdk: openai.AsyncOpenAI, ollama_double: OllamaDouble
) -> None:
    city = unique("city")
    messages: Any = [{"role": "user", "content": city}]
    completion = await sdk.chat.completions.create(model=TOOL_DOUBLE, messages=messages, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": city}
    sent = next(r for r in reversed(ollama_double.requests_for(TOOL_DOUBLE)) if r["messages"][-1]["content"] == city)
    assert sent["tools"] == [WEATHER]

    result = unique("sunny")
    followed = await sdk.chat.completions.create(
        model=TOOL_DOUBLE,
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ],
        tools=[WEATHER],
    )
    assert followed.choices[0].message.content.strip() == f"tool said: {result}"  # type: ignore[union-attr]
    back = ollama_double.requests_for(TOOL_DOUBLE)[-1]["messages"]
    assert back[-1] == {"role": "tool", "content": result, "tool_name": "get_weather"}
    assert back[-2]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": city}}}]

    stream = await sdk.chat.completions.create(model=TOOL_DOUBLE, messages=messages, tools=[WEATHER], stream=True)
    calls, finish = await streamed_tool_calls(stream)
    assert finish == "tool_calls" and json.loads(calls[0]["arguments"]) == {"city": city}

    # JSON output becomes Ollama's `format`.
    await sdk.chat.completions.create(
        model=TOOL_DOUBLE, messages=[{"role": "user", "content": "json"}], response_format={"type": "json_object"}
    )
    assert ollama_double.requests_for(TOOL_DOUBLE)[-1]["format"] == "json"

    with pytest.raises(openai.BadRequestError) as forced:
        await sdk.chat.completions.create(model=TOOL_DOUBLE, messages=messages, tools=[WEATHER], tool_choice=FORCED)
    assert "tool_choice" in forced.value.message and "Ollama" in forced.value.message


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "declared twice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tools is empty"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}]},
            "messages[0].tool_calls[0]",
        ),
    ],
)
async def test_bad_tool_fields_are_400s_naming_the_field(
    sdk: openai.AsyncOpenAI, extra: dict[str, Any], named: str
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model=TOOL_DOUBLE, **body)
    assert named in refused.value.message
