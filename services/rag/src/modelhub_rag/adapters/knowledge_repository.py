"""Collections, their grants and their files in PostgreSQL. Every method runs in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from modelhub_common.auth import Principal
from modelhub_rag.domain.collection import Collection, FileCounts, Grant, KnowledgeFile

_COLLECTION = """
SELECT c.id, c.name, c.description, c.owner_id, c.public_read, c.embedder, c.dimensions,
       c.created_at, c.updated_at, c.version,
       COALESCE((SELECT json_agg(json_build_object('principal_type', g.principal_type,
                                                   'principal_id', g.principal_id,
                                                   'permission', g.permission)
                                 ORDER BY g.principal_type, g.principal_id, g.permission)
                 FROM collection_grants g WHERE g.collection_id = c.id), '[]'::json) AS grants
FROM collections c
"""

# Kept in SQL so that a listing never needs a second filtering pass (same rules as domain.access.can_read).
_READABLE = """
(%(admin)s OR c.owner_id = %(sub)s OR c.public_read OR EXISTS (
    SELECT 1 FROM collection_grants g WHERE g.collection_id = c.id AND (
        (g.principal_type = 'user' AND g.principal_id = %(sub)s)
        OR (g.principal_type = 'group' AND g.principal_id = ANY(%(groups)s)))))
