"""``modelhub chat`` against a small in-process ChatService (a fake of our own gRPC interface).

The fake answers each model with ``<model> says: <text>`` and records the requests; the gateway itself is
tested in services/chat-gateway against real models.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_cli.main import app


@dataclass
class FakeChatService(chat_pb2_grpc.ChatServiceServicer):
    requests: list[chat_pb2.ChatRequest] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    messages: dict[str, list[chat_pb2.Message]] = field(default_factory=dict)
    actions: list[tuple[str, str]] = field(default_factory=list)

    def Chat(self, request: chat_pb2.ChatRequest, context: Any) -> Iterator[chat_pb2.ChatEvent]:  # noqa: N802
        self.requests.append(request)
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        if "missing" in request.models:
            context.abort(grpc.StatusCode.NOT_FOUND, "model_not_found: model 'missing' does not exist")
        E = chat_pb2.ChatEvent  # noqa: N806
        conversation_id = request.conversation_id or str(uuid.uuid4())
        user = chat_pb2.Message(id=str(uuid.uuid4()), role="user", content=request.message.text)
        self.messages.setdefault(conversation_id, []).append(user)
        yield E(turn_started=E.TurnStarted(conversation_id=conversation_id, user_message_id=user.id))
        for model in request.models:
            answer_id = f"{model}-{len(self.requests)}"
            yield E(model_id=model, answer_started=E.AnswerStarted(message_id=answer_id))
            if model == "broken":
                yield E(model_id=model, answer_error=E.AnswerError(code="backend_error", message="it broke"))
                continue
            if model == "agent":
                call = chat_pb2.ToolCall(id="c1", tool="add", arguments='{"a": 2, "b": 3}', server_id="calc", step=1)
                yield E(model_id=model, tool_call=call)
                result = chat_pb2.ToolResult(id="c1", ok=True, content="5", duration_seconds=0.004)
                yield E(model_id=model, tool_result=result)
            for word in f"{model} says: {request.message.text}".split(" "):
                yield E(model_id=model, delta=E.Delta(text=word + " "))
            yield E(
                model_id=model,
                answer_done=E.AnswerDone(finish_reason="stop", usage=chat_pb2.Usage(completion_tokens=3)),
            )
            self.messages[conversation_id].append(
                chat_pb2.Message(
                    id=answer_id,
                    parent_id=user.id,
                    role="assistant",
                    model_id=model,
                    content=f"{model} says: {request.message.text}",
                )
            )
        yield E(turn_done=E.TurnDone())

    def RunAction(self, request: chat_pb2.RunActionRequest, context: Any) -> chat_pb2.Message:  # noqa: N802
        self.actions.append((request.message_id, request.action_id))
        if request.action_id != "calc/echo":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid_request: action_id: '{request.action_id}' is no action"
            )
        return chat_pb2.Message(
            id="act-1", parent_id=request.message_id, role="action", status="done", content="echoed"
        )

    def SelectAnswer(self, request: chat_pb2.SelectAnswerRequest, context: Any) -> chat_pb2.Conversation:  # noqa: N802
        self.selected.append(request.message_id)
        return chat_pb2.Conversation(id=request.conversation_id, current_message_id=request.message_id)

    def GetConversation(self, request: chat_pb2.GetConversationRequest, context: Any) -> chat_pb2.Conversation:  # noqa: N802
        messages = self.messages.get(request.conversation_id, [])
        return chat_pb2.Conversation(
            id=request.conversation_id, messages=messages, current_message_id=messages[-1].id if messages else ""
        )


@pytest.fixture
def fake_gateway() -> Iterator[tuple[str, FakeChatService]]:
    service = FakeChatService()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    chat_pb2_grpc.add_ChatServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", service
    server.stop(0)


def run(target: str, *args: str, input: str | None = None, tmp: Path) -> Any:
    env = {"MODELHUB_GATEWAY_GRPC": target, "MODELHUB_TOKEN": "tok", "MODELHUB_HOME": str(tmp), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["chat", *args], env=env, input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_one_shot_prints_both_answers(fake_gateway: tuple[str, FakeChatService], tmp_path: Path) -> None:
    target, service = fake_gateway
    result = run(target, "-m", "gemma3:270m", "-m", "pirate", "hello", tmp=tmp_path)
    assert result.exit_code == 0, result.output
    assert "gemma3:270m says: hello" in result.output and "pirate says: hello" in result.output
    assert list(service.requests[0].models) == ["gemma3:270m", "pirate"]
    assert service.tokens == ["Bearer tok"]


def test_image_and_per_model_options(fake_gateway: tuple[str, FakeChatService], tmp_path: Path) -> None:
    target, service = fake_gateway
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG fake")
    result = run(target, "-m", "llava", "--image", str(picture), "--per-model", "what is this?", tmp=tmp_path)
    assert result.exit_code == 0, result.output
    request = service.requests[0]
    assert request.message.images[0].data == b"\x89PNG fake" and request.message.images[0].mime_type == "image/png"
    assert request.context_mode == chat_pb2.CONTEXT_MODE_PER_MODEL


def test_interactive_switch_pick_history_and_new(fake_gateway: tuple[str, FakeChatService], tmp_path: Path) -> None:
    target, service = fake_gateway
    script = "\n".join(["first", "/pick 2", "/switch c", "second", "/history", "/new", "third", "/quit"]) + "\n"
    result = run(target, "-m", "a", "-m", "b", input=script, tmp=tmp_path)
    assert result.exit_code == 0, result.output
    assert [list(r.models) for r in service.requests] == [["a", "b"], ["c"], ["c"]]
    assert service.selected == ["b-1"]
    # The second turn continued the conversation; /new started another.
    assert service.requests[1].conversation_id and service.requests[2].conversation_id == ""
    assert "c says: second" in result.output and "you: second" in result.output


def test_errors_are_clear_and_exit_non_zero(fake_gateway: tuple[str, FakeChatService], tmp_path: Path) -> None:
    target, _ = fake_gateway
    missing = run(target, "-m", "missing", "hi", tmp=tmp_path)
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output
    broken = run(target, "-m", "broken", "hi", tmp=tmp_path)
    assert broken.exit_code == 1 and "it broke" in broken.output
    three = run(target, "-m", "a", "-m", "b", "-m", "c", "hi", tmp=tmp_path)
    assert three.exit_code == 1 and "one or two models" in three.output


def test_no_model_means_the_default_one(
    fake_gateway: tuple[str, FakeChatService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, service = fake_gateway
    monkeypatch.delenv("MODELHUB_DEFAULT_MODEL", raising=False)
    assert run(target, "hi", tmp=tmp_path).exit_code == 0
    assert list(service.requests[-1].models) == ["smollm2:135m"]
    monkeypatch.setenv("MODELHUB_DEFAULT_MODEL", "house-model")
    assert run(target, "hi", tmp=tmp_path).exit_code == 0
    assert list(service.requests[-1].models) == ["house-model"]


def test_tool_steps_are_shown_inline_and_actions_run_on_the_last_answer(
    fake_gateway: tuple[str, FakeChatService], tmp_path: Path
) -> None:
    target, service = fake_gateway
    one_shot = run(target, "-m", "agent", "what is 2 + 3?", tmp=tmp_path)
    assert one_shot.exit_code == 0, one_shot.output
    assert '→ add({"a": 2, "b": 3}) on calc' in one_shot.output and "← add: 5 (4 ms)" in one_shot.output

    script = "\n".join(["hello", "/action calc/echo", "/action nope", "/quit"]) + "\n"
    interactive = run(target, "-m", "agent", input=script, tmp=tmp_path)
    assert interactive.exit_code == 0, interactive.output
    assert service.actions == [("agent-2", "calc/echo"), ("agent-2", "nope")]
    assert "echoed" in interactive.output and "is no action" in interactive.output
