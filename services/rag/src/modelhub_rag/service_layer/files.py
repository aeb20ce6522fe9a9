"""File use cases: upload (type checked by content, size-limited, de-duplicated by hash), list, delete."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import Principal
from modelhub_common.errors import ModelhubError
from modelhub_common.objectstore import AsyncObjectStore
from modelhub_rag.adapters.knowledge_repository import KnowledgeRepository, NewFile
from modelhub_rag.adapters.object_deletions import ObjectSweeper, queue_deletions
from modelhub_rag.domain import filetypes
from modelhub_rag.domain.collection import KnowledgeFile
from modelhub_rag.errors import (
    ConflictError,
    FileTooLargeError,
    InvalidRequestError,
    KnowledgeFileNotFoundError,
)
from modelhub_rag.service_layer import events
from modelhub_rag.service_layer.collections import load_collection

logger = logging.getLogger(__name__)

_UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class FileLimits:
    max_file_bytes: int
    max_files_per_collection: int
    max_name_length: int


def object_key(collection_id: str, file_id: str) -> str:
    return f"knowledge/{collection_id}/{file_id}"


def clean_filename(name: str | None, max_length: int) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(ch for ch in base if ch.isprintable())
    if not base:
        raise InvalidRequestError("the upload has no file name", details=[{"field": "file", "message": "no name"}])
    return base[:max_length]


class FileService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        store: AsyncObjectStore,
        *,
        bucket: str,
        limits: FileLimits,
        sweeper: ObjectSweeper | None = None,
        repo: KnowledgeRepository | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.bucket = bucket
        self.limits = limits
        self.sweeper = sweeper
        self.repo = repo or KnowledgeRepository()

    def check_size(self, size: int, filename: str) -> None:
        if size > self.limits.max_file_bytes:
            raise FileTooLargeError(
                f"{filename} is larger than the limit of {self.limits.max_file_bytes} bytes; split it",
                details={"limit_bytes": self.limits.max_file_bytes},
            )

    async def upload(
        self, collection_id: str, principal: Principal, *, filename: str | None, data: bytes, declared_type: str | None
    ) -> KnowledgeFile:
        name = clean_filename(filename, self.limits.max_name_length)
        self.check_size(len(data), name)
        async with self.pool.connection() as conn:
            await load_collection(self.repo, conn, collection_id, principal, write=True)
        # Parsing a ZIP or sniffing a large text is CPU work: keep it off the event loop.
        detected = await asyncio.to_thread(filetypes.detect, data, name, declared_type)
        digest = hashlib.sha256(data).hexdigest()
        async with self.pool.connection() as conn:
            existing = await self.repo.file_by_hash(conn, collection_id, digest)
        if existing is not None:
            raise self._duplicate(existing)
        file_id = str(uuid.uuid4())
        key = object_key(collection_id, file_id)
        await self.store.put_bytes(self.bucket, key, data, content_type=detected.content_type)
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await load_collection(self.repo, conn, collection_id, principal, write=True, for_update=True)
                if await self.repo.count_files(conn, collection_id) >= self.limits.max_files_per_collection:
                    raise ConflictError(
                        f"knowledge '{collection_id}' already holds {self.limits.max_files_per_collection} files,"
                        " the most one collection may hold",
                        code="too_many_files",
                    )
                file = await self.repo.insert_file(
                    conn,
                    NewFile(
                        id=file_id,
                        collection_id=collection_id,
                        name=name,
                        kind=detected.kind,
                        content_type=detected.content_type,
                        size_bytes=len(data),
                        sha256=digest,
                        object_key=key,
                        uploaded_by=principal.subject,
                    ),
                )
                await events.file_added(conn, file, principal)
        except psycopg.errors.UniqueViolation as exc:
            await self._forget_object(key)
            async with self.pool.connection() as conn:
                existing = await self.repo.file_by_hash(conn, collection_id, digest)
            if existing is None:
                raise
            raise self._duplicate(existing) from exc
        except BaseException:
            await self._forget_object(key)
            raise
        logger.info(
            "file uploaded",
            extra={"knowledge_id": collection_id, "file_id": file_id, "kind": file.kind, "size_bytes": file.size_bytes},
        )
        return file

    @staticmethod
    def _duplicate(existing: KnowledgeFile) -> ConflictError:
        return ConflictError(
            f"this content is already in the collection as '{existing.name}' (file {existing.id})",
            code="duplicate_file",
            details={"file_id": existing.id, "name": existing.name, "status": existing.status},
        )

    async def _forget_object(self, key: str) -> None:
        try:
            await self.store.remove(self.bucket, key)
        except ModelhubError as exc:
            logger.warning(
                "could not remove the object of a failed upload", extra={"object_key": key, "error": exc.message}
            )

    async def list_files(
        self, collection_id: str, principal: Principal, *, status: str | None = None
    ) -> list[KnowledgeFile]:
        async with self.pool.connection() as conn:
            await load_collection(self.repo, conn, collection_id, principal)
            return await self.repo.list_files(conn, collection_id, status=status)

    async def get_file(self, collection_id: str, file_id: str, principal: Principal) -> KnowledgeFile:
        async with self.pool.connection() as conn:
            await load_collection(self.repo, conn, collection_id, principal)
            file = await self.repo.get_file(conn, file_id)
        if file is None or file.collection_id != collection_id:
            raise KnowledgeFileNotFoundError(f"file '{file_id}' is not in knowledge '{collection_id}'")
        return file

    async def delete_file(self, collection_id: str, file_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await load_collection(self.repo, conn, collection_id, principal, write=True)
            file = await self.repo.get_file(conn, file_id, for_update=True)
            if file is None or file.collection_id != collection_id:
                raise KnowledgeFileNotFoundError(f"file '{file_id}' is not in knowledge '{collection_id}'")
            await self.repo.delete_file(conn, file_id)
            await queue_deletions(conn, [file.object_key])
        if self.sweeper is not None:
            self.sweeper.wake()
        logger.info("file deleted", extra={"knowledge_id": collection_id, "file_id": file_id})
