"""Models in the store: list them, delete one (its manifest and the blobs no other model uses)."""

from __future__ import annotations

import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from modelhub_common.auth import Principal
from modelhub_common.outbox import enqueue
from modelhub_puller.adapters.blob_store import BlobStore
from modelhub_puller.adapters.pull_repository import PullRepository, StoredModel
from modelhub_puller.domain import manifest as mf
from modelhub_puller.domain.names import parse_model_name
from modelhub_puller.errors import ForbiddenError, NotFoundError, StoreError
from modelhub_puller.service_layer import events
from modelhub_puller.service_layer.pulls import PullPolicy

logger = logging.getLogger(__name__)


class StoredModelService:
    def __init__(self, pool: AsyncConnectionPool, repo: PullRepository, store: BlobStore, policy: PullPolicy) -> None:
        self._pool = pool
        self._repo = repo
        self._store = store
        self._policy = policy

    async def list_models(self, principal: Principal) -> list[StoredModel]:
        self._policy.check(principal)
        async with self._pool.connection() as conn:
            return await self._repo.stored_models(conn)

    async def delete(self, principal: Principal, model: str) -> tuple[StoredModel, list[str]]:
        """Deletes by name as users type it (``llama3.2``) or by base model id; returns the removed blobs.

        Rows and the event commit together; objects are removed afterwards (a crash in between leaves
        unreferenced objects, never a manifest pointing at missing blobs).
        """
        if not principal.is_admin:
            raise ForbiddenError("deleting a stored model needs the admin role")
        name = parse_model_name(model)
        async with self._pool.connection() as conn, conn.transaction():
            stored = await self._repo.stored_model(conn, model=name.full, lock=True)
            if stored is None:
                stored = await self._repo.stored_model(conn, base_model_id=model, lock=True)
            if stored is None:
                raise NotFoundError(f"{model} is not in the model store")
            removed = await self._repo.delete_manifest(conn, stored.model)
            await enqueue(
                conn,
                events.MODEL_DELETED,
                events.model_deleted(
                    model=stored.model,
                    base_model_id=stored.base_model_id,
                    manifest_digest=stored.digest,
                    removed=removed,
                    principal=principal,
                ),
            )
        for key in [stored.object_key, *(mf.blob_key(d) for d in removed)]:
            with contextlib.suppress(StoreError):
                await self._store.remove(key)
        logger.info("stored model deleted", extra={"model": stored.model, "removed_blobs": len(removed)})
        return stored, removed
