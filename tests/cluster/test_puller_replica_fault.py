"""Fault 3: two puller replicas (separate processes) on a three-node NATS cluster (R3 streams) share the pull
work queue; the replica doing a pull is killed with SIGKILL once some of its parts are stored, and the other
resumes that pull from the recorded parts: none of them is fetched again, every pull completes once, its blob
stored once and verified, one ``completed`` event each."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cluster_kit import Accounting, Replicas, delivered_events, settings_environment

from modelhub_common.events import PULLS
from modelhub_devstack.nats import NatsCluster
from modelhub_puller import bootstrap
from modelhub_puller.settings import ENV_PREFIX, PullerSettings

# The puller's own test kit: the OCI pusher, GGUF maker and the throttling front of the real OCI registry.
sys.path.insert(0, str(Path(__file__).parents[2] / "services" / "puller" / "tests"))

from puller_testkit import MIB, OLLAMA, OciPusher, digest_of, make_gguf  # noqa: E402
from registry_double import RegistryDouble  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

PULLS_STARTED = 3
PART = 5 * MIB
MODEL_MIB = 24  # 5 parts of 5 MiB


@pytest.fixture
def double(oci_registry_url: str) -> Iterator[RegistryDouble]:
    server = RegistryDouble(oci_registry_url).start()
    yield server
    server.stop()


def _push(oci: OciPusher, gguf: bytes) -> str:
    repository = f"library/c{uuid.uuid4().hex[:10]}"
    config = {"model_format": "gguf", "model_family": "llama", "file_type": "Q4_K_M"}
    layers = [(OLLAMA + "model", gguf), (OLLAMA + "template", b"{{ .Prompt }}"), (OLLAMA + "params", b"{}")]
    oci.push_manifest(repository, "latest", config, layers)
    return f"{repository}:latest"


def _rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def _parts(database_url: str, digest: str) -> set[int]:
    """Parts of the blob's upload recorded as stored in S3."""
    rows = _rows(database_url, "SELECT part_number FROM blob_upload_parts WHERE digest = %s", digest)
    return {int(row[0]) for row in rows}


def test_the_other_replica_resumes_a_killed_pull_from_its_recorded_parts(
    cluster: NatsCluster,
    service_settings: Callable[..., Any],
    oci_registry_url: str,
    double: RegistryDouble,
    make_token: Callable[..., str],
    tmp_path: Path,
) -> None:
    oci = OciPusher(oci_registry_url)
    settings: PullerSettings = service_settings(
        PullerSettings,
        nats_url=cluster.url,
        stream_replicas=3,
        bucket=f"models-{uuid.uuid4().hex[:12]}",
        allowed_hosts=[double.host],
        insecure_hosts=[double.host],
        part_size_bytes=PART,
        parallel_parts=2,
        max_concurrent_pulls=1,  # one pull per replica: the killed replica is doing exactly one
        retry_backoff_seconds=0.05,
        heartbeat_seconds=0.5,
        lease_seconds=2,
        work_ack_wait_seconds=3,
        progress_persist_seconds=0.2,
        log_level="WARNING",
    )
    asyncio.run(bootstrap.run_migrations(settings))
    database = settings.database_url.get_secret_value()
    ggufs = [make_gguf(tmp_path / f"m{n}.gguf", megabytes=MODEL_MIB, seed=300 + n) for n in range(PULLS_STARTED)]
    models = [_push(oci, gguf) for gguf in ggufs]
    digests = {model: digest_of(gguf) for model, gguf in zip(models, ggufs, strict=True)}
    replicas = Replicas.of("modelhub_puller", settings_environment(settings, ENV_PREFIX), ENV_PREFIX + "PORT", tmp_path)
    headers = {"Authorization": f"Bearer {make_token('root', 'admin')}"}
    try:
        pair = [replicas.start(), replicas.start()]
        http = httpx.Client(timeout=30, headers=headers)
        double.reset(bytes_per_second=3 * MIB)  # slow enough to kill a replica in the middle of a blob
        pulls: dict[str, str] = {}  # pull id -> model
        for n, model in enumerate(models):
            response = http.post(f"{pair[n % 2].url}/api/v1/pulls", json={"model": f"{double.host}/{model}"})
            if response.status_code == 202:
                pulls[str(response.json()["id"])] = model

        # The first pull's blob: wait until two of its parts are recorded, then kill whoever holds its upload.
        first_digest = digests[models[0]]
        deadline = time.monotonic() + 120
        while True:
            parts = _parts(database, first_digest)
            holder = _rows(database, "SELECT worker FROM blob_uploads WHERE digest = %s", first_digest)
            if len(parts) >= 2 and holder and holder[0][0]:
                break
            assert time.monotonic() < deadline, "the first pull never stored two parts"
            time.sleep(0.05)
        pid = int(str(holder[0][0]).rsplit("-", 2)[1])  # worker ids are <host>-<pid>-<random>
        (doomed,) = [r for r in pair if r.process.pid == pid]
        doomed.kill()
        kept = _parts(database, first_digest)
        time.sleep(0.5)  # a request the killed replica sent just before dying may still reach the double
        fetched_before = {r.range for r in double.blob_requests(first_digest)}
        double.reset()  # full speed for the rest

        survivor = next(r for r in pair if r is not doomed)
        deadline = time.monotonic() + 180
        while True:
            states = {p: http.get(f"{survivor.url}/api/v1/pulls/{p}").json() for p in pulls}
            if all(s["state"] in ("completed", "failed", "cancelled") for s in states.values()):
                break
            assert time.monotonic() < deadline, {p: s["state"] for p, s in states.items()}
            time.sleep(0.2)

        # The parts stored before the kill were never asked for again.
        refetched = {r.range for r in double.blob_requests(first_digest) if r.range not in (None, "bytes=0-0")}
        size = len(ggufs[0])
        kept_ranges = {f"bytes={(n - 1) * PART}-{min(n * PART, size) - 1}" for n in kept}
        assert kept_ranges <= fetched_before
        assert not kept_ranges & refetched, (sorted(kept_ranges), sorted(refetched))

        completed = {p for p, s in states.items() if s["state"] == "completed"}
        stored_digests = {str(r[0]) for r in _rows(database, "SELECT digest FROM blobs")}
        stored = {p for p in completed if digests[pulls[p]] in stored_digests}
        assert _rows(database, "SELECT count(*) FROM blob_uploads") == [(0,)]  # no upload left half-done

        def pull_of(envelope: Any) -> str | None:
            pull_id = str(envelope.pull_completed.pull_id)
            return pull_id if pull_id in pulls else None

        delivered = asyncio.run(
            delivered_events(cluster.urls, PULLS.stream, PULLS.subject("completed"), pull_of, len(pulls), wait=60)
        )
        Accounting("kill -9 the puller replica doing a pull", PULLS_STARTED, set(pulls), stored, delivered).report()
        assert states[next(iter(pulls))]["attempts"] >= 2  # the first pull really was taken over
    finally:
        replicas.stop_all()
