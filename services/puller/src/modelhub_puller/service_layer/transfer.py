"""Moves one blob from a registry into the model store, verified, resumable and shared between pulls.

Design: parts go from ranged GETs into an S3 multipart upload, and every stored part is recorded in
Postgres (``blob_upload_parts``). Any replica can therefore resume a download a dead replica started: it
lists the recorded parts, fetches only the missing ones and completes the same upload. The parts that were
in flight when a process died are spooled to a local directory as they arrive (:mod:`.part_spool`); a
process that takes over on the same disk continues each of them with a ``Range`` from where its spool ends,
so a kill costs only what had not reached the spool: the last unflushed bytes of each part in flight, and
whatever the kernel still held in the dead process's socket buffers. Another replica, without the spool,
fetches those parts whole.

* Parts of ``part_size`` bytes are fetched ``parallel_parts`` at a time, in order, each with its own retries
  and exponential back-off; a read that stalls for ``stall_timeout`` is retried from the byte where it broke off.
* SHA-256 is computed while downloading: parts are hashed in order as they arrive, out-of-order parts wait
  in memory (at most ``reorder_window`` parts ahead of the hashing position). A digest mismatch aborts the
  upload before the object exists. A *resumed* download cannot hash the parts stored earlier from memory, so
  it completes the upload and then reads the object back once from S3 to verify it; a mismatch deletes it.
* Only a verified blob is recorded in ``blobs``, which is what "present" means to every other pull.
* One download per digest: a pull that needs a blob another live pull is downloading waits for it instead
  (and takes the upload over, resuming it, if that pull's lease expires).
* Servers that ignore ``Range`` (200 instead of 206) are streamed sequentially into the same parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from psycopg_pool import AsyncConnectionPool

from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.part_spool import PartSpool, SpooledPart, UploadSpool
from modelhub_puller.adapters.pull_repository import PullRepository, UploadRecord
from modelhub_puller.adapters.registry_client import (
    BlobLocation,
    LocationExpiredError,
    RegistryClient,
    RegistrySession,
)
from modelhub_puller.domain import manifest as mf
from modelhub_puller.errors import DigestMismatchError, PullerError, StoreError, UploadLostError, UpstreamError
from modelhub_puller.settings import MAX_PARTS, MIB

logger = logging.getLogger(__name__)

_WAIT_POLL_SECONDS = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class TransferLimits:
    part_size: int
    parallel_parts: int
    reorder_window: int
    retries: int
    backoff_seconds: float
    backoff_max_seconds: float
    lease_seconds: float


def _ignore(*_: object) -> None:
    return None


class BlobProgress:
    """Bytes of each blob that this pull has (stored parts plus bytes of parts in flight)."""

    def __init__(self, on_change: Callable[[str, int], None]) -> None:
        self._on_change = on_change
        self.received = 0  # bytes downloaded by this process (for the speed), never decreases

    def add(self, digest: str, count: int) -> None:
        if count > 0:
            self.received += count
        self._on_change(digest, count)


class BlobTransfer:
    def __init__(
        self,
        registry: RegistryClient,
        store: BlobStore,
        pool: AsyncConnectionPool,
        repo: PullRepository,
        limits: TransferLimits,
        *,
        worker: str,
        spool: PartSpool,
    ) -> None:
        self._registry = registry
        self._store = store
        self._pool = pool
        self._repo = repo
        self._limits = limits
        self._worker = worker
        self._spool = spool
        # Set by the bootstrap to count downloaded bytes and retries as metrics.
        self.on_downloaded: Callable[[int], None] = _ignore
        self.on_retry: Callable[[], None] = _ignore

    # ---- presence

    async def is_present(self, layer: mf.Layer) -> bool:
        async with self._pool.connection() as conn:
            known = layer.digest in await self._repo.present_blobs(conn, [layer.digest])
        if not known:
            return False
        if await self._store.size(mf.blob_key(layer.digest)) == layer.size:
            return True
        # Recorded but gone from S3 (removed by hand): forget it and download again.
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM manifest_blobs WHERE digest = %s", (layer.digest,))
            await self._repo.forget_blob(conn, layer.digest)
        return False

    # ---- entry point

    async def fetch(
        self,
        session: RegistrySession,
        layer: mf.Layer,
        *,
        pull_id: str,
        progress: BlobProgress,
        completed: Callable[[int], None],
    ) -> bool:
        """Makes ``layer`` present in the store. True if this pull downloaded it, False if another did.

        ``completed`` is told the bytes already stored when a download resumes or another pull's
        progress is followed.
        """
        if layer.size <= self._limits.part_size:
            data = await self.retrying(lambda: self._registry.read_small(session, layer), f"blob {layer.digest[:19]}")
            progress.add(layer.digest, len(data))
            if mf.sha256_digest(data) != layer.digest:
                raise DigestMismatchError(
                    f"blob {layer.digest[:19]}: digest mismatch (the bytes received hash differently)"
                )
            await self.retrying(lambda: self._store.put(mf.blob_key(layer.digest), data), "store put")
            async with self._pool.connection() as conn, conn.transaction():
                await self._repo.record_blob(conn, layer.digest, layer.size)
            return True
        while True:
            async with self._pool.connection() as conn, conn.transaction():
                claim = await self._repo.claim_upload(
                    conn, layer.digest, pull_id=pull_id, worker=self._worker, lease_seconds=self._limits.lease_seconds
                )
            if claim is False:
                if await self._follow_other_pull(layer, completed):
                    return False
                continue
            if claim is None:
                claim = await self._start_upload(layer, pull_id)
                if claim is None:
                    continue  # another pull registered the upload first: follow or take it over
            try:
                await self._download(session, layer, claim, progress, completed)
            except UploadLostError:
                logger.warning("multipart upload vanished; starting the blob again", extra={"digest": layer.digest})
                async with self._pool.connection() as conn, conn.transaction():
                    await self._repo.drop_upload(conn, layer.digest)
                continue
            return True

    async def _start_upload(self, layer: mf.Layer, pull_id: str) -> UploadRecord | None:
        key = mf.blob_key(layer.digest)
        part_size = max(self._limits.part_size, math.ceil(layer.size / MAX_PARTS / MIB) * MIB)
        upload_id = await self.retrying(lambda: self._store.create_upload(key), "store create upload")
        async with self._pool.connection() as conn, conn.transaction():
            created = await self._repo.create_upload(
                conn,
                digest=layer.digest,
                size=layer.size,
                part_size=part_size,
                upload_id=upload_id,
                pull_id=pull_id,
                worker=self._worker,
                lease_seconds=self._limits.lease_seconds,
            )
        if not created:
            await self._store.abort_upload(key, upload_id)
            return None
        return UploadRecord(digest=layer.digest, size=layer.size, part_size=part_size, upload_id=upload_id, parts={})

    async def _follow_other_pull(self, layer: mf.Layer, completed: Callable[[int], None]) -> bool:
        """Waits while another live pull downloads the blob; True once it is present."""
        while True:
            if await self.is_present(layer):
                completed(layer.size)
                return True
            async with self._pool.connection() as conn:
                done = await self._repo.upload_progress(conn, layer.digest)
            if done is None:
                return await self.is_present(layer)
            completed(done)
            await asyncio.sleep(_WAIT_POLL_SECONDS)
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT 1 FROM blob_uploads WHERE digest = %s AND (worker IS NULL OR lease_until < now())",
                    (layer.digest,),
                )
                if await cur.fetchone() is not None:
                    return False  # the other pull is gone: go back and take the upload over

    # ---- multipart download

    async def _download(
        self,
        session: RegistrySession,
        layer: mf.Layer,
        upload: UploadRecord,
        progress: BlobProgress,
        completed: Callable[[int], None],
    ) -> None:
        key = mf.blob_key(layer.digest)
        location = await self.retrying(lambda: self._registry.locate(session, layer), f"locate {layer.digest[:19]}")
        count = math.ceil(upload.size / upload.part_size)
        etags = {number: etag for number, (_, etag) in upload.parts.items()}
        if not location.ranged:
            etags = {}  # a server without ranges cannot resume: every part is fetched again
        spool = self._spool.upload(layer.digest, upload.upload_id)
        spool.prune()
        pending = [n for n in range(1, count + 1) if n not in etags]
        spooled = sum(spool.spooled(n, _part_length(upload, n)) for n in pending) if location.ranged else 0
        completed(sum(_part_length(upload, n) for n in etags) + spooled)
        # Bytes loaded from a spool were hashed by nobody in this process: such a download is verified at the end.
        hasher = _OrderedHasher(
            enabled=not etags and not spooled, window=max(self._limits.reorder_window, self._limits.parallel_parts)
        )
        log = {"digest": layer.digest, "size": upload.size, "parts": count, "resumed_parts": len(etags)}
        logger.info("downloading blob", extra={**log, "ranged": location.ranged, "spooled_bytes": spooled})

        if location.ranged:
            fetcher = _RangedFetcher(self, session, layer, location, upload, progress, spool)

            async def part_worker() -> None:
                while pending:
                    number = pending.pop(0)
                    await hasher.wait_for_room(number)
                    part = await fetcher.fetch(number)
                    try:
                        etags[number] = await self._store_part(key, upload, number, part.buffer)
                    except BaseException:
                        part.close()
                        raise
                    part.remove()
                    await hasher.feed(number, part.buffer)

            async with asyncio.TaskGroup() as group:
                for _ in range(min(self._limits.parallel_parts, max(len(pending), 1))):
                    group.create_task(part_worker())
        else:
            await self._sequential(session, layer, location, upload, progress, hasher, etags)

        if hasher.enabled:
            if hasher.digest() != layer.digest:
                await self._discard(key, upload, spool)
                raise DigestMismatchError(
                    f"blob {layer.digest[:19]}: digest mismatch (the bytes received hash to {hasher.digest()[:19]})"
                )
            await self.retrying(lambda: self._store.complete_upload(key, upload.upload_id, etags), "store complete")
        else:
            await self.retrying(lambda: self._store.complete_upload(key, upload.upload_id, etags), "store complete")
            actual = await self._hash_stored(key)
            if actual != layer.digest:
                spool.discard()
                await self._store.remove(key)
                async with self._pool.connection() as conn, conn.transaction():
                    await self._repo.drop_upload(conn, layer.digest)
                raise DigestMismatchError(
                    f"blob {layer.digest[:19]}: digest mismatch after resuming (got {actual[:19]})"
                )
        size = await self._store.size(key)
        if size != layer.size:
            raise StoreError(f"blob {layer.digest[:19]} is {size} bytes in the store, expected {layer.size}")
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.record_blob(conn, layer.digest, layer.size)
            await self._repo.drop_upload(conn, layer.digest)
        spool.discard()
        logger.info("blob stored", extra=log)

    async def _sequential(
        self,
        session: RegistrySession,
        layer: mf.Layer,
        location: BlobLocation,
        upload: UploadRecord,
        progress: BlobProgress,
        hasher: _OrderedHasher,
        etags: dict[int, str],
    ) -> None:
        key = mf.blob_key(layer.digest)
        for attempt in range(1, self._limits.retries + 1):
            received = 0
            hasher.reset()
            try:
                async with self._registry.open_whole(session, location) as response:
                    buffer = bytearray()
                    number = 1
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
                        if received > upload.size:
                            raise UpstreamError(f"blob {layer.digest[:19]} is longer than its {upload.size} bytes")
                        progress.add(layer.digest, len(chunk))
                        self.on_downloaded(len(chunk))
                        buffer += chunk
                        while len(buffer) >= upload.part_size:
                            data = bytes(buffer[: upload.part_size])
                            del buffer[: upload.part_size]
                            etags[number] = await self._store_part(key, upload, number, data)
                            await hasher.feed(number, data)
                            number += 1
                    if received != upload.size:
                        raise UpstreamError(f"blob {layer.digest[:19]} ended after {received} of {upload.size} bytes")
                    if buffer:
                        data = bytes(buffer)
                        etags[number] = await self._store_part(key, upload, number, data)
                        await hasher.feed(number, data)
                return
            except (UpstreamError, httpx.HTTPError) as exc:
                progress.add(layer.digest, -received)
                if attempt == self._limits.retries:
                    raise _as_upstream(exc) from exc
                await asyncio.sleep(self._backoff(attempt))

    async def _store_part(self, key: str, upload: UploadRecord, number: int, data: bytes | bytearray) -> str:
        etag = await self.retrying(
            lambda: self._store.upload_part(key, upload.upload_id, number, data), f"store part {number}"
        )
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.record_part(conn, upload.digest, number, len(data), etag)
        return etag

    async def _discard(self, key: str, upload: UploadRecord, spool: UploadSpool) -> None:
        spool.discard()
        with contextlib.suppress(StoreError):
            await self._store.abort_upload(key, upload.upload_id)
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.drop_upload(conn, upload.digest)

    async def _hash_stored(self, key: str) -> str:
        objects = self._store.objects.sync
        bucket = self._store.bucket

        def digest() -> str:
            hasher = hashlib.sha256()
            with objects.get_stream(bucket, key, chunk_size=4 * MIB) as stream:
                for chunk in stream:
                    hasher.update(chunk)
            return "sha256:" + hasher.hexdigest()

        try:
            return await asyncio.to_thread(digest)
        except PullerError:
            raise
        except Exception as exc:
            raise StoreError(f"reading {key} back to verify it failed: {exc}") from exc

    # ---- retries

    def _backoff(self, attempt: int) -> float:
        # Every retry (of a part, a whole blob or a store call) waits this back-off first: count it here.
        self.on_retry()
        return float(min(self._limits.backoff_seconds * 2 ** (attempt - 1), self._limits.backoff_max_seconds))

    async def retrying(self, action: Callable[[], Awaitable[T]], what: str) -> T:
        """Runs ``action`` until it succeeds, a final error occurs, or the tries are used up."""
        for attempt in range(1, self._limits.retries + 1):
            try:
                return await action()
            except UploadLostError:
                raise
            except PullerError as exc:
                if not exc.retryable or attempt == self._limits.retries:
                    raise
                error = exc.message
            except httpx.HTTPError as exc:
                if attempt == self._limits.retries:
                    raise _as_upstream(exc) from exc
                error = repr(exc)
            logger.info("retrying", extra={"what": what, "attempt": attempt, "error": error})
            await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")


def _part_length(upload: UploadRecord, number: int) -> int:
    start = (number - 1) * upload.part_size
    return min(upload.part_size, upload.size - start)


def _as_upstream(exc: Exception) -> PullerError:
    if isinstance(exc, PullerError):
        return exc
    return UpstreamError(f"download failed: {type(exc).__name__}: {exc}")


class _OrderedHasher:
    """SHA-256 over parts fed in any order, hashing each as soon as the parts before it are in."""

    def __init__(self, *, enabled: bool, window: int) -> None:
        self.enabled = enabled
        self._window = window
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self.reset()

    def reset(self) -> None:
        self._hash = hashlib.sha256()
        self._next = 1
        self._waiting: dict[int, bytes | bytearray] = {}

    async def wait_for_room(self, number: int) -> None:
        if not self.enabled:
            return
        async with self._changed:
            await self._changed.wait_for(lambda: number < self._next + self._window)

    async def feed(self, number: int, data: bytes | bytearray) -> None:
        if not self.enabled:
            return
        self._waiting[number] = data
        async with self._lock:
            while self._next in self._waiting:
                chunk = self._waiting.pop(self._next)
                # hashlib releases the GIL on large buffers: hashing overlaps the downloads.
                await asyncio.to_thread(self._hash.update, chunk)
                self._next += 1
                async with self._changed:
                    self._changed.notify_all()

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _RangedFetcher:
    """Fetches numbered parts with retries, each continuing where the last try (or a spool) ended.

    Re-locates the blob when a signed URL expires.
    """

    def __init__(
        self,
        transfer: BlobTransfer,
        session: RegistrySession,
        layer: mf.Layer,
        location: BlobLocation,
        upload: UploadRecord,
        progress: BlobProgress,
        spool: UploadSpool,
    ) -> None:
        self._transfer = transfer
        self._session = session
        self._layer = layer
        self._location = location
        self._upload = upload
        self._progress = progress
        self._spool = spool

    async def fetch(self, number: int) -> SpooledPart:
        """Part ``number``, complete; its spool file stays until the caller has stored the part."""
        length = _part_length(self._upload, number)
        part = self._spool.open(number, length)
        try:
            await self._receive(number, part)
        except BaseException:
            part.close()
            raise
        part.flush()
        return part

    async def _receive(self, number: int, part: SpooledPart) -> None:
        start = (number - 1) * self._upload.part_size
        end = start + part.length - 1
        limits = self._transfer._limits
        registry = self._transfer._registry
        for attempt in range(1, limits.retries + 1):
            if part.received == part.length:
                return
            try:
                async with registry.open_range(self._session, self._location, start + part.received, end) as response:
                    async for chunk in response.aiter_raw():
                        size = len(chunk)
                        if part.received + size > part.length:
                            raise UpstreamError(f"part {number} is longer than the {part.length} bytes asked for")
                        part.add(chunk)
                        self._progress.add(self._layer.digest, size)
                        self._transfer.on_downloaded(size)
                if part.received != part.length:
                    raise UpstreamError(f"part {number} ended after {part.received} of {part.length} bytes")
                return
            except LocationExpiredError as exc:
                if attempt == limits.retries:
                    raise
                logger.info(
                    "blob URL expired; locating it again", extra={"digest": self._layer.digest, "error": exc.message}
                )
                self._location = await registry.locate(self._session, self._layer)
            except (UpstreamError, httpx.HTTPError) as exc:
                if attempt == limits.retries:
                    raise _as_upstream(exc) from exc
                logger.info(
                    "part failed; retrying",
                    extra={"digest": self._layer.digest, "part": number, "attempt": attempt, "error": repr(exc)},
                )
                await asyncio.sleep(self._transfer._backoff(attempt))
        raise UpstreamError(f"part {number} could not be fetched")
