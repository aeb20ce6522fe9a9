"""The puller's own Prometheus metrics, registered into the app's :class:`ServiceMetrics` registry.

Labels are bounded (outcomes only); never pull ids or model names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from modelhub_common.metrics import ServiceMetrics
from modelhub_puller.service_layer.transfer import BlobTransfer
from modelhub_puller.service_layer.worker import PullWorker

OUTCOMES = ("completed", "failed", "retrying", "cancelled", "interrupted", "lease_lost")


class PullerMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        r = metrics.registry
        self._metrics = metrics
        self.bytes_downloaded = Counter(
            "modelhub_puller_downloaded_bytes", "Blob bytes received from upstream registries.", registry=r
        )
        self.retries = Counter(
            "modelhub_puller_retries",
            "Retried steps of a pull: a part, a whole blob or an object-store call that failed and was tried again.",
            registry=r,
        )
        self.pulls = Counter(
            "modelhub_puller_pulls",
            "Pull attempts by outcome (completed, failed, retrying, cancelled, interrupted, lease_lost).",
            ("outcome",),
            registry=r,
        )
        self.parts_stored = Counter(
            "modelhub_puller_parts_stored",
            "Parts this replica stored into S3 multipart uploads (its own pulls' and those it helped with).",
            registry=r,
        )
        self.parts_helped = Counter(
            "modelhub_puller_parts_helped",
            "Parts this replica stored for an upload another replica holds (shared pulls).",
            registry=r,
        )
        self.read_back = Counter(
            "modelhub_puller_read_back_bytes",
            "Blob bytes read back from S3 to verify a digest (parts another process stored).",
            registry=r,
        )
        self.read_back_seconds = Counter(
            "modelhub_puller_read_back_seconds",
            "Time spent reading blob bytes back from S3 to verify them.",
            registry=r,
        )
        self.active = Gauge("modelhub_puller_active_pulls", "Pulls this replica is running now.", registry=r)
        for outcome in OUTCOMES:
            self.pulls.labels(outcome)  # every outcome shows from the start, at 0

    def attach(self, transfer: BlobTransfer, worker: PullWorker) -> None:
        transfer.on_downloaded = self.bytes_downloaded.inc
        transfer.on_retry = self.retries.inc
        transfer.on_part_stored = self.parts_stored.inc
        transfer.on_helped = self.parts_helped.inc

        def read_back(count: int, seconds: float) -> None:
            self.read_back.inc(count)
            self.read_back_seconds.inc(seconds)

        transfer.on_read_back = read_back
        worker.on_outcome = lambda outcome: self.pulls.labels(outcome if outcome in OUTCOMES else "other").inc()

        async def read_active() -> None:
            self.active.set(len(worker.running))

        self._metrics.on_scrape("puller-active", read_active)