"""

_FILE_COLUMNS = """
id, collection_id, name, kind, content_type, size_bytes, sha256, object_key, status, error_code, error_message,
chunk_count, embedder, chunker, generation, attempts, uploaded_by, created_at, updated_at, indexed_at
"""


def _collection(row: dict[str, Any]) -> Collection:
    grants = tuple(Grant(g["principal_type"], g["principal_id"], g["permission"]) for g in row["grants"])
    return Collection(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        owner_id=row["owner_id"],
        public_read=row["public_read"],
        grants=grants,
        embedder=row["embedder"],
        dimensions=row["dimensions"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _file(row: dict[str, Any]) -> KnowledgeFile:
    return KnowledgeFile(**row)


@dataclass(frozen=True)
class NewFile:
    id: str
    collection_id: str
    name: str
    kind: str
    content_type: str
    size_bytes: int
    sha256: str
    object_key: str
    uploaded_by: str


class KnowledgeRepository:
    # ---- collections

    async def insert_collection(
        self,
        conn: AsyncConnection[Any],
        *,
        collection_id: str,
        name: str,
        description: str,
        owner_id: str,
        public_read: bool,
        embedder: str,
        dimensions: int,
    ) -> None:
        await conn.execute(
            "INSERT INTO collections (id, name, description, owner_id, public_read, embedder, dimensions)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (collection_id, name, description, owner_id, public_read, embedder, dimensions),
        )

    async def get_collection(
        self, conn: AsyncConnection[Any], collection_id: str, *, for_update: bool = False
    ) -> Collection | None:
        query = _COLLECTION + " WHERE c.id = %s" + (" FOR UPDATE OF c" if for_update else "")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, (collection_id,))
            row = await cur.fetchone()
        return _collection(row) if row else None

    async def get_collections(self, conn: AsyncConnection[Any], ids: Sequence[str]) -> dict[str, Collection]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_COLLECTION + " WHERE c.id = ANY(%s)", (list(ids),))
            return {row["id"]: _collection(row) for row in await cur.fetchall()}

    async def list_readable(self, conn: AsyncConnection[Any], principal: Principal, limit: int) -> list[Collection]:
        params = {
            "admin": principal.is_admin,
            "sub": principal.subject,
            "groups": sorted(principal.groups),
            "limit": limit,
        }
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _COLLECTION + " WHERE " + _READABLE + " ORDER BY c.created_at, c.id LIMIT %(limit)s", params
            )
            return [_collection(row) for row in await cur.fetchall()]

    async def list_all_ids(self, conn: AsyncConnection[Any]) -> list[str]:
        cur = await conn.execute("SELECT id FROM collections ORDER BY created_at, id")
        return [row[0] for row in await cur.fetchall()]

    async def update_collection(self, conn: AsyncConnection[Any], collection_id: str, **values: Any) -> None:
        """Sets ``values`` (column names are ours, never a client's) and bumps the version."""
        assignments = "".join(f"{name} = %({name})s, " for name in values)
        await conn.execute(
            f"UPDATE collections SET {assignments}updated_at = now(), version = version + 1 WHERE id = %(id)s",
            {**values, "id": collection_id},
        )

    async def replace_grants(self, conn: AsyncConnection[Any], collection_id: str, grants: Sequence[Grant]) -> None:
        await conn.execute("DELETE FROM collection_grants WHERE collection_id = %s", (collection_id,))
        if grants:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO collection_grants (collection_id, principal_type, principal_id, permission)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(collection_id, g.principal_type, g.principal_id, g.permission) for g in grants],
                )

    async def delete_collection(self, conn: AsyncConnection[Any], collection_id: str) -> list[str]:
        """Deletes the collection (files and chunks cascade) and returns its files' object keys."""
        cur = await conn.execute("SELECT object_key FROM files WHERE collection_id = %s", (collection_id,))
        keys = [row[0] for row in await cur.fetchall()]
        await conn.execute("DELETE FROM collections WHERE id = %s", (collection_id,))
        return keys

    async def counts(self, conn: AsyncConnection[Any], ids: Sequence[str]) -> dict[str, FileCounts]:
        cur = await conn.execute(
            "SELECT collection_id, status, count(*), COALESCE(sum(chunk_count), 0) FROM files"
            " WHERE collection_id = ANY(%s) GROUP BY collection_id, status",
            (list(ids),),
        )
        statuses: dict[str, dict[str, int]] = {i: {} for i in ids}
        chunks: dict[str, int] = dict.fromkeys(ids, 0)
        for collection_id, status, count, chunk_count in await cur.fetchall():
            statuses[collection_id][status] = count
            chunks[collection_id] += int(chunk_count)
        return {i: FileCounts(statuses[i], chunks[i]) for i in ids}

    # ---- files

    async def insert_file(self, conn: AsyncConnection[Any], new: NewFile) -> KnowledgeFile:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO files (id, collection_id, name, kind, content_type, size_bytes, sha256, object_key,"
                " uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING" + _FILE_COLUMNS,
                (
                    new.id,
                    new.collection_id,
                    new.name,
                    new.kind,
                    new.content_type,
                    new.size_bytes,
                    new.sha256,
                    new.object_key,
                    new.uploaded_by,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return _file(row)

    async def get_file(
        self, conn: AsyncConnection[Any], file_id: str, *, for_update: bool = False
    ) -> KnowledgeFile | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT" + _FILE_COLUMNS + "FROM files WHERE id = %s" + (" FOR UPDATE" if for_update else ""),
                (file_id,),
            )
            row = await cur.fetchone()
        return _file(row) if row else None

    async def file_by_hash(self, conn: AsyncConnection[Any], collection_id: str, sha256: str) -> KnowledgeFile | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT" + _FILE_COLUMNS + "FROM files WHERE collection_id = %s AND sha256 = %s",
                (collection_id, sha256),
            )
            row = await cur.fetchone()
        return _file(row) if row else None

    async def list_files(
        self, conn: AsyncConnection[Any], collection_id: str, *, status: str | None = None
    ) -> list[KnowledgeFile]:
        query = "SELECT" + _FILE_COLUMNS + "FROM files WHERE collection_id = %s"
        params: list[Any] = [collection_id]
        if status is not None:
            query += " AND status = %s"
            params.append(status)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query + " ORDER BY created_at, id", params)
            return [_file(row) for row in await cur.fetchall()]

    async def count_files(self, conn: AsyncConnection[Any], collection_id: str) -> int:
        cur = await conn.execute("SELECT count(*) FROM files WHERE collection_id = %s", (collection_id,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def delete_file(self, conn: AsyncConnection[Any], file_id: str) -> None:
        await conn.execute("DELETE FROM files WHERE id = %s", (file_id,))

    async def mark_indexing(self, conn: AsyncConnection[Any], file_id: str) -> None:
        await conn.execute(
            "UPDATE files SET status = 'indexing', attempts = attempts + 1, error_code = NULL, error_message = NULL,"
            " updated_at = now() WHERE id = %s",
            (file_id,),
        )

    async def mark_failed(self, conn: AsyncConnection[Any], file_id: str, code: str, message: str) -> None:
        await conn.execute(
            "UPDATE files SET status = 'failed', error_code = %s, error_message = %s, updated_at = now() WHERE id = %s",
            (code, message[:2000], file_id),
        )

    async def mark_indexed(
        self, conn: AsyncConnection[Any], file_id: str, *, chunk_count: int, embedder: str, chunker: str
    ) -> None:
        await conn.execute(
            "UPDATE files SET status = 'indexed', chunk_count = %s, embedder = %s, chunker = %s, error_code = NULL,"
            " error_message = NULL, indexed_at = now(), updated_at = now() WHERE id = %s",
            (chunk_count, embedder, chunker, file_id),
        )

    async def reuse_donor(
        self, conn: AsyncConnection[Any], *, sha256: str, embedder: str, chunker: str, exclude: str
    ) -> str | None:
        """An indexed file with the same content, embedder and chunking whose chunks can be copied."""
        cur = await conn.execute(
            "SELECT id FROM files WHERE sha256 = %s AND embedder = %s AND chunker = %s AND status = 'indexed'"
            " AND id <> %s ORDER BY indexed_at LIMIT 1",
            (sha256, embedder, chunker, exclude),
        )
        row = await cur.fetchone()
        return str(row[0]) if row else None

    async def reset_for_reindex(self, conn: AsyncConnection[Any], collection_id: str) -> list[KnowledgeFile]:
        """Every file back to ``pending`` under a new generation; returns them for their events."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "UPDATE files SET status = 'pending', generation = generation + 1, attempts = 0, error_code = NULL,"
                " error_message = NULL, updated_at = now() WHERE collection_id = %s RETURNING" + _FILE_COLUMNS,
                (collection_id,),
            )
            return sorted((_file(row) for row in await cur.fetchall()), key=lambda f: (f.created_at, f.id))
