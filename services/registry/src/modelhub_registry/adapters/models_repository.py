"""Model files and their revisions in PostgreSQL. Every method runs in the caller's transaction."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from modelhub_common.auth import Principal
from modelhub_common.events import EventEnvelope
from modelhub_common.outbox import enqueue_with
from modelhub_registry.domain.model_file import Access, Grant, ModelFile, ModelMeta, ModelParams

_SELECT = """
SELECT m.id, m.base_model_id, m.name, m.params, m.meta, m.hidden, m.enabled, m.owner_id, m.public_read,
       m.created_at, m.updated_at, m.version, m.avatar_key, m.avatar_type, m.avatar_etag, m.avatar_url,
       COALESCE((SELECT json_agg(json_build_object('principal_type', g.principal_type,
                                                   'principal_id', g.principal_id,
                                                   'permission', g.permission)
                                 ORDER BY g.principal_type, g.principal_id, g.permission)
                 FROM model_grants g WHERE g.model_id = m.id), '[]'::json) AS grants
FROM models m
"""

# A caller may read a row when it is an admin, the owner, the row is public, or a grant names it or one
# of its groups. Kept in SQL so that a page of results never needs a second filtering pass.
_READABLE = """
(%(admin)s OR m.owner_id = %(sub)s OR m.public_read OR EXISTS (
    SELECT 1 FROM model_grants g WHERE g.model_id = m.id AND (
        (g.principal_type = 'user' AND g.principal_id = %(sub)s)
        OR (g.principal_type = 'group' AND g.principal_id = ANY(%(groups)s)))))
"""


def _reader(principal: Principal) -> dict[str, Any]:
    """The parameters :data:`_READABLE` takes for ``principal``."""
    return {"admin": principal.is_admin, "sub": principal.subject, "groups": sorted(principal.groups)}


@dataclass(frozen=True)
class AvatarRef:
    key: str | None
    content_type: str | None
    etag: str | None
    url: str | None


@dataclass(frozen=True)
class StoredModel:
    model: ModelFile
    avatar: AvatarRef


@dataclass(frozen=True)
class ListQuery:
    q: str | None = None
    tag: str | None = None
    owner: str | None = None
    include_hidden: bool = False
    include_disabled: bool = False
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class WriteChecks:
    """What writing a model file with this id on this base must check, read in one query."""

    taken: bool
    """A model file has the id."""
    id_is_base: bool
    """A base model has the id."""
    chain: list[str]
    """The model files the base leads through, nearest first (empty when the base is not a model file);
    cut after ``max_depth`` + 1 links, or where it reaches the model itself."""
    base_readable: bool
    """The caller may read the base (when it is a model file)."""
    terminal: str | None
    """Where the chain leaves the model files: the base model id it ends on (None: the last model file
    names no base, it is its own base model)."""
    terminal_is_base: bool
    """``terminal`` is a base model."""


@dataclass(frozen=True)
class Revision:
    model_id: str
    version: int
    action: str
    actor: str
    changed_fields: list[str]
    created_at: datetime
    snapshot: dict[str, Any]


ModelRow = dict[str, Any]
"""A row of ``models`` with its grants: the columns of ``_SELECT`` by name. ``params`` and ``meta`` hold what
:meth:`ModelsRepository.insert` wrote (model dumps, ``meta`` without ``profile_image_url``), ``grants`` a
list of grant objects."""


def encode_cursor(model_id: str) -> str:
    return base64.urlsafe_b64encode(model_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    padded = cursor + "=" * (-len(cursor) % 4)
    return base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()


def row_to_model(row: ModelRow) -> StoredModel:
    grants = row["grants"]
    if isinstance(grants, str):
        grants = json.loads(grants)
    model = ModelFile(
        id=row["id"],
        base_model_id=row["base_model_id"],
        name=row["name"],
        params=ModelParams.model_validate(row["params"]),
        meta=ModelMeta.model_validate(row["meta"]),
        hidden=row["hidden"],
        enabled=row["enabled"],
        access=Access(public_read=row["public_read"], grants=[Grant.model_validate(g) for g in grants]),
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )
    avatar = AvatarRef(row["avatar_key"], row["avatar_type"], row["avatar_etag"], row["avatar_url"])
    return StoredModel(model, avatar)


def _meta_json(meta: ModelMeta) -> dict[str, Any]:
    # The avatar lives in the object store; the row keeps only its key (see set_avatar).
    return meta.model_dump(mode="json", exclude={"profile_image_url"}, exclude_none=True)


def snapshot(model: ModelFile) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


_WRITE_CHECKS = f"""
WITH RECURSIVE chain AS (
    SELECT m.id, m.base_model_id, 1 AS depth FROM models m WHERE m.id = %(base)s
    UNION ALL
    SELECT m.id, m.base_model_id, c.depth + 1
    FROM chain c JOIN models m ON m.id = c.base_model_id
    WHERE c.depth <= %(max_depth)s AND c.id <> %(id)s
), ends AS (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM chain)
                THEN (SELECT base_model_id FROM chain ORDER BY depth DESC LIMIT 1)
                ELSE %(base)s::text END AS terminal
)
SELECT EXISTS (SELECT 1 FROM models WHERE id = %(id)s),
       EXISTS (SELECT 1 FROM base_models WHERE id = %(id)s),
       ARRAY(SELECT id FROM chain ORDER BY depth),
       EXISTS (SELECT 1 FROM models m WHERE m.id = %(base)s AND {_READABLE}),
       ends.terminal,
       EXISTS (SELECT 1 FROM base_models b WHERE b.id = ends.terminal)
