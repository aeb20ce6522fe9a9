"""``import-gguf``: a local GGUF file into the store exactly as a pull would leave it.

The weights become a content-addressed blob, a config blob and optional template/system/params layers are
written next to it, and a Docker v2 manifest with an Ollama-style model layer is recorded last. Everything
is derived from the content (the config has no timestamps), so importing the same file again produces the
same manifest digest and does nothing. A new import commits a completed pull with the same
``modelhub.pulls.v1.completed`` event through the outbox, so the registry registers the base model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from modelhub_common.outbox import enqueue
from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.pull_repository import PullRepository
from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.details import ModelDetails, describe
from modelhub_puller.domain.gguf import GgufError, read_gguf_info
from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.domain.pull import PullJob, PullState, Target
from modelhub_puller.errors import InvalidRequestError, StoreError
from modelhub_puller.service_layer import events
from modelhub_puller.settings import MIB

logger = logging.getLogger(__name__)

IMPORTER = "import-gguf"


@dataclass(frozen=True)
class ImportResult:
    model: str
    base_model_id: str
    manifest_digest: str
    model_digest: str
    created: bool
    pull_id: str | None
    details: ModelDetails


class GgufImporter:
    def __init__(self, pool: AsyncConnectionPool, repo: PullRepository, store: BlobStore) -> None:
        self._pool = pool
        self._repo = repo
        self._store = store

    async def run(
        self,
        *,
        name: str,
        path: Path,
        template: str | None = None,
        system: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> ImportResult:
        model_name = parse_model_name(name)
        if not path.is_file():
            raise InvalidRequestError(f"{path} is not a file")
        digest, size = await asyncio.to_thread(_file_digest, path)
        try:
            info = await asyncio.to_thread(_read_header, path)
        except GgufError as exc:
            raise InvalidRequestError(f"{path} is not a GGUF file: {exc}") from exc

        model_layer = mf.Layer(media_type=mf.MODEL, digest=digest, size=size)
        await self._ensure_file_blob(model_layer, path)
        layers = [model_layer]
        for media_type, text in (
            (mf.TEMPLATE, template),
            (mf.SYSTEM, system),
            (mf.PARAMS, json.dumps(params, sort_keys=True) if params else None),
        ):
            if text:
                layers.append(await self._ensure_bytes_blob(media_type, text.encode()))
        config_body = {
            "model_format": "gguf",
            "model_family": info.architecture,
            "model_families": [info.architecture] if info.architecture else [],
            "model_type": info.parameter_size,
            "file_type": info.quantization,
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        }
        config = await self._ensure_bytes_blob(
            mf.CONFIG_MEDIA_TYPE, json.dumps(config_body, sort_keys=True, separators=(",", ":")).encode()
        )
        raw = mf.build_manifest(config, layers)
        manifest = mf.parse_manifest(raw)
        texts: dict[str, list[str]] = {}
        if template:
            texts[mf.TEMPLATE] = [template]
        if system:
            texts[mf.SYSTEM] = [system]
        if params:
            texts[mf.PARAMS] = [json.dumps(params)]
        details = describe(manifest, config=config_body, texts=texts, gguf=info, bucket=self._store.bucket)

        async with self._pool.connection() as conn:
            current = await self._repo.manifest_digest(conn, model_name.full)
        if current == manifest.digest and await self._store.exists(model_name.manifest_key):
            logger.info("model already stored; nothing to do", extra={"model": model_name.full})
            return ImportResult(
                model_name.full, model_name.base_model_id, manifest.digest, digest, False, None, details
            )

        await self._store.put(model_name.manifest_key, raw)
        async with self._pool.connection() as conn, conn.transaction():
            missing = await self._repo.save_manifest(
                conn,
                model=model_name.full,
                base_model_id=model_name.base_model_id,
                digest=manifest.digest,
                object_key=model_name.manifest_key,
                size_bytes=manifest.total_size,
                source="import",
                blob_digests=[b.digest for b in manifest.blobs],
            )
            if missing:
                raise StoreError(f"blobs vanished during the import: {missing}")
            pull_id = await self._repo.record_completed_import(
                conn,
                model=model_name.full,
                base_model_id=model_name.base_model_id,
                requested_by=IMPORTER,
                size=manifest.total_size,
                manifest_digest=manifest.digest,
            )
            job = PullJob(
                id=pull_id,
                model=model_name.full,
                base_model_id=model_name.base_model_id,
                target=Target.STORE,
                state=PullState.COMPLETED,
                status="imported",
                requested_by=IMPORTER,
            )
            await enqueue(conn, events.COMPLETED, events.completed(job, details))
        logger.info("model imported", extra={"model": model_name.full, "manifest_digest": manifest.digest})
        return ImportResult(model_name.full, model_name.base_model_id, manifest.digest, digest, True, pull_id, details)

    async def _ensure_file_blob(self, layer: mf.Layer, path: Path) -> None:
        key = mf.blob_key(layer.digest)
        if await self._store.size(key) != layer.size:
            objects = self._store.objects.sync
            bucket = self._store.bucket

            def upload() -> None:
                with path.open("rb") as handle:
                    objects.put_stream(bucket, key, handle, length=layer.size)

            await asyncio.to_thread(upload)
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.record_blob(conn, layer.digest, layer.size)

    async def _ensure_bytes_blob(self, media_type: str, data: bytes) -> mf.Layer:
        layer = mf.Layer(media_type=media_type, digest=mf.sha256_digest(data), size=len(data))
        key = mf.blob_key(layer.digest)
        if await self._store.size(key) != layer.size:
            await self._store.put(key, data)
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.record_blob(conn, layer.digest, layer.size)
        return layer


def _file_digest(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MIB):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _read_header(path: Path) -> Any:
    with path.open("rb") as handle:
        return read_gguf_info(handle.read)
