"""The server-side tool loop: a model file's tool servers (a real MCP server and a real OpenAPI server, started
as processes by the devstack fixtures, registered in the real registry) run on the gateway.

Models: the Ollama double's "agent" models (a stand-in for an Ollama server, which cannot run here) decide
deterministically which tools to call from the user's words (see ``_agent`` in conftest.py); SmolLM2, the real
local model, is made to call a tool with the model file's ``tool_choice``, under a llama.cpp grammar.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import openai
import pytest

from modelhub.chat.v1 import chat_pb2
from modelhub_common.auth import verify_token
from modelhub_devstack.tool_servers import ToolServerEndpoint

if TYPE_CHECKING:
    from conftest import Gateway, RegistryHandle

SMOLLM2 = "smollm2:135m"


def bearer(gateway: Gateway, subject: str = "root", role: str = "admin") -> str:
    return gateway.metadata(subject, role)[0][1]


def _register(
    registry: RegistryHandle,
    gateway: Gateway,
    server: ToolServerEndpoint,
    *,
    access: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    server_id = f"{server.kind}-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "id": server_id,
        "name": f"test {server.kind} tools",
        "kind": server.kind,
        "url": server.url,
        "auth": "bearer" if server.token else "none",
        "access_control": access,
        **extra,
    }
    if server.token:
        body["secret"] = server.token
    response = registry.http.post("/api/v1/tool-servers", json=body, headers={"Authorization": bearer(gateway)})
    assert response.status_code == 201, response.text
    assert {t["name"] for t in response.json()["tools"]} >= {"add", "echo", "sleep", "fail"}
    return server_id


def _agent_file(registry: RegistryHandle, tool_ids: list[str], base: str = "agent-a:latest", **meta: Any) -> str:
    model_id = f"agent-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=model_id, base_model_id=base, meta={"toolIds": tool_ids, **meta})
    return model_id


async def _listed(gateway: Gateway, model_id: str) -> chat_pb2.ModelSummary:
    """The model's selector entry, once the gateway's catalog has seen the registry's event for it."""
    for _ in range(200):
        listed = await gateway.stub.ListModels(chat_pb2.ListModelsRequest(), metadata=gateway.metadata())
        found = [m for m in listed.models if m.id == model_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model_id} never reached the selector")


@pytest.fixture
async def tool_gateway(gateway_factory: Any) -> Gateway:
    gateway: Gateway = await gateway_factory(allow_private_urls=True)  # the tool servers listen on loopback
    return gateway