FROM ends
"""


_INSERT_QUERIES = """
new_model AS (
    INSERT INTO models (id, base_model_id, name, params, meta, tags, description, hidden, enabled,
                        owner_id, public_read, created_at, updated_at, version)
    VALUES (%(id)s, %(base_model_id)s, %(name)s, %(params)s, %(meta)s, %(tags)s, %(description)s, %(hidden)s,
            %(enabled)s, %(owner_id)s, %(public_read)s, %(created_at)s, %(updated_at)s, %(version)s)),
new_grants AS (
    INSERT INTO model_grants (model_id, principal_type, principal_id, permission)
    SELECT %(id)s, g.principal_type, g.principal_id, g.permission
    FROM unnest(%(grant_types)s::text[], %(grant_ids)s::text[], %(grant_permissions)s::text[])
         AS g(principal_type, principal_id, permission)),
new_revision AS (
    INSERT INTO model_revisions (model_id, version, action, actor, changed_fields, snapshot, created_at)
    VALUES (%(id)s, %(version)s, %(action)s, %(owner_id)s, '{}', %(snapshot)s, %(updated_at)s))
"""


class ModelsRepository:
    async def write_checks(
        self, conn: AsyncConnection[Any], model_id: str, base_id: str | None, principal: Principal, *, max_depth: int
    ) -> WriteChecks:
        """One round trip instead of a query per link of the base chain."""
        params = {"id": model_id, "base": base_id, "max_depth": max_depth, **_reader(principal)}
        cur = await conn.execute(_WRITE_CHECKS, params)
        row = await cur.fetchone()
        if row is None:  # the query always returns one row
            raise RuntimeError("write checks returned no row")
        taken, id_is_base, chain, base_readable, terminal, terminal_is_base = row
        return WriteChecks(taken, id_is_base, list(chain), base_readable, terminal, terminal_is_base)

    async def get(
        self,
        conn: AsyncConnection[Any],
        model_id: str,
        *,
        for_update: bool = False,
        readable_by: Principal | None = None,
    ) -> StoredModel | None:
        """The model file; with ``readable_by``, only if that caller may read it (decided in the query, so a
        file the caller may not read costs what a missing one costs: no row is sent or decoded)."""
        row = await self.get_row(conn, model_id, for_update=for_update, readable_by=readable_by)
        return row_to_model(row) if row else None

    async def get_row(
        self,
        conn: AsyncConnection[Any],
        model_id: str,
        *,
        for_update: bool = False,
        readable_by: Principal | None = None,
    ) -> ModelRow | None:
        """:meth:`get` as the database row (see :data:`ModelRow`), for answers that need no model object."""
        params: dict[str, Any] = {"id": model_id}
        where = " WHERE m.id = %(id)s"
        if readable_by is not None:
            where += f" AND {_READABLE}"
            params |= _reader(readable_by)
        query = _SELECT + where + (" FOR UPDATE OF m" if for_update else "")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row: ModelRow | None = await cur.fetchone()
        return row

    async def exists(self, conn: AsyncConnection[Any], model_id: str) -> bool:
        cur = await conn.execute("SELECT 1 FROM models WHERE id = %s", (model_id,))
        return await cur.fetchone() is not None

    async def existing_ids(self, conn: AsyncConnection[Any], ids: Sequence[str]) -> set[str]:
        cur = await conn.execute("SELECT id FROM models WHERE id = ANY(%s)", (list(ids),))
        return {r[0] for r in await cur.fetchall()}

    async def readable_base_of(
        self, conn: AsyncConnection[Any], model_id: str, principal: Principal
    ) -> tuple[bool, str | None]:
        """(exists and ``principal`` may read it, base_model_id) of a model file."""
        params = {"id": model_id, **_reader(principal)}
        cur = await conn.execute(f"SELECT base_model_id FROM models m WHERE m.id = %(id)s AND {_READABLE}", params)
        row = await cur.fetchone()
        return (row is not None, row[0] if row else None)

    async def base_of(self, conn: AsyncConnection[Any], model_id: str) -> tuple[bool, str | None]:
        """(exists, base_model_id) of a model file, for walking a chain without loading whole rows."""
        cur = await conn.execute("SELECT base_model_id FROM models WHERE id = %s", (model_id,))
        row = await cur.fetchone()
        return (row is not None, row[0] if row else None)

    async def insert(self, conn: AsyncConnection[Any], model: ModelFile) -> None:
        await conn.execute(
            """
            INSERT INTO models (id, base_model_id, name, params, meta, tags, description, hidden, enabled,
                                owner_id, public_read, created_at, updated_at, version)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                model.id,
                model.base_model_id,
                model.name,
                Jsonb(model.params.as_dict()),
                Jsonb(_meta_json(model.meta)),
                model.meta.tags,
                model.meta.description or "",
                model.hidden,
                model.enabled,
                model.owner_id,
                model.access.public_read,
                model.created_at,
                model.updated_at,
                model.version,
            ),
        )
        await self._write_grants(conn, model)

    async def insert_with_event(
        self, conn: AsyncConnection[Any], model: ModelFile, *, action: str, subject: str, envelope: EventEnvelope
    ) -> None:
        """The row, its grants, its first revision and its event in one statement (atomic without a
        transaction). A row with the same id raises :class:`psycopg.errors.UniqueViolation`."""
        grants = sorted({(g.principal_type, g.principal_id, g.permission) for g in model.access.grants})
        params = {
            "id": model.id,
            "base_model_id": model.base_model_id,
            "name": model.name,
            "params": Jsonb(model.params.as_dict()),
            "meta": Jsonb(_meta_json(model.meta)),
            "tags": model.meta.tags,
            "description": model.meta.description or "",
            "hidden": model.hidden,
            "enabled": model.enabled,
            "owner_id": model.owner_id,
            "public_read": model.access.public_read,
            "created_at": model.created_at,
            "updated_at": model.updated_at,
            "version": model.version,
            "grant_types": [g[0] for g in grants],
            "grant_ids": [g[1] for g in grants],
            "grant_permissions": [g[2] for g in grants],
            "action": action,
            "snapshot": Jsonb(snapshot(model)),
        }
        await enqueue_with(conn, _INSERT_QUERIES, params, subject, envelope)

    async def update(self, conn: AsyncConnection[Any], model: ModelFile) -> None:
        await conn.execute(
            """
            UPDATE models SET base_model_id = %s, name = %s, params = %s, meta = %s, tags = %s,
                   description = %s, hidden = %s, enabled = %s, owner_id = %s, public_read = %s,
                   updated_at = %s, version = %s
            WHERE id = %s
            """,
            (
                model.base_model_id,
                model.name,
                Jsonb(model.params.as_dict()),
                Jsonb(_meta_json(model.meta)),
                model.meta.tags,
                model.meta.description or "",
                model.hidden,
                model.enabled,
                model.owner_id,
                model.access.public_read,
                model.updated_at,
                model.version,
                model.id,
            ),
        )
        await conn.execute("DELETE FROM model_grants WHERE model_id = %s", (model.id,))
        await self._write_grants(conn, model)

    async def _write_grants(self, conn: AsyncConnection[Any], model: ModelFile) -> None:
        rows = {(g.principal_type, g.principal_id, g.permission) for g in model.access.grants}
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO model_grants (model_id, principal_type, principal_id, permission)"
                    " VALUES (%s, %s, %s, %s)",
                    [(model.id, *row) for row in sorted(rows)],
                )

    async def delete(self, conn: AsyncConnection[Any], model_id: str) -> None:
        await conn.execute("DELETE FROM models WHERE id = %s", (model_id,))

    async def set_avatar(self, conn: AsyncConnection[Any], model_id: str, avatar: AvatarRef) -> None:
        await conn.execute(
            "UPDATE models SET avatar_key = %s, avatar_type = %s, avatar_etag = %s, avatar_url = %s WHERE id = %s",
            (avatar.key, avatar.content_type, avatar.etag, avatar.url, model_id),
        )

    async def list_rows(self, conn: AsyncConnection[Any], principal: Principal, query: ListQuery) -> list[ModelRow]:
        """A page of rows as the database returns them (see :data:`ModelRow`), for lists that need no model
        objects."""
        clauses = [_READABLE]
        params: dict[str, Any] = {**_reader(principal), "limit": query.limit}
        if not query.include_hidden:
            clauses.append("NOT m.hidden")
        if not query.include_disabled:
            clauses.append("m.enabled")
        if query.q:
            clauses.append("lower(m.id || ' ' || m.name || ' ' || m.description) LIKE %(q)s")
            escaped = query.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["q"] = f"%{escaped}%"
        if query.tag:
            clauses.append("m.tags @> ARRAY[%(tag)s]::text[]")
            params["tag"] = query.tag
        if query.owner:
            clauses.append("m.owner_id = %(owner)s")
            params["owner"] = query.owner
        if query.cursor is not None:
            clauses.append("m.id > %(after)s")
            params["after"] = decode_cursor(query.cursor)
        sql = _SELECT + " WHERE " + " AND ".join(clauses) + " ORDER BY m.id LIMIT %(limit)s"
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def stream_readable_rows(
        self, conn: AsyncConnection[Any], principal: Principal, *, batch: int = 500
    ) -> AsyncIterator[ModelRow]:
        """Every row ``principal`` may read (hidden and disabled ones included), by id, from a server-side
        cursor fetched ``batch`` rows at a time: one query, however many rows. Needs an open transaction."""
        params = _reader(principal)
        async with conn.cursor(name="export_models", row_factory=dict_row) as cur:
            cur.itersize = batch
            await cur.execute(_SELECT + " WHERE " + _READABLE + " ORDER BY m.id", params)
            async for row in cur:
                yield row

    async def add_revision(
        self,
        conn: AsyncConnection[Any],
        model: ModelFile,
        *,
        action: str,
        actor: str,
        changed_fields: Sequence[str],
    ) -> None:
        await conn.execute(
            "INSERT INTO model_revisions (model_id, version, action, actor, changed_fields, snapshot, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                model.id,
                model.version,
                action,
                actor,
                list(changed_fields),
                Jsonb(snapshot(model)),
                model.updated_at,
            ),
        )

    async def revisions(self, conn: AsyncConnection[Any], model_id: str) -> list[Revision]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM model_revisions WHERE model_id = %s ORDER BY version DESC", (model_id,))
            rows = await cur.fetchall()
        return [Revision(**row) for row in rows]

    async def revision(self, conn: AsyncConnection[Any], model_id: str, version: int) -> Revision | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM model_revisions WHERE model_id = %s AND version = %s", (model_id, version))
            row = await cur.fetchone()
        return Revision(**row) if row else None
