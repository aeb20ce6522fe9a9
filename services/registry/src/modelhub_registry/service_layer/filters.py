"""Filter use cases: configure, change, remove (admins), read the configs the chat gateway runs, and find the
filter ids model files name that no filter has. Every change is written with its outbox event in one
transaction.

A PATCH of ``config`` is a JSON merge patch onto the stored config (so a webhook keeps the secret nobody can
read back unless the patch sets it, or clears it with ``null``); a PATCH that changes ``kind`` replaces the
config with the one given instead, since the old kind's settings mean nothing to the new one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from modelhub.events.v1 import events_pb2
from modelhub_common.auth import Principal
from modelhub_common.events import MODELS, new_envelope
from modelhub_common.outbox import enqueue
from modelhub_common.url_policy import UrlNotAllowedError, check_outbound_url
from modelhub_registry.adapters.filters_repository import FiltersRepository
from modelhub_registry.adapters.reads import autocommit_connection
from modelhub_registry.domain.filter import FILTER_ID_RE, Filter, FilterLimits, FilterProblem, validate_config
from modelhub_registry.errors import ConflictError, InvalidModelError, NotFoundError

SOURCE = "registry"
FILTER_EVENTS = ("filter_created", "filter_updated", "filter_deleted")
PATCHABLE = ("name", "description", "kind", "direction", "config", "enabled")
_DIRECTIONS = ("inlet", "outlet", "both")


def now() -> datetime:
    return datetime.now(UTC)


def _invalid(field: str, message: str, *, code: str | None = None) -> InvalidModelError:
    return InvalidModelError(f"{field}: {message}", code=code, details=[{"field": field, "message": message}])


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class FilterService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        limits: FilterLimits,
        allow_private_urls: bool,
        repository: FiltersRepository | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.allow_private_urls = allow_private_urls
        self.repo = repository or FiltersRepository()

    # ---- validation

    async def _checked(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (id, name, description, kind, direction, config, enabled) with its config normalised;
        raises InvalidModelError naming the field."""
        if not isinstance(data.get("id"), str) or not FILTER_ID_RE.fullmatch(data["id"]):
            raise _invalid("id", "must be 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
        if not isinstance(data.get("name"), str) or not data["name"].strip():
            raise _invalid("name", "must not be empty")
        if data.get("direction") not in _DIRECTIONS:
            raise _invalid("direction", "must be 'inlet' (the user's message), 'outlet' (the answer) or 'both'")
        if not isinstance(data.get("enabled"), bool):
            raise _invalid("enabled", "must be true or false")
        try:
            config = validate_config(str(data.get("kind")), data.get("config"), self.limits)
        except FilterProblem as exc:
            raise _invalid(exc.field, exc.message) from exc
        if data["kind"] == "webhook":
            await self._check_url(config["url"])
        return {**data, "config": config}

    async def _check_url(self, url: str) -> None:
        field = "config.url"
        if urlsplit(url).scheme != "https" and not self.allow_private_urls:
            raise _invalid(
                field,
                "must be an https:// URL (plain http is allowed only with the registry's allow_private_urls"
                " setting, for a webhook inside the company network)",
                code="url_not_allowed",
            )
        try:
            await asyncio.to_thread(check_outbound_url, url, allow_private=self.allow_private_urls, field=field)
        except UrlNotAllowedError as exc:
            raise InvalidModelError(
                exc.message, code=exc.code, details=[{"field": field, "message": exc.message}]
            ) from exc

    @staticmethod
    def _build(data: dict[str, Any]) -> Filter:
        try:
            return Filter.model_validate(data)
        except ValidationError as exc:  # the checks above cover every field; this is a last guard
            raise _invalid("filter", str(exc.errors()[0]["msg"])) from exc

    # ---- events

    async def _event(self, conn: AsyncConnection[Any], event: str, item: Filter, principal: Principal) -> None:
        assert event in FILTER_EVENTS
        payload = events_pb2.FilterChanged(id=item.id, version=item.version, deleted=event == "filter_deleted")
        envelope = new_envelope(
            MODELS.subject(event),
            actor=principal.subject,
            role=principal.role,
            source=SOURCE,
            payload=payload,
            subject_ids=events_pb2.SubjectIds(filter_id=item.id),
        )
        await enqueue(conn, MODELS.subject(event), envelope)

    # ---- admin use cases

    async def create(self, data: dict[str, Any], principal: Principal) -> Filter:
        data = await self._checked({"description": "", "enabled": True, **data})
        stamp = now()
        item = self._build({**data, "created_at": stamp, "updated_at": stamp, "version": 1})
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if await self.repo.count(conn) >= self.limits.max_filters:
                    raise ConflictError(
                        f"the registry already holds {self.limits.max_filters} filters (setting max_filters);"
                        " remove one first"
                    )
                await self.repo.insert(conn, item)
                await self._event(conn, "filter_created", item, principal)
        except UniqueViolation as exc:
            raise ConflictError(
                f"filter '{item.id}' already exists; choose another id, or change it with PATCH"
                f" /api/v1/filters/{item.id}"
            ) from exc
        return item

    async def list_all(self) -> list[Filter]:
        async with autocommit_connection(self.pool) as conn:
            return await self.repo.list_all(conn)

    async def get(self, filter_id: str) -> Filter:
        async with autocommit_connection(self.pool) as conn:
            item = await self.repo.get(conn, filter_id)
        if item is None:
            raise NotFoundError(f"filter '{filter_id}' does not exist")
        return item

    async def update(self, filter_id: str, patch: dict[str, Any], principal: Principal) -> Filter:
        unknown = sorted(set(patch) - set(PATCHABLE))
        if unknown:
            raise _invalid(unknown[0], f"cannot be changed (changeable: {', '.join(PATCHABLE)})")
        if "config" in patch and not isinstance(patch["config"], dict):
            raise _invalid("config", "must be an object (a merge patch onto the stored config)")
        stored = await self.get(filter_id)
        current = stored.model_dump(include={"id", "name", "description", "kind", "direction", "enabled"})
        candidate = {**current, **{k: v for k, v in patch.items() if k != "config"}}
        if "kind" in patch and patch["kind"] != stored.kind:
            if "config" not in patch:
                raise _invalid("config", f"changing the kind to '{patch['kind']}' needs that kind's config too")
            candidate["config"] = patch["config"]
        else:
            candidate["config"] = _merge(stored.config, patch.get("config") or {})
        # Checked outside the transaction: the URL check resolves host names, and no row stays locked meanwhile.
        checked = await self._checked(candidate)
        if checked == {**current, "config": stored.config}:
            return stored
        async with self.pool.connection() as conn, conn.transaction():
            locked = await self.repo.get(conn, filter_id, for_update=True)
            if locked is None:
                raise NotFoundError(f"filter '{filter_id}' does not exist")
            if locked.version != stored.version:
                raise ConflictError(f"filter '{filter_id}' changed while this change ran; apply it again")
            item = self._build(
                {**checked, "created_at": stored.created_at, "updated_at": now(), "version": stored.version + 1}
            )
            await self.repo.update(conn, item)
            await self._event(conn, "filter_updated", item, principal)
        return item

    async def delete(self, filter_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            removed = await self.repo.delete(conn, filter_id)
            if removed is None:
                raise NotFoundError(f"filter '{filter_id}' does not exist")
            await self._event(conn, "filter_deleted", removed, principal)

    async def configs(self, ids: list[str]) -> list[Filter]:
        """The enabled filters among ``ids``, in the order asked; unknown and disabled ones are absent."""
        if not ids:
            return []
        async with autocommit_connection(self.pool) as conn:
            found = {item.id: item for item in await self.repo.get_many(conn, ids)}
        return [found[i] for i in dict.fromkeys(ids) if i in found and found[i].enabled]

    # ---- model files naming filters

    async def unknown_filter_ids(self, filter_ids: list[str]) -> list[str]:
        """The entries (deduplicated, in order) that name no configured filter."""
        wanted = list(dict.fromkeys(filter_ids))
        if not wanted:
            return []
        async with autocommit_connection(self.pool) as conn:
            found = await self.repo.existing_ids(conn, wanted)
        return [f for f in wanted if f not in found]

    async def filter_id_warnings(self, meta_fields: dict[str, list[str]]) -> list[dict[str, str]]:
        """A ``{field, message}`` per unknown id, for each of ``{"meta.filterIds": [...], ...}``."""
        unknown = set(await self.unknown_filter_ids([f for ids in meta_fields.values() for f in ids]))
        return [
            {
                "field": field,
                "message": f"filter '{filter_id}' is not configured; it is stored but has no effect until an"
                " admin adds it (modelhub filters add)",
            }
            for field, ids in meta_fields.items()
            for filter_id in dict.fromkeys(ids)
            if filter_id in unknown
        ]