async def test_a_model_files_mcp_tool_runs_on_the_server_and_its_result_is_fed_back(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint, ollama_double: Any
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    model_id = _agent_file(registry, [server_id])

    turn = await tool_gateway.chat([model_id], 'call add {"a": 2, "b": 3}')

    answer = turn.answers[model_id]
    assert answer.error is None, answer.error
    assert [(c.tool, json.loads(c.arguments), c.server_id, c.step) for c in answer.tool_calls] == [
        ("add", {"a": 2, "b": 3}, server_id, 1)
    ]
    assert [(r.id, r.ok, r.content.strip()) for r in answer.tool_results] == [(answer.tool_calls[0].id, True, "5")]
    assert answer.text.strip() == "[agent-a:latest] tools said: add=5"
    # The backend was offered the tools in Ollama's shape and got the result as a tool message.
    second = ollama_double.requests_for("agent-a:latest")[-1]
    assert {t["function"]["name"] for t in second["tools"]} >= {"add", "echo"}
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["content"].strip() == "5"
    # Events come in order: the call, its result, then the text.
    kinds = [e.WhichOneof("event") for e in turn.events if e.model_id == model_id]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("delta")

    conversation = await tool_gateway.conversation(turn.conversation_id)
    stored = next(m for m in conversation.messages if m.id == answer.message_id)
    assert [(s.call.tool, s.result.ok, s.result.content.strip()) for s in stored.tool_steps] == [("add", True, "5")]


async def test_parallel_calls_failures_and_bad_arguments_are_results_the_model_sees(
    tool_gateway: Gateway, registry: RegistryHandle, openapi_tool_server: ToolServerEndpoint
) -> None:
    server_id = _register(registry, tool_gateway, openapi_tool_server)
    model_id = _agent_file(registry, [server_id])

    turn = await tool_gateway.chat(
        [model_id], 'call echo {"text": "hi"}; fail {"message": "boom"}; add {"a": "two", "b": 3}'
    )

    answer = turn.answers[model_id]
    assert answer.error is None and answer.done is not None
    assert [c.tool for c in answer.tool_calls] == ["echo", "fail", "add"]
    assert {c.step for c in answer.tool_calls} == {1}  # one round: the three ran together
    results = {r.id: r for r in answer.tool_results}
    by_tool = {c.tool: results[c.id] for c in answer.tool_calls}
    assert by_tool["echo"].ok and json.loads(by_tool["echo"].content) == "hi"  # the operation's JSON answer
    assert not by_tool["fail"].ok and by_tool["fail"].error_code == "tool_error" and "boom" in by_tool["fail"].content
    assert not by_tool["add"].ok and by_tool["add"].error_code == "invalid_arguments"
    async with httpx.AsyncClient(base_url=tool_gateway.http_url) as http:
        metrics = (await http.get("/metrics")).text
    for outcome in ("ok", "error", "invalid_arguments"):
        assert f'modelhub_gateway_tool_steps_total{{outcome="{outcome}"}} 1.0' in metrics, outcome
    assert "a" in by_tool["add"].content
    assert 'tools said: echo="hi"' in answer.text and "fail=" in answer.text


async def test_a_slow_tool_times_out_and_the_step_limit_ends_the_loop(
    gateway_factory: Any, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint
) -> None:
    gateway: Gateway = await gateway_factory(allow_private_urls=True, tool_max_steps=2)
    server_id = _register(registry, gateway, mcp_tool_server, timeout_seconds=0.5)
    model_id = _agent_file(registry, [server_id])

    slow = (await gateway.chat([model_id], 'call sleep {"seconds": 5}')).answers[model_id]
    assert [(r.ok, r.error_code) for r in slow.tool_results] == [(False, "timeout")]
    assert slow.done is not None

    # The loop on a registration without the short timeout: a loaded machine may take over 0.5 s for "add".
    patient = _agent_file(registry, [_register(registry, gateway, mcp_tool_server)])
    looping = (await gateway.chat([patient], 'loop add {"a": 1, "b": 1}')).answers[patient]
    assert [c.step for c in looping.tool_calls] == [1, 2]
    assert all(r.ok for r in looping.tool_results)
    assert "tool_steps_exhausted" in [w.code for w in looping.warnings]
    assert looping.done is not None and looping.text.strip()


async def test_two_models_run_their_own_loops_in_one_turn(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    first = _agent_file(registry, [server_id], base="agent-a:latest")
    second = _agent_file(registry, [f"server:mcp:{server_id}"], base="agent-b:latest")  # Open WebUI's id form

    turn = await tool_gateway.chat([first, second], 'call echo {"text": "both"}')

    for model_id, base in ((first, "agent-a:latest"), (second, "agent-b:latest")):
        answer = turn.answers[model_id]
        assert [r.content.strip() for r in answer.tool_results] == ["both"]
        assert answer.text.strip() == f"[{base}] tools said: echo=both"
    assert turn.answers[first].tool_calls[0].id != turn.answers[second].tool_calls[0].id


async def test_a_caller_without_access_to_the_tool_server_gets_a_warning_and_no_tools(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint, ollama_double: Any
) -> None:
    server_id = _register(
        registry, tool_gateway, mcp_tool_server, access={"read": {"user_ids": ["someone-else"], "group_ids": []}}
    )
    model_id = _agent_file(registry, [server_id, "no-such-server"])

    turn = await tool_gateway.chat([model_id], 'call add {"a": 2, "b": 3}', subject="alice", role="user")

    answer = turn.answers[model_id]
    assert not answer.tool_calls
    unavailable = [w.message for w in answer.warnings if w.code == "tool_unavailable"]
    assert len(unavailable) == 2 and any(server_id in w for w in unavailable)
    assert "tools" not in ollama_double.requests_for("agent-a:latest")[-1]
    assert answer.text.strip() == '[agent-a:latest] call add {"a": 2, "b": 3}'


async def test_forwarded_caller_token_reaches_the_tool_server(
    tool_gateway: Gateway,
    registry: RegistryHandle,
    mcp_tool_server_open: ToolServerEndpoint,
    gateway_jwt_secret: str,
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server_open, auth="forward")
    model_id = _agent_file(registry, [server_id])

    turn = await tool_gateway.chat([model_id], "call whoami {}", subject="alice", role="user")

    result = turn.answers[model_id].tool_results[0]
    # The caller's own token (compared by its claims: a token made now may differ in its issue time).
    scheme, _, token = result.content.strip().partition(" ")
    assert result.ok and scheme == "Bearer", result.content
    claims = verify_token(token, gateway_jwt_secret)
    assert (claims.subject, claims.role) == ("alice", "user")


async def test_the_local_model_forced_to_call_a_tool_gets_its_result_and_answers(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint, prompt_recorder: Any
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    model_id = f"smol-tools-{uuid.uuid4().hex[:8]}"
    registry.create_model(
        id=model_id,
        base_model_id=SMOLLM2,
        meta={"toolIds": [server_id]},
        params={"tool_choice": "echo", "max_tokens": 48},
    )

    turn = await tool_gateway.chat([model_id], "Say hello to Ada.")

    answer = turn.answers[model_id]
    assert answer.error is None, answer.error
    assert [c.tool for c in answer.tool_calls] == ["echo"]
    arguments = json.loads(answer.tool_calls[0].arguments)  # generated under the schema's grammar
    assert isinstance(arguments.get("text"), str)
    assert answer.tool_results[0].ok and answer.tool_results[0].content == arguments["text"]
    assert answer.done is not None and answer.text.strip()  # the second round answers in text
    assert "Result of tool call" in prompt_recorder.prompts[-1][1]


async def test_a_local_model_file_with_tools_but_no_tool_choice_is_told_what_to_set(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    model_id = f"smol-auto-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=model_id, base_model_id=SMOLLM2, meta={"toolIds": [server_id]})

    answer = (await tool_gateway.chat([model_id], "hi")).answers[model_id]

    assert answer.error is not None and answer.error.code == "invalid_request"
    assert "params.tool_choice" in answer.error.message


async def test_openai_api_runs_server_tools_and_returns_client_tools(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    model_id = _agent_file(registry, [server_id])
    client = openai.AsyncOpenAI(
        base_url=f"{tool_gateway.http_url}/v1",
        api_key=bearer(tool_gateway, "alice", "user").removeprefix("Bearer "),
        max_retries=0,
    )
    lookup = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }

    served = await client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": 'call add {"a": 20, "b": 22}'}], tools=[lookup]
    )
    assert served.choices[0].message.content is not None
    assert served.choices[0].message.content.strip() == "[agent-a:latest] tools said: add=42"
    assert not served.choices[0].message.tool_calls

    returned = await client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": 'call lookup {"q": "x"}'}], tools=[lookup]
    )
    choice = returned.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("lookup", {"q": "x"})
    ]

    stream = await client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": 'call echo {"text": "streamed"}'}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.strip() == "[agent-a:latest] tools said: echo=streamed"

    async with httpx.AsyncClient(base_url=tool_gateway.http_url) as http:
        clash = await http.post(
            "/v1/chat/completions",
            json={
                "model": model_id,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
            },
            headers={"Authorization": bearer(tool_gateway, "alice", "user")},
        )
    assert clash.status_code == 400 and "add" in clash.json()["error"]["message"]


async def test_an_action_runs_on_a_finished_answer_and_is_stored_as_its_child(
    tool_gateway: Gateway, registry: RegistryHandle, mcp_tool_server: ToolServerEndpoint
) -> None:
    server_id = _register(registry, tool_gateway, mcp_tool_server)
    model_id = f"agent-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=model_id, base_model_id="echo-a:latest", meta={"actionIds": [f"{server_id}/echo"]})
    summary = await _listed(tool_gateway, model_id)
    assert [(a.id, a.name) for a in summary.actions] == [(f"{server_id}/echo", "echo")]

    turn = await tool_gateway.chat([model_id], "repeat me")
    answer = turn.answers[model_id]
    request = chat_pb2.RunActionRequest(
        conversation_id=turn.conversation_id, message_id=answer.message_id, action_id=f"{server_id}/echo"
    )
    result = await tool_gateway.stub.RunAction(request, metadata=tool_gateway.metadata())

    assert result.role == "action" and result.status == "done" and result.parent_id == answer.message_id
    assert result.content.strip() == answer.text.strip()
    assert result.action_id == f"{server_id}/echo" and result.tool_steps[0].call.tool == "echo"
    conversation = await tool_gateway.conversation(turn.conversation_id)
    parent = next(m for m in conversation.messages if m.id == answer.message_id)
    assert result.id in parent.children_ids
    assert conversation.current_message_id == answer.message_id  # an action does not move the conversation on

    unknown = chat_pb2.RunActionRequest(
        conversation_id=turn.conversation_id, message_id=answer.message_id, action_id="nope/echo"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tool_gateway.stub.RunAction(unknown, metadata=tool_gateway.metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not an action of" in (refused.value.details() or "")
