"""Model-file use cases: create, read, list, change, clone, delete, revisions, avatars, effective view."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from modelhub_common.auth import Principal
from modelhub_common.objectstore import AsyncObjectStore, ObjectNotFoundError
from modelhub_registry.adapters.base_models_repository import BaseModelsRepository
from modelhub_registry.adapters.models_repository import (
    AvatarRef,
    ListQuery,
    ModelRow,
    ModelsRepository,
    Revision,
    StoredModel,
    WriteChecks,
    encode_cursor,
    row_to_model,
)
from modelhub_registry.adapters.reads import autocommit_connection
from modelhub_registry.domain.access import can_read, can_write
from modelhub_registry.domain.avatars import Avatar, AvatarError, process_avatar
from modelhub_registry.domain.effective import ChainLink, EffectiveParam, merge_params
from modelhub_registry.domain.limits import Limits
from modelhub_registry.domain.model_file import FieldProblem, ModelFile, ModelFileSpec, ModelMeta, check_limits
from modelhub_registry.errors import (
    ConflictError,
    ForbiddenError,
    InvalidModelError,
    NotFoundError,
    TooLargeError,
    UnsupportedMediaError,
)
from modelhub_registry.service_layer import events

MAX_CHAIN_DEPTH = 32


def now() -> datetime:
    return datetime.now(UTC)


def pydantic_problems(exc: ValidationError) -> list[FieldProblem]:
    return [FieldProblem(field=".".join(str(p) for p in err["loc"]), message=err["msg"]) for err in exc.errors()]


def problems_message(problems: list[FieldProblem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in problems)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


SPEC_FIELDS = frozenset(ModelFileSpec.model_fields)
# Open WebUI's camelCase meta keys (toolIds, filterIds, ...) and the snake_case names they are stored under.
META_ALIASES = {
    field.validation_alias: name
    for name, field in ModelMeta.model_fields.items()
    if isinstance(field.validation_alias, str) and field.validation_alias != name
}


def snake_case_meta_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` with its meta keys under the names they are stored as: a merge patch of ``toolIds`` onto a
    stored ``tool_ids`` would otherwise add a second key that validation ignores."""
    meta = patch.get("meta")
    if not isinstance(meta, dict) or not any(key in META_ALIASES for key in meta):
        return patch
    return {**patch, "meta": {META_ALIASES.get(key, key): value for key, value in meta.items()}}


def spec_values(model: ModelFileSpec) -> dict[str, Any]:
    """The fields a client controls (a ModelFile also carries owner, times and version)."""
    return model.model_dump(include=set(SPEC_FIELDS))


