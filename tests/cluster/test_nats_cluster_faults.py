"""Faults under load on a real three-node NATS JetStream cluster (loopback routes, streams at R3) with the real
registry as separate processes: each test kills something with SIGKILL while model files are being created and
ends with an exact accounting (every 201 has its row and exactly one ``created`` event in the stream).

Each prints one line (``-s``): test, operations, acknowledged, stored, events delivered, duplicates, lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cluster_kit import Accounting, created_models, models_stream_state

from modelhub_common.outbox import RELAY_LOCK_KEY
from modelhub_devstack.nats import NatsCluster
from modelhub_devstack.ports import pick_free_port
from modelhub_registry import bootstrap
from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

CREATES = 1000
CONCURRENCY = 16


@dataclass
class Registries:
    env: dict[str, str]
    database_url: str
    processes: list[tuple[subprocess.Popen[bytes], str]] = field(default_factory=list)
    logs: Path = Path()

    def start(self) -> tuple[subprocess.Popen[bytes], str]:
        port = pick_free_port()
        env = {**self.env, ENV_PREFIX + "PORT": str(port)}
        log = open(self.logs / f"registry-{len(self.processes)}.log", "wb")  # closed when the process ends
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhub_registry", "serve"], env=env, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        self.processes.append((process, url))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (self.logs / f"registry-{len(self.processes) - 1}.log").read_text()
            time.sleep(0.1)
        raise AssertionError("the registry did not become ready")


@pytest.fixture
def registries(
    service_settings: Callable[..., Any], cluster: NatsCluster, jwt_secret: str, tmp_path: Path
) -> Iterator[Registries]:
    settings: RegistrySettings = service_settings(
        RegistrySettings, nats_url=cluster.url, stream_replicas=3, connection_sync_seconds=0
    )
    asyncio.run(bootstrap.run_migrations(settings))
    values = {
        "HOST": "127.0.0.1",
        "NATS_URL": cluster.url,
        "STREAM_REPLICAS": "3",
        "JWT_SECRET": jwt_secret,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "LOG_LEVEL": "WARNING",
        "WORKERS": "1",  # one process per replica: SIGKILL takes the whole replica (and its relay lock) down
        "CONNECTION_SYNC_SECONDS": "0",
        # Quick retries, so that a relay waiting out a leader election is seen to catch up within the test.
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    started = Registries({**os.environ, **{ENV_PREFIX + k: v for k, v in values.items()}}, values["DATABASE_URL"])
    started.logs = tmp_path
    yield started
    for process, _ in started.processes:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)


@dataclass
class Load:
    acknowledged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def _create_many(
    urls: list[str], headers: dict[str, str], prefix: str, on_progress: Callable[[int], Any]
) -> Load:
    """``CREATES`` model files from ``CONCURRENCY`` clients, spread over ``urls``; a refused or failed call is
    retried once on the next URL (a killed replica), and counted as failed if that fails too."""
    load = Load()
    ids = iter(range(CREATES))
    done = 0

    async def client(n: int, http: httpx.AsyncClient) -> None:
        nonlocal done
        for i in ids:
            model_id = f"{prefix}-{i:04d}"
            body = {"id": model_id, "name": model_id, "base_model_id": "llama3.1:8b"}
            for attempt in range(2):
                url = urls[(n + i + attempt) % len(urls)]
                try:
                    response = await http.post(f"{url}/api/v1/models", json=body, headers=headers)
                except httpx.HTTPError:
                    continue
                if response.status_code == 201:
                    load.acknowledged.append(model_id)
                    break
                if response.status_code == 409:  # the first attempt was stored after all
                    load.acknowledged.append(model_id)
                    break
            else:
                load.failed.append(model_id)
            done += 1
            await on_progress(done)

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        await asyncio.gather(*(client(n, http) for n in range(CONCURRENCY)))
    return load


def _account(name: str, load: Load, stored: set[str], events: dict[str, int]) -> None:
    Accounting(name, CREATES, set(load.acknowledged), stored, events).report(min_acknowledged=int(CREATES * 0.95))


def _wait_for_relay_holder(
    database_url: str, processes: list[subprocess.Popen[bytes]], seconds: float = 60.0
) -> subprocess.Popen[bytes]:
    """The replica relaying the outbox, once one has taken the lock (a replica that just started, or that
    takes over from a dead one, gets it after its first poll)."""
    deadline = time.monotonic() + seconds
    while (holder := _relay_holder(database_url, processes)) is None:
        assert time.monotonic() < deadline, "no replica relays the outbox"
        time.sleep(0.2)
    return holder


def _relay_holder(database_url: str, processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes] | None:
    """The process whose database connection holds the outbox relay's advisory lock: the lock's backend is
    matched to its client port, and the port to the process owning that socket (``/proc``)."""
    key = RELAY_LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            # Advisory locks are per database, and other tests' registries hold the same key in theirs.
            "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
    if row is None:
        return None
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == row[0]:
                    inodes.add(fields[9])
    for process in processes:
        fd_dir = Path(f"/proc/{process.pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return process
    return None


def _admin(make_token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token()}"}


def _stream_leader(urls: list[str]) -> str:
    leader, _, replicas = asyncio.run(models_stream_state(urls))
    assert replicas == 3, "the stream is not replicated three times"
    return leader


def test_killing_the_stream_leader_loses_and_duplicates_no_event(
    cluster: NatsCluster, registries: Registries, make_token: Callable[..., str]
) -> None:
    _, url = registries.start()
    headers = _admin(make_token)
    assert httpx.post(f"{url}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers).status_code == 201
    leader = _stream_leader(cluster.urls)
    prefix = f"leader-{uuid.uuid4().hex[:6]}"
    killed: list[str] = []

    async def kill_leader_once(done: int) -> None:
        if done == CREATES // 3 and not killed:
            pid = cluster.node_named(leader).recorded_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(leader)

    load = asyncio.run(_create_many([url], headers, prefix, kill_leader_once))
    assert killed == [leader]
    survivors = [n.url for n in cluster.nodes if n.name != leader]
    stored, events = created_models(registries.database_url, survivors, prefix, want=len(load.acknowledged), wait=90)
    _account("kill -9 the stream leader", load, stored, events)
    assert _stream_leader(survivors) != leader  # a new leader was elected among the survivors


def test_killing_the_relaying_registry_replica_hands_its_outbox_over(
    cluster: NatsCluster, registries: Registries, make_token: Callable[..., str]
) -> None:
    replicas = [registries.start(), registries.start()]
    urls = [url for _, url in replicas]
    headers = _admin(make_token)
    assert httpx.post(f"{urls[0]}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=headers).status_code == 201
    processes = [process for process, _ in replicas]
    first = _wait_for_relay_holder(registries.database_url, processes)
    prefix = f"relay-{uuid.uuid4().hex[:6]}"
    killed: list[int] = []

    async def kill_first_once(done: int) -> None:
        if done == CREATES // 3 and not killed:
            os.kill(first.pid, signal.SIGKILL)
            killed.append(first.pid)

    load = asyncio.run(_create_many(urls, headers, prefix, kill_first_once))
    assert killed and first.wait(timeout=10) == -signal.SIGKILL
    stored, events = created_models(registries.database_url, cluster.urls, prefix, want=len(load.acknowledged), wait=90)
    survivor = next(p for p in processes if p is not first)
    assert _wait_for_relay_holder(registries.database_url, processes) is survivor  # the lock was handed over
    _account("kill -9 the relaying registry replica", load, stored, events)
