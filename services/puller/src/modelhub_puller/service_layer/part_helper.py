"""An idle replica helps with the blob another replica is uploading, part by part.

A pull is one work item, delivered to one replica; its biggest blob is what takes the time. Every
replica with a free pull slot looks into Postgres every ``poll_seconds`` for an upload another live
replica holds that still has parts nobody has claimed, and stores some of them: it claims parts highest
number first (the holder claims lowest first, so the holder's parts stay one run it can hash in
memory), fetches each with a ranged GET and uploads it into the same S3 multipart upload. The holder
completes the upload, verifies the whole blob's SHA-256 (reading back from S3 the parts it did not
fetch) and writes the manifest; a helper never publishes anything.

A helper that dies leaves claims whose lease runs out; the holder (or another helper) takes them. The
helper's claims are renewed here every ``heartbeat_seconds`` while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from psycopg_pool import AsyncConnectionPool

from modelhub_puller.adapters.pull_repository import PullRepository, SharedUpload
from modelhub_puller.adapters.registry_client import RegistryClient
from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.errors import PullerError
from modelhub_puller.service_layer.transfer import BlobTransfer

logger = logging.getLogger(__name__)


class PartHelper:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        repo: PullRepository,
        registry: RegistryClient,
        transfer: BlobTransfer,
        *,
        worker: str,
        has_free_slot: Callable[[], bool],
        poll_seconds: float,
        heartbeat_seconds: float,
        lease_seconds: float,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._registry = registry
        self._transfer = transfer
        self._worker = worker
        self._has_free_slot = has_free_slot
        self._poll = poll_seconds
        self._heartbeat = heartbeat_seconds
        self._lease = lease_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Looks for uploads to help with until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll)
                return
            if not self._has_free_slot():
                continue
            try:
                await self.help_once(stop)
            except PullerError as exc:
                logger.warning("helping with an upload failed", extra={"error": exc.message})
            except Exception:
                logger.exception("helping with an upload failed")

    async def help_once(self, stop: asyncio.Event | None = None) -> int:
        """Helps with one upload, if one needs it; returns the parts this replica stored."""
        async with self._pool.connection() as conn:
            offer = await self._repo.upload_to_help(conn, worker=self._worker)
        if offer is None:
            return 0
        work = asyncio.create_task(self._help(offer))
        renew = asyncio.create_task(self._renew())
        try:
            if stop is None:
                return await work
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if work in done:
                return work.result()
            work.cancel()  # shutting down: the claims are handed back for the holder to take at once
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return 0
        finally:
            renew.cancel()

    async def _help(self, offer: SharedUpload) -> int:
        upload = offer.upload
        session = self._registry.session(parse_model_name(offer.model))
        layer = mf.Layer(media_type="", digest=upload.digest, size=upload.size)
        logger.info("helping with a blob another replica is uploading", extra={"digest": upload.digest})
        return await self._transfer.help(session, layer, upload)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    await self._repo.renew_part_claims(conn, worker=self._worker, lease_seconds=self._lease)
            except Exception as exc:  # the next beat retries; a lease that runs out only costs a re-fetch
                logger.warning("renewing part claims failed", extra={"error": repr(exc)})
