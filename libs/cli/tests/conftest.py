"""A real registry for the CLI to talk to: uvicorn on a free port in a background thread, per test.

It runs against the session's real NATS, PostgreSQL (a fresh database per test) and S3, so the CLI is
tested over HTTP exactly as a user runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from modelhub_cli.main import app
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import RegistrySettings

BASE_MODEL = "llama3.1:8b"


@dataclass
class LiveRegistry:
    url: str
    admin_token: str
    workdir: Path
    extra_env: dict[str, str | None] = field(default_factory=dict)

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def env(self, token: str | None = None) -> dict[str, str | None]:
        # MODELHUB_HOME points at an empty directory so a developer's real .modelhub/endpoints.env is not read;
        # COLUMNS keeps rich from folding ids across lines in the captured output.
        return {
            "MODELHUB_REGISTRY_URL": self.url,
            "MODELHUB_TOKEN": token or self.admin_token,
            "MODELHUB_HOME": str(self.workdir / "no-endpoints"),
            "COLUMNS": "250",
            **self.extra_env,
        }

    def run(self, *args: str, token: str | None = None, input: str | None = None) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env(token), input=input)
        # Whatever the outcome, the user must never see a traceback: only SystemExit may end a command.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    def ok(self, *args: str, token: str | None = None) -> str:
        result = self.run(*args, token=token)
        assert result.exit_code == 0, result.output
        return result.output

    def fails(self, *args: str, token: str | None = None) -> str:
        result = self.run(*args, token=token)
        assert result.exit_code == 1, result.output
        return result.output


@pytest.fixture
def live_registry(
    service_settings: Callable[..., Any],
    make_token: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveRegistry]:
    settings: RegistrySettings = service_settings(
        RegistrySettings,
        port=pick_free_port(),
        connection_sync_seconds=0,
        allow_private_urls=True,  # the connections the CLI tests add point at loopback
    )
    asyncio.run(bootstrap.run_migrations(settings))
    # Files the CLI writes with default names (exports) land in the test's own directory.
    monkeypatch.chdir(tmp_path)
    with serve_in_thread(bootstrap.build_app(settings), name="registry-under-test", port=settings.port) as url:
        registry = LiveRegistry(url, make_token("root", "admin"), tmp_path)
        with registry.api() as api:
            response = api.post("/api/v1/base-models", json={"id": BASE_MODEL, "params": {"temperature": 0.8}})
            assert response.status_code == 201, response.text
        yield registry
