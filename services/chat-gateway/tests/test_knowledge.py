"""Models with knowledge: the RAG service's retrieval is injected into the prompt and cited.

The RAG service is served by the double in conftest (its contract only) until the real one lands.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import jwt
import pytest

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RagDouble, RegistryHandle

A = "echo-a:latest"


async def test_knowledge_is_retrieved_injected_and_cited(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble, rag_double: RagDouble
) -> None:
    knowledge_id = f"kb-{uuid.uuid4().hex[:8]}"
    rag_double.chunks[knowledge_id] = [
        {
            "knowledge_id": knowledge_id,
            "file_id": "f1",
            "file_name": "handbook.pdf",
            "text": "Holidays: 30 days a year.",
            "score": 0.91,
            "page": 4,
            "start_offset": 100,
            "end_offset": 125,
        }
    ]
    model = f"hr-{uuid.uuid4().hex[:8]}"
    registry.create_model(
        id=model,
        base_model_id=A,
        params={"system": "You answer HR questions."},
        meta={"knowledge": [{"id": knowledge_id, "name": "Handbook"}]},
    )
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=plain, base_model_id="echo-b:latest")
    question = f"How many holidays? {uuid.uuid4().hex[:6]}"
    result = await gateway.chat([model, plain], question)

    cited = result.answers[model]
    assert [c.file_name for c in cited.citations] == ["handbook.pdf"]
    assert cited.citations[0].page == 4 and cited.citations[0].text == "Holidays: 30 days a year."
    assert result.answers[plain].citations == []
    request = next(r for r in ollama_double.requests_for(A) if r["messages"][-1]["content"] == question)
    system = request["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You answer HR questions.")
    assert "[1] handbook.pdf, page 4:\nHolidays: 30 days a year." in system["content"]
    # Retrieval ran with the caller's own token, for this model's knowledge only.
    auth, body = rag_double.requests[-1]
    assert body == {"knowledge_ids": [knowledge_id], "query": question, "k": 5}

    # Tokens made a second apart differ in `iat`, so compare who they name rather than the bytes.
    def claims(header: str) -> tuple[str, str]:
        decoded = jwt.decode(header.removeprefix("Bearer "), options={"verify_signature": False})
        return decoded["sub"], decoded["role"]

    assert claims(auth) == claims(gateway.metadata()[0][1])
    conversation = await gateway.conversation(result.conversation_id)
    stored = next(m for m in conversation.messages if m.id == cited.message_id)
    assert [c.file_id for c in stored.citations] == ["f1"]


async def test_unauthenticated_calls_are_refused(gateway: Gateway) -> None:
    from modelhub.chat.v1 import chat_pb2

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.ListConversations(chat_pb2.ListConversationsRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
