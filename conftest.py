"""Fixtures every test package shares. The real servers come from ``modelhub_devstack.pytest_plugin``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from pydantic_settings import BaseSettings

from modelhub_common.auth import issue_token

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
