"""A puller process killed in the middle of a download; the next one resumes without re-fetching stored parts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from puller_testkit import MIB, PushedModel, db_rows, environment, unique_outbox_ids
from registry_double import RegistryDouble

from modelhub_devstack.ports import pick_free_port
from modelhub_puller import bootstrap
from modelhub_puller.settings import PullerSettings


@contextmanager
def puller_process(settings: PullerSettings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhub_puller", "serve"],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{settings.port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the puller process did not get ready"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_killed_puller_resumes_without_refetching_completed_parts(
    puller_settings: Callable[..., PullerSettings],
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
    make_token: Callable[..., str],
    tmp_path: Path,
) -> None:
    settings = puller_settings(port=pick_free_port(), parallel_parts=2)
    asyncio.run(bootstrap.run_migrations(settings))
    unique_outbox_ids(settings.database_url.get_secret_value())
    model = push_model(megabytes=24, seed=71)
    digest = model.digest("model")
    double.reset(bytes_per_second=3 * MIB)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.port}",
        headers={"Authorization": f"Bearer {make_token('root', 'admin')}"},
        timeout=10,
    )

    def parts_stored() -> set[int]:
        return {
            row[0]
            for row in db_rows(settings, "SELECT part_number FROM blob_upload_parts WHERE digest = %s", (digest,))
        }

    with puller_process(settings, tmp_path / "first.log") as first:
        pull: dict[str, Any] = api.post("/api/v1/pulls", json={"model": model.name(double.host)}).json()
        deadline = time.monotonic() + 60
        while len(parts_stored()) < 2:
            assert time.monotonic() < deadline, "no parts were stored"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # no goodbye: no nak, no lease release
        first.wait()
    before = parts_stored()
    assert 2 <= len(before) < 5, before  # 24 MiB and a bit = 5 parts of 5 MiB
    # A request the killed process sent just before dying may still reach the double: let it be logged first.
    time.sleep(0.5)
    fetched_before = {r.range for r in double.blob_requests(digest)}
    double.reset()  # full speed from now on; the log starts again

    with puller_process(settings, tmp_path / "second.log"):
        deadline = time.monotonic() + 90
        while (state := api.get(f"/api/v1/pulls/{pull['id']}").json())["state"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
    assert state["state"] == "completed", state
    assert state["attempts"] >= 2

    refetched = [r.range for r in double.blob_requests(digest) if r.range not in (None, "bytes=0-0")]
    part_size = 5 * MIB
    stored_ranges = {
        f"bytes={(n - 1) * part_size}-{min(n * part_size, len(model.layers['model'])) - 1}" for n in before
    }
    assert stored_ranges <= fetched_before  # they really were downloaded by the first process
    assert not stored_ranges & set(refetched), (sorted(stored_ranges), refetched)
    assert len(set(refetched)) == 5 - len(before)  # every missing part, and nothing else
    assert db_rows(settings, "SELECT count(*) FROM blobs WHERE digest = %s", (digest,))[0][0] == 1
