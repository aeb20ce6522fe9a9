"""A puller process killed in the middle of a download; the next one resumes it.

Parts already stored are never fetched again; with a spool directory, the part that was half received at the
kill continues from where its spool ends instead of from its start.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from puller_testkit import MIB, ModelPull, PushedModel, db_rows, puller_process
from registry_double import RegistryDouble

from modelhub_devstack.ports import pick_free_port
from modelhub_puller.settings import PullerSettings

PART = 5 * MIB  # the part size puller_settings configures


class KilledPull(ModelPull):
    """A pull through the throttled double, the first puller process SIGKILLed mid-way, a second one finishing it."""

    def __init__(self, settings: PullerSettings, model: PushedModel, double: RegistryDouble, token: str) -> None:
        super().__init__(settings, model, token)
        self.double = double
        self.api = self.client(settings.port)

    def parts_stored(self) -> set[int]:
        rows = db_rows(self.settings, "SELECT part_number FROM blob_upload_parts WHERE digest = %s", (self.digest,))
        return {row[0] for row in rows}

    def part_range(self, number: int, skip: int = 0) -> str:
        start = (number - 1) * PART
        return f"bytes={start + skip}-{min(number * PART, self.size) - 1}"

    def start_and_kill(self, log: Path, when: Callable[[], bool]) -> str:
        """Starts the pull slowly (3 MiB/s), kills the process once ``when`` holds; returns the pull id."""
        self.double.reset(bytes_per_second=3 * MIB)
        with puller_process(self.settings, log) as first:
            pull: dict[str, Any] = self.api.post(
                "/api/v1/pulls", json={"model": self.model.name(self.double.host)}
            ).json()
            deadline = time.monotonic() + 60
            while not when():
                assert time.monotonic() < deadline, "the pull never reached the point to kill it at"
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)  # no goodbye: no nak, no lease release
            first.wait()
        return str(pull["id"])

    def finish(self, pull_id: str, log: Path) -> list[str]:
        """Runs a second process to the end at full speed; returns the blob ranges it requested."""
        # A request the killed process sent just before dying may still reach the double: let it be logged first.
        time.sleep(0.5)
        self.double.reset()
        with puller_process(self.settings, log):
            deadline = time.monotonic() + 90
            while (state := self.api.get(f"/api/v1/pulls/{pull_id}").json())["state"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, state
                time.sleep(0.1)
        assert state["state"] == "completed", state
        assert state["attempts"] >= 2
        assert db_rows(self.settings, "SELECT count(*) FROM blobs WHERE digest = %s", (self.digest,))[0][0] == 1
        return [r.range for r in self.double.blob_requests(self.digest) if r.range not in (None, "bytes=0-0")]


@pytest.fixture
def killed_pull(
    puller_settings: Callable[..., PullerSettings],
    double: RegistryDouble,
    push_model: Callable[..., PushedModel],
    make_token: Callable[..., str],
) -> Callable[..., KilledPull]:
    """A 24 MiB model (5 parts of 5 MiB) and a puller process configured with the given overrides."""

    def build(seed: int, **overrides: Any) -> KilledPull:
        settings = puller_settings(port=pick_free_port(), **overrides)
        return KilledPull(settings, push_model(megabytes=24, seed=seed), double, make_token("root", "admin"))

    return build


def test_killed_puller_resumes_without_refetching_completed_parts(
    killed_pull: Callable[..., KilledPull], double: RegistryDouble, tmp_path: Path
) -> None:
    """Without a spool (a replica on another disk takes over): only the stored parts are kept."""
    pull = killed_pull(71, parallel_parts=2)

    pull_id = pull.start_and_kill(tmp_path / "first.log", lambda: len(pull.parts_stored()) >= 2)
    before = pull.parts_stored()
    assert 2 <= len(before) < 5, before  # 24 MiB and a bit = 5 parts of 5 MiB
    time.sleep(0.5)
    fetched_before = {r.range for r in double.blob_requests(pull.digest)}
    refetched = pull.finish(pull_id, tmp_path / "second.log")

    stored_ranges = {pull.part_range(n) for n in before}
    assert stored_ranges <= fetched_before  # they really were downloaded by the first process
    assert not stored_ranges & set(refetched), (sorted(stored_ranges), refetched)
    assert len(set(refetched)) == 5 - len(before)  # every missing part, and nothing else


def test_a_part_half_received_at_the_kill_continues_from_its_spool(
    killed_pull: Callable[..., KilledPull], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    pull = killed_pull(72, parallel_parts=1, spool_dir=spool)

    def spooled() -> dict[int, int]:
        """Bytes spooled per part number (files are named <upload key>-<part number>.part)."""
        return {int(path.stem.rsplit("-", 1)[1]): path.stat().st_size for path in spool.rglob("*.part")}

    def half_way_into_a_part() -> bool:
        stored = pull.parts_stored()
        return bool(stored) and any(2 * MIB <= size < 4 * MIB for n, size in spooled().items() if n not in stored)

    pull_id = pull.start_and_kill(tmp_path / "first.log", half_way_into_a_part)
    stored = pull.parts_stored()
    in_flight = {n: size for n, size in spooled().items() if n not in stored}
    assert len(in_flight) == 1, (stored, spooled())  # one part in flight, killed half-way
    [(number, have)] = in_flight.items()
    assert 0 < have < PART

    requested = pull.finish(pull_id, tmp_path / "second.log")

    # The half-received part continues where its spool ends; its start is never asked for again.
    assert pull.part_range(number, skip=have) in requested, (number, have, requested)
    assert not [r for r in requested if r.startswith(pull.part_range(number).split("-")[0] + "-")], requested
    # In all, the second process fetched exactly what the first one had neither stored nor spooled.
    fetched = sum(int(r.split("-")[1]) - int(r.removeprefix("bytes=").split("-")[0]) + 1 for r in requested)
    kept = sum(min(n * PART, pull.size) - (n - 1) * PART for n in stored) + have
    assert fetched == pull.size - kept, (fetched, pull.size, kept, requested)
    assert not list(spool.rglob("*.part"))  # a stored blob leaves no spool behind
