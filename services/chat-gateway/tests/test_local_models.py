"""Two local models (the real Gemma 3 270M GGUF, run in-process) answering one turn concurrently."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Gateway, RegistryHandle

GEMMA = "gemma3:270m"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_two_local_models_answer_concurrently_and_deterministically(
    gateway: Gateway, registry: RegistryHandle
) -> None:
    pirate = unique("pirate")
    poet = unique("poet")
    registry.create_model(id=pirate, base_model_id=GEMMA, params={"system": "You are a pirate."})
    registry.create_model(id=poet, base_model_id=GEMMA, params={"system": "You are a poet.", "max_tokens": 4})

    first = await gateway.chat([pirate, poet], "Hello there")
    assert first.turn_done
    for model in (pirate, poet):
        answer = first.answers[model]
        assert answer.error is None, answer.error
        assert answer.done is not None and answer.text
        assert answer.done.usage.completion_tokens > 0
    # max_tokens from the model file reached the backend: the poet stops earlier.
    assert first.answers[poet].done.usage.completion_tokens <= 4  # type: ignore[union-attr]

    # Temperature 0 and a seed make the text reproducible, so a second conversation answers the same.
    second = await gateway.chat([pirate, poet], "Hello there")
    assert {m: a.text for m, a in second.answers.items()} == {m: a.text for m, a in first.answers.items()}

    conversation = await gateway.conversation(first.conversation_id)
    by_id: dict[str, Any] = {m.id: m for m in conversation.messages}
    user = by_id[first.user_message_id]
    assert user.role == "user" and user.content == "Hello there"
    assert sorted(user.children_ids) == sorted(a.message_id for a in first.answers.values())
    for answer in first.answers.values():
        stored = by_id[answer.message_id]
        assert (stored.status, stored.content, stored.model_id) == ("done", answer.text, answer.model_id)
    # The first model's answer continues the conversation.
    assert conversation.current_message_id == first.answers[pirate].message_id


async def test_modelhub_chat_cli_talks_to_two_local_models(
    gateway: Gateway, registry: RegistryHandle, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from modelhub_cli.main import app

    helper = unique("helper")
    registry.create_model(id=helper, base_model_id=GEMMA, params={"system": "You are helpful."})
    env = {
        "MODELHUB_GATEWAY_GRPC": f"127.0.0.1:{gateway.app.state.grpc_port}",
        "MODELHUB_TOKEN": gateway.metadata()[0][1].removeprefix("Bearer "),
        "MODELHUB_HOME": str(tmp_path),
        "COLUMNS": "200",
    }
    # The CLI is synchronous: run it off the event loop the test shares with nothing else that must run.
    result = await asyncio.to_thread(CliRunner().invoke, app, ["chat", "-m", GEMMA, "-m", helper, "hello"], env=env)
    assert result.exit_code == 0, result.output
    assert GEMMA in result.output and helper in result.output and "done" in result.output
