"""The registry and RAG with several worker processes (``MODELHUB_<SVC>_WORKERS=2``), run as an operator runs
them: ``python -m modelhub_<svc> serve``. Both workers answer on the one port, work done through either is
complete (every create relayed to NATS exactly once; a file uploaded through either is indexed), SIGTERM
to the serving process stops every worker, and workers whose supervisor is killed stop by themselves."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from modelhub_common.events import MODELS, decode_envelope
from modelhub_devstack.ports import pick_free_port

_WORKER_PID = re.compile(r'^modelhub_worker_info\{[^}]*pid="(\d+)"', re.MULTILINE)
# Generous: the whole suite may be loading both cores while the workers start.
_START_SECONDS = 120


@dataclass
class ServedService:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def worker_pid(self, client: httpx.Client) -> int:
        """The pid of the worker holding ``client``'s connection, from its ``/metrics``."""
        found = _WORKER_PID.search(client.get(f"{self.url}/metrics").text)
        assert found is not None, "every worker exposes modelhub_worker_info"
        return int(found.group(1))

    def worker_pids(self, want: int, attempts: int = 200) -> set[int]:
        """Distinct workers seen over fresh connections (each one accepted by whichever worker the kernel picks)."""
        seen: set[int] = set()
        for _ in range(attempts):
            with httpx.Client(timeout=10) as client:
                seen.add(self.worker_pid(client))
            if len(seen) >= want:
                break
        return seen


@pytest.fixture
def serve_service(tmp_path: Path) -> Iterator[Callable[..., ServedService]]:
    """Starts ``python -m <module> serve`` in a session of its own; whatever happens in the test, the whole
    process group (the supervisor and its workers) is gone afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(module: str, prefix: str, values: dict[str, str]) -> ServedService:
        port = pick_free_port()
        env = {**os.environ, **{prefix + k: v for k, v in {**values, "HOST": "127.0.0.1", "PORT": str(port)}.items()}}
        log = tmp_path / f"{module}-{len(started)}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", module, "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        served = ServedService(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + _START_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{module} did not become ready:\n{log.read_text()}")

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # Workers left behind by a supervisor that did not stop them (a failing test) go with their group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped, or a zombie nobody waits for)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _stop_and_check(served: ServedService, workers: set[int]) -> None:
    for pid in workers:
        assert _parent_of(pid) == served.process.pid, "the workers are children of the serving process"
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, served.log.read_text()
    assert all(_gone(pid) for pid in workers), served.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", timeout=2)


def _common_env(service_settings: Callable[..., Any], settings_cls: type[Any], migrate: Callable[[Any], Any]) -> Any:
    settings = service_settings(settings_cls)
    asyncio.run(migrate(settings))
    return settings, {
        "NATS_URL": settings.nats_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "WORKERS": "2",
    }


async def _created_counts(nats_url: str, since: datetime, ids: set[str]) -> Counter[str]:
    """How many ``created`` events the models stream holds for each of ``ids``: read until every id was seen,
    then on to the stream's end, so that a duplicate would be counted."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(
            MODELS.subject("created"),
            durable=None,
            stream=MODELS.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since.isoformat()),
        )
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                for msg in await sub.fetch(200, timeout=1):
                    model_id = decode_envelope(msg.data).model_changed.model_id
                    if model_id in ids:
                        counts[model_id] += 1
            except TimeoutError:  # caught up with the stream
                if set(counts) == ids:
                    break
        return counts
    finally:
        await nc.close()


def test_registry_with_two_workers(
    serve_service: Callable[..., ServedService],
    service_settings: Callable[..., Any],
    make_token: Callable[..., str],
    nats_url: str,
) -> None:
    from modelhub_registry import bootstrap
    from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

    settings, env = _common_env(service_settings, RegistrySettings, bootstrap.run_migrations)
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        # Every test shares one NATS: keep this database's outbox message ids apart from other tests'.
        conn.execute("SELECT setval('outbox_id_seq', %s)", (uuid.uuid4().int % 10**15 + 10**9,))
    served = serve_service("modelhub_registry", ENV_PREFIX, {**env, "CONNECTION_SYNC_SECONDS": "0"})
    admin = {"Authorization": f"Bearer {make_token()}"}
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert httpx.post(f"{served.url}/api/v1/base-models", json={"id": "llama3.1:8b"}, headers=admin).status_code == 201

    # Each create on a connection of its own, attributed to the worker that connection landed on, until both
    # workers have taken several.
    prefix = f"w{uuid.uuid4().hex[:8]}"
    created_by: dict[str, int] = {}
    for index in range(200):
        with httpx.Client(timeout=10, headers=admin) as client:
            model_id = f"{prefix}-{index}"
            body = {"id": model_id, "name": model_id, "base_model_id": "llama3.1:8b"}
            response = client.post(f"{served.url}/api/v1/models", json=body)
            assert response.status_code == 201, response.text
            created_by[model_id] = served.worker_pid(client)
        per_worker = Counter(created_by.values())
        if len(per_worker) == 2 and min(per_worker.values()) >= 5:
            break
    workers = set(created_by.values())
    assert len(workers) == 2, f"200 connections all landed on one worker: {per_worker}"

    counts = asyncio.run(_created_counts(nats_url, since, set(created_by)))
    assert counts == Counter(dict.fromkeys(created_by, 1)), "every create relayed once, whichever worker took it"
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        pending = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert pending == (0,)
    listed = httpx.get(f"{served.url}/api/v1/models", params={"limit": 200}, headers=admin).json()["items"]
    assert {m["id"] for m in listed} >= set(created_by)

    # Whichever worker answers a scrape counts the requests of both: a counter never jumps between workers.
    for pid in workers:
        assert _creates_counted_by(served, pid) == len(created_by)

    _stop_and_check(served, workers)


