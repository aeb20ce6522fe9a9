"""A pull with target ``store``: manifest, checks, blobs into S3, details, manifest written last."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.adapters.registry_client import RegistryClient
from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.details import ModelDetails, describe
from modelhub_puller.domain.gguf import GgufError, GgufInfo, read_gguf_info
from modelhub_puller.domain.names import ModelName, parse_model_name
from modelhub_puller.domain.pull import LayerProgress, LayerState, PullJob
from modelhub_puller.errors import InsufficientSpaceError, StoreError, TooLargeError
from modelhub_puller.service_layer.progress import PullTracker
from modelhub_puller.service_layer.transfer import BlobProgress, BlobTransfer
from modelhub_puller.settings import MIB

logger = logging.getLogger(__name__)

_MAX_TEXT_LAYER = 4 * MIB


@dataclass(frozen=True)
class StoreLimits:
    max_pull_bytes: int
    capacity_bytes: int | None
    free_space_margin_bytes: int


@dataclass(frozen=True)
class StoredPull:
    name: ModelName
    manifest: mf.Manifest
    details: ModelDetails


class StorePuller:
    def __init__(
        self,
        registry: RegistryClient,
        store: BlobStore,
        transfer: BlobTransfer,
        pool: AsyncConnectionPool,
        repo: PullRepository,
        limits: StoreLimits,
    ) -> None:
        self._registry = registry
        self._store = store
        self._transfer = transfer
        self._pool = pool
        self._repo = repo
        self._limits = limits

    async def run(self, job: PullJob, tracker: PullTracker) -> StoredPull:
        name = parse_model_name(job.model)
        session = self._registry.session(name)
        tracker.set_status("pulling manifest")
        manifest = await self._transfer.retrying(lambda: self._registry.manifest(session), "manifest")
        if manifest.total_size > self._limits.max_pull_bytes:
            raise TooLargeError(
                f"{name.full} is {manifest.total_size} bytes, more than the {self._limits.max_pull_bytes} bytes"
                " a pull may fetch (MODELHUB_PULLER_MAX_PULL_BYTES)"
            )
        blobs = manifest.blobs
        layers = [LayerProgress(digest=b.digest, media_type=b.media_type, total_bytes=b.size) for b in blobs]
        tracker.set_layers(layers)
        missing: list[mf.Layer] = []
        for blob in blobs:
            if await self._transfer.is_present(blob):
                tracker.set_layer_state(blob.digest, LayerState.PRESENT)
            else:
                missing.append(blob)
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.set_layers(conn, job.id, tracker.snapshot())
        await self._check_space(sum(b.size for b in missing), name)

        tracker.set_status("downloading" if missing else "already stored")
        progress = BlobProgress(tracker.add)
        for blob in missing:
            tracker.set_layer_state(blob.digest, LayerState.DOWNLOADING)
            digest = blob.digest
            downloaded = await self._transfer.fetch(
                session,
                blob,
                pull_id=job.id,
                progress=progress,
                completed=lambda done, d=digest: tracker.at_least(d, done),  # type: ignore[misc]
            )
            tracker.set_layer_state(blob.digest, LayerState.DOWNLOADED if downloaded else LayerState.PRESENT)

        tracker.set_status("reading model details")
        details = await self.describe(manifest)
        tracker.set_status("writing manifest")
        await self._transfer.retrying(lambda: self._store.put(name.manifest_key, manifest.raw), "store manifest")
        return StoredPull(name=name, manifest=manifest, details=details)

    async def _check_space(self, new_bytes: int, name: ModelName) -> None:
        capacity = self._limits.capacity_bytes
        if capacity is None or new_bytes == 0:
            return
        async with self._pool.connection() as conn:
            used = await self._repo.stored_bytes(conn)
        free = capacity - used
        if new_bytes + self._limits.free_space_margin_bytes > free:
            raise InsufficientSpaceError(
                f"{name.full} needs {new_bytes} new bytes but the store has {max(free, 0)} free"
                f" and must keep {self._limits.free_space_margin_bytes} spare"
            )

    async def describe(self, manifest: mf.Manifest) -> ModelDetails:
        config: dict[str, Any] = {}
        if manifest.config.size <= _MAX_TEXT_LAYER:
            try:
                value = json.loads(await self._store.read(mf.blob_key(manifest.config.digest)))
                config = value if isinstance(value, dict) else {}
            except ValueError:
                logger.warning("config blob is not JSON", extra={"digest": manifest.config.digest})
        texts: dict[str, list[str]] = {}
        for layer in manifest.layers:
            if layer.media_type in mf.TEXT_LAYERS and layer.size <= _MAX_TEXT_LAYER:
                raw = await self._store.read(mf.blob_key(layer.digest))
                texts.setdefault(layer.media_type, []).append(raw.decode("utf-8", "replace"))
        models = manifest.layers_of(mf.MODEL)
        gguf = await self.read_gguf(models[0].digest) if models else None
        return describe(manifest, config=config, texts=texts, gguf=gguf, bucket=self._store.bucket)

    async def read_gguf(self, digest: str) -> GgufInfo | None:
        objects = self._store.objects.sync
        bucket, key = self._store.bucket, mf.blob_key(digest)

        def read() -> GgufInfo:
            with objects.get_stream(bucket, key, chunk_size=MIB) as stream:
                return read_gguf_info(stream.read)

        try:
            return await asyncio.to_thread(read)
        except GgufError as exc:
            logger.info("model layer has no readable GGUF header", extra={"digest": digest, "error": str(exc)})
            return None
        except Exception as exc:
            raise StoreError(f"reading the GGUF header of {digest[:19]} failed: {exc}") from exc
