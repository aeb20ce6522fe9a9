"""Base models: registered by admins, found through connections, or pulled into the object store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from google.protobuf.json_format import MessageToDict
from psycopg_pool import AsyncConnectionPool

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.url_policy import UrlNotAllowedError, check_outbound_url
from modelhub_registry.adapters.base_models_repository import BaseModelsRepository
from modelhub_registry.adapters.connection_clients import list_connection_models
from modelhub_registry.domain.base_model import BaseModelRecord, Connection, ConnectionType
from modelhub_registry.errors import ConflictError, InvalidModelError, NotFoundError, RegistryError
from modelhub_registry.service_layer import events

logger = logging.getLogger(__name__)

# Only one replica syncs connections at a time; the others skip the round.
_SYNC_LOCK = 0x6D6F64656C687562


class BaseModelService:
    def __init__(self, pool: AsyncConnectionPool, http: httpx.AsyncClient, *, allow_private_urls: bool) -> None:
        self.pool = pool
        self.http = http
        self.repo = BaseModelsRepository()
        self.allow_private_urls = allow_private_urls

    async def _check_url(self, url: str) -> None:
        try:
            await asyncio.to_thread(check_outbound_url, url, allow_private=self.allow_private_urls)
        except UrlNotAllowedError as exc:
            raise InvalidModelError(exc.message) from exc

    async def list_all(self, *, include_unavailable: bool) -> list[BaseModelRecord]:
        async with self.pool.connection() as conn:
            return await self.repo.list_all(conn, include_unavailable=include_unavailable)

    async def get(self, model_id: str) -> BaseModelRecord | None:
        async with self.pool.connection() as conn:
            return await self.repo.get(conn, model_id)

    async def register(self, record: BaseModelRecord, principal: Principal | None) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT 1 FROM models WHERE id = %s", (record.id,))
            if await cur.fetchone() is not None:
                raise ConflictError(f"'{record.id}' is already the id of a model file")
            new = await self.repo.upsert(conn, record)
            if new:
                await events.base_model_event(conn, "base_model_registered", record.id, principal)
        return new

    async def remove(self, model_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if not await self.repo.delete(conn, model_id):
                raise NotFoundError(f"base model '{model_id}' does not exist")
            await events.base_model_event(conn, "base_model_removed", model_id, principal)

    async def remove_local(self, model_id: str) -> bool:
        """Removes a base model whose weights were deleted from the store; idempotent."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM base_models WHERE id = %s AND source = 'local' RETURNING id", (model_id,)
            )
            if await cur.fetchone() is None:
                return False
            await events.base_model_event(conn, "base_model_removed", model_id, None)
        return True

    async def register_pulled(self, completed: events_pb2.PullCompleted) -> bool:
        """Handles the puller's completed event; idempotent (a redelivery refreshes the same row)."""
        details = completed.details
        record = BaseModelRecord(
            id=completed.model,
            name=completed.model,
            source="local",
            capabilities={"vision": details.vision},
            details={
                "format": details.format,
                "family": details.family,
                "families": list(details.families),
                "parameter_size": details.parameter_size,
                "quantization_level": details.quantization_level,
                "architecture": details.architecture,
                "size": details.size_bytes,
                "digest": details.manifest_digest,
                "licenses": list(details.licenses),
                "template": details.template,
                "model_digest": details.model_digest,
                "projector_digests": list(details.projector_digests),
                "store_bucket": details.store_bucket,
                **({"context_length": details.context_length} if details.context_length else {}),
            },
            params={**({"system": details.system} if details.system else {}), **_struct(details.params)},
        )
        return await self.register(record, None)

    # ---- connections

    async def add_connection(self, *, type_: ConnectionType, name: str, url: str, api_key: str | None) -> Connection:
        await self._check_url(url)
        async with self.pool.connection() as conn, conn.transaction():
            return await self.repo.add_connection(conn, type_=type_, name=name, url=url, api_key=api_key)

    async def connections(self) -> list[Connection]:
        async with self.pool.connection() as conn:
            return await self.repo.connections(conn)

    async def connection_credentials(self, connection_id: str) -> dict[str, Any]:
        """URL and API key of a connection, for services that call it (the chat gateway); admin only."""
        async with self.pool.connection() as conn:
            try:
                connection, key = await self.repo.connection_secret(conn, connection_id)
            except LookupError as exc:
                raise NotFoundError(f"connection '{connection_id}' does not exist") from exc
        return {"id": connection.id, "type": connection.type, "url": connection.url, "api_key": key}

    async def delete_connection(self, connection_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            try:
                removed = await self.repo.delete_connection(conn, connection_id)
            except LookupError as exc:
                raise NotFoundError(f"connection '{connection_id}' does not exist") from exc
            for model_id in removed:
                await events.base_model_event(conn, "base_model_removed", model_id, principal)

    async def sync_connection(self, connection_id: str) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            try:
                connection, key = await self.repo.connection_secret(conn, connection_id)
            except LookupError as exc:
                raise NotFoundError(f"connection '{connection_id}' does not exist") from exc
        try:
            # Checked again at every fetch: the name may resolve elsewhere now, or the policy changed.
            await self._check_url(connection.url)
            records = await list_connection_models(
                self.http, type_=connection.type, url=connection.url, api_key=key, connection_id=connection.id
            )
        except RegistryError as exc:
            async with self.pool.connection() as conn, conn.transaction():
                await self.repo.record_sync(conn, connection_id, exc.message)
            raise
        added: list[str] = []
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT id FROM models WHERE id = ANY(%s)", ([r.id for r in records],))
            shadowed = {r[0] for r in await cur.fetchall()}
            for record in records:
                if record.id in shadowed:
                    continue
                if await self.repo.upsert(conn, record):
                    added.append(record.id)
                    await events.base_model_event(conn, "base_model_registered", record.id, None)
            gone = await self.repo.mark_unavailable(conn, connection_id, [r.id for r in records])
            for model_id in gone:
                await events.base_model_event(conn, "base_model_removed", model_id, None)
            await self.repo.record_sync(conn, connection_id, None)
        return {"connection_id": connection_id, "models": len(records), "added": added, "unavailable": gone}

    async def sync_all(self) -> None:
        """One round of the periodic sync; a failing connection is recorded and the others go on."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_SYNC_LOCK,))
            row = await cur.fetchone()
            if not row or not row[0]:
                return
            try:
                for connection in await self.repo.connections(conn):
                    try:
                        await self.sync_connection(connection.id)
                    except RegistryError as exc:
                        logger.warning(
                            "connection sync failed",
                            extra={"connection_id": connection.id, "error": exc.message},
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SYNC_LOCK,))


def _struct(value: Any) -> dict[str, Any]:
    """A protobuf Struct as a dict; Struct keeps every number as a double, so whole ones become ints again."""
    if value is None:
        return {}
    return {k: _whole(v) for k, v in MessageToDict(value).items()}


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value
