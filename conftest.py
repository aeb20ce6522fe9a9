"""Fixtures every test package shares. The real servers come from ``modelhub_devstack.pytest_plugin``."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import pytest
from pydantic_settings import BaseSettings

from modelhub_common.auth import issue_token
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.ports import pick_free_port

JWT_SECRET = "test-secret-" + "x" * 32
S = TypeVar("S", bound=BaseSettings)


@pytest.fixture
def jwt_secret() -> str:
    return JWT_SECRET


@pytest.fixture
def make_token() -> Callable[..., str]:
    def make(subject: str = "admin", role: str = "admin", groups: tuple[str, ...] = (), ttl: int = 600) -> str:
        return issue_token(JWT_SECRET, subject=subject, role=role, groups=groups, ttl_seconds=ttl)

    return make


@pytest.fixture
def service_settings(nats_url: str, pg_url: str, s3: Any) -> Callable[..., Any]:
    """Builds a service's settings pointing at the test servers, with a fresh database."""

    def build(settings_cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "nats_url": nats_url,
            "jwt_secret": JWT_SECRET,
            "database_url": pg_url,
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
            "s3_secure": s3.secure,
            "shutdown_grace_seconds": 2,
        }
        values.update(overrides)
        return settings_cls(**values)

    return build


@pytest.fixture(scope="session")
def onnx_embedder() -> Iterator[Any]:
    """The local all-MiniLM-L6-v2 embedder (the RAG default), loaded once per session."""
    from modelhub_rag.adapters.embedders import OnnxMiniLMEmbedder

    embedder = OnnxMiniLMEmbedder()
    yield embedder
    asyncio.run(embedder.aclose())


@pytest.fixture
def registry_service(service_settings: Callable[..., Any], postgres_admin_url: str) -> Iterator[str]:
    """The real registry (NATS, PostgreSQL on a database of its own, S3) served over HTTP by uvicorn in a
    thread; yields its base URL. Its database is dropped afterwards. Safe to ask for from a running event loop
    (``request.getfixturevalue`` inside an async test): its migrations run in a thread of their own."""
    from modelhub_registry import bootstrap as registry_bootstrap
    from modelhub_registry.settings import RegistrySettings

    name = f"registry_{uuid.uuid4().hex[:12]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        settings: RegistrySettings = service_settings(
            RegistrySettings, port=pick_free_port(), database_url=database_url(postgres_admin_url, name)
        )
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, registry_bootstrap.run_migrations(settings)).result()
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        app = registry_bootstrap.build_app(settings)
        with serve_in_thread(app, name="registry-under-test", port=settings.port) as url:
            yield url
    finally:
        drop_database(postgres_admin_url, name)


@pytest.fixture
def rag_service(service_settings: Callable[..., Any], postgres_admin_url: str, onnx_embedder: Any) -> Iterator[str]:
    """The real rag service (NATS, PostgreSQL+pgvector on a database of its own, S3, the ONNX embedder),
    served over HTTP by uvicorn in a thread; yields its base URL. Its database is dropped afterwards."""
    from modelhub_rag import bootstrap as rag_bootstrap
    from modelhub_rag.settings import RagSettings

    name = f"rag_{uuid.uuid4().hex[:12]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        settings: RagSettings = service_settings(
            RagSettings,
            port=pick_free_port(),
            database_url=database_url(postgres_admin_url, name),
            consume_model_events=False,
        )
        asyncio.run(rag_bootstrap.run_migrations(settings))
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        app = rag_bootstrap.build_app(settings, embedder=onnx_embedder)
        with serve_in_thread(app, name="rag-under-test", port=settings.port, start_timeout=120) as url:
            yield url
    finally:
        drop_database(postgres_admin_url, name)