def _creates_counted_by(served: ServedService, pid: int, attempts: int = 200) -> float:
    """``POST /api/v1/models`` answered 2xx, as counted by a scrape that worker ``pid`` answered."""
    for _ in range(attempts):
        with httpx.Client(timeout=10) as client:
            text = client.get(f"{served.url}/metrics").text
        found = _WORKER_PID.search(text)
        if found is None or int(found.group(1)) != pid:
            continue
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "modelhub_http_requests_total"
            and sample.labels.get("route") == "/api/v1/models"
            and sample.labels.get("method") == "POST"
            and sample.labels.get("status") == "2xx"
        )
    raise AssertionError(f"no scrape was answered by worker {pid} in {attempts} connections")


def test_rag_with_two_workers(
    serve_service: Callable[..., ServedService],
    service_settings: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    from modelhub_rag import bootstrap
    from modelhub_rag.settings import ENV_PREFIX, RagSettings

    _, env = _common_env(service_settings, RagSettings, bootstrap.run_migrations)
    served = serve_service("modelhub_rag", ENV_PREFIX, {**env, "CONSUME_MODEL_EVENTS": "false"})
    admin = {"Authorization": f"Bearer {make_token()}"}
    workers = served.worker_pids(2)
    assert len(workers) == 2, "both workers answer on the port"

    # A collection and a file through each worker; the ingest consumers (shared by name) index both.
    collections: dict[int, str] = {}
    for index in range(200):
        with httpx.Client(timeout=30, headers=admin) as client:
            pid = served.worker_pid(client)
            if pid in collections:
                continue
            created = client.post(f"{served.url}/api/v1/knowledge", json={"name": f"kb-{index}"})
            assert created.status_code == 201, created.text
            kid = created.json()["id"]
            text = f"Worker {index} notes: the lighthouse keeper logs the tide at dawn.".encode()
            upload = client.post(f"{served.url}/api/v1/knowledge/{kid}/files", files={"file": ("notes.txt", text)})
            assert upload.status_code == 202, upload.text
            collections[pid] = kid
        if len(collections) == 2:
            break
    assert set(collections) == workers

    deadline = time.monotonic() + _START_SECONDS
    for kid in collections.values():
        while True:
            files = httpx.get(f"{served.url}/api/v1/knowledge/{kid}/files", headers=admin).json()["items"]
            if files and all(f["status"] in ("indexed", "failed") for f in files):
                break
            assert time.monotonic() < deadline, f"files not indexed: {files}"
            time.sleep(0.2)
        assert [f["status"] for f in files] == ["indexed"]
        results = httpx.post(
            f"{served.url}/api/v1/knowledge/{kid}/query", json={"query": "lighthouse tide", "k": 3}, headers=admin
        ).json()["results"]
        assert results, "the indexed file is found"

    _stop_and_check(served, workers)


def test_workers_stop_when_their_supervisor_is_killed(
    serve_service: Callable[..., ServedService], service_settings: Callable[..., Any]
) -> None:
    """SIGKILL leaves the supervisor no chance to stop its workers; they must not go on serving the port."""
    from modelhub_registry import bootstrap
    from modelhub_registry.settings import ENV_PREFIX, RegistrySettings

    _, env = _common_env(service_settings, RegistrySettings, bootstrap.run_migrations)
    served = serve_service("modelhub_registry", ENV_PREFIX, {**env, "CONNECTION_SYNC_SECONDS": "0"})
    workers = served.worker_pids(2)
    assert len(workers) == 2
    served.process.kill()
    served.process.wait(timeout=10)
    deadline = time.monotonic() + 60
    while not all(_gone(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", timeout=2)
