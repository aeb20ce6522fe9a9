"""Turns through the gRPC API against the Ollama double (which records what each model was sent)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from modelhub.chat.v1 import chat_pb2

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RegistryHandle

GEMMA = "gemma3:270m"
A, B, C = "echo-a:latest", "echo-b:latest", "echo-c:latest"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sent(double: OllamaDouble, model: str, marker: str) -> dict[str, Any]:
    """The last request ``model`` received whose last message contains ``marker``."""
    matching = [r for r in double.requests_for(model) if marker in r["messages"][-1]["content"]]
    assert matching, f"{model} never received {marker!r}"
    return matching[-1]


def contents(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"].strip()) for m in request["messages"]]


async def test_both_models_stream_concurrently(gateway: Gateway, ollama_double: OllamaDouble) -> None:
    # Each barrier model answers only after the other's request arrived: run one after the other, and the
    # first would give up waiting.
    ollama_double.barrier_arrivals.clear()
    result = await gateway.chat(["barrier-a:latest", "barrier-b:latest"], "together")
    for answer in result.answers.values():
        assert answer.error is None, answer.error
        assert answer.text.strip() == f"[{answer.model_id}] together"
    kinds = [e.WhichOneof("event") for e in result.events]
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_done"


async def test_system_prompt_variables_and_params_are_applied_per_backend(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    model = unique("helper")
    registry.create_model(
        id=model,
        base_model_id=A,
        params={"system": "Help {{ USER_NAME }} on {{ CURRENT_DATE }}.", "max_tokens": 77, "temperature": 0.3},
    )
    marker = unique("hi")
    result = await gateway.chat([model], marker, params={"temperature": 0.9, "top_k": 12})
    assert result.answers[model].done is not None
    request = sent(ollama_double, A, marker)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert request["messages"][0] == {"role": "system", "content": f"Help alice on {today}."}
    # max_tokens is Ollama's num_predict; the request's temperature overrides the model file's.
    assert request["options"]["num_predict"] == 77
    assert request["options"]["temperature"] == 0.9
    # Struct numbers are doubles on the wire; integers reach the backend as integers.
    assert request["options"]["top_k"] == 12 and isinstance(request["options"]["top_k"], int)
    assert "max_tokens" not in request["options"] and "system" not in request["options"]


async def test_shared_context_shows_the_selected_answer_and_per_model_each_models_own(
    gateway: Gateway, ollama_double: OllamaDouble
) -> None:
    first = await gateway.chat([A, B], "one")
    conversation_id = first.conversation_id
    shared_marker = unique("two")
    await gateway.chat([A, B], shared_marker, conversation_id=conversation_id)
    # SHARED: B sees the selected answer of turn one, which is A's.
    assert contents(sent(ollama_double, B, shared_marker))[:2] == [("user", "one"), ("assistant", f"[{A}] one")]

    again = await gateway.chat([A, B], "one")
    per_marker = unique("two")
    await gateway.chat([A, B], per_marker, conversation_id=again.conversation_id, mode=chat_pb2.CONTEXT_MODE_PER_MODEL)
    # PER_MODEL: each model sees its own earlier answer.
    assert contents(sent(ollama_double, B, per_marker))[:2] == [("user", "one"), ("assistant", f"[{B}] one")]
    assert contents(sent(ollama_double, A, per_marker))[:2] == [("user", "one"), ("assistant", f"[{A}] one")]


async def test_three_turns_switching_models_keep_the_whole_context(
    gateway: Gateway, ollama_double: OllamaDouble
) -> None:
    first = await gateway.chat([A], "first question")
    second_marker = unique("second")
    await gateway.chat([B], second_marker, conversation_id=first.conversation_id)
    third_marker = unique("third")
    third = await gateway.chat([C], third_marker, conversation_id=first.conversation_id)
    assert third.answers[C].done is not None
    # The second model saw the first one's answer; the third saw both earlier turns.
    assert contents(sent(ollama_double, B, second_marker)) == [
        ("user", "first question"),
        ("assistant", f"[{A}] first question"),
        ("user", second_marker),
    ]
    assert contents(sent(ollama_double, C, third_marker)) == [
        ("user", "first question"),
        ("assistant", f"[{A}] first question"),
        ("user", second_marker),
        ("assistant", f"[{B}] {second_marker}"),
        ("user", third_marker),
    ]


async def test_select_answer_and_regenerate(gateway: Gateway, ollama_double: OllamaDouble) -> None:
    first = await gateway.chat([A, B], "pick one")
    b_answer = first.answers[B].message_id
    conversation = await gateway.stub.SelectAnswer(
        chat_pb2.SelectAnswerRequest(conversation_id=first.conversation_id, message_id=b_answer),
        metadata=gateway.metadata(),
    )
    assert conversation.current_message_id == b_answer
    follow_up = unique("next")
    await gateway.chat([A], follow_up, conversation_id=first.conversation_id)
    # The conversation continued from B's answer, and A (SHARED) saw it.
    assert contents(sent(ollama_double, A, follow_up))[:2] == [("user", "pick one"), ("assistant", f"[{B}] pick one")]

    regenerated = await gateway.regenerate(first.conversation_id, first.answers[A].message_id)
    new_answer = regenerated.answers[A]
    assert new_answer.done is not None and new_answer.text.strip() == f"[{A}] pick one"
    conversation = await gateway.conversation(first.conversation_id)
    by_id = {m.id: m for m in conversation.messages}
    user = by_id[first.user_message_id]
    assert new_answer.message_id in user.children_ids and len(user.children_ids) == 3
    assert conversation.current_message_id == new_answer.message_id
    # Regenerating asks only that model, with the history before the turn.
    assert contents(sent(ollama_double, A, "pick one")) == [("user", "pick one")]


async def test_image_to_a_model_without_vision_fails_that_answer_only(
    gateway: Gateway, ollama_double: OllamaDouble
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    image = chat_pb2.Image(data=png, mime_type="image/png")
    marker = unique("look")
    result = await gateway.chat([A, "vision-llava:latest"], marker, images=[image])
    refused = result.answers[A]
    assert refused.error is not None and refused.error.code == "vision_not_supported"
    assert A in refused.error.message and "vision" in refused.error.message
    seen = result.answers["vision-llava:latest"]
    assert seen.error is None and seen.done is not None
    request = sent(ollama_double, "vision-llava:latest", marker)
    assert len(request["messages"][-1]["images"]) == 1
    assert not [r for r in ollama_double.requests_for(A) if marker in r["messages"][-1]["content"]]
    conversation = await gateway.conversation(result.conversation_id)
    user = next(m for m in conversation.messages if m.id == result.user_message_id)
    assert len(user.image_urls) == 1
    # The vision answer continues the conversation because the first model's failed.
    assert conversation.current_message_id == seen.message_id


async def test_one_model_failing_does_not_fail_the_other(gateway: Gateway) -> None:
    result = await gateway.chat(["fail-x:latest", B], "go")
    failed = result.answers["fail-x:latest"]
    assert failed.error is not None and "500" in failed.error.message
    assert result.answers[B].done is not None and result.turn_done
    conversation = await gateway.conversation(result.conversation_id)
    statuses = {m.model_id: m.status for m in conversation.messages if m.role == "assistant"}
    assert statuses == {"fail-x:latest": "error", B: "done"}


async def test_cancelling_closes_both_upstream_streams_and_keeps_partial_answers(
    gateway: Gateway, ollama_double: OllamaDouble
) -> None:
    models = ["slow-a:latest", "slow-b:latest"]
    before = len(ollama_double.closed_early)
    call = gateway.stub.Chat(
        chat_pb2.ChatRequest(models=models, message=chat_pb2.UserMessage(text="long")), metadata=gateway.metadata()
    )
    conversation_id, deltas = "", dict.fromkeys(models, 0)
    async for event in call:
        if event.WhichOneof("event") == "turn_started":
            conversation_id = event.turn_started.conversation_id
        if event.WhichOneof("event") == "delta":
            deltas[event.model_id] += 1
        if all(n >= 2 for n in deltas.values()):
            break
    call.cancel()
    for _ in range(200):  # the double records the closed streams as it notices them
        if len(ollama_double.closed_early) - before >= 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(ollama_double.closed_early[before:]) == models
    for _ in range(200):
        conversation = await gateway.conversation(conversation_id)
        answers = [m for m in conversation.messages if m.role == "assistant"]
        if all(m.status == "cancelled" for m in answers):
            break
        await asyncio.sleep(0.05)
    assert {m.status for m in answers} == {"cancelled"}
    assert all(m.content.startswith("t0 t1") for m in answers)


async def test_first_token_timeout_is_a_clear_error(gateway_factory: Any) -> None:
    gateway = await gateway_factory(first_token_timeout_seconds=0.5)
    result = await gateway.chat(["silent-x:latest", A], "anyone?")
    error = result.answers["silent-x:latest"].error
    assert error is not None and error.code == "first_token_timeout" and "0.5 s" in error.message
    assert result.answers[A].done is not None


async def test_history_is_trimmed_to_num_ctx_with_a_warning(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    model = unique("small-ctx")
    registry.create_model(id=model, base_model_id=A, params={"num_ctx": 400, "max_tokens": 50})
    first = await gateway.chat([model], "x" * 300)
    conversation_id = first.conversation_id
    for n in range(3):
        turn = await gateway.chat([model], f"turn {n} " + "y" * 300, conversation_id=conversation_id)
        assert turn.answers[model].done is not None
    marker = unique("last")
    last = await gateway.chat([model], marker, conversation_id=conversation_id)
    warnings = last.answers[model].warnings
    assert [w.code for w in warnings] == ["context_trimmed"]
    assert "oldest" in warnings[0].message
    request = sent(ollama_double, A, marker)
    assert request["messages"][0]["role"] == "user" and len(request["messages"]) < 9
    assert request["messages"][-1]["content"] == marker


async def test_refusals_name_the_problem(gateway: Gateway, registry: RegistryHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await gateway.chat([A, B, C], "three")
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 2" in too_many.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gateway.chat(["no-such-model"], "hi")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in unknown.value.details()

    disabled = unique("disabled")
    registry.create_model(id=disabled, base_model_id=A, enabled=False)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.chat([disabled, B], "hi")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and disabled in refused.value.details()

    orphan = unique("orphan")
    imported = registry.http.post(
        "/api/v1/models/import",
        json=[{"id": orphan, "name": orphan, "base_model_id": "no-such-base:latest"}],
        headers={"Authorization": gateway.metadata("root", "admin")[0][1]},
    )
    assert imported.status_code in (200, 201), imported.text
    with pytest.raises(grpc.aio.AioRpcError) as no_base:
        await gateway.chat([orphan], "hi", subject="root", role="admin")
    assert no_base.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no-such-base:latest" in no_base.value.details()

    # Hidden models are left out of the selector but work by id.
    hidden = unique("hidden")
    registry.create_model(id=hidden, base_model_id=A, hidden=True)
    assert (await gateway.chat([hidden], "hi")).answers[hidden].done is not None
    listed = await gateway.stub.ListModels(chat_pb2.ListModelsRequest(), metadata=gateway.metadata())
    ids = {m.id for m in listed.models}
    assert hidden not in ids and disabled not in ids and GEMMA in ids and A in ids
    everything = await gateway.stub.ListModels(
        chat_pb2.ListModelsRequest(include_hidden=True, include_disabled=True), metadata=gateway.metadata()
    )
    assert {hidden, disabled} <= {m.id for m in everything.models}


async def test_unreadable_base_in_the_chain_is_permission_denied_naming_it(
    gateway: Gateway, registry: RegistryHandle
) -> None:
    private = unique("alices-private")
    shared = unique("alices-shared")
    registry.create_model("alice", "user", id=private, base_model_id=A, access={"public_read": False})
    registry.create_model("alice", "user", id=shared, base_model_id=private, access={"public_read": True})
    assert (await gateway.chat([shared], "hi", subject="alice")).answers[shared].done is not None
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await gateway.chat([shared], "hi", subject="bob")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert private in denied.value.details()


async def test_conversations_are_listed_read_and_deleted_by_their_owner_only(gateway: Gateway) -> None:
    first = await gateway.chat([A], "first conversation")
    second = await gateway.chat([A], "second conversation")
    listed = await gateway.stub.ListConversations(
        chat_pb2.ListConversationsRequest(limit=1), metadata=gateway.metadata()
    )
    assert [c.id for c in listed.conversations] == [second.conversation_id] and listed.next_cursor
    rest = await gateway.stub.ListConversations(
        chat_pb2.ListConversationsRequest(limit=10, cursor=listed.next_cursor), metadata=gateway.metadata()
    )
    assert [c.id for c in rest.conversations] == [first.conversation_id]
    assert rest.conversations[0].title == "first conversation"

    with pytest.raises(grpc.aio.AioRpcError) as others:
        await gateway.stub.GetConversation(
            chat_pb2.GetConversationRequest(conversation_id=first.conversation_id), metadata=gateway.metadata("bob")
        )
    assert others.value.code() == grpc.StatusCode.NOT_FOUND

    await gateway.stub.DeleteConversation(
        chat_pb2.DeleteConversationRequest(conversation_id=first.conversation_id), metadata=gateway.metadata()
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await gateway.conversation(first.conversation_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_changed_model_file_is_seen_at_once_through_the_registrys_events(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble
) -> None:
    model = unique("changing")
    registry.create_model(id=model, base_model_id=A, params={"system": "version one"})
    marker = unique("before")
    await gateway.chat([model], marker)
    assert sent(ollama_double, A, marker)["messages"][0]["content"] == "version one"
    registry.patch_model(model, {"params": {"system": "version two"}})
    # The cache lives 600 s here: only the model event can make the gateway see the change.
    for _ in range(100):
        marker = unique("after")
        await gateway.chat([model], marker)
        if sent(ollama_double, A, marker)["messages"][0]["content"] == "version two":
            break
        await asyncio.sleep(0.1)
    assert sent(ollama_double, A, marker)["messages"][0]["content"] == "version two"


async def test_a_passed_deadline_closes_the_upstream_streams_too(gateway: Gateway, ollama_double: OllamaDouble) -> None:
    before = len(ollama_double.closed_early)
    request = chat_pb2.ChatRequest(models=["slow-a:latest"], message=chat_pb2.UserMessage(text="too long"))
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        async for _ in gateway.stub.Chat(request, metadata=gateway.metadata(), timeout=0.6):
            pass
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(200):
        if len(ollama_double.closed_early) > before:
            break
        await asyncio.sleep(0.05)
    assert ollama_double.closed_early[before:] == ["slow-a:latest"]
