"""`make up` as a user runs it: the four real services become ready, survive a killed database, and
`down` → `up` keeps the data. Runs `modelhub-dev` and `modelhub` as subprocesses in a throwaway home."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhub_cli.endpoints import parse_env_file

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.e2e


def _run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def stack_home() -> Iterator[tuple[Path, dict[str, str]]]:
    root = Path(tempfile.mkdtemp(prefix="modelhub-e2e-"))
    # PostgreSQL runs as a system user that must be able to pass through this directory.
    root.chmod(0o711)
    home = root / "home"
    env = {**os.environ, "MODELHUB_HOME": str(home)}
    try:
        yield home, env
    finally:
        _run(str(BIN / "modelhub-dev"), "down", env=env, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_down_up_keeps_data_and_heals(stack_home: tuple[Path, dict[str, str]]) -> None:
    home, env = stack_home
    _run(str(BIN / "modelhub-dev"), "up", env=env)
    endpoints_file = home / "endpoints.env"
    assert endpoints_file.stat().st_mode & 0o777 == 0o600
    endpoints = parse_env_file(endpoints_file.read_text())
    for key in (
        "MODELHUB_REGISTRY_URL",
        "MODELHUB_PULLER_URL",
        "MODELHUB_RAG_URL",
        "MODELHUB_GATEWAY_GRPC",
        "MODELHUB_GATEWAY_HTTP",
        "MODELHUB_TOKEN",
        "NATS_URL",
        "DATABASE_URL",
        "MODELHUB_S3_ENDPOINT",
    ):
        assert endpoints.get(key), key
    status = _run(str(BIN / "modelhub"), "status", env=env)
    assert status.stdout.count("ready") >= 4 and "not ready" not in status.stdout

    registry = endpoints["MODELHUB_REGISTRY_URL"]
    admin = {"Authorization": f"Bearer {endpoints['MODELHUB_TOKEN']}"}
    # The embedded models are stored by `up` and registered from the puller's events, with what their GGUFs say.
    bases: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 60
    while not {"gemma3:270m", "smollm2:135m"} <= set(bases) and time.monotonic() < deadline:
        items = httpx.get(f"{registry}/api/v1/base-models", headers=admin).json()["items"]
        bases = {b["id"]: b for b in items}
        time.sleep(0.5)
    assert {"gemma3:270m", "smollm2:135m"} <= set(bases), f"make up registered only {sorted(bases)}"
    for base in bases.values():
        assert base["source"] == "local" and base["details"]["model_digest"].startswith("sha256:")  # type: ignore[index]
    smollm2 = bases["smollm2:135m"]["details"]
    assert "<|im_start|>" in smollm2["template"] and smollm2["context_length"] == 8192  # type: ignore[index]
    assert endpoints.get("MODELHUB_DEFAULT_MODEL") == "smollm2:135m"
    body = {"id": "kept", "name": "Kept", "base_model_id": "gemma3:270m"}
    assert httpx.post(f"{registry}/api/v1/models", json=body, headers=admin).status_code == 201

    # The first chat answers: no -m is the instruction-tuned default, and it says something.
    first = _run(str(BIN / "modelhub"), "chat", "What is the capital of France?", env=env)
    assert "smollm2:135m" in first.stdout and "0 tokens" not in first.stdout, first.stdout
    # (the status line counts the tokens that carried text, so a non-zero count means a non-empty answer)
    assert "produced no output" not in first.stdout and " tokens" in first.stdout, first.stdout

    # Two different models side by side, and a model file on one of them.
    tutor = {"id": "tiny-tutor", "name": "Tiny", "base_model_id": "gemma3:270m", "params": {"max_tokens": 8, "seed": 1}}
    assert httpx.post(f"{registry}/api/v1/models", json=tutor, headers=admin).status_code == 201
    chat = _run(str(BIN / "modelhub"), "chat", "-m", "smollm2:135m", "-m", "tiny-tutor", "Tell me a joke", env=env)
    assert "tiny-tutor" in chat.stdout and "smollm2:135m" in chat.stdout and "conversation" in chat.stdout

    # Up twice is harmless: nothing restarts, the ports stay.
    again = _run(str(BIN / "modelhub-dev"), "up", env=env)
    assert "Starting" not in again.stdout

    # A killed database comes back with the next `up`.
    postmaster = (home / "postgres" / "data" / "postmaster.pid").read_text().split()[0]
    os.kill(int(postmaster), signal.SIGKILL)
    _run(str(BIN / "modelhub-dev"), "up", env=env)
    # Each worker's pool finds out about its dead connections on their next use: those requests answer
    # 503 with Retry-After (never a 500), and the registry serves again by itself.
    statuses = _until_ok(f"{registry}/api/v1/models/kept", admin)
    assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}, statuses

    ports = json.loads((home / "stack.json").read_text())["ports"]
    _run(str(BIN / "modelhub-dev"), "down", env=env)
    still_open = [name for name, port in ports.items() if _port_open(port)]
    assert still_open == [], f"still listening after down: {still_open}"
    down_status = _run(str(BIN / "modelhub"), "status", env=env, check=False)
    assert down_status.returncode == 1 and "not ready" in down_status.stdout

    _run(str(BIN / "modelhub-dev"), "up", env=env)
    token = parse_env_file(endpoints_file.read_text())["MODELHUB_TOKEN"]
    kept = httpx.get(f"{registry}/api/v1/models/kept", headers={"Authorization": f"Bearer {token}"})
    assert kept.status_code == 200 and kept.json()["name"] == "Kept"


def _until_ok(url: str, headers: dict[str, str], seconds: float = 60.0) -> list[int]:
    """The statuses of GETs of ``url`` until one answers 200 (or the time is up)."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses.append(httpx.get(url, headers=headers, timeout=10).status_code)
        if statuses[-1] != 503:
            break
        time.sleep(0.2)
    return statuses
