"""Tool-server use cases: register, change, remove, discover tools (on demand and on a timer), who may use one.

Discovery runs outside any transaction (no row stays locked while a tool server answers); the write that
follows re-reads the row and keeps the discovery only if the server's address and credentials did not change
meanwhile. Every change is written with its outbox event in one transaction.

A discovery failure does not refuse a create: the server is stored with ``last_error`` saying what went wrong
and no tools, so an admin can fix the server and refresh, or correct the registration with a PATCH.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.events import MODELS, new_envelope
from modelhub_common.outbox import enqueue
from modelhub_common.tools import ToolServerConfig, ToolServerError, discover
from modelhub_common.url_policy import UrlNotAllowedError, check_outbound_url
from modelhub_registry.adapters.reads import autocommit_connection
from modelhub_registry.adapters.tool_servers_repository import ToolServersRepository
from modelhub_registry.domain.tool_server import (
    TOOL_SERVER_ID_RE,
    AccessControl,
    ToolServer,
    ToolServerLimits,
    may_use,
    tool_server_id_of,
)
from modelhub_registry.errors import ConflictError, InvalidModelError, NotFoundError

logger = logging.getLogger(__name__)

SOURCE = "registry"
TOOL_SERVER_EVENTS = ("tool_server_created", "tool_server_updated", "tool_server_deleted")
# What decides which tools a server offers: a change to any of these means discovering again.
_DISCOVERY_FIELDS = ("kind", "url", "base_url", "auth", "secret", "timeout_seconds")
_PATCHABLE = (
    "name",
    "description",
    "kind",
    "url",
    "base_url",
    "auth",
    "secret",
    "timeout_seconds",
    "max_result_bytes",
    "access_control",
)


def now() -> datetime:
    return datetime.now(UTC)


def _invalid(field: str, message: str) -> InvalidModelError:
    return InvalidModelError(f"{field}: {message}", details=[{"field": field, "message": message}])


class ToolServerService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        http: httpx.AsyncClient,
        *,
        limits: ToolServerLimits,
        allow_private_urls: bool,
        repository: ToolServersRepository | None = None,
    ) -> None:
        self.pool = pool
        self.http = http
        self.limits = limits
        self.allow_private_urls = allow_private_urls
        self.repo = repository or ToolServersRepository()

    # ---- validation

    async def _check(self, server: ToolServer) -> None:
        if not TOOL_SERVER_ID_RE.match(server.id):
            raise _invalid("id", "must be 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
        if not server.name.strip():
            raise _invalid("name", "must not be empty")
        if server.auth == "bearer" and not server.secret:
            raise _invalid("secret", "auth 'bearer' needs the secret to send")
        if server.auth != "bearer" and server.secret:
            raise _invalid("secret", f"auth '{server.auth}' sends no secret; use auth 'bearer' or leave it out")
        if server.base_url and server.kind != "openapi":
            raise _invalid("base_url", "only OpenAPI tool servers have a base_url")
        low, high = self.limits.min_timeout_seconds, self.limits.max_timeout_seconds
        if not low <= server.timeout_seconds <= high:
            raise _invalid("timeout_seconds", f"must be between {low:g} and {high:g}")
        if not 1 <= server.max_result_bytes <= self.limits.max_result_bytes:
            raise _invalid("max_result_bytes", f"must be between 1 and {self.limits.max_result_bytes}")
        for field, url in (("url", server.url), ("base_url", server.base_url)):
            if url is None:
                continue
            if not self.limits.host_allowed(url):
                allowed = ", ".join(self.limits.allowed_hosts)
                raise _invalid(
                    field,
                    f"tool servers may only live on the allowed hosts ({allowed}); an admin can add the host to "
                    "the registry's tool_server_allowed_hosts setting",
                )
            try:
                await asyncio.to_thread(check_outbound_url, url, allow_private=self.allow_private_urls, field=field)
            except UrlNotAllowedError as exc:
                raise InvalidModelError(
                    exc.message, code=exc.code, details=[{"field": field, "message": exc.message}]
                ) from exc

    def _config(self, server: ToolServer) -> ToolServerConfig:
        return ToolServerConfig(
            kind=server.kind,
            url=server.url,
            auth=server.auth,
            secret=server.secret,
            base_url=server.base_url,
            timeout_seconds=server.timeout_seconds,
            max_result_bytes=server.max_result_bytes,
            max_document_bytes=self.limits.max_document_bytes,
            allow_private_urls=self.allow_private_urls,
        )

    async def _discover(self, server: ToolServer, caller_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The tools as stored, and the discovery error (None when it worked)."""
        try:
            specs = await discover(self._config(server), caller_token=caller_token, http=self.http)
        except ToolServerError as exc:
            return [], exc.message
        if len(specs) > self.limits.max_tools_per_server:
            return [], (
                f"the server offers {len(specs)} tools; the limit is {self.limits.max_tools_per_server}"
                " (registry setting max_tools_per_server)"
            )
        return [spec.to_dict() for spec in specs], None

    # ---- events

    async def _event(
        self, conn: AsyncConnection[Any], event: str, server: ToolServer, principal: Principal | None
    ) -> None:
        assert event in TOOL_SERVER_EVENTS
        actor, role = (principal.subject, principal.role) if principal else (SOURCE, "service")
        payload = events_pb2.ToolServerChanged(
            id=server.id, version=server.version, kind=server.kind, deleted=event == "tool_server_deleted"
        )
        envelope = new_envelope(
            MODELS.subject(event),
            actor=actor,
            role=role,
            source=SOURCE,
            payload=payload,
            subject_ids=events_pb2.SubjectIds(tool_server_id=server.id),
        )
        await enqueue(conn, MODELS.subject(event), envelope)

    # ---- admin use cases

    async def create(self, data: dict[str, Any], principal: Principal, *, caller_token: str | None) -> ToolServer:
        stamp = now()
        server = ToolServer.model_validate({**data, "created_at": stamp, "updated_at": stamp, "version": 1})
        await self._check(server)
        async with autocommit_connection(self.pool) as conn:
            if await self.repo.get(conn, server.id) is not None:
                raise ConflictError(f"tool server '{server.id}' already exists; choose another id or change it")
            if await self.repo.count(conn) >= self.limits.max_tool_servers:
                raise ConflictError(
                    f"the registry already holds {self.limits.max_tool_servers} tool servers (setting"
                    " max_tool_servers); remove one first"
                )
        tools, error = await self._discover(server, caller_token)
        server = server.model_copy(update={"tools": tools, "last_error": error, "refreshed_at": now()})
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await self.repo.insert(conn, server)
                await self._event(conn, "tool_server_created", server, principal)
        except UniqueViolation as exc:
            raise ConflictError(f"tool server '{server.id}' already exists; choose another id or change it") from exc
        return server

    async def list_all(self) -> list[ToolServer]:
        async with autocommit_connection(self.pool) as conn:
            return await self.repo.list_all(conn)

    async def get(self, server_id: str) -> ToolServer:
        async with autocommit_connection(self.pool) as conn:
            server = await self.repo.get(conn, server_id)
        if server is None:
            raise NotFoundError(f"tool server '{server_id}' does not exist")
        return server

    async def update(
        self, server_id: str, patch: dict[str, Any], principal: Principal, *, caller_token: str | None
    ) -> ToolServer:
        unknown = sorted(set(patch) - set(_PATCHABLE))
        if unknown:
            raise _invalid(unknown[0], f"cannot be changed (changeable: {', '.join(_PATCHABLE)})")
        current = await self.get(server_id)
        changes = dict(patch)
        if "access_control" in changes and changes["access_control"] is not None:
            changes["access_control"] = AccessControl.model_validate(changes["access_control"])
        if changes.get("auth") in ("none", "forward") and "secret" not in changes:
            changes["secret"] = None  # switching away from bearer drops the secret rather than refusing
        candidate = ToolServer.model_validate({**current.model_dump(), **changes})
        await self._check(candidate)
        rediscover = any(getattr(candidate, f) != getattr(current, f) for f in _DISCOVERY_FIELDS)
        if rediscover:
            tools, error = await self._discover(candidate, caller_token)
            candidate = candidate.model_copy(update={"tools": tools, "last_error": error, "refreshed_at": now()})
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self.repo.get(conn, server_id, for_update=True)
            if stored is None:
                raise NotFoundError(f"tool server '{server_id}' does not exist")
            if stored.version != current.version:
                raise ConflictError(f"tool server '{server_id}' changed while this change ran; apply it again")
            if candidate.model_dump(exclude={"updated_at", "version", "refreshed_at"}) == stored.model_dump(
                exclude={"updated_at", "version", "refreshed_at"}
            ):
                return stored
            server = candidate.model_copy(update={"updated_at": now(), "version": stored.version + 1})
            await self.repo.update(conn, server)
            await self._event(conn, "tool_server_updated", server, principal)
        return server

    async def delete(self, server_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            removed = await self.repo.delete(conn, server_id)
            if removed is None:
                raise NotFoundError(f"tool server '{server_id}' does not exist")
            await self._event(conn, "tool_server_deleted", removed, principal)

    async def refresh(self, server_id: str, principal: Principal | None, *, caller_token: str | None) -> ToolServer:
        """Discover again. The version (and an event) changes only when the tools did."""
        current = await self.get(server_id)
        tools, error = await self._discover(current, caller_token)
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self.repo.get(conn, server_id, for_update=True)
            if stored is None:
                raise NotFoundError(f"tool server '{server_id}' does not exist")
            if any(getattr(stored, f) != getattr(current, f) for f in _DISCOVERY_FIELDS):
                # Changed while we discovered: that change discovered for the new settings already.
                return stored
            stamp = now()
            server = stored.model_copy(update={"tools": tools, "last_error": error, "refreshed_at": stamp})
            if tools != stored.tools:
                server = server.model_copy(update={"updated_at": stamp, "version": stored.version + 1})
                await self.repo.update(conn, server)
                await self._event(conn, "tool_server_updated", server, principal)
            else:
                await self.repo.update(conn, server)
        if error:
            logger.info("tool server discovery failed", extra={"tool_server": server_id, "error": error})
        return server

    async def refresh_all(self) -> None:
        async with autocommit_connection(self.pool) as conn:
            ids = await self.repo.ids(conn)
        for server_id in ids:
            try:
                await self.refresh(server_id, None, caller_token=None)
            except NotFoundError:
                continue

    async def credentials(self, server_id: str) -> dict[str, Any]:
        return (await self.get(server_id)).credentials_json()

    # ---- any user

    async def usable(self, principal: Principal) -> list[ToolServer]:
        return [server for server in await self.list_all() if may_use(server, principal)]

    async def usable_one(self, server_id: str, principal: Principal) -> ToolServer:
        async with autocommit_connection(self.pool) as conn:
            server = await self.repo.get(conn, server_id)
        # One answer for both, so a user cannot learn that a server exists that they may not use.
        if server is None or not may_use(server, principal):
            raise NotFoundError(f"tool server '{server_id}' does not exist or you cannot use it")
        return server

    # ---- model files naming tool servers

    async def unknown_tool_ids(self, tool_ids: list[str]) -> list[str]:
        """The ``meta.toolIds`` entries that name no registered tool server."""
        if not tool_ids:
            return []
        async with autocommit_connection(self.pool) as conn:
            found = await self.repo.existing_ids(conn, sorted({tool_server_id_of(t) for t in tool_ids}))
        return [t for t in tool_ids if tool_server_id_of(t) not in found]

    async def tool_id_warnings(self, tool_ids: list[str]) -> list[dict[str, str]]:
        return [
            {
                "field": "meta.toolIds",
                "message": f"tool '{tool_id}' names no registered tool server; it is stored but cannot be used"
                " until an admin registers it (modelhub tools add)",
            }
            for tool_id in await self.unknown_tool_ids(tool_ids)
        ]
