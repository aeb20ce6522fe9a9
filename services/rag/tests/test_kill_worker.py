"""A worker killed in the middle of a file leaves nothing half-written; the file ends up indexed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelhub_devstack.ports import pick_free_port

ACK_WAIT = 4


def _env(settings: Any, marker: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_RAG_")}
    env.update(
        {
            "MODELHUB_RAG_PORT": str(pick_free_port()),
            "MODELHUB_RAG_NATS_URL": settings.nats_url,
            "MODELHUB_RAG_JWT_SECRET": settings.jwt_secret.get_secret_value(),
            "MODELHUB_RAG_DATABASE_URL": settings.database_url.get_secret_value(),
            "MODELHUB_RAG_S3_ENDPOINT": settings.s3_endpoint,
            "MODELHUB_RAG_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
            "MODELHUB_RAG_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
            "MODELHUB_RAG_S3_SECURE": "true" if settings.s3_secure else "false",
            "MODELHUB_RAG_CONSUME_MODEL_EVENTS": "false",
            "MODELHUB_RAG_INGEST_ACK_WAIT_SECONDS": str(ACK_WAIT),
            "RAG_TEST_MARKER": str(marker),
        }
    )
    return env


def test_a_worker_killed_mid_file_leaves_nothing_half_written(rag_settings: Any, make_rag: Any, tmp_path: Path) -> None:
    # One replica that only serves the API (no worker) takes the upload ...
    settings = rag_settings(ingest_ack_wait_seconds=ACK_WAIT)
    api = make_rag(settings.model_copy(update={"worker_enabled": False}))
    kb = api.create()
    text = "\n\n".join(
        f"Section {i}. Migratory birds navigate by the stars, the sun and the Earth's magnetic field."
        for i in range(200)
    )

    # ... a worker replica picks the file up, embeds one batch and is killed there.
    marker = tmp_path / "marker"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("stalling_worker.py"))],
        env=_env(settings, marker),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        file = api.upload(kb["id"], "birds.txt", text.encode())
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never started on the file"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        log.close()

    (stuck,) = api.files(kb["id"])
    assert stuck["status"] == "indexing" and stuck["chunks"] == 0
    assert api.sql("SELECT count(*) FROM chunks WHERE file_id = %s", file["id"]) == [(0,)]
    assert api.sql("SELECT count(*) FROM outbox WHERE subject LIKE 'modelhub.knowledge.v1.file_indexed'") == [(0,)]

    # A healthy worker gets the redelivered message after ack_wait and indexes the file once.
    healthy = make_rag(settings)
    (done,) = healthy.wait_files(kb["id"], count=1)
    assert done["status"] == "indexed" and done["attempts"] == 2
    rows = api.sql(
        "SELECT count(*), count(DISTINCT ordinal), min(ordinal), max(ordinal) FROM chunks WHERE file_id = %s",
        file["id"],
    )
    assert rows == [(done["chunks"], done["chunks"], 0, done["chunks"] - 1)]
    assert api.sql("SELECT count(*) FROM outbox WHERE subject = 'modelhub.knowledge.v1.file_indexed'") == [(1,)]
    assert healthy.query(kb["id"], "how do birds navigate")[0]["file_id"] == file["id"]