def spec_dump(model: ModelFileSpec) -> dict[str, Any]:
    return model.model_dump(mode="json", include=set(SPEC_FIELDS), exclude_none=True)


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Top-level fields that differ; for ``params`` and ``meta``, the keys inside them."""
    changed: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in ("params", "meta") and isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        else:
            changed.append(key)
    return changed


def check_base(spec: ModelFileSpec, checks: WriteChecks) -> None:
    """The base must exist and be readable, and following it must never lead back to this model."""
    base_id = spec.base_model_id
    if base_id is None:
        if not checks.id_is_base:
            raise InvalidModelError(
                "base_model_id: required (the model file this one is built on, or a base model)",
                details=[{"field": "base_model_id", "message": "required"}],
            )
        return
    if checks.chain and not checks.base_readable and base_id != spec.id:
        raise InvalidModelError(
            f"base_model_id: '{base_id}' does not exist or you cannot read it",
            details=[{"field": "base_model_id", "message": "does not exist or you cannot read it"}],
        )
    if spec.id in checks.chain or checks.terminal == spec.id:
        raise InvalidModelError(
            f"base_model_id: '{base_id}' is built on '{spec.id}'; that would make a cycle",
            details=[{"field": "base_model_id", "message": "would make a cycle"}],
        )
    depth = len(checks.chain)
    if depth > MAX_CHAIN_DEPTH or (depth == MAX_CHAIN_DEPTH and checks.terminal is not None):
        raise InvalidModelError(f"base_model_id: the chain is deeper than {MAX_CHAIN_DEPTH} models")
    if checks.terminal is None:
        return
    if not checks.terminal_is_base:
        raise InvalidModelError(
            f"base_model_id: '{checks.terminal}' does not exist or you cannot read it",
            details=[{"field": "base_model_id", "message": "does not exist or you cannot read it"}],
        )


@dataclass(frozen=True)
class Page:
    items: list[StoredModel]
    next_cursor: str | None


@dataclass(frozen=True)
class RowPage:
    items: list[ModelRow]
    next_cursor: str | None


@dataclass(frozen=True)
class Effective:
    model: ModelFile
    chain: list[ChainLink]
    params: dict[str, EffectiveParam]
    usable: bool
    problems: list[str]


class ModelService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        store: AsyncObjectStore,
        *,
        bucket: str,
        limits: Limits,
        models: ModelsRepository | None = None,
        base_models: BaseModelsRepository | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.bucket = bucket
        self.limits = limits
        self.models = models or ModelsRepository()
        self.base_models = base_models or BaseModelsRepository()

    # ---- helpers shared by the use cases

    def validate_spec(self, data: Any) -> ModelFileSpec:
        try:
            spec = ModelFileSpec.model_validate(data)
        except ValidationError as exc:
            problems = pydantic_problems(exc)
            raise InvalidModelError(problems_message(problems), details=[p.model_dump() for p in problems]) from exc
        problems = check_limits(spec, self.limits)
        if problems:
            raise InvalidModelError(problems_message(problems), details=[p.model_dump() for p in problems])
        return spec

    async def _load(
        self,
        conn: AsyncConnection[Any],
        model_id: str,
        principal: Principal,
        *,
        write: bool,
        for_update: bool = False,
    ) -> StoredModel:
        # A file the caller may not read is no row, as a missing one is: both refusals make the same two queries
        # and decode nothing, so a stranger cannot tell them apart by how long the 404 takes (bench/oracle.py).
        stored = await self.models.get(conn, model_id, for_update=for_update, readable_by=principal)
        if stored is None:
            raise await self._not_found(conn, model_id)
        if write and not can_write(stored.model, principal):
            raise ForbiddenError(f"you can read model '{model_id}' but not change it; ask its owner for write access")
        return stored

    async def _not_found(self, conn: AsyncConnection[Any], model_id: str) -> NotFoundError:
        """The refusal of a model file that is missing or that the caller may not read (one answer for both)."""
        if await self.base_models.get(conn, model_id) is not None:
            return NotFoundError(
                f"'{model_id}' is a base model, not a model file; create a model file on top of it first"
            )
        return NotFoundError(f"model '{model_id}' does not exist or you cannot read it")

    async def _write_checks(self, conn: AsyncConnection[Any], spec: ModelFileSpec, principal: Principal) -> WriteChecks:
        checks = await self.models.write_checks(conn, spec.id, spec.base_model_id, principal, max_depth=MAX_CHAIN_DEPTH)
        check_base(spec, checks)
        return checks

    # ---- reads

    async def get(self, model_id: str, principal: Principal) -> StoredModel:
        async with autocommit_connection(self.pool) as conn:
            return await self._load(conn, model_id, principal, write=False)

    async def get_row(self, model_id: str, principal: Principal) -> ModelRow:
        """:meth:`get` as the database row, for the GET route, which turns it into JSON without a model object."""
        async with autocommit_connection(self.pool) as conn:
            row = await self.models.get_row(conn, model_id, readable_by=principal)
            if row is None:
                raise await self._not_found(conn, model_id)
            return row

    async def list_page(self, principal: Principal, query: ListQuery) -> Page:
        rows = await self.list_rows(principal, query)
        return Page([row_to_model(r) for r in rows.items], rows.next_cursor)

    async def list_rows(self, principal: Principal, query: ListQuery) -> RowPage:
        """A page as database rows, for callers that turn them into JSON without model objects."""
        async with autocommit_connection(self.pool) as conn:
            rows = await self.models.list_rows(
                conn, principal, ListQuery(**{**query.__dict__, "limit": query.limit + 1})
            )
        more = len(rows) > query.limit
        items = rows[: query.limit]
        return RowPage(items, encode_cursor(items[-1]["id"]) if more and items else None)

    async def stream_readable_rows(self, principal: Principal) -> AsyncIterator[ModelRow]:
        """Every row ``principal`` may read, from one server-side cursor (a read-only transaction)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            async for row in self.models.stream_readable_rows(conn, principal):
                yield row

    async def row_avatar_data_uri(self, row: ModelRow) -> str | None:
        return await self.avatar_uri(
            AvatarRef(row["avatar_key"], row["avatar_type"], row["avatar_etag"], row["avatar_url"])
        )

    # ---- writes

    async def create(self, data: Any, principal: Principal) -> ModelFile:
        spec = self.validate_spec(data)
        # Two statements and no transaction: the checks, then the row, grants, revision and event in one
        # statement (atomic on its own). A create of the same id in between fails on the primary key.
        async with autocommit_connection(self.pool) as conn:
            checks = await self.models.write_checks(
                conn, spec.id, spec.base_model_id, principal, max_depth=MAX_CHAIN_DEPTH
            )
            if checks.taken:
                raise ConflictError(f"model '{spec.id}' already exists; choose another id or edit it")
            if spec.base_model_id is not None and checks.id_is_base:
                raise ConflictError(f"'{spec.id}' is the id of a base model; choose another id")
            check_base(spec, checks)
            stamp = now()
            model = ModelFile(
                **spec_values(spec), owner_id=principal.subject, created_at=stamp, updated_at=stamp, version=1
            )
            subject, envelope = events.model_changed_event("created", model, principal, [])
            try:
                await self.models.insert_with_event(conn, model, action="created", subject=subject, envelope=envelope)
            except UniqueViolation as exc:
                raise ConflictError(f"model '{spec.id}' already exists; choose another id or edit it") from exc
        return model

    async def _save_change(
        self,
        conn: AsyncConnection[Any],
        stored: StoredModel,
        new_spec: ModelFileSpec,
        principal: Principal,
        event: str,
    ) -> tuple[ModelFile, list[str]]:
        before = spec_dump(stored.model)
        after = spec_dump(new_spec)
        fields = changed_fields(before, after)
        if not fields:
            return stored.model, []
        if "base_model_id" in fields:
            await self._write_checks(conn, new_spec, principal)
        model = ModelFile(
            **spec_values(new_spec),
            owner_id=stored.model.owner_id,
            created_at=stored.model.created_at,
            updated_at=now(),
            version=stored.model.version + 1,
        )
        await self.models.update(conn, model)
        await self.models.add_revision(conn, model, action=event, actor=principal.subject, changed_fields=fields)
        await events.model_changed(conn, event, model, principal, fields)
        return model, fields

    async def update(
        self,
        model_id: str,
        patch: dict[str, Any],
        principal: Principal,
        *,
        expected_version: int | None = None,
    ) -> ModelFile:
        if "id" in patch and patch["id"] != model_id:
            raise InvalidModelError("id: cannot be changed; clone the model to get a new id")
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self._load(conn, model_id, principal, write=True, for_update=True)
            if expected_version is not None and expected_version != stored.model.version:
                raise ConflictError(
                    f"model '{model_id}' is at version {stored.model.version}, not {expected_version};"
                    " reload it and apply your change again"
                )
            merged = merge_patch(stored.model.model_dump(mode="json"), snake_case_meta_patch(patch))
            new_spec = self.validate_spec({**merged, "id": model_id})
            model, _ = await self._save_change(conn, stored, new_spec, principal, "updated")
        return model

    async def set_flag(self, model_id: str, principal: Principal, flag: str, value: bool) -> ModelFile:
        event = {("hidden", True): "hidden", ("hidden", False): "unhidden"}.get((flag, value)) or (
            "enabled" if value else "disabled"
        )
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self._load(conn, model_id, principal, write=True, for_update=True)
            new_spec = stored.model.model_copy(update={flag: value})
            model, _ = await self._save_change(conn, stored, new_spec, principal, event)
        return model

    async def delete(self, model_id: str, principal: Principal) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self._load(conn, model_id, principal, write=True, for_update=True)
            cur = await conn.execute("SELECT id FROM models WHERE base_model_id = %s ORDER BY id LIMIT 10", (model_id,))
            dependents = [r[0] for r in await cur.fetchall()]
            if dependents:
                raise ConflictError(
                    f"model '{model_id}' is the base of {', '.join(dependents)}; delete or re-base those first",
                    details={"dependents": dependents},
                )
            await self.models.delete(conn, model_id)
            await events.model_deleted(conn, stored.model, principal)

    async def clone(self, model_id: str, principal: Principal) -> ModelFile:
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self.models.get(conn, model_id, readable_by=principal)  # as _load: the same refusals
            if stored is None and await self.base_models.get(conn, model_id) is not None:
                raise ConflictError(
                    f"'{model_id}' is a base model and cannot be cloned; create a model file on top of it first"
                )
            if stored is None:
                raise NotFoundError(f"model '{model_id}' does not exist or you cannot read it")
            new_id = await self._free_clone_id(conn, model_id)
            stamp = now()
            data = stored.model.model_dump()
            data.update(
                id=new_id,
                name=f"{stored.model.name} (Clone)",
                owner_id=principal.subject,
                access={"public_read": False, "grants": []},
                created_at=stamp,
                updated_at=stamp,
                version=1,
            )
            model = ModelFile.model_validate(data)
            problems = check_limits(model, self.limits)
            if problems:
                raise InvalidModelError(problems_message(problems))
            await self.models.insert(conn, model)
            if stored.avatar.key or stored.avatar.url:
                await self.models.set_avatar(conn, new_id, stored.avatar)
            await self.models.add_revision(conn, model, action="cloned", actor=principal.subject, changed_fields=[])
            await events.model_changed(conn, "cloned", model, principal, [f"cloned_from:{model_id}"])
        return model

    async def _free_clone_id(self, conn: AsyncConnection[Any], model_id: str) -> str:
        for n in range(1, 1000):
            candidate = f"{model_id}-clone" if n == 1 else f"{model_id}-clone-{n}"
            if len(candidate) > self.limits.max_id_length:
                raise InvalidModelError(f"id: '{model_id}' is too long to clone")
            if not await self.models.exists(conn, candidate) and await self.base_models.get(conn, candidate) is None:
                return candidate
        raise ConflictError(f"too many clones of '{model_id}' already exist")

    # ---- revisions

    async def revisions(self, model_id: str, principal: Principal) -> list[Revision]:
        async with autocommit_connection(self.pool) as conn:
            await self._load(conn, model_id, principal, write=False)
            return await self.models.revisions(conn, model_id)

    async def revision(self, model_id: str, version: int, principal: Principal) -> Revision:
        async with autocommit_connection(self.pool) as conn:
            await self._load(conn, model_id, principal, write=False)
            revision = await self.models.revision(conn, model_id, version)
        if revision is None:
            raise NotFoundError(f"model '{model_id}' has no version {version}")
        return revision

    async def restore(self, model_id: str, version: int, principal: Principal) -> ModelFile:
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self._load(conn, model_id, principal, write=True, for_update=True)
            revision = await self.models.revision(conn, model_id, version)
            if revision is None:
                raise NotFoundError(f"model '{model_id}' has no version {version}")
            new_spec = self.validate_spec({**revision.snapshot, "id": model_id})
            model, _ = await self._save_change(conn, stored, new_spec, principal, "restored")
        return model

    # ---- avatars

    def avatar_key(self, avatar: Avatar) -> str:
        return f"avatars/{avatar.etag}"

    async def store_avatar_bytes(self, data: bytes) -> Avatar:
        try:
            avatar = process_avatar(
                data, max_bytes=self.limits.max_avatar_bytes, max_pixels=self.limits.max_avatar_pixels
            )
        except AvatarError as exc:
            error = TooLargeError if exc.http_status == 413 else UnsupportedMediaError
            raise error(exc.message) from exc
        # Content-addressed: the same picture is stored once whatever uses it.
        await self.store.put_bytes(self.bucket, self.avatar_key(avatar), avatar.data, content_type=avatar.content_type)
        return avatar

    async def set_avatar(self, model_id: str, data: bytes, principal: Principal) -> ModelFile:
        async with autocommit_connection(self.pool) as conn:
            await self._load(conn, model_id, principal, write=True)
        avatar = await self.store_avatar_bytes(data)
        async with self.pool.connection() as conn, conn.transaction():
            stored = await self._load(conn, model_id, principal, write=True, for_update=True)
            ref = AvatarRef(self.avatar_key(avatar), avatar.content_type, avatar.etag, None)
            await self.models.set_avatar(conn, model_id, ref)
            model = stored.model.model_copy(update={"updated_at": now(), "version": stored.model.version + 1})
            await self.models.update(conn, model)
            fields = ["meta.profile_image_url"]
            await self.models.add_revision(
                conn, model, action="updated", actor=principal.subject, changed_fields=fields
            )
            await events.model_changed(conn, "updated", model, principal, fields)
        return model

    async def avatar(self, model_id: str, principal: Principal) -> tuple[bytes, str, str]:
        stored = await self.get(model_id, principal)
        ref = stored.avatar
        if not ref.key or not ref.content_type or not ref.etag:
            raise NotFoundError(f"model '{model_id}' has no avatar")
        try:
            data = await self.store.get_bytes(self.bucket, ref.key)
        except ObjectNotFoundError as exc:
            raise NotFoundError(f"the avatar of model '{model_id}' is missing from the object store") from exc
        return data, ref.content_type, ref.etag

    async def avatar_data_uri(self, stored: StoredModel) -> str | None:
        return await self.avatar_uri(stored.avatar)

    async def avatar_uri(self, ref: AvatarRef) -> str | None:
        """The avatar as exported: its external URL, or its bytes from the object store as a data URI."""
        if ref.url:
            return ref.url
        if not ref.key or not ref.content_type:
            return None
        try:
            data = await self.store.get_bytes(self.bucket, ref.key)
        except ObjectNotFoundError:
            return None
        return f"data:{ref.content_type};base64,{base64.b64encode(data).decode()}"

    # ---- effective view

    async def effective(
        self, model_id: str, principal: Principal, overrides: dict[str, Any] | None = None
    ) -> Effective:
        async with autocommit_connection(self.pool) as conn:
            stored = await self._load(conn, model_id, principal, write=False)
            chain: list[ChainLink] = []
            problems: list[str] = []
            current: StoredModel | None = stored
            seen: set[str] = set()
            while current is not None:
                model = current.model
                if model.id in seen or len(chain) >= MAX_CHAIN_DEPTH:
                    problems.append(f"the chain loops or is deeper than {MAX_CHAIN_DEPTH} at '{model.id}'")
                    break
                seen.add(model.id)
                chain.append(ChainLink("model", model.id, model.params.as_dict(), enabled=model.enabled))
                if not model.enabled:
                    problems.append(f"model '{model.id}' is disabled")
                base_id = model.base_model_id or model.id
                nxt = await self.models.get(conn, base_id) if model.base_model_id else None
                if nxt is not None:
                    if not can_read(nxt.model, principal):
                        problems.append(f"you cannot read '{base_id}', which '{model.id}' is built on")
                        break
                    current = nxt
                    continue
                base = await self.base_models.get(conn, base_id)
                if base is None:
                    problems.append(f"base model '{base_id}' does not exist here yet")
                else:
                    chain.append(ChainLink("base", base.id, base.params, available=base.available))
                    if not base.available:
                        problems.append(f"base model '{base.id}' is not available from its connection")
                current = None
        return Effective(stored.model, chain, merge_params(chain, overrides), not problems, problems)
