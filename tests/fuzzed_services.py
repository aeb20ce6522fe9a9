"""The services the fuzz tests send their requests to: each on a database of its own on the real stack (NATS,
PostgreSQL, S3), served over real HTTP in a thread, and an admin token for them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import schemathesis

from modelhub_common.auth import issue_token
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_devstack.ports import pick_free_port

__all__ = ["admin_headers", "served", "served_gateway"]


def admin_headers(jwt_secret: str) -> dict[str, str]:
    token = issue_token(jwt_secret, subject="fuzz-admin", role="admin", ttl_seconds=3600)
    return {"Authorization": f"Bearer {token}"}


def _values(nats_url: str, s3: Any, db_url: str, jwt_secret: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": pick_free_port(),
        "nats_url": nats_url,
        "jwt_secret": jwt_secret,
        "database_url": db_url,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_secure": s3.secure,
        "shutdown_grace_seconds": 2,
    }


def _wait_ready(url: str, seconds: float = 30.0) -> None:
    """Fuzzing a gateway whose catalog has not loaded yet would only meet its 503s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready: {httpx.get(f'{url}/readyz').text}")


@contextlib.contextmanager
def served_gateway(
    nats_url: str, s3: Any, postgres_admin_url: str, registry_url: str, jwt_secret: str
) -> Iterator[tuple[Any, str]]:
    """The chat gateway's HTTP surface (its OpenAI-compatible API), with a real registry behind it; yields its
    OpenAPI schema and its base URL."""
    from modelhub_chat_gateway import bootstrap as gateway_bootstrap
    from modelhub_chat_gateway.settings import ChatGatewaySettings

    name = f"fuzz_gateway_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        values = _values(nats_url, s3, database_url(postgres_admin_url, name), jwt_secret)
        settings = ChatGatewaySettings(
            **values, grpc_port=pick_free_port(), registry_url=registry_url, rag_url="http://127.0.0.1:9"
        )
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, gateway_bootstrap.run_migrations(settings)).result()
        app = gateway_bootstrap.build_app(settings)
        with serve_in_thread(app, name="fuzzed-gateway", port=settings.port, start_timeout=120) as url:
            _wait_ready(url)
            yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url
    finally:
        drop_database(postgres_admin_url, name)


@contextlib.contextmanager
def served(kind: str, nats_url: str, s3: Any, postgres_admin_url: str, jwt_secret: str, **extra: Any) -> Iterator[Any]:
    """One service (``registry``, ``rag``, ``puller``) on a database of its own; yields its OpenAPI schema and
    its base URL."""
    name = f"fuzz_{kind}_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name, ("vector",))
    try:
        values = _values(nats_url, s3, database_url(postgres_admin_url, name), jwt_secret)
        embedder = extra.pop("embedder", None)
        if kind == "registry":
            from modelhub_registry import bootstrap as registry_bootstrap
            from modelhub_registry.settings import RegistrySettings

            settings: Any = RegistrySettings(**values, connection_sync_seconds=0, **extra)
            migrate, build = registry_bootstrap.run_migrations, registry_bootstrap.build_app
        elif kind == "rag":
            from modelhub_rag import bootstrap as rag_bootstrap
            from modelhub_rag.settings import RagSettings

            settings = RagSettings(**values, consume_model_events=False, **extra)
            migrate = rag_bootstrap.run_migrations

            def build(settings: Any) -> Any:
                return rag_bootstrap.build_app(settings, embedder=embedder)
        else:
            from modelhub_puller import bootstrap as puller_bootstrap
            from modelhub_puller.settings import PullerSettings

            settings = PullerSettings(**values, **extra)
            migrate, build = puller_bootstrap.run_migrations, puller_bootstrap.build_app
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate(settings)).result()
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        with serve_in_thread(build(settings), name=f"fuzzed-{kind}", port=settings.port, start_timeout=120) as url:
            yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url
    finally:
        drop_database(postgres_admin_url, name)
