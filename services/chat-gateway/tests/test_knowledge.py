"""Models with knowledge: the real RAG service's retrieval is injected into the prompt and cited.

The RAG service runs as its own process, started the way ``modelhub up`` starts it (the dev stack's
:class:`~modelhub_devstack.services.ServiceProcess`): its own database on the session's PostgreSQL+pgvector,
the gateway tests' NATS, the session's S3 and the local ONNX embedder. A collection is created and a file
uploaded through its API as the chatting user, and the test waits until the ingestion worker has indexed it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest

from modelhub_devstack.databases import create_database, drop_database
from modelhub_devstack.ports import pick_free_port
from modelhub_devstack.services import DEFAULT_SERVICES, InfraEndpoints, ServiceProcess, service_environment

if TYPE_CHECKING:
    from conftest import Gateway, OllamaDouble, RegistryHandle

A = "echo-a:latest"
INDEX_TIMEOUT_SECONDS = 120
HANDBOOK = """# Staff handbook

## Holidays
Every employee gets 30 days of paid holiday a year. Holiday requests go to your team lead at least two weeks
ahead; unused holiday days carry over until the end of March of the following year.

## Parking
The car park behind building C has forty spaces. Permits are issued by reception and must be visible behind
the windscreen. Bicycles go in the covered racks next to the loading bay.

## Expenses
Travel expenses are reimbursed within ten working days. Submit receipts through the finance portal, grouped
by trip, and name the cost centre of the project that paid for the journey.

## Security
Badges must be worn at all times inside the building. Report a lost badge to the security desk on the ground
floor at once, so that it can be blocked before anyone else uses it.
"""


@dataclass
class RagService:
    """The running rag service and a client for its REST API."""

    url: str
    http: httpx.Client
    log_path: Path

    def create_collection(self, auth: dict[str, str], name: str) -> dict[str, Any]:
        response = self.http.post("/api/v1/knowledge", json={"name": name}, headers=auth)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def upload(self, auth: dict[str, str], knowledge_id: str, name: str, data: bytes) -> dict[str, Any]:
        files = {"file": (name, data, "text/markdown")}
        response = self.http.post(f"/api/v1/knowledge/{knowledge_id}/files", files=files, headers=auth)
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    def wait_indexed(self, auth: dict[str, str], knowledge_id: str, file_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + INDEX_TIMEOUT_SECONDS
        while True:
            response = self.http.get(f"/api/v1/knowledge/{knowledge_id}/files/{file_id}", headers=auth)
            assert response.status_code == 200, response.text
            file: dict[str, Any] = response.json()
            assert file["status"] != "failed", file["error"]
            if file["status"] == "indexed":
                return file
            assert time.monotonic() < deadline, f"{file['name']} is still {file['status']}; see {self.log_path}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def rag_service(
    gateway_jwt_secret: str,
    gateway_nats_url: str,
    postgres_admin_url: str,
    s3: Any,
    registry: RegistryHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RagService]:
    """``python -m modelhub_rag migrate`` then ``serve`` on a fresh database; stopped by its PID afterwards."""
    # The rag service must accept the tokens the gateway tests sign.
    spec = next(s for s in DEFAULT_SERVICES if s.name == "rag")
    spec = dataclasses.replace(spec, database=f"gw_rag_{uuid.uuid4().hex[:10]}")
    ports = {"rag": pick_free_port(), "registry": urlsplit(registry.url).port or 80}
    infra = InfraEndpoints(
        nats_url=gateway_nats_url, postgres_admin_url=postgres_admin_url, s3=s3, jwt_secret=gateway_jwt_secret
    )
    workdir = tmp_path_factory.mktemp("rag-service")
    create_database(postgres_admin_url, spec.database, ("vector",))
    service = ServiceProcess(
        spec,
        workdir,
        ports=ports,
        env=service_environment(spec, ports=ports, infra=infra, log_level="WARNING"),
        log_path=workdir / "rag.log",
        pid_path=workdir / "rag.pid",
    )
    try:
        service.migrate()
        service.start()
        with httpx.Client(base_url=service.url, timeout=30) as http:
            yield RagService(service.url, http, service.log_path)
    finally:
        service.stop()
        drop_database(postgres_admin_url, spec.database)


@pytest.fixture
def rag_url(rag_service: RagService) -> str:
    """The gateways of this module use the real rag service."""
    return rag_service.url


async def test_knowledge_is_retrieved_injected_and_cited(
    gateway: Gateway, registry: RegistryHandle, ollama_double: OllamaDouble, rag_service: RagService
) -> None:
    # The gateway forwards the caller's own token, so the collection is the chatting user's.
    caller = {"Authorization": gateway.metadata()[0][1]}
    collection = rag_service.create_collection(caller, "Handbook")
    knowledge_id = collection["id"]
    uploaded = rag_service.upload(caller, knowledge_id, "handbook.md", HANDBOOK.encode())
    indexed = rag_service.wait_indexed(caller, knowledge_id, uploaded["id"])
    assert indexed["chunks"] >= 2

    model = f"hr-{uuid.uuid4().hex[:8]}"
    registry.create_model(
        id=model,
        base_model_id=A,
        params={"system": "You answer HR questions."},
        meta={"knowledge": [{"id": knowledge_id, "name": "Handbook"}]},
    )
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    registry.create_model(id=plain, base_model_id="echo-b:latest")
    question = f"How many days of paid holiday does an employee get each year? {uuid.uuid4().hex[:6]}"
    result = await gateway.chat([model, plain], question)

    cited = result.answers[model]
    assert cited.error is None and cited.citations, cited.error
    # Every citation is a chunk of the uploaded file, and the best one answers the question.
    assert {(c.knowledge_id, c.file_id, c.file_name) for c in cited.citations} == {
        (knowledge_id, uploaded["id"], "handbook.md")
    }
    for citation in cited.citations:
        assert citation.text and HANDBOOK[citation.start_offset : citation.end_offset] == citation.text
    best = cited.citations[0]
    assert "30 days of paid holiday" in best.text
    assert result.answers[plain].citations == []

    request = next(r for r in ollama_double.requests_for(A) if r["messages"][-1]["content"] == question)
    system = request["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You answer HR questions.")
    assert f"[1] handbook.md:\n{best.text.strip()}" in system["content"]

    conversation = await gateway.conversation(result.conversation_id)
    stored = next(m for m in conversation.messages if m.id == cited.message_id)
    assert [c.file_id for c in stored.citations] == [c.file_id for c in cited.citations]


async def test_unauthenticated_calls_are_refused(gateway: Gateway) -> None:
    from modelhub.chat.v1 import chat_pb2

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.ListConversations(chat_pb2.ListConversationsRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
