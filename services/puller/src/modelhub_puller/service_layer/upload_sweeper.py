"""Aborts the S3 multipart uploads of pulls that will never finish them, and forgets their parts.

A failed or cancelled pull aborts its own uploads (see :mod:`.worker`), but not when its process died
first: a replica killed while its job was being cancelled, or a job that used up its deliveries while no
replica was alive. Such uploads keep their parts in S3 (invisible, but paid for) and their rows in
``blob_uploads``. Every replica sweeps now and then; an upload is abandoned when it is older than
``older_than_seconds``, nobody holds a live lease on it, and no queued or running pull needs its blob.
The rows are deleted first (so no pull can take the upload over), then the uploads are aborted in S3 and
their spool files removed.

An upload S3 knows and Postgres does not (a process killed between creating the upload and recording it)
is outside this sweep: MinIO removes such stale uploads itself after a day (``api stale_uploads_expiry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.part_spool import PartSpool
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.domain import manifest as mf
from modelhub_puller.errors import PullerError, StoreError

logger = logging.getLogger(__name__)

_BATCH = 100


@dataclass(frozen=True)
class SweepResult:
    aborted: int
    failed: int


class UploadSweeper:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        repo: PullRepository,
        store: BlobStore,
        spool: PartSpool,
        *,
        older_than_seconds: float,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._store = store
        self._spool = spool
        self._older_than = older_than_seconds

    async def sweep(self) -> SweepResult:
        """One pass over every abandoned upload."""
        aborted = failed = 0
        while True:
            async with self._pool.connection() as conn, conn.transaction():
                batch = await self._repo.take_abandoned_uploads(conn, older_than_seconds=self._older_than, limit=_BATCH)
            for digest, upload_id in batch:
                self._spool.upload(digest, upload_id).discard()
                try:
                    await self._store.abort_upload(mf.blob_key(digest), upload_id)
                except StoreError as exc:
                    # The row is gone: nobody will resume this upload; S3 (MinIO) expires it in the end.
                    failed += 1
                    logger.warning(
                        "could not abort an abandoned upload", extra={"digest": digest, "error": exc.message}
                    )
                    continue
                aborted += 1
                logger.info("aborted an abandoned upload", extra={"digest": digest})
            if len(batch) < _BATCH:
                return SweepResult(aborted=aborted, failed=failed)

    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        """Sweeps every ``interval_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
                return
            try:
                await self.sweep()
            except PullerError as exc:
                logger.warning("upload sweep failed", extra={"error": exc.message})
            except Exception:
                logger.exception("upload sweep failed")
