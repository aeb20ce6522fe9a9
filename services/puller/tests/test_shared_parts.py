"""Two puller processes on one database share one pull's blob: each stores parts of the same S3 multipart
upload, the holder verifies the whole blob and completes it once. A helper killed mid-pull costs only
its parts in flight: the holder takes them over when their claims' lease runs out. A holder killed
mid-pull leaves the pull to the other replica, which resumes it from every part either had stored.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from puller_testkit import MIB, ModelPull, PushedModel, db_rows, puller_process, stored_object
from registry_double import RegistryDouble

from modelhub_devstack.ports import pick_free_port
from modelhub_puller.domain.manifest import blob_key
from modelhub_puller.settings import PullerSettings

PART = 5 * MIB
MODEL_MIB = 40  # 9 parts of 5 MiB


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class SharedPull(ModelPull):
    def __init__(self, settings: PullerSettings, model: PushedModel, token: str) -> None:
        super().__init__(settings, model, token)
        self.parts = -(-self.size // PART)
        self.ports = [pick_free_port(), pick_free_port()]
        self.seen: dict[int, str] = {}  # part number -> worker that stored it, as seen while the pull ran

    def look(self) -> tuple[str | None, dict[int, str]]:
        """The upload's holder and the parts stored so far, with who stored them."""
        holder = db_rows(self.settings, "SELECT worker FROM blob_uploads WHERE digest = %s", (self.digest,))
        rows = db_rows(
            self.settings, "SELECT part_number, worker FROM blob_upload_parts WHERE digest = %s", (self.digest,)
        )
        self.seen.update({int(n): str(w) for n, w in rows})
        return (str(holder[0][0]) if holder and holder[0][0] else None), {int(n): str(w) for n, w in rows}

    def wait_final(self, api: httpx.Client, pull_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while (state := api.get(f"/api/v1/pulls/{pull_id}").json())["state"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, state
            self.look()
            time.sleep(0.05)
        return dict(state)

    def check_stored_once(self) -> None:
        data = stored_object(self.settings, blob_key(self.digest))
        assert data is not None and "sha256:" + hashlib.sha256(data).hexdigest() == self.digest
        assert db_rows(self.settings, "SELECT count(*) FROM blobs WHERE digest = %s", (self.digest,)) == [(1,)]
        assert db_rows(self.settings, "SELECT count(*) FROM blob_uploads") == [(0,)]
        assert db_rows(self.settings, "SELECT count(*) FROM blob_part_claims") == [(0,)]
        completed = db_rows(
            self.settings,
            "SELECT count(*) FROM outbox WHERE subject = 'modelhub.pulls.v1.completed'",
        )
        assert completed == [(1,)]


@pytest.fixture
def shared_pull(
    puller_settings: Callable[..., PullerSettings],
    push_model: Callable[..., PushedModel],
    make_token: Callable[..., str],
) -> Callable[..., SharedPull]:
    def build(seed: int, *, megabytes: float = MODEL_MIB, **overrides: Any) -> SharedPull:
        settings = puller_settings(
            parallel_parts=1, max_concurrent_pulls=1, share_poll_seconds=0.2, log_level="INFO", **overrides
        )
        return SharedPull(settings, push_model(megabytes=megabytes, seed=seed), make_token("root", "admin"))

    return build


def _pair(pull: SharedPull, tmp_path: Path, stack: ExitStack) -> list[subprocess.Popen[bytes]]:
    return [
        stack.enter_context(
            puller_process(pull.settings.model_copy(update={"port": port}), tmp_path / f"puller-{n}.log")
        )
        for n, port in enumerate(pull.ports)
    ]


def _start(
    pull: SharedPull, double: RegistryDouble, tmp_path: Path, stack: ExitStack
) -> tuple[list[subprocess.Popen[bytes]], httpx.Client, str]:
    """Both processes started; the pull requested through the first. Returns them, its client and the pull id."""
    processes = _pair(pull, tmp_path, stack)
    api = pull.client(pull.ports[0])
    pull_id = str(api.post("/api/v1/pulls", json={"model": pull.model.name(double.host)}).json()["id"])
    return processes, api, pull_id


def _both_storing(pull: SharedPull) -> tuple[str, dict[int, str]]:
    """Waits until the holder and the other replica have each stored a part, with 3 or more still to go."""
    deadline = time.monotonic() + 60
    while True:
        holder, parts = pull.look()
        workers = set(parts.values())
        if holder in workers and len(workers) == 2 and len(parts) <= pull.parts - 3:
            return holder, parts
        assert time.monotonic() < deadline, (holder, parts)
        time.sleep(0.05)


def _by_pid(processes: list[subprocess.Popen[bytes]], worker: str) -> int:
    pid = int(worker.rsplit("-", 2)[1])  # worker ids are <host>-<pid>-<random>
    return next(n for n, p in enumerate(processes) if p.pid == pid)


def _kill(pull: SharedPull, processes: list[subprocess.Popen[bytes]], worker: str) -> int:
    """SIGKILLs the replica running as ``worker`` (no goodbye: what it claimed stays claimed until its lease
    runs out); returns the port of the other one."""
    doomed = processes[_by_pid(processes, worker)]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    return pull.ports[1 - processes.index(doomed)]


def test_two_replicas_store_the_parts_of_one_blob_and_one_completes_it(
    shared_pull: Callable[..., SharedPull], double: RegistryDouble, tmp_path: Path
) -> None:
    pull = shared_pull(81)
    double.reset(bytes_per_second=4 * MIB)  # per connection: slow enough for the other replica to join
    with ExitStack() as stack:
        processes, api, pull_id = _start(pull, double, tmp_path, stack)
        state = pull.wait_final(api, pull_id)
        assert state["state"] == "completed", state
        stored = [_metric(port, "modelhub_puller_parts_stored") for port in pull.ports]
        helped = [_metric(port, "modelhub_puller_parts_helped") for port in pull.ports]
        read_back = [_metric(port, "modelhub_puller_read_back_bytes") for port in pull.ports]
        assert len(processes) == 2

    # Both replicas stored parts, and every part was stored exactly once between them.
    assert sum(stored) == pull.parts, (stored, helped)
    assert min(stored) >= 1, stored
    holder = 0 if helped[0] == 0 else 1
    assert helped[holder] == 0 and helped[1 - holder] == stored[1 - holder]
    assert len(set(pull.seen.values())) == 2, pull.seen  # two workers seen in blob_upload_parts
    # Each part was fetched once from the registry.
    ranged = [r.range for r in double.blob_requests(pull.digest) if r.range not in (None, "bytes=0-0")]
    assert len(ranged) == len(set(ranged)) == pull.parts, ranged
    # The holder verified the whole blob: what it had not fetched itself was read back from S3.
    assert read_back[holder] >= helped[1 - holder] * PART - PART, read_back
    assert read_back[1 - holder] == 0
    pull.check_stored_once()


def test_a_helper_killed_mid_pull_leaves_its_parts_to_the_holder(
    shared_pull: Callable[..., SharedPull], double: RegistryDouble, tmp_path: Path
) -> None:
    pull = shared_pull(82)
    double.reset(bytes_per_second=3 * MIB)
    with ExitStack() as stack:
        processes, api, pull_id = _start(pull, double, tmp_path, stack)
        holder, parts = _both_storing(pull)
        helpers = {w for w in parts.values() if w != holder}
        survivor = _kill(pull, processes, next(iter(helpers)))
        state = pull.wait_final(pull.client(survivor), pull_id)
        assert state["state"] == "completed", state
        assert state["attempts"] == 1  # the holder was never interrupted

    # The parts the helper had stored before it died were not fetched again.
    ranged = [r.range for r in double.blob_requests(pull.digest) if r.range not in (None, "bytes=0-0")]
    for number in (n for n, worker in parts.items() if worker in helpers):
        wanted = f"bytes={(number - 1) * PART}-{min(number * PART, pull.size) - 1}"
        assert ranged.count(wanted) == 1, (number, ranged)
    pull.check_stored_once()


def test_the_helper_finishes_a_pull_whose_holder_was_killed(
    shared_pull: Callable[..., SharedPull], double: RegistryDouble, tmp_path: Path
) -> None:
    pull = shared_pull(84)
    double.reset(bytes_per_second=3 * MIB)
    with ExitStack() as stack:
        processes, api, pull_id = _start(pull, double, tmp_path, stack)
        holder, _ = _both_storing(pull)
        survivor = _kill(pull, processes, holder)  # the job and the upload stay claimed until their leases run out
        kept = dict(pull.look()[1])
        time.sleep(0.5)  # a request the killed replica sent just before dying may still reach the double
        double.reset()
        state = pull.wait_final(pull.client(survivor), pull_id)
        assert state["state"] == "completed", state
        assert state["attempts"] >= 2  # the work item was redelivered to the survivor

    # Parts either replica had stored before the kill were not fetched again (the log restarted at the reset).
    requested = [r.range for r in double.blob_requests(pull.digest) if r.range not in (None, "bytes=0-0")]
    kept_ranges = {f"bytes={(n - 1) * PART}-{min(n * PART, pull.size) - 1}" for n in kept}
    assert not kept_ranges & set(requested), (sorted(kept_ranges), requested)
    assert len(requested) == len(set(requested)), requested  # and nothing twice after the kill
    pull.check_stored_once()


def test_with_sharing_off_one_replica_stores_every_part(
    shared_pull: Callable[..., SharedPull], double: RegistryDouble, tmp_path: Path
) -> None:
    pull = shared_pull(83, share_parts=False, megabytes=15)
    double.reset(bytes_per_second=4 * MIB)
    with ExitStack() as stack:
        _pair(pull, tmp_path, stack)
        api = pull.client(pull.ports[0])
        pull_id = str(api.post("/api/v1/pulls", json={"model": pull.model.name(double.host)}).json()["id"])
        assert pull.wait_final(api, pull_id)["state"] == "completed"
        stored = sorted(_metric(port, "modelhub_puller_parts_stored") for port in pull.ports)
    assert stored == [0, pull.parts], stored
    assert len(set(pull.seen.values())) == 1, pull.seen
    pull.check_stored_once()


@pytest.fixture(autouse=True)
def _quiet_double(double: RegistryDouble) -> Iterator[None]:
    yield
    double.reset()
