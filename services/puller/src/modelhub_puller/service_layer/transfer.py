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
* Parts are claimed one by one in Postgres (``blob_part_claims``, with a lease): the upload's holder claims
  lowest first, and other replicas may help with the same upload (:mod:`.part_helper`), claiming highest
  first and storing into the same S3 multipart upload. Only the holder completes the upload and verifies it.
* SHA-256 is computed while downloading: parts are hashed in order as they arrive, out-of-order parts wait
  in memory (at most ``reorder_window`` parts ahead of the hashing position). When every part went through
  this process's memory, a digest mismatch aborts the upload before the object exists. Parts another
  process stored (a dead one before a resume, or a helper) cannot be read from an unfinished S3 upload:
  hashing in memory stops at the first of them, the upload is completed, and the object is read back from
  that byte on to finish the hash, before anything is recorded; a mismatch deletes it. With a helper that
  read-back is about the helper's share of the blob.
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
import time
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
# How often a holder looks whether its helpers have stored the parts they claimed (one cheap query).
_HELPERS_POLL_SECONDS = 0.1
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
    share_parts: bool = True


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
        self.on_part_stored: Callable[[], None] = _ignore
        self.on_helped: Callable[[], None] = _ignore
        self.on_read_back: Callable[[int, float], None] = _ignore

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
                if await self._follow_other_pull(session, layer, completed):
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

    async def _follow_other_pull(
        self, session: RegistrySession, layer: mf.Layer, completed: Callable[[int], None]
    ) -> bool:
        """Waits while another live pull downloads the blob (helping it, when sharing is on); True once present."""
        while True:
            if self._limits.share_parts:
                async with self._pool.connection() as conn:
                    upload = await self._repo.shared_upload(conn, layer.digest)
                if upload is not None:
                    await self.help(session, layer, upload)
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

    # ---- helping another replica's upload

    async def help(self, session: RegistrySession, layer: mf.Layer, upload: UploadRecord) -> int:
        """Stores parts of an upload another process holds, highest numbers first; returns how many.

        Stops when no part is left to claim, and quietly when the upload ends under it (completed,
        cancelled or lost) or a part fails: the holder fetches whatever is still missing. The holder
        verifies the whole blob; a helper only fetches, stores and records parts.
        """
        async with self._pool.connection() as conn:
            if not await self._repo.has_open_parts(conn, layer.digest):
                return 0
        try:
            location = await self.retrying(lambda: self._registry.locate(session, layer), f"locate {layer.digest[:19]}")
        except PullerError as exc:
            logger.info("cannot help with a blob", extra={"digest": layer.digest, "error": exc.message})
            return 0
        if not location.ranged:
            return 0
        key = mf.blob_key(layer.digest)
        # No spool: a restarted process has a new worker id and is a stranger to this upload's parts.
        fetcher = _RangedFetcher(self, session, layer, location, upload, BlobProgress(_ignore), UploadSpool(None, ""))
        stored = 0

        async def part_worker() -> None:
            nonlocal stored
            while (number := await self._claim_part(layer.digest, highest_first=True)) is not None:
                part = await fetcher.fetch(number)
                await self._store_part(key, upload, number, part.buffer)
                stored += 1
                self.on_helped()

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._limits.parallel_parts):
                    group.create_task(part_worker())
        except* PullerError as group:
            failure = group.exceptions[0]
            logger.info(
                "stopped helping with a blob",
                extra={"digest": layer.digest, "error": getattr(failure, "message", repr(failure))},
            )
        finally:
            with contextlib.suppress(Exception):
                async with self._pool.connection() as conn, conn.transaction():
                    await self._repo.release_part_claims(conn, layer.digest, worker=self._worker)
        if stored:
            logger.info("helped with a blob", extra={"digest": layer.digest, "parts": stored})
        return stored

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
        hasher = _OrderedHasher(count, window=max(self._limits.reorder_window, self._limits.parallel_parts))
        log = {"digest": layer.digest, "size": upload.size, "parts": count, "resumed_parts": len(etags)}
        logger.info("downloading blob", extra={**log, "ranged": location.ranged, "spooled_bytes": spooled})

        if location.ranged:
            etags, own = await self._ranged(session, layer, location, upload, progress, completed, spool, hasher)
            if any(etags.get(n) != own.get(n) for n in range(1, hasher.hashed_parts + 1)):
                # A part hashed here was stored again by another process (after this one's claim ran out):
                # what S3 holds is what gets verified, so all of it is read back.
                hasher.reset()
        else:
            await self._sequential(session, layer, location, upload, progress, hasher, etags)

        if hasher.hashed_parts == count:
            if hasher.digest() != layer.digest:
                await self._discard(key, upload, spool)
                raise DigestMismatchError(
                    f"blob {layer.digest[:19]}: digest mismatch (the bytes received hash to {hasher.digest()[:19]})"
                )
            await self.retrying(lambda: self._store.complete_upload(key, upload.upload_id, etags), "store complete")
        else:
            # Parts stored by another process (a dead one resumed, or a replica that helped) were never in
            # this process's memory, and S3 cannot read the parts of an unfinished upload: the object is
            # completed unpublished (no ``blobs`` row) and read back from the first byte not hashed here.
            await self.retrying(lambda: self._store.complete_upload(key, upload.upload_id, etags), "store complete")
            offset = hasher.hashed_parts * upload.part_size
            began = time.perf_counter()
            actual = await self._hash_stored(key, hasher, offset)
            seconds = round(time.perf_counter() - began, 3)
            self.on_read_back(upload.size - offset, seconds)
            logger.info(
                "blob verified by reading it back",
                extra={**log, "read_back_bytes": upload.size - offset, "seconds": seconds},
            )
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

    async def _ranged(
        self,
        session: RegistrySession,
        layer: mf.Layer,
        location: BlobLocation,
        upload: UploadRecord,
        progress: BlobProgress,
        completed: Callable[[int], None],
        spool: UploadSpool,
        hasher: _OrderedHasher,
    ) -> tuple[dict[int, str], dict[int, str]]:
        """Stores every part not stored yet, lowest first, with whichever replicas help; returns the ETags
        of all parts as recorded, and of the parts this process stored.

        The parts are claimed in Postgres one at a time, so helpers (claiming highest first) and this
        process never fetch the same part. Claims are taken one after another so that they come back in
        ascending order: a part number skipped means someone else has (or had) that part, and hashing
        in memory stops there.
        """
        key = mf.blob_key(layer.digest)
        count = hasher.parts
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.open_part_claims(conn, layer.digest, count)
        fetcher = _RangedFetcher(self, session, layer, location, upload, progress, spool)
        claiming = asyncio.Lock()
        own: dict[int, str] = {}

        async def part_worker() -> None:
            while True:
                async with claiming:
                    number = await self._claim_part(layer.digest, highest_first=False)
                    if number is None:
                        return
                    hasher.claimed(number)
                await hasher.wait_for_room(number)
                part = await fetcher.fetch(number)
                try:
                    own[number] = await self._store_part(key, upload, number, part.buffer)
                except BaseException:
                    part.close()
                    raise
                part.remove()
                await hasher.feed(number, part.buffer)

        while True:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(self._limits.parallel_parts):
                        group.create_task(part_worker())
            except BaseExceptionGroup as failed:
                raise _first_error(failed) from None
            async with self._pool.connection() as conn:
                stored = await self._repo.stored_parts(conn, layer.digest)
            if len(stored) >= count:
                return {number: etag for number, (_, etag) in stored.items()}, own
            # The rest is claimed by helpers: wait for them, and take over what a dead one leaves behind.
            completed(sum(size for size, _ in stored.values()))
            await asyncio.sleep(_HELPERS_POLL_SECONDS)

    async def _claim_part(self, digest: str, *, highest_first: bool) -> int | None:
        async def claim() -> int | None:
            async with self._pool.connection() as conn, conn.transaction():
                return await self._repo.claim_part(
                    conn,
                    digest,
                    worker=self._worker,
                    lease_seconds=self._limits.lease_seconds,
                    highest_first=highest_first,
                )

        return await self.retrying(claim, "claim part")

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
            recorded = await self._repo.record_part(conn, upload, number, len(data), etag, worker=self._worker)
        if not recorded:
            raise UploadLostError(f"the upload of {upload.digest[:19]} was dropped while part {number} was stored")
        self.on_part_stored()
        return etag

    async def _discard(self, key: str, upload: UploadRecord, spool: UploadSpool) -> None:
        spool.discard()
        with contextlib.suppress(StoreError):
            await self._store.abort_upload(key, upload.upload_id)
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.drop_upload(conn, upload.digest)

    async def _hash_stored(self, key: str, hasher: _OrderedHasher, offset: int) -> str:
        """Continues ``hasher`` (which has hashed the bytes before ``offset``) over the stored object's rest."""
        objects = self._store.objects.sync
        bucket = self._store.bucket

        def digest() -> str:
            with objects.get_stream(bucket, key, offset=offset, chunk_size=4 * MIB) as stream:
                for chunk in stream:
                    hasher.update(chunk)
            return hasher.digest()

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


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a part worker, so that callers see a ``PullerError`` and its code, not a group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup) and first.exceptions:
        first = first.exceptions[0]
    return first


