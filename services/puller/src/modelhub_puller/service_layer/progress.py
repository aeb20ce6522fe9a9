"""Progress of one running pull: per-layer bytes, totals and speed, published and persisted at a bounded rate.

Progress events go straight to JetStream (not through the outbox): they are frequent, superseded by the
next one, and the state they describe is also written to Postgres every ``persist_interval``, which is what
``GET /pulls/{id}`` reads. Events are sent at most once per ``publish_interval`` (≤ 4/s by default) and only
when something changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from modelhub_puller.domain.pull import LayerProgress, LayerState, PullJob

logger = logging.getLogger(__name__)

_SPEED_WINDOW_SECONDS = 5.0

Publish = Callable[[PullJob, list[LayerProgress]], Awaitable[None]]
Persist = Callable[[PullJob, list[LayerProgress]], Awaitable[None]]


class PullTracker:
    def __init__(
        self,
        job: PullJob,
        *,
        publish: Publish,
        persist: Persist,
        publish_interval: float,
        persist_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self._publish = publish
        self._persist = persist
        self._publish_interval = publish_interval
        self._persist_interval = persist_interval
        self._clock = clock
        self._layers: dict[str, LayerProgress] = {layer.digest: layer for layer in job.layers}
        self._version = 0
        self._published_version = -1
        self._persisted_version = -1
        self._received = 0
        self._samples: deque[tuple[float, int]] = deque()

    # ---- updates (cheap, called from the download loops)

    def set_layers(self, layers: list[LayerProgress]) -> None:
        self._layers = {layer.digest: layer for layer in layers}
        self.job.layers = list(self._layers.values())
        self._changed()

    def set_status(self, status: str) -> None:
        if status != self.job.status:
            self.job.status = status
            self._changed()

    def add(self, digest: str, count: int) -> None:
        layer = self._layers.get(digest)
        if layer is None:
            return
        layer.completed_bytes = max(0, min(layer.total_bytes, layer.completed_bytes + count))
        if count > 0:
            self._received += count
        self._changed()

    def at_least(self, digest: str, completed: int) -> None:
        layer = self._layers.get(digest)
        if layer is not None and completed > layer.completed_bytes:
            layer.completed_bytes = min(layer.total_bytes, completed)
            self._changed()

    def set_layer_state(self, digest: str, state: LayerState) -> None:
        layer = self._layers.get(digest)
        if layer is None:
            return
        layer.state = state
        if state in (LayerState.PRESENT, LayerState.DOWNLOADED):
            layer.completed_bytes = layer.total_bytes
        self._changed()

    def _changed(self) -> None:
        self._version += 1

    @property
    def received(self) -> int:
        return self._received

    # ---- snapshots

    def snapshot(self) -> list[LayerProgress]:
        layers = list(self._layers.values())
        self.job.layers = layers
        if layers:
            self.job.total_bytes = sum(layer.total_bytes for layer in layers)
            self.job.completed_bytes = sum(layer.completed_bytes for layer in layers)
        self.job.bytes_per_second = self._speed()
        return [LayerProgress(**vars(layer)) for layer in layers]

    def _speed(self) -> float:
        now = self._clock()
        self._samples.append((now, self._received))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        elapsed = now - first_time
        return (self._received - first_bytes) / elapsed if elapsed > 0 else 0.0

    # ---- the reporting loop

    async def run(self) -> None:
        """Publishes and persists until cancelled; failures are logged, never fatal to the pull."""
        last_persist = self._clock()
        while True:
            await asyncio.sleep(self._publish_interval)
            if self._version != self._published_version:
                await self._send(persist=False)
            if self._clock() - last_persist >= self._persist_interval and self._version != self._persisted_version:
                await self._send(persist=True)
                last_persist = self._clock()

    async def flush(self) -> None:
        await self._send(persist=True)

    async def _send(self, *, persist: bool) -> None:
        version = self._version
        layers = self.snapshot()
        try:
            if persist:
                await self._persist(self.job, layers)
                self._persisted_version = version
            else:
                await self._publish(self.job, layers)
                self._published_version = version
        except Exception as exc:  # progress is best effort: the pull goes on without it
            logger.warning(
                "progress update failed", extra={"pull_id": self.job.id, "persist": persist, "error": repr(exc)}
            )
