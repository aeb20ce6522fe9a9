"""``modelhub pull`` and ``modelhub pulls`` against a real puller (uvicorn in a thread) and docker-registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner, Result

from modelhub_cli import pull_cmd
from modelhub_cli.main import app
from modelhub_devstack.asgi import serve_in_thread
from modelhub_devstack.nats import drain_consumer
from modelhub_devstack.ports import pick_free_port
from modelhub_puller import bootstrap
from modelhub_puller.settings import PullerSettings

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
UNREACHABLE_HOST = "127.0.0.1:9"  # discard port: nothing listens, the pull keeps retrying


@dataclass
class LivePuller:
    url: str
    token: str
    workdir: Path
    registry_host: str

    def run(self, *args: str, input: str | None = None) -> Result:
        env = {
            "MODELHUB_PULLER_URL": self.url,
            "MODELHUB_TOKEN": self.token,
            "MODELHUB_HOME": str(self.workdir / "no-endpoints"),
            "COLUMNS": "250",
        }
        result = CliRunner().invoke(app, list(args), env=env, input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


def push_tiny_model(registry_url: str) -> str:
    """An Ollama-style model (raw bytes as weights, a template, params) in the real registry; returns its name."""
    repository = f"library/cli{uuid.uuid4().hex[:10]}"
    http = httpx.Client(base_url=registry_url, timeout=30)

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        location = http.post(f"/v2/{repository}/blobs/uploads/").headers["location"]
        separator = "&" if "?" in location else "?"
        assert http.put(f"{location}{separator}digest={digest}", content=data).status_code == 201
        return {"digest": digest, "size": len(data)}

    layers = [
        {"mediaType": "application/vnd.ollama.image.model", **blob(random.randbytes(3 * 1024 * 1024))},
        {"mediaType": "application/vnd.ollama.image.template", **blob(b"{{ .Prompt }}")},
        {"mediaType": "application/vnd.ollama.image.params", **blob(b'{"temperature": 0.5}')},
    ]
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", **blob(b'{"model_format":"gguf"}')}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": config, "layers": layers}
    response = http.put(
        f"/v2/{repository}/manifests/latest", content=json.dumps(manifest), headers={"Content-Type": MANIFEST_V2}
    )
    assert response.status_code == 201, response.text
    host = registry_url.removeprefix("http://")
    return f"{host}/{repository}:latest"


@pytest.fixture(scope="module", autouse=True)
def leave_the_bus_as_found(nats_url: str) -> Iterator[None]:
    """Acks the ``completed`` events these pulls left for the registry's consumer on the session's NATS, so
    a registry started later in the session does not re-register them (see services/puller/tests)."""
    yield
    asyncio.run(drain_consumer(nats_url, "MODELHUB_PULLS", "registry-pulls-completed"))


@pytest.fixture
def live_puller(
    service_settings: Callable[..., Any], make_token: Callable[..., str], oci_registry_url: str, tmp_path: Path
) -> Iterator[LivePuller]:
    host = oci_registry_url.removeprefix("http://")
    settings: PullerSettings = service_settings(
        PullerSettings,
        port=pick_free_port(),
        bucket=f"cli-{uuid.uuid4().hex[:12]}",
        allowed_hosts=[host, UNREACHABLE_HOST],
        insecure_hosts=[host, UNREACHABLE_HOST],
        heartbeat_seconds=0.5,
        lease_seconds=2,
        work_ack_wait_seconds=3,
        retry_backoff_seconds=1,
        progress_interval_seconds=0.1,
    )
    asyncio.run(bootstrap.run_migrations(settings))
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        # Fresh databases restart outbox ids; keep this test's event ids apart from other tests' (dedupe).
        conn.execute(f"ALTER SEQUENCE outbox_id_seq RESTART WITH {random.randrange(10**9, 10**12)}")
    with serve_in_thread(bootstrap.build_app(settings), name="puller-under-test", port=settings.port) as url:
        yield LivePuller(url, make_token("root", "admin"), tmp_path, host)


def test_pull_shows_progress_and_pulls_lists_the_job(live_puller: LivePuller, oci_registry_url: str) -> None:
    name = push_tiny_model(oci_registry_url)
    result = live_puller.run("pull", name)
    assert result.exit_code == 0, result.output
    assert f"pulled {name}" in result.output
    assert "model" in result.output and "template" in result.output  # one bar per layer

    listing = live_puller.run("pulls")
    assert listing.exit_code == 0 and name in listing.output and "completed" in listing.output
    items = json.loads(live_puller.run("pulls", "--json").output)["items"]
    assert [(p["base_model_id"], p["state"]) for p in items] == [(name, "completed")]
    shown = live_puller.run("pulls", "show", items[0]["id"])
    assert "application/vnd.ollama.image.template" in shown.output


def test_ctrl_c_can_cancel_the_pull_on_the_server(live_puller: LivePuller, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: pull_cmd.PullerClient, pull_id: str) -> Iterator[dict[str, Any]]:
        raise KeyboardInterrupt
        yield {}

    monkeypatch.setattr(pull_cmd.PullerClient, "events", interrupted)
    name = f"{UNREACHABLE_HOST}/library/never:latest"
    result = live_puller.run("pull", name, input="c\n")
    assert result.exit_code == 130, result.output
    assert "Cancel the pull on the server, or detach" in result.output
    with live_puller.api() as api:
        items = api.get("/api/v1/pulls").json()["items"]
    assert items[0]["base_model_id"] == name and items[0]["state"] in ("cancelled", "running")
    deadline = time.monotonic() + 30
    while items[0]["state"] != "cancelled":
        assert time.monotonic() < deadline, items[0]
        time.sleep(0.1)
        with live_puller.api() as api:
            items = api.get("/api/v1/pulls").json()["items"]


def test_ctrl_c_can_detach_and_leave_the_pull_running(live_puller: LivePuller, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: pull_cmd.PullerClient, pull_id: str) -> Iterator[dict[str, Any]]:
        raise KeyboardInterrupt
        yield {}

    monkeypatch.setattr(pull_cmd.PullerClient, "events", interrupted)
    name = f"{UNREACHABLE_HOST}/library/detached:latest"
    result = live_puller.run("pull", name, "--on-interrupt", "detach")
    assert result.exit_code == 0, result.output
    assert "detached" in result.output
    active = json.loads(live_puller.run("pulls", "--active", "--json").output)["items"]
    assert [p["base_model_id"] for p in active] == [name]
    # A second `pull` joins the same job instead of starting another.
    again = live_puller.run("pull", name, "--detach")
    assert again.exit_code == 0, again.output
    assert "following the pull already running" in again.output and active[0]["id"] in again.output
    cancelled = live_puller.run("pulls", "cancel", active[0]["id"])
    assert cancelled.exit_code == 0, cancelled.output


def test_errors_are_clear(live_puller: LivePuller, tmp_path: Path) -> None:
    bad = live_puller.run("pull", "a/b/c/d")
    assert bad.exit_code == 1
    assert "too many parts" in bad.output
    refused = live_puller.run("pull", "evil.example.com/x/y")
    assert refused.exit_code == 1 and "not allowed" in refused.output
    nowhere = CliRunner().invoke(
        app, ["pulls"], env={"MODELHUB_HOME": str(tmp_path / "none"), "MODELHUB_PULLER_URL": ""}
    )
    assert nowhere.exit_code == 1 and "no puller URL is configured" in nowhere.output
