"""A rag app per test on a fresh database, against the session's real NATS, PostgreSQL and S3.

The ONNX embedder is loaded once per session and shared by the apps (it is stateless).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from modelhub_rag import bootstrap
from modelhub_rag.adapters.embedders import OnnxMiniLMEmbedder
from modelhub_rag.domain.embedding import Embedder, Vectors
from modelhub_rag.settings import RagSettings

WAIT_SECONDS = 120

# Test modules import their document builders (rag_documents) from this directory.
sys.path.insert(0, str(Path(__file__).parent))

from wrapped_embedder import WrappedEmbedder  # noqa: E402


class CountingEmbedder(WrappedEmbedder):
    """Delegates to a real embedder and counts the texts it embeds (to prove work is not repeated)."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.texts = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        return None  # the inner embedder is shared by the session


@pytest.fixture(scope="session")
def onnx_embedder() -> Iterator[OnnxMiniLMEmbedder]:
    embedder = OnnxMiniLMEmbedder()
    yield embedder
    asyncio.run(embedder.aclose())


def prepare_database(settings: RagSettings) -> None:
    asyncio.run(bootstrap.run_migrations(settings))
    # Every test database starts its outbox ids at 1, but all tests share one NATS server whose duplicate
    # window would drop "rag-1" of the second test as a re-publish of the first. Start each elsewhere.
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))


@dataclass
class Rag:
    client: TestClient
    settings: RagSettings
    token: Callable[..., str]
    embedder: CountingEmbedder
    extra: dict[str, Any] = field(default_factory=dict)

    def as_user(self, subject: str, role: str = "user", groups: tuple[str, ...] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject=subject, role=role, groups=groups)}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_user("root", "admin")

    @property
    def db(self) -> str:
        return self.settings.database_url.get_secret_value()

    def create(self, headers: dict[str, str] | None = None, name: str = "kb", **body: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/knowledge", json={"name": name, **body}, headers=headers or self.admin)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def upload_response(
        self, kid: str, filename: str, data: bytes, headers: dict[str, str] | None = None, content_type: str = ""
    ) -> Any:
        files = {"file": (filename, data, content_type or "application/octet-stream")}
        return self.client.post(f"/api/v1/knowledge/{kid}/files", files=files, headers=headers or self.admin)

    def upload(self, kid: str, filename: str, data: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.upload_response(kid, filename, data, headers)
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    def files(self, kid: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        response = self.client.get(f"/api/v1/knowledge/{kid}/files", headers=headers or self.admin)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def wait_files(self, kid: str, count: int | None = None, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        """Polls until every file has finished (indexed or failed); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.files(kid)
            done = all(f["status"] in ("indexed", "failed") for f in files)
            if done and (count is None or len(files) == count):
                return files
            assert time.monotonic() < deadline, f"files still not indexed: {[(f['name'], f['status']) for f in files]}"
            time.sleep(0.2)

    def query(
        self, kid: str, text: str, k: int = 5, mode: str = "hybrid", headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        response = self.client.post(
            f"/api/v1/knowledge/{kid}/query", json={"query": text, "k": k, "mode": mode}, headers=headers or self.admin
        )
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def rag_settings(service_settings: Callable[..., Any]) -> Callable[..., RagSettings]:
    def build(**overrides: Any) -> RagSettings:
        values: dict[str, Any] = {"consume_model_events": False, "object_sweep_seconds": 1, **overrides}
        settings: RagSettings = service_settings(RagSettings, **values)
        prepare_database(settings)
        return settings

    return build


@pytest.fixture
def make_rag(
    rag_settings: Callable[..., RagSettings], make_token: Callable[..., str], onnx_embedder: OnnxMiniLMEmbedder
) -> Iterator[Callable[..., Rag]]:
    clients: list[TestClient] = []

    def start(settings: RagSettings | None = None, **overrides: Any) -> Rag:
        settings = settings or rag_settings(**overrides)
        embedder = CountingEmbedder(onnx_embedder)
        client = TestClient(bootstrap.build_app(settings, embedder=embedder))
        client.__enter__()
        clients.append(client)
        return Rag(client, settings, make_token, embedder)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def rag(make_rag: Callable[..., Rag]) -> Rag:
    return make_rag()
