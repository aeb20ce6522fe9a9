"""Fault 4: a RAG worker replica killed with SIGKILL in the middle of a file, on a three-node NATS cluster (R3
streams), while another replica takes uploads and indexes them: every file ends up indexed exactly once (one
complete set of chunks, one ``file_indexed`` event), the killed one by the other replica after redelivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cluster_kit import Accounting, Replicas, delivered_events, settings_environment

from modelhub_common.events import KNOWLEDGE
from modelhub_devstack.nats import NatsCluster
from modelhub_rag import bootstrap
from modelhub_rag.settings import ENV_PREFIX, RagSettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

FILES = 8
ACK_WAIT = 8  # redelivery after the kill; long enough that a busy survivor is not redelivered its own work
# services/rag/tests/stalling_worker.py: a rag replica whose embedder stalls for good after its first batch.
STALLING_WORKER = Path(__file__).parents[2] / "services" / "rag" / "tests" / "stalling_worker.py"


def _document(n: int) -> bytes:
    return "\n\n".join(
        f"File {n}, section {i}. Migratory birds navigate by the stars, the sun and the Earth's magnetic field."
        for i in range(400)
    ).encode()


def _indexed_once(database_url: str, file_ids: set[str]) -> set[str]:
    """Files marked indexed whose chunks are one complete set: ordinals 0..n-1, each once, n as recorded."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT f.id, f.chunk_count, count(c.*), count(DISTINCT c.ordinal), min(c.ordinal), max(c.ordinal)"
            " FROM files f LEFT JOIN chunks c ON c.file_id = f.id"
            " WHERE f.id = ANY(%s) AND f.status = 'indexed' GROUP BY f.id, f.chunk_count",
            (list(file_ids),),
        ).fetchall()
    return {row[0] for row in rows if row[1] > 0 and row[1] == row[2] == row[3] and (row[4], row[5]) == (0, row[1] - 1)}


def test_a_worker_killed_mid_file_leaves_every_file_indexed_exactly_once(
    cluster: NatsCluster, service_settings: Callable[..., Any], make_token: Callable[..., str], tmp_path: Path
) -> None:
    settings: RagSettings = service_settings(
        RagSettings,
        nats_url=cluster.url,
        stream_replicas=3,
        consume_model_events=False,
        ingest_ack_wait_seconds=ACK_WAIT,
        log_level="WARNING",
        workers=1,  # one process per replica: SIGKILL takes the whole replica down
    )
    asyncio.run(bootstrap.run_migrations(settings))
    env = settings_environment(settings, ENV_PREFIX)
    stalling = Replicas.of("modelhub_rag", env, ENV_PREFIX + "PORT", tmp_path)
    stalling.name, stalling.argv = "rag-stalling", [stalling.argv[0], str(STALLING_WORKER)]
    healthy = Replicas.of("modelhub_rag", env, ENV_PREFIX + "PORT", tmp_path)
    headers = {"Authorization": f"Bearer {make_token()}"}
    marker = tmp_path / "marker"
    try:
        # The stalling replica alone takes the first file (one file at a time) and stops inside it ...
        doomed = stalling.start(RAG_TEST_MARKER=str(marker), **{ENV_PREFIX + "INGEST_CONCURRENCY": "1"})
        http = httpx.Client(timeout=30, headers=headers)
        kb = http.post(f"{doomed.url}/api/v1/knowledge", json={"name": "birds"}).json()["id"]

        def upload(url: str, n: int) -> str | None:
            files = {"file": (f"birds-{n}.txt", _document(n), "text/plain")}
            response = http.post(f"{url}/api/v1/knowledge/{kb}/files", files=files)
            return str(response.json()["id"]) if response.status_code == 202 else None

        acknowledged = {upload(doomed.url, 0)}
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert doomed.process.poll() is None, doomed.log_tail()
            assert time.monotonic() < deadline, "the stalling worker never started on the file"
            time.sleep(0.1)

        # ... a second replica serves the rest of the load, and the first is killed half-way through it.
        survivor = healthy.start()
        for n in range(1, FILES):
            acknowledged.add(upload(survivor.url, n))
            if n == FILES // 2:
                doomed.kill()
        acknowledged.discard(None)
        file_ids = {i for i in acknowledged if i is not None}

        deadline = time.monotonic() + 180
        while True:
            files = http.get(f"{survivor.url}/api/v1/knowledge/{kb}/files").json()["items"]
            if len(files) == FILES and all(f["status"] in ("indexed", "failed") for f in files):
                break
            assert time.monotonic() < deadline, [(f["name"], f["status"]) for f in files]
            time.sleep(0.5)
        first = next(f for f in files if f["name"] == "birds-0.txt")
        assert first["status"] == "indexed" and first["attempts"] == 2, first  # redelivered to the survivor

        def file_of(envelope: Any) -> str | None:
            file_id = str(envelope.knowledge_file_indexed.file_id)
            return file_id if file_id in file_ids else None

        delivered = asyncio.run(
            delivered_events(cluster.urls, KNOWLEDGE.stream, KNOWLEDGE.subject("file_indexed"), file_of, FILES, wait=60)
        )
        stored = _indexed_once(settings.database_url.get_secret_value(), file_ids)
        Accounting("kill -9 a RAG worker mid-file", FILES, file_ids, stored, delivered).report()
    finally:
        stalling.stop_all()
        healthy.stop_all()
