"""Runs the pulls the work queue hands this replica, from claim to outcome.

A job is claimed in Postgres with a lease that the heartbeat renews (and the JetStream message's ack
deadline with it). The outcome is committed with its event through the outbox:

* success → manifest row, blob references, job ``completed`` and ``modelhub.pulls.v1.completed``;
* a final error (digest mismatch, not found, too large, ...) → job ``failed`` and ``...failed``, message acked;
* a retryable error (registry down, S3 unavailable) → the job is released and the message nak-ed with the
  consumer's back-off; on the last allowed delivery it fails instead;
* a cancel request (seen through the event bus or the heartbeat) → job ``cancelled`` and ``...cancelled``;
* shutdown → the job is released and the message handed back, so another replica resumes it at once.

Uploads a failed or cancelled pull started are aborted unless another active pull still needs the blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from psycopg_pool import AsyncConnectionPool

from modelhub_common.consumer import MsgContext
from modelhub_common.errors import TransientError
from modelhub_common.outbox import enqueue
from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.part_spool import PartSpool
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.details import ModelDetails
from modelhub_puller.domain.pull import LayerProgress, PullJob, PullState, Target
from modelhub_puller.errors import PullerError, StoreError
from modelhub_puller.service_layer import events
from modelhub_puller.service_layer.ollama_pull import OllamaPuller
from modelhub_puller.service_layer.progress import Publish, PullTracker
from modelhub_puller.service_layer.store_pull import StoredPull, StorePuller

logger = logging.getLogger(__name__)


def _ignore(*_: object) -> None:
    return None


class _StopReason(StrEnum):
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True)
class WorkerTiming:
    heartbeat_seconds: float
    lease_seconds: float
    progress_interval_seconds: float
    progress_persist_seconds: float


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class PullWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        repo: PullRepository,
        store: BlobStore,
        store_puller: StorePuller,
        ollama_puller: OllamaPuller | None,
        publish_progress: Publish,
        timing: WorkerTiming,
        *,
        worker: str,
        stop: asyncio.Event,
        spool: PartSpool,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._repo = repo
        self._store = store
        self._store_puller = store_puller
        self._ollama_puller = ollama_puller
        self._publish_progress = publish_progress
        self._timing = timing
        self.worker = worker
        self._stop = stop
        self._running: dict[str, asyncio.Task[StoredPull | ModelDetails]] = {}
        self._reasons: dict[str, _StopReason] = {}
        # Set by the bootstrap to count outcomes as a metric: completed, failed, retrying, cancelled,
        # interrupted (shutdown) or lease_lost.
        self.on_outcome: Callable[[str], None] = _ignore

    @property
    def running(self) -> set[str]:
        return set(self._running)

    def cancel(self, pull_id: str) -> None:
        """Stops a pull this replica runs (called for every cancel event; others are ignored)."""
        self._interrupt(pull_id, _StopReason.CANCEL)

    def _interrupt(self, pull_id: str, reason: _StopReason) -> None:
        task = self._running.get(pull_id)
        if task is not None and not task.done():
            self._reasons.setdefault(pull_id, reason)
            task.cancel()

    async def watch_shutdown(self) -> None:
        """Hands running pulls back when the service stops (spawned by bootstrap)."""
        await self._stop.wait()
        for pull_id in list(self._running):
            self._interrupt(pull_id, _StopReason.SHUTDOWN)

    # ---- the handler

    async def handle(self, pull_id: str, ctx: MsgContext) -> None:
        async with self._pool.connection() as conn:
            job = await self._repo.get_job(conn, pull_id, with_layers=False)
        if job is None:
            # Not in this database: a request from another deployment sharing the stream. Nothing to do.
            logger.warning("pull request for an unknown pull; dropped", extra={"pull_id": pull_id})
            return
        if not job.state.active:
            return
        if job.cancel_requested:
            await self._finish_cancelled(job)
            return
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await self._repo.claim_job(
                conn, pull_id, worker=self.worker, lease_seconds=self._timing.lease_seconds
            )
        if claimed is None:
            if ctx.is_last_delivery:
                # Only a live replica can hold the claim, and it reports the outcome: nothing is lost.
                logger.info("pull is running on another replica", extra={"pull_id": pull_id})
                return
            raise TransientError(f"pull {pull_id} is held by another replica", code="pull_busy")
        job = claimed
        async with self._pool.connection() as conn:
            job.layers = await self._repo.layers(conn, pull_id)
        log = {"pull_id": job.id, "model": job.model, "target": job.target.value, "attempt": job.attempts}
        logger.info("pull started", extra=log)

        tracker = PullTracker(
            job,
            publish=self._publish_progress,
            persist=self._persist,
            publish_interval=self._timing.progress_interval_seconds,
            persist_interval=self._timing.progress_persist_seconds,
        )
        task: asyncio.Task[StoredPull | ModelDetails] = asyncio.create_task(self._run(job, tracker))
        self._running[job.id] = task
        if self._stop.is_set():
            self._interrupt(job.id, _StopReason.SHUTDOWN)
        reporter = asyncio.create_task(tracker.run())
        heartbeat = asyncio.create_task(self._heartbeat(job, ctx))
        try:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    task.cancel()
                    raise
                reason = self._reasons.get(job.id, _StopReason.CANCEL)
                await self._stopped(job, tracker, reason)
                return
            except PullerError as exc:
                await self._failed(job, tracker, exc, ctx)
                return
            except Exception as exc:
                logger.exception("pull crashed", extra=log)
                wrapped = PullerError(f"internal error: {type(exc).__name__}: {exc}", code="internal")
                wrapped.retryable = True
                await self._failed(job, tracker, wrapped, ctx)
                return
            try:
                await self._completed(job, tracker, result)
            except PullerError as exc:
                await self._failed(job, tracker, exc, ctx)
                return
            logger.info("pull completed", extra=log)
        finally:
            for helper in (reporter, heartbeat):
                helper.cancel()
            await asyncio.gather(reporter, heartbeat, return_exceptions=True)
            self._running.pop(job.id, None)
            self._reasons.pop(job.id, None)

    async def _run(self, job: PullJob, tracker: PullTracker) -> StoredPull | ModelDetails:
        if job.target is Target.OLLAMA:
            if self._ollama_puller is None:
                raise PullerError("this replica has no Ollama server configured", code="ollama_not_configured")
            return await self._ollama_puller.run(job, tracker)
        return await self._store_puller.run(job, tracker)

    async def _heartbeat(self, job: PullJob, ctx: MsgContext) -> None:
        while True:
            await asyncio.sleep(self._timing.heartbeat_seconds)
            await ctx.in_progress()
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    cancel = await self._repo.renew_lease(
                        conn, job.id, worker=self.worker, lease_seconds=self._timing.lease_seconds
                    )
            except Exception as exc:  # a database hiccup must not kill the pull; the next beat retries
                logger.warning("lease renewal failed", extra={"pull_id": job.id, "error": repr(exc)})
                continue
            if cancel is None:
                logger.warning("pull lease lost to another replica", extra={"pull_id": job.id})
                self._interrupt(job.id, _StopReason.LEASE_LOST)
                return
            if cancel:
                self._interrupt(job.id, _StopReason.CANCEL)
                return

    async def _persist(self, job: PullJob, layers: list[LayerProgress]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.save_progress(conn, job, layers)

    # ---- outcomes

    async def _completed(self, job: PullJob, tracker: PullTracker, result: StoredPull | ModelDetails) -> None:
        tracker.set_status("success")
        layers = tracker.snapshot()
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.save_progress(conn, job, layers)
            if isinstance(result, StoredPull):
                details = result.details
                missing = await self._repo.save_manifest(
                    conn,
                    model=result.name.full,
                    base_model_id=result.name.base_model_id,
                    digest=result.manifest.digest,
                    object_key=result.name.manifest_key,
                    size_bytes=result.manifest.total_size,
                    source="pull",
                    blob_digests=[b.digest for b in result.manifest.blobs],
                )
                if missing:
                    raise StoreError(f"blobs were removed while the pull ran: {', '.join(m[:19] for m in missing)}")
                manifest_digest: str | None = result.manifest.digest
            else:
                details = result
                manifest_digest = None
            if await self._repo.finish_job(
                conn, job.id, PullState.COMPLETED, status="success", manifest_digest=manifest_digest
            ):
                await enqueue(conn, events.COMPLETED, events.completed(job, details))
        self.on_outcome("completed")

    async def _failed(self, job: PullJob, tracker: PullTracker, exc: PullerError, ctx: MsgContext) -> None:
        log = {"pull_id": job.id, "model": job.model, "code": exc.code, "error": exc.message}
        await tracker.flush()
        if exc.retryable and not ctx.is_last_delivery:
            logger.warning("pull failed; it will be retried", extra=log)
            async with self._pool.connection() as conn, conn.transaction():
                await self._repo.release_job(conn, job.id, worker=self.worker, status=f"retrying: {exc.message}"[:500])
            self.on_outcome("retrying")
            raise TransientError(exc.message, code=exc.code) from exc
        logger.warning("pull failed", extra=log)
        async with self._pool.connection() as conn, conn.transaction():
            if await self._repo.finish_job(
                conn, job.id, PullState.FAILED, status="failed", error_code=exc.code, error_message=exc.message
            ):
                await enqueue(conn, events.FAILED, events.failed(job, exc.code, exc.message))
        self.on_outcome("failed")
        await self._abandon_uploads(job)

    async def _stopped(self, job: PullJob, tracker: PullTracker, reason: _StopReason) -> None:
        await tracker.flush()
        self.on_outcome({"cancel": "cancelled", "shutdown": "interrupted"}.get(reason.value, reason.value))
        if reason is _StopReason.CANCEL:
            await self._finish_cancelled(job)
            logger.info("pull cancelled", extra={"pull_id": job.id})
            return
        if reason is _StopReason.SHUTDOWN:
            async with self._pool.connection() as conn, conn.transaction():
                await self._repo.release_job(conn, job.id, worker=self.worker, status="interrupted; resuming")
            raise TransientError("the puller is shutting down; another replica resumes the pull", code="shutdown")
        # LEASE_LOST: another replica holds the job now and reports its outcome.

    async def _finish_cancelled(self, job: PullJob) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if await self._repo.finish_job(conn, job.id, PullState.CANCELLED, status="cancelled"):
                await enqueue(conn, events.CANCELLED, events.cancelled(job))
        await self._abandon_uploads(job)

    async def _abandon_uploads(self, job: PullJob) -> None:
        """Aborts this pull's partial uploads nobody else needs; releases the others to their waiters."""
        async with self._pool.connection() as conn:
            uploads = await self._repo.uploads_of_pull(conn, job.id)
        for digest, upload_id in uploads:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT 1 FROM pull_layers l JOIN pull_jobs j ON j.id = l.pull_id"
                    " WHERE l.digest = %s AND j.id <> %s AND j.state IN ('queued', 'running')",
                    (digest, job.id),
                )
                needed = await cur.fetchone() is not None
                if needed:
                    await conn.execute(
                        "UPDATE blob_uploads SET worker = NULL, lease_until = NULL WHERE digest = %s", (digest,)
                    )
                    await self._repo.release_part_claims(conn, digest, worker=self.worker)
                else:
                    await self._repo.drop_upload(conn, digest)
            if not needed:
                self._spool.upload(digest, upload_id).discard()
                with contextlib.suppress(StoreError):
                    await self._store.abort_upload(mf.blob_key(digest), upload_id)
