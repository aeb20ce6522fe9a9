"""Collection use cases: create, read, list, change, delete (cascading), re-index."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import Principal
from modelhub_rag.adapters.knowledge_repository import KnowledgeRepository
from modelhub_rag.adapters.object_deletions import ObjectSweeper, queue_deletions
from modelhub_rag.adapters.references_repository import ReferencesRepository
from modelhub_rag.domain.access import can_administer, can_read, can_write
from modelhub_rag.domain.collection import Collection, FileCounts, Grant
from modelhub_rag.errors import ConflictError, ForbiddenError, InvalidRequestError, KnowledgeNotFoundError
from modelhub_rag.service_layer import events

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionLimits:
    max_name_length: int
    max_description_length: int
    max_grants: int


@dataclass(frozen=True)
class ActiveEmbedder:
    """The embedder this service runs: new collections get it, re-indexing moves a collection to it."""

    name: str
    dimensions: int


@dataclass(frozen=True)
class CollectionView:
    collection: Collection
    counts: FileCounts
    used_by_models: list[str]
    active_embedder: str

    @property
    def reindex_required(self) -> bool:
        return self.collection.embedder != self.active_embedder


@dataclass(frozen=True)
class CollectionChanges:
    name: str | None = None
    description: str | None = None
    public_read: bool | None = None
    grants: Sequence[Grant] | None = None


@dataclass(frozen=True)
class ReindexResult:
    collection_id: str
    files: int
    embedder: str


async def load_collection(
    repo: KnowledgeRepository,
    conn: AsyncConnection[Any],
    collection_id: str,
    principal: Principal,
    *,
    write: bool = False,
    admin: bool = False,
    for_update: bool = False,
) -> Collection:
    """The collection if the caller may use it: 404 when it does not exist or the caller cannot read it (one
    answer for both, so a stranger cannot learn that a private collection exists); 403 naming what is missing
    for a caller who can read it."""
    collection = await repo.get_collection(conn, collection_id, for_update=for_update)
    if collection is None or not can_read(collection, principal):
        raise KnowledgeNotFoundError(
            f"knowledge '{collection_id}' does not exist or you cannot read it", details={"knowledge_id": collection_id}
        )
    if write and not can_write(collection, principal):
        raise ForbiddenError(
            f"you can read knowledge '{collection_id}' but not change it; ask its owner for write access",
            details={"knowledge_id": collection_id},
        )
    if admin and not can_administer(collection, principal):
        raise ForbiddenError(
            f"only the owner of knowledge '{collection_id}' or an admin may do this",
            details={"knowledge_id": collection_id},
        )
    return collection


class CollectionService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        embedder: ActiveEmbedder,
        limits: CollectionLimits,
        sweeper: ObjectSweeper | None = None,
        repo: KnowledgeRepository | None = None,
        references: ReferencesRepository | None = None,
    ) -> None:
        self.pool = pool
        self.embedder = embedder
        self.limits = limits
        self.sweeper = sweeper
        self.repo = repo or KnowledgeRepository()
        self.references = references or ReferencesRepository()

    def _check(self, name: str | None, description: str | None, grants: Sequence[Grant] | None) -> None:
        problems = []
        if name is not None and not name.strip():
            problems.append({"field": "name", "message": "must not be empty"})
        if name is not None and len(name) > self.limits.max_name_length:
            problems.append({"field": "name", "message": f"at most {self.limits.max_name_length} characters"})
        if description is not None and len(description) > self.limits.max_description_length:
            problems.append(
                {"field": "description", "message": f"at most {self.limits.max_description_length} characters"}
            )
        if grants is not None and len(grants) > self.limits.max_grants:
            problems.append({"field": "grants", "message": f"at most {self.limits.max_grants} grants"})
        if problems:
            raise InvalidRequestError("; ".join(f"{p['field']}: {p['message']}" for p in problems), details=problems)

    async def _views(self, conn: AsyncConnection[Any], collections: Sequence[Collection]) -> list[CollectionView]:
        ids = [c.id for c in collections]
        counts = await self.repo.counts(conn, ids)
        used = await self.references.models_using(conn, ids)
        return [CollectionView(c, counts[c.id], used[c.id], self.embedder.name) for c in collections]

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        description: str = "",
        public_read: bool = False,
        grants: Sequence[Grant] = (),
    ) -> CollectionView:
        self._check(name, description, grants)
        collection_id = str(uuid.uuid4())
        async with self.pool.connection() as conn, conn.transaction():
            await self.repo.insert_collection(
                conn,
                collection_id=collection_id,
                name=name.strip(),
                description=description,
                owner_id=principal.subject,
                public_read=public_read,
                embedder=self.embedder.name,
                dimensions=self.embedder.dimensions,
            )
            await self.repo.replace_grants(conn, collection_id, grants)
            collection = await self.repo.get_collection(conn, collection_id)
            assert collection is not None
            (view,) = await self._views(conn, [collection])
        logger.info("collection created", extra={"knowledge_id": collection_id, "owner": principal.subject})
        return view

    async def get(self, collection_id: str, principal: Principal) -> CollectionView:
        async with self.pool.connection() as conn:
            collection = await load_collection(self.repo, conn, collection_id, principal)
            (view,) = await self._views(conn, [collection])
            return view

    async def list_readable(self, principal: Principal, *, limit: int = 1000) -> list[CollectionView]:
        async with self.pool.connection() as conn:
            return await self._views(conn, await self.repo.list_readable(conn, principal, limit))

    async def update(
        self,
        collection_id: str,
        changes: CollectionChanges,
        principal: Principal,
        *,
        expected_version: int | None = None,
    ) -> CollectionView:
        self._check(changes.name, changes.description, changes.grants)
        changes_access = changes.public_read is not None or changes.grants is not None
        async with self.pool.connection() as conn, conn.transaction():
            collection = await load_collection(
                self.repo, conn, collection_id, principal, write=True, admin=changes_access, for_update=True
            )
            if expected_version is not None and expected_version != collection.version:
                raise ConflictError(
                    f"knowledge '{collection_id}' is at version {collection.version}, not {expected_version};"
                    " reload it and apply your change again",
                    code="version_conflict",
                )
            values: dict[str, Any] = {}
            if changes.name is not None:
                values["name"] = changes.name.strip()
            if changes.description is not None:
                values["description"] = changes.description
            if changes.public_read is not None:
                values["public_read"] = changes.public_read
            if changes.grants is not None:
                await self.repo.replace_grants(conn, collection_id, changes.grants)
            if values or changes.grants is not None:
                await self.repo.update_collection(conn, collection_id, **values)
            updated = await self.repo.get_collection(conn, collection_id)
            assert updated is not None
            (view,) = await self._views(conn, [updated])
            return view

    async def delete(self, collection_id: str, principal: Principal) -> list[str]:
        """Deletes the collection, its files, chunks and objects; returns models that still refer to it."""
        async with self.pool.connection() as conn, conn.transaction():
            await load_collection(self.repo, conn, collection_id, principal, admin=True, for_update=True)
            used_by = (await self.references.models_using(conn, [collection_id]))[collection_id]
            keys = await self.repo.delete_collection(conn, collection_id)
            await queue_deletions(conn, keys)
            await events.collection_deleted(conn, collection_id, principal)
        if self.sweeper is not None:
            self.sweeper.wake()
        if used_by:
            logger.warning(
                "deleted a collection that model files still use",
                extra={"knowledge_id": collection_id, "models": used_by},
            )
        logger.info("collection deleted", extra={"knowledge_id": collection_id, "files": len(keys)})
        return used_by

    async def reindex(self, collection_id: str, principal: Principal | None) -> ReindexResult:
        """Moves the collection to the active embedder and queues every file again (chunks are replaced per file).

        ``principal`` None is the operator's command line, which may re-index anything.
        """
        async with self.pool.connection() as conn, conn.transaction():
            if principal is None:
                found = await self.repo.get_collection(conn, collection_id, for_update=True)
                if found is None:
                    raise KnowledgeNotFoundError(f"knowledge '{collection_id}' does not exist")
            else:
                await load_collection(self.repo, conn, collection_id, principal, write=True, for_update=True)
            await self.repo.update_collection(
                conn, collection_id, embedder=self.embedder.name, dimensions=self.embedder.dimensions
            )
            files = await self.repo.reset_for_reindex(conn, collection_id)
            for file in files:
                await events.file_added(conn, file, principal)
        logger.info(
            "collection re-index queued",
            extra={"knowledge_id": collection_id, "files": len(files), "embedder": self.embedder.name},
        )
        return ReindexResult(collection_id, len(files), self.embedder.name)

    async def all_ids(self) -> list[str]:
        async with self.pool.connection() as conn:
            return await self.repo.list_all_ids(conn)
