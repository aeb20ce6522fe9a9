"""Chat over plain HTTP against the real gateway: images sent with a message (a model without vision gets
the gateway's refusal; a vision model's image is stored and served back by the console when the conversation
is reopened), tool calls of a model file's real MCP tool server streamed and replayed, the per-model thread
mode, the picker's JSON, and a pull started and cancelled through the console while it runs."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
from console_kit import PASSWORD, SMOLLM2, Stack, token, unique
from PIL import Image
from test_console_http import page_csrf, signed_in

from modelhub_devstack.tool_servers import ToolServerEndpoint


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _stream(client: httpx.Client, csrf: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with client.stream(
        "POST", "/chat/stream", json=body, headers={"X-CSRF-Token": csrf, "Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1] == {"type": "end"}
    return events


def _reopened(client: httpx.Client, conversation_id: str) -> dict[str, Any]:
    page = client.get("/chat", params={"conversation": conversation_id})
    assert page.status_code == 200
    data = re.search(r'<script type="application/json" id="conversation-data">(.*?)</script>', page.text, re.S)
    assert data
    result: dict[str, Any] = json.loads(data.group(1))
    return result


def _conversation_id(events: list[dict[str, Any]]) -> str:
    return str(next(e["conversation_id"] for e in events if e["type"] == "turn_started"))


def test_an_image_sent_to_a_model_without_vision_gets_the_gateways_refusal(stack: Stack) -> None:
    client = signed_in(stack, bearer=token(unique("vera"), "user"))
    csrf = page_csrf(client, "/chat")
    image = {"data": base64.b64encode(_png()).decode(), "mime_type": "image/png"}
    events = _stream(client, csrf, {"models": [SMOLLM2], "text": "What is in the picture?", "images": [image]})
    (error,) = [e for e in events if e["type"] == "answer_error"]
    assert error["model_id"] == SMOLLM2 and error["code"] == "vision_not_supported"
    assert "cannot read images" in error["message"]
    assert not [e for e in events if e["type"] == "delta"]


def test_a_vision_models_image_is_stored_and_shown_when_the_conversation_is_reopened(stack: Stack) -> None:
    owner = unique("vic")
    # A context large enough for the image's share of the prompt (the base model's 512 is not).
    model = stack.create_model(
        owner, id=f"{owner}-eyes", name="Eyes", meta={"capabilities": {"vision": True}}, params={"num_ctx": 1024}
    )
    client = signed_in(stack, bearer=token(owner, "user"))
    picker = client.get("/chat/models").json()["models"]
    assert next(m for m in picker if m["id"] == model["id"])["vision"] is True
    assert next(m for m in picker if m["id"] == SMOLLM2)["vision"] is False
    png = _png()
    csrf = page_csrf(client, "/chat")
    events = _stream(
        client,
        csrf,
        {
            "models": [model["id"]],
            "text": "",
            "images": [{"data": base64.b64encode(png).decode(), "mime_type": "image/png"}],
        },
    )
    # The gateway accepts the image for a vision model file; the embedded llama.cpp backend under it reads no
    # images, so the answer itself is that backend's refusal (a real vision backend would answer).
    assert not [e for e in events if e["type"] == "stream_error"]
    (error,) = [e for e in events if e["type"] == "answer_error"]
    assert error["model_id"] == model["id"] and error["message"] == "the local backend cannot read images"
    (turn,) = _reopened(client, _conversation_id(events))["turns"]
    (image_url,) = turn["images"]
    assert image_url.startswith("/chat/image?")
    served = client.get(image_url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == png
    stranger = signed_in(stack, bearer=token(unique("sam"), "user"))
    assert stranger.get(image_url).status_code == 404  # the gateway checks who may read the conversation


def test_bad_images_are_refused_before_the_gateway(stack: Stack) -> None:
    client = signed_in(stack, bearer=token(unique("val"), "user"))
    csrf = page_csrf(client, "/chat")
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    not_base64 = client.post(
        "/chat/stream",
        json={"models": [SMOLLM2], "text": "hi", "images": [{"data": "***not base64***", "mime_type": "image/png"}]},
        headers=headers,
    )
    assert not_base64.status_code == 422 and "not valid base64" in not_base64.json()["error"]["message"]
    svg = client.post(
        "/chat/stream",
        json={"models": [SMOLLM2], "text": "hi", "images": [{"data": "PHN2Zz4=", "mime_type": "image/svg+xml"}]},
        headers=headers,
    )
    assert svg.status_code == 422
    empty = client.post("/chat/stream", json={"models": [SMOLLM2], "text": "  "}, headers=headers)
    assert empty.status_code == 422 and "type a message" in empty.json()["error"]["message"]


def test_tool_calls_stream_into_the_transcript_and_come_back_when_reopened(
    stack: Stack, mcp_tool_server: ToolServerEndpoint
) -> None:
    owner = unique("tess")
    model_id, server_id = stack.create_tool_model(owner, f"{owner}-tools", "With tools", mcp_tool_server)
    client = signed_in(stack, bearer=token(owner, "user"))
    events = _stream(client, page_csrf(client, "/chat"), {"models": [model_id], "text": "Say hello to Ada."})
    (call,) = [e for e in events if e["type"] == "tool_call"]
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert call["model_id"] == model_id and call["tool"] == "echo" and call["server_id"] == server_id
    arguments = json.loads(call["arguments"])
    assert result["id"] == call["id"] and result["ok"] is True and result["content"] == arguments["text"]
    order = [e["type"] for e in events]
    assert order.index("tool_call") < order.index("tool_result") < order.index("answer_done")

    (turn,) = _reopened(client, _conversation_id(events))["turns"]
    (answer,) = turn["columns"][0]["answers"]
    (step,) = answer["tool_steps"]
    assert step["call"]["tool"] == "echo" and step["call"]["id"] == call["id"] and step["call"]["step"] == 1
    assert step["result"]["ok"] is True and step["result"]["content"] == arguments["text"]


def test_the_per_model_thread_mode_reaches_the_gateway_and_is_restored(stack: Stack) -> None:
    owner = unique("pat")
    other = stack.create_model(owner, id=f"{owner}-other", name="Other", params={"max_tokens": 4})
    client = signed_in(stack, bearer=token(owner, "user"))
    csrf = page_csrf(client, "/chat")
    assert 'id="context-mode"' in client.get("/chat").text
    first = _stream(client, csrf, {"models": [SMOLLM2, other["id"]], "text": "Hi", "context_mode": "per_model"})
    conversation_id = _conversation_id(first)
    (turn,) = _reopened(client, conversation_id)["turns"]
    assert turn["context_mode"] == "per_model"
    _stream(client, csrf, {"models": [SMOLLM2], "text": "Again", "conversation_id": conversation_id})
    turns = _reopened(client, conversation_id)["turns"]
    assert [t["context_mode"] for t in turns] == ["per_model", "shared"]  # each turn keeps its own mode
    refused = client.post(
        "/chat/stream",
        json={"models": [SMOLLM2], "text": "hi", "context_mode": "everyone"},
        headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
    )
    assert refused.status_code == 422


def _events(client: httpx.Client, pull_id: str) -> Any:
    with client.stream("GET", "/pulls/events", params={"id": pull_id}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def test_a_running_pull_is_cancelled_through_the_console(stack: Stack, slow_model: str) -> None:
    client = signed_in(stack, username="alice", password=PASSWORD)
    csrf = page_csrf(client, "/chat")
    assert 'id="chat-pull"' in client.get("/chat").text  # the picker offers pulls
    started = client.post("/pulls", json={"model": slow_model}, headers={"X-CSRF-Token": csrf})
    assert started.status_code == 200, started.text
    pull_id = started.json()["id"]
    seen: list[str] = []
    for event in _events(client, pull_id):
        seen.append(event["type"])
        if event["type"] == "progress" and event.get("completed_bytes", 0) > 0 and "cancel" not in seen:
            seen.append("cancel")
            cancelled = client.post("/pulls/cancel", json={"id": pull_id}, headers={"X-CSRF-Token": csrf})
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["id"] == pull_id
    assert "cancel" in seen and seen[-1] == "cancelled", seen
    # Cancelling an ended pull changes nothing and says how it ended (the puller's job state).
    again = client.post("/pulls/cancel", json={"id": pull_id}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    without_csrf = client.post("/pulls/cancel", json={"id": pull_id})
    assert without_csrf.status_code == 403