def _as_upstream(exc: Exception) -> PullerError:
    if isinstance(exc, PullerError):
        return exc
    return UpstreamError(f"download failed: {type(exc).__name__}: {exc}")


class _OrderedHasher:
    """SHA-256 over parts fed in any order, hashing each as soon as the parts before it are in.

    Hashing in memory covers parts 1 .. ``stop - 1``: ``claimed`` moves ``stop`` down to the first part this
    process will not have (another process stored it or holds it), and the rest is read back at the end.
    """

    def __init__(self, parts: int, *, window: int) -> None:
        self.parts = parts
        self._window = window
        self._stop = parts + 1
        self._claimed: set[int] = set()
        self._contiguous = 0  # every part up to this one was claimed by this process
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self.reset()

    def reset(self) -> None:
        self._hash = hashlib.sha256()
        self._next = 1
        self._waiting: dict[int, bytes | bytearray] = {}

    @property
    def hashed_parts(self) -> int:
        return self._next - 1

    def claimed(self, number: int) -> None:
        """This process claimed ``number`` (claims arrive in ascending order, except takeovers of old ones)."""
        self._claimed.add(number)
        while self._contiguous + 1 in self._claimed:
            self._contiguous += 1
        if number > self._contiguous and self._contiguous + 1 < self._stop:
            self._stop = self._contiguous + 1
            for waiting in [n for n in self._waiting if n >= self._stop]:
                del self._waiting[waiting]

    async def wait_for_room(self, number: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: number >= self._stop or number < self._next + self._window)

    async def feed(self, number: int, data: bytes | bytearray) -> None:
        if number >= self._stop:
            return
        self._waiting[number] = data
        async with self._lock:
            while self._next in self._waiting and self._next < self._stop:
                chunk = self._waiting.pop(self._next)
                # hashlib releases the GIL on large buffers: hashing overlaps the downloads.
                await asyncio.to_thread(self._hash.update, chunk)
                self._next += 1
                async with self._changed:
                    self._changed.notify_all()

    def update(self, chunk: bytes) -> None:
        """Hashes bytes read back from the store (after the parts hashed in memory), from a thread."""
        self._hash.update(chunk)

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
