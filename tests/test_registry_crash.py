"""A registry killed with SIGKILL right after a create still delivers that create's event after restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from modelhub_common.events import MODELS, decode_envelope
from modelhub_common.outbox import RELAY_LOCK_KEY
from modelhub_registry import bootstrap
from modelhub_registry.settings import ENV_PREFIX, RegistrySettings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def registry_env(service_settings: Callable[..., Any], jwt_secret: str, tmp_path: Path) -> dict[str, str]:
    settings: RegistrySettings = service_settings(RegistrySettings, port=_free_port(), connection_sync_seconds=0)
    asyncio.run(bootstrap.run_migrations(settings))
    values = {
        "HOST": "127.0.0.1",
        "PORT": str(settings.port),
        "NATS_URL": settings.nats_url,
        "JWT_SECRET": jwt_secret,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "LOG_LEVEL": "WARNING",
        "CONNECTION_SYNC_SECONDS": "0",
    }
    return {**os.environ, **{ENV_PREFIX + k: v for k, v in values.items()}}


@pytest.fixture
def start_registry(registry_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    url = f"http://127.0.0.1:{registry_env[ENV_PREFIX + 'PORT']}"

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"registry-{len(started)}.log", "wb")  # closed when the process ends
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhub_registry", "serve"], env=registry_env, stdout=log, stderr=log
        )
        started.append(process)
        # Generous: the whole test suite may be loading both cores while this starts.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return process
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / f"registry-{len(started) - 1}.log").read_text()
            time.sleep(0.1)
        raise AssertionError("the registry did not become ready")

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)


async def _created_events(nats_url: str, since: datetime, model_id: str, wait: float) -> list[Any]:
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            MODELS.subject("created"),
            durable=None,
            stream=MODELS.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat()),
        )
        found = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                for msg in await sub.fetch(100, timeout=1):
                    envelope = decode_envelope(msg.data)
                    if envelope.model_changed.model_id == model_id:
                        found.append(msg.headers)
            except TimeoutError:  # nats raises its own subclass, or asyncio.TimeoutError from fetch
                if found:
                    break
        return found
    finally:
        await nc.close()


def test_create_event_survives_sigkill(
    start_registry: Callable[[], subprocess.Popen[bytes]],
    registry_env: dict[str, str],
    make_token: Callable[..., str],
    nats_url: str,
    pg_url: str,
) -> None:
    url = f"http://127.0.0.1:{registry_env[ENV_PREFIX + 'PORT']}"
    admin = {"Authorization": f"Bearer {make_token()}"}
    since = datetime.now(UTC) - timedelta(seconds=1)
    # Holding the relay's lock keeps the running registry's relay on standby, so the kill lands after the
    # commit and before any publish, every time.
    with psycopg.connect(pg_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (RELAY_LOCK_KEY,))
        first = start_registry()
        assert httpx.post(f"{url}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=admin).status_code == 201
        body = {"id": "survivor", "name": "Survivor", "base_model_id": "llama3.1:8b"}
        assert httpx.post(f"{url}/api/v1/models", json=body, headers=admin).status_code == 201
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        with psycopg.connect(pg_url) as conn:
            pending = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        # Each change committed its event and its audit record together; none is published yet.
        assert pending is not None and pending[0] == 4, "both events were committed and none published yet"
        assert asyncio.run(_created_events(nats_url, since, "survivor", wait=2)) == []

    start_registry()
    delivered = asyncio.run(_created_events(nats_url, since, "survivor", wait=20))
    assert len(delivered) == 1
    with psycopg.connect(pg_url) as conn:
        left = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert left is not None and left[0] == 0
