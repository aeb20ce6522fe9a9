"""A registry app per test, on a fresh database, against the session's real NATS, PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from modelhub_devstack.databases import create_database, database_url, drop_database
from modelhub_registry import bootstrap
from modelhub_registry.settings import RegistrySettings


@dataclass
class Registry:
    client: TestClient
    settings: RegistrySettings
    token: Callable[..., str]

    def as_user(self, subject: str, role: str = "user", groups: tuple[str, ...] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject=subject, role=role, groups=groups)}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_user("root", "admin")

    def add_base(self, model_id: str = "llama3.1:8b", **extra: Any) -> None:
        response = self.client.post("/api/v1/base-models", json={"id": model_id, **extra}, headers=self.admin)
        assert response.status_code == 201, response.text

    def create(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        payload = {"base_model_id": "llama3.1:8b", "name": body.get("id", "m"), **body}
        response = self.client.post("/api/v1/models", json=payload, headers=headers)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def registry_settings(service_settings: Callable[..., Any]) -> Callable[..., RegistrySettings]:
    def build(**overrides: Any) -> RegistrySettings:
        settings: RegistrySettings = service_settings(
            RegistrySettings, connection_sync_seconds=0, **{"allow_private_urls": True, **overrides}
        )
        asyncio.run(bootstrap.run_migrations(settings))
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            # Every test shares one NATS: keep this database's outbox message ids apart from other tests', so
            # that JetStream's duplicate window never drops one test's event as a repeat of another's.
            conn.execute("SELECT setval('outbox_id_seq', %s)", (random.randrange(10**9, 10**15),))
        return settings

    return build


@pytest.fixture
def make_registry(
    registry_settings: Callable[..., RegistrySettings], make_token: Callable[..., str], postgres_admin_url: str
) -> Iterator[Callable[..., Registry]]:
    """Starts registries; the second and later ones get databases of their own (dropped afterwards)."""
    clients: list[TestClient] = []
    extra_databases: list[str] = []

    def start(**overrides: Any) -> Registry:
        if clients and "database_url" not in overrides:
            name = f"registry_extra_{uuid.uuid4().hex[:12]}"
            create_database(postgres_admin_url, name)
            extra_databases.append(name)
            overrides["database_url"] = database_url(postgres_admin_url, name)
        settings = registry_settings(**overrides)
        client = TestClient(bootstrap.build_app(settings))
        client.__enter__()
        clients.append(client)
        return Registry(client, settings, make_token)

    yield start
    for client in clients:
        client.__exit__(None, None, None)
    for name in extra_databases:
        drop_database(postgres_admin_url, name)


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    reg = make_registry()
    reg.add_base()
    return reg
