"""Small pieces on their own: in-order hashing of parts, progress coalescing, Ollama's parameter text."""

from __future__ import annotations

import asyncio
import hashlib
import os

from modelhub_puller.domain.pull import LayerProgress, PullJob, PullState, Target
from modelhub_puller.service_layer.ollama_pull import _parameters
from modelhub_puller.service_layer.progress import PullTracker
from modelhub_puller.service_layer.transfer import _OrderedHasher


async def test_parts_fed_out_of_order_hash_like_the_whole_blob() -> None:
    parts = [os.urandom(1000 + i) for i in range(6)]
    hasher = _OrderedHasher(6, window=3)
    for number in (2, 1, 3, 5, 4, 6):
        await hasher.feed(number, parts[number - 1])
    assert hasher.digest() == "sha256:" + hashlib.sha256(b"".join(parts)).hexdigest()


async def test_a_part_too_far_ahead_waits_for_the_hashing_position() -> None:
    hasher = _OrderedHasher(4, window=2)
    waiting = asyncio.create_task(hasher.wait_for_room(3))
    await asyncio.sleep(0)
    assert not waiting.done()  # parts 1 and 2 are not hashed yet
    await hasher.feed(1, b"a")
    await asyncio.wait_for(waiting, 5)


async def test_hashing_in_memory_stops_at_the_first_part_another_process_has() -> None:
    """Claims come back ascending; part 3 skipped (another replica has it): 1-2 are hashed, the rest read back."""
    parts = [os.urandom(1000 + i) for i in range(6)]
    hasher = _OrderedHasher(6, window=2)
    for number in (1, 2, 5):
        hasher.claimed(number)
    await asyncio.wait_for(hasher.wait_for_room(5), 5)  # beyond the stop: never waits for the window
    for number in (5, 2, 1):
        await hasher.feed(number, parts[number - 1])
    hasher.claimed(3)  # taken over later (its helper died): still read back, the run in memory ended at 3
    await hasher.feed(3, parts[2])
    assert hasher.hashed_parts == 2
    for part in parts[2:]:
        hasher.update(part)
    assert hasher.digest() == "sha256:" + hashlib.sha256(b"".join(parts)).hexdigest()


def _job() -> PullJob:
    return PullJob(
        id="p", model="m", base_model_id="m", target=Target.STORE, state=PullState.RUNNING, status="", requested_by="x"
    )


async def test_progress_updates_between_ticks_become_one_event() -> None:
    sent: list[int] = []

    async def publish(job: PullJob, layers: list[LayerProgress]) -> None:
        sent.append(job.completed_bytes)

    async def persist(job: PullJob, layers: list[LayerProgress]) -> None:
        return None

    tracker = PullTracker(_job(), publish=publish, persist=persist, publish_interval=0.01, persist_interval=60)
    tracker.set_layers([LayerProgress(digest="d", media_type="m", total_bytes=1000)])
    runner = asyncio.create_task(tracker.run())
    for _ in range(500):
        tracker.add("d", 1)
    while not sent or sent[-1] != 500:
        await asyncio.sleep(0.01)
    quiet = len(sent)
    await asyncio.sleep(0.05)  # nothing changed: nothing more is sent
    runner.cancel()
    assert len(sent) == quiet < 500


def test_ollama_parameter_text_becomes_options() -> None:
    text = 'temperature 0.4\nstop "<|a|>"\nstop "<|b|>"\nnum_ctx 4096\n'
    assert _parameters(text) == {"temperature": 0.4, "stop": ["<|a|>", "<|b|>"], "num_ctx": 4096}
