"""Postgres access for pull jobs, their layers, resumable uploads and the model store's index.

Every method takes the caller's connection, so the service layer decides transaction boundaries (and puts
outbox events in the same transaction as the rows they describe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from modelhub_puller.domain.pull import ACTIVE_STATES, LayerProgress, LayerState, PullJob, PullState, Target

Conn = psycopg.AsyncConnection[Any]

_JOB_COLUMNS = (
    "id::text AS id, model, base_model_id, target, state, status, requested_by, total_bytes, completed_bytes,"
    " bytes_per_second, error_code, error_message, manifest_digest, cancel_requested, attempts, created_at,"
    " started_at, finished_at"
)


@dataclass(frozen=True)
class UploadRecord:
    digest: str
    size: int
    part_size: int
    upload_id: str
    parts: dict[int, tuple[int, str]]  # part number -> (size, etag)


@dataclass(frozen=True)
class SharedUpload:
    """An upload another replica holds, and the model of its pull (where the blob is fetched from)."""

    upload: UploadRecord
    model: str


@dataclass(frozen=True)
class StoredModel:
    model: str
    base_model_id: str
    digest: str
    object_key: str
    size_bytes: int
    source: str
    stored_at: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_model_id": self.base_model_id,
            "manifest_digest": self.digest,
            "object_key": self.object_key,
            "size_bytes": self.size_bytes,
            "source": self.source,
            "stored_at": self.stored_at.isoformat() if self.stored_at else None,
        }


def _job(row: dict[str, Any]) -> PullJob:
    return PullJob(
        id=row["id"],
        model=row["model"],
        base_model_id=row["base_model_id"],
        target=Target(row["target"]),
        state=PullState(row["state"]),
        status=row["status"],
        requested_by=row["requested_by"],
        total_bytes=row["total_bytes"],
        completed_bytes=row["completed_bytes"],
        bytes_per_second=row["bytes_per_second"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        manifest_digest=row["manifest_digest"],
        cancel_requested=row["cancel_requested"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


async def _rows(conn: Conn, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _row(conn: Conn, query: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
    rows = await _rows(conn, query, params)
    return rows[0] if rows else None


class PullRepository:
    # ---- jobs

    async def insert_job(
        self, conn: Conn, *, model: str, base_model_id: str, target: Target, requested_by: str
    ) -> PullJob | None:
        """Creates a queued job, or returns None when an active job for the model and target exists."""
        row = await _row(
            conn,
            "INSERT INTO pull_jobs (model, base_model_id, target, state, requested_by)"
            " VALUES (%s, %s, %s, 'queued', %s)"
            " ON CONFLICT (model, target) WHERE state IN ('queued', 'running') DO NOTHING"
            f" RETURNING {_JOB_COLUMNS}",
            (model, base_model_id, target.value, requested_by),
        )
        return _job(row) if row else None

    async def active_job(self, conn: Conn, model: str, target: Target) -> PullJob | None:
        row = await _row(
            conn,
            f"SELECT {_JOB_COLUMNS} FROM pull_jobs WHERE model = %s AND target = %s AND state = ANY(%s)",
            (model, target.value, list(ACTIVE_STATES)),
        )
        return _job(row) if row else None

    async def get_job(
        self, conn: Conn, pull_id: str, *, with_layers: bool = True, lock: bool = False
    ) -> PullJob | None:
        suffix = " FOR UPDATE" if lock else ""
        row = await _row(conn, f"SELECT {_JOB_COLUMNS} FROM pull_jobs WHERE id = %s{suffix}", (pull_id,))
        if row is None:
            return None
        job = _job(row)
        if with_layers:
            job.layers = await self.layers(conn, pull_id)
        return job

    async def list_jobs(self, conn: Conn, *, active_only: bool, limit: int) -> list[PullJob]:
        where = "WHERE state = ANY(%s)" if active_only else ""
        params: list[Any] = [list(ACTIVE_STATES)] if active_only else []
        rows = await _rows(
            conn,
            f"SELECT {_JOB_COLUMNS} FROM pull_jobs {where}"
            " ORDER BY (state IN ('queued', 'running')) DESC, created_at DESC LIMIT %s",
            (*params, limit),
        )
        jobs = [_job(r) for r in rows]
        if jobs:
            layer_rows = await _rows(
                conn,
                "SELECT pull_id::text AS pull_id, digest, media_type, total_bytes, completed_bytes, state"
                " FROM pull_layers WHERE pull_id = ANY(%s::uuid[]) ORDER BY position",
                ([j.id for j in jobs],),
            )
            by_id = {j.id: j for j in jobs}
            for r in layer_rows:
                by_id[r["pull_id"]].layers.append(_layer(r))
        return jobs

    async def claim_job(self, conn: Conn, pull_id: str, *, worker: str, lease_seconds: float) -> PullJob | None:
        """Marks the job running for ``worker`` unless another live replica holds it; None if not claimed."""
        row = await _row(
            conn,
            "UPDATE pull_jobs SET state = 'running', worker = %s, attempts = attempts + 1,"
            " lease_until = now() + make_interval(secs => %s), started_at = coalesce(started_at, now()),"
            " status = 'starting', updated_at = now()"
            " WHERE id = %s AND state IN ('queued', 'running')"
            " AND (worker IS NULL OR worker = %s OR lease_until IS NULL OR lease_until < now())"
            f" RETURNING {_JOB_COLUMNS}",
            (worker, lease_seconds, pull_id, worker),
        )
        return _job(row) if row else None

    async def renew_lease(self, conn: Conn, pull_id: str, *, worker: str, lease_seconds: float) -> bool | None:
        """Extends the claim; returns the job's ``cancel_requested`` flag, or None if the claim was lost."""
        row = await _row(
            conn,
            "UPDATE pull_jobs SET lease_until = now() + make_interval(secs => %s)"
            " WHERE id = %s AND worker = %s AND state = 'running' RETURNING cancel_requested",
            (lease_seconds, pull_id, worker),
        )
        if row is None:
            return None
        await conn.execute(
            "UPDATE blob_uploads SET lease_until = now() + make_interval(secs => %s)"
            " WHERE pull_id = %s AND worker = %s",
            (lease_seconds, pull_id, worker),
        )
        await self.renew_part_claims(conn, worker=worker, lease_seconds=lease_seconds)
        return bool(row["cancel_requested"])

    async def release_job(self, conn: Conn, pull_id: str, *, worker: str, status: str) -> None:
        """Gives the job back (a shutdown or a retryable failure) so any replica may take it at once."""
        await conn.execute(
            "UPDATE pull_jobs SET worker = NULL, lease_until = NULL, status = %s, updated_at = now()"
            " WHERE id = %s AND worker = %s AND state = 'running'",
            (status, pull_id, worker),
        )
        await conn.execute(
            "UPDATE blob_part_claims SET worker = NULL, lease_until = NULL WHERE worker = %s"
            " AND digest IN (SELECT digest FROM blob_uploads WHERE pull_id = %s)",
            (worker, pull_id),
        )
        await conn.execute(
            "UPDATE blob_uploads SET worker = NULL, lease_until = NULL WHERE pull_id = %s AND worker = %s",
            (pull_id, worker),
        )

    async def save_progress(self, conn: Conn, job: PullJob, layers: Sequence[LayerProgress]) -> None:
        await conn.execute(
            "UPDATE pull_jobs SET status = %s, total_bytes = %s, completed_bytes = %s, bytes_per_second = %s,"
            " updated_at = now() WHERE id = %s AND state = 'running'",
            (job.status, job.total_bytes, job.completed_bytes, job.bytes_per_second, job.id),
        )
        if layers:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO pull_layers (pull_id, position, digest, media_type, total_bytes, completed_bytes,"
                    " state) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (pull_id, digest) DO UPDATE SET"
                    " total_bytes = excluded.total_bytes, completed_bytes = excluded.completed_bytes,"
                    " state = excluded.state",
                    [
                        (
                            job.id,
                            i,
                            layer.digest,
                            layer.media_type,
                            layer.total_bytes,
                            layer.completed_bytes,
                            layer.state.value,
                        )
                        for i, layer in enumerate(layers)
                    ],
                )

    async def set_layers(self, conn: Conn, pull_id: str, layers: Sequence[LayerProgress]) -> None:
        await conn.execute("DELETE FROM pull_layers WHERE pull_id = %s", (pull_id,))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO pull_layers (pull_id, position, digest, media_type, total_bytes, completed_bytes, state)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        pull_id,
                        i,
                        layer.digest,
                        layer.media_type,
                        layer.total_bytes,
                        layer.completed_bytes,
                        layer.state.value,
                    )
                    for i, layer in enumerate(layers)
                ],
            )

    async def layers(self, conn: Conn, pull_id: str) -> list[LayerProgress]:
        rows = await _rows(
            conn,
            "SELECT digest, media_type, total_bytes, completed_bytes, state FROM pull_layers"
            " WHERE pull_id = %s ORDER BY position",
            (pull_id,),
        )
        return [_layer(r) for r in rows]

    async def finish_job(
        self,
        conn: Conn,
        pull_id: str,
        state: PullState,
        *,
        status: str,
        error_code: str | None = None,
        error_message: str | None = None,
        manifest_digest: str | None = None,
    ) -> bool:
        """Moves an active job to a final state; False if it had already ended."""
        cur = await conn.execute(
            "UPDATE pull_jobs SET state = %s, status = %s, error_code = %s, error_message = %s,"
            " manifest_digest = coalesce(%s, manifest_digest), worker = NULL, lease_until = NULL,"
            " bytes_per_second = CASE WHEN %s = 'completed' THEN bytes_per_second ELSE 0 END,"
            " completed_bytes = CASE WHEN %s = 'completed' THEN total_bytes ELSE completed_bytes END,"
            " finished_at = now(), updated_at = now()"
            " WHERE id = %s AND state IN ('queued', 'running')",
            (state.value, status, error_code, error_message, manifest_digest, state.value, state.value, pull_id),
        )
        return cur.rowcount == 1

    async def request_cancel(self, conn: Conn, pull_id: str) -> PullJob | None:
        row = await _row(
            conn,
            "UPDATE pull_jobs SET cancel_requested = true, updated_at = now()"
            f" WHERE id = %s AND state IN ('queued', 'running') RETURNING {_JOB_COLUMNS}",
            (pull_id,),
        )
        return _job(row) if row else None

    async def record_completed_import(
        self, conn: Conn, *, model: str, base_model_id: str, requested_by: str, size: int, manifest_digest: str
    ) -> str:
        row = await _row(
            conn,
            "INSERT INTO pull_jobs (model, base_model_id, target, state, status, requested_by, total_bytes,"
            " completed_bytes, manifest_digest, started_at, finished_at)"
            " VALUES (%s, %s, 'store', 'completed', 'imported', %s, %s, %s, %s, now(), now()) RETURNING id::text AS id",
            (model, base_model_id, requested_by, size, size, manifest_digest),
        )
        assert row is not None
        return str(row["id"])

    # ---- blobs and uploads

    async def present_blobs(self, conn: Conn, digests: Sequence[str]) -> set[str]:
        rows = await _rows(conn, "SELECT digest FROM blobs WHERE digest = ANY(%s)", (list(digests),))
        return {r["digest"] for r in rows}

    async def record_blob(self, conn: Conn, digest: str, size: int) -> None:
        await conn.execute(
            "INSERT INTO blobs (digest, size) VALUES (%s, %s) ON CONFLICT (digest) DO NOTHING", (digest, size)
        )

    async def forget_blob(self, conn: Conn, digest: str) -> None:
        await conn.execute(
            "DELETE FROM blobs WHERE digest = %s AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = %s)",
            (digest, digest),
        )

    async def stored_bytes(self, conn: Conn) -> int:
        row = await _row(
            conn,
            "SELECT (SELECT coalesce(sum(size), 0) FROM blobs) + (SELECT coalesce(sum(size), 0) FROM blob_uploads)"
            " AS used",
        )
        return int(row["used"]) if row else 0

    async def claim_upload(
        self, conn: Conn, digest: str, *, pull_id: str, worker: str, lease_seconds: float
    ) -> UploadRecord | Literal[False] | None:
        """Takes over the upload of ``digest``.

        Returns the record when this worker now holds it, ``None`` when there is no upload yet, and False
        when another live pull holds it (the caller waits for that pull to store the blob).
        """
        row = await _row(
            conn,
            "UPDATE blob_uploads SET pull_id = %s, worker = %s, lease_until = now() + make_interval(secs => %s)"
            " WHERE digest = %s AND (worker IS NULL OR lease_until IS NULL OR lease_until < now()"
            " OR pull_id = %s) RETURNING digest, size, part_size, upload_id",
            (pull_id, worker, lease_seconds, digest, pull_id),
        )
        if row is None:
            exists = await _row(conn, "SELECT 1 AS x FROM blob_uploads WHERE digest = %s", (digest,))
            return False if exists else None
        parts = await _rows(conn, "SELECT part_number, size, etag FROM blob_upload_parts WHERE digest = %s", (digest,))
        return UploadRecord(
            digest=row["digest"],
            size=row["size"],
            part_size=row["part_size"],
            upload_id=row["upload_id"],
            parts={p["part_number"]: (p["size"], p["etag"]) for p in parts},
        )

    async def create_upload(
        self,
        conn: Conn,
        *,
        digest: str,
        size: int,
        part_size: int,
        upload_id: str,
        pull_id: str,
        worker: str,
        lease_seconds: float,
    ) -> bool:
        """Registers a new upload; False if another pull registered one first."""
        cur = await conn.execute(
            "INSERT INTO blob_uploads (digest, size, part_size, upload_id, pull_id, worker, lease_until)"
            " VALUES (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT (digest) DO NOTHING",
            (digest, size, part_size, upload_id, pull_id, worker, lease_seconds),
        )
        return cur.rowcount == 1

    async def record_part(
        self, conn: Conn, upload: UploadRecord, part_number: int, size: int, etag: str, *, worker: str
    ) -> bool:
        """Records a stored part and ends its claim; False when the upload is gone or is another one now."""
        # The upload row first, with the foreign key's own lock: dropping the upload (which cascades to the
        # claims) waits for this transaction instead of deadlocking with it, and heartbeats' lease updates
        # do not wait at all.
        held = await _row(
            conn,
            "SELECT 1 AS x FROM blob_uploads WHERE digest = %s AND upload_id = %s FOR KEY SHARE",
            (upload.digest, upload.upload_id),
        )
        if held is None:
            return False
        await conn.execute(
            "DELETE FROM blob_part_claims WHERE digest = %s AND part_number = %s", (upload.digest, part_number)
        )
        await conn.execute(
            "INSERT INTO blob_upload_parts (digest, part_number, size, etag, worker) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (digest, part_number) DO UPDATE SET size = excluded.size, etag = excluded.etag,"
            " worker = excluded.worker",
            (upload.digest, part_number, size, etag, worker),
        )
        return True

    async def stored_parts(self, conn: Conn, digest: str) -> dict[int, tuple[int, str]]:
        rows = await _rows(conn, "SELECT part_number, size, etag FROM blob_upload_parts WHERE digest = %s", (digest,))
        return {r["part_number"]: (r["size"], r["etag"]) for r in rows}

    # ---- parts shared between replicas

    async def open_part_claims(self, conn: Conn, digest: str, count: int) -> None:
        """Makes every part of the upload that is not stored yet claimable (existing claims stay)."""
        await conn.execute(
            "INSERT INTO blob_part_claims (digest, part_number)"
            " SELECT %s, n FROM generate_series(1, %s) AS n WHERE NOT EXISTS"
            " (SELECT 1 FROM blob_upload_parts p WHERE p.digest = %s AND p.part_number = n)"
            " ON CONFLICT (digest, part_number) DO NOTHING",
            (digest, count, digest),
        )

    async def claim_part(
        self, conn: Conn, digest: str, *, worker: str, lease_seconds: float, highest_first: bool
    ) -> int | None:
        """Claims the lowest (or highest) part nobody stored or holds a live claim on; None if there is none.

        Replicas claiming at the same time skip each other's rows instead of waiting for them.
        """
        order = "DESC" if highest_first else "ASC"
        row = await _row(
            conn,
            "UPDATE blob_part_claims SET worker = %s, lease_until = now() + make_interval(secs => %s)"
            " WHERE digest = %s AND part_number = (SELECT part_number FROM blob_part_claims"
            "  WHERE digest = %s AND (worker IS NULL OR lease_until IS NULL OR lease_until < now())"
            f"  ORDER BY part_number {order} LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING part_number",
            (worker, lease_seconds, digest, digest),
        )
        return int(row["part_number"]) if row else None

    async def renew_part_claims(self, conn: Conn, *, worker: str, lease_seconds: float) -> None:
        # Rows another transaction holds (a part being recorded or claimed) are skipped, never waited for.
        await conn.execute(
            "UPDATE blob_part_claims SET lease_until = now() + make_interval(secs => %s)"
            " WHERE (digest, part_number) IN (SELECT digest, part_number FROM blob_part_claims"
            "  WHERE worker = %s ORDER BY digest, part_number FOR UPDATE SKIP LOCKED)",
            (lease_seconds, worker),
        )

    async def release_part_claims(self, conn: Conn, digest: str, *, worker: str) -> None:
        """Hands the parts ``worker`` claimed but did not store back, for anyone to claim at once."""
        await conn.execute(
            "UPDATE blob_part_claims SET worker = NULL, lease_until = NULL WHERE digest = %s AND worker = %s",
            (digest, worker),
        )

    async def upload_to_help(self, conn: Conn, *, worker: str) -> SharedUpload | None:
        """The upload another live replica holds with the most parts nobody has claimed, if any."""
        row = await _row(
            conn,
            "SELECT u.digest, u.size, u.part_size, u.upload_id, j.model, o.open FROM blob_uploads u"
            " JOIN pull_jobs j ON j.id = u.pull_id"
            " CROSS JOIN LATERAL (SELECT count(*) AS open FROM blob_part_claims c WHERE c.digest = u.digest"
            "  AND (c.worker IS NULL OR c.lease_until IS NULL OR c.lease_until < now())) o"
            " WHERE u.worker IS NOT NULL AND u.worker <> %s AND u.lease_until > now() AND j.state = 'running'"
            " AND o.open > 0 ORDER BY o.open DESC LIMIT 1",
            (worker,),
        )
        if row is None:
            return None
        return SharedUpload(
            upload=UploadRecord(
                digest=row["digest"], size=row["size"], part_size=row["part_size"], upload_id=row["upload_id"], parts={}
            ),
            model=row["model"],
        )

    async def has_open_parts(self, conn: Conn, digest: str) -> bool:
        row = await _row(
            conn,
            "SELECT 1 AS x FROM blob_part_claims WHERE digest = %s"
            " AND (worker IS NULL OR lease_until IS NULL OR lease_until < now()) LIMIT 1",
            (digest,),
        )
        return row is not None

    async def shared_upload(self, conn: Conn, digest: str) -> UploadRecord | None:
        row = await _row(
            conn, "SELECT digest, size, part_size, upload_id FROM blob_uploads WHERE digest = %s", (digest,)
        )
        return UploadRecord(**row, parts={}) if row else None

    async def upload_progress(self, conn: Conn, digest: str) -> int | None:
        """Bytes stored so far by whoever holds the upload; None when there is no upload (any more)."""
        row = await _row(
            conn,
            "SELECT (SELECT coalesce(sum(size), 0) FROM blob_upload_parts p WHERE p.digest = u.digest) AS done"
            " FROM blob_uploads u WHERE u.digest = %s",
            (digest,),
        )
        return int(row["done"]) if row else None

    async def drop_upload(self, conn: Conn, digest: str) -> None:
        await conn.execute("DELETE FROM blob_uploads WHERE digest = %s", (digest,))

    async def take_abandoned_uploads(
        self, conn: Conn, *, older_than_seconds: float, limit: int
    ) -> list[tuple[str, str]]:
        """Deletes and returns (digest, upload id) of uploads nobody works on or waits for any more.

        Abandoned: started more than ``older_than_seconds`` ago, no live lease, and no queued or running pull
        needs the blob. Rows another transaction holds are skipped (replicas may sweep at the same time).
        """
        rows = await _rows(
            conn,
            "DELETE FROM blob_uploads WHERE digest IN ("
            " SELECT u.digest FROM blob_uploads u"
            " WHERE u.created_at < now() - make_interval(secs => %s)"
            " AND (u.worker IS NULL OR u.lease_until IS NULL OR u.lease_until < now())"
            " AND NOT EXISTS (SELECT 1 FROM pull_layers l JOIN pull_jobs j ON j.id = l.pull_id"
            "  WHERE l.digest = u.digest AND j.state IN ('queued', 'running'))"
            " ORDER BY u.created_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING digest, upload_id",
            (older_than_seconds, limit),
        )
        return [(r["digest"], r["upload_id"]) for r in rows]

    async def uploads_of_pull(self, conn: Conn, pull_id: str) -> list[tuple[str, str]]:
        rows = await _rows(conn, "SELECT digest, upload_id FROM blob_uploads WHERE pull_id = %s", (pull_id,))
        return [(r["digest"], r["upload_id"]) for r in rows]

    # ---- manifests

    async def manifest_digest(self, conn: Conn, model: str) -> str | None:
        row = await _row(conn, "SELECT digest FROM manifests WHERE model = %s", (model,))
        return str(row["digest"]) if row else None

    async def save_manifest(
        self,
        conn: Conn,
        *,
        model: str,
        base_model_id: str,
        digest: str,
        object_key: str,
        size_bytes: int,
        source: str,
        blob_digests: Sequence[str],
    ) -> list[str]:
        """Records the manifest and its blob references; returns referenced digests missing from ``blobs``."""
        present = await _rows(conn, "SELECT digest FROM blobs WHERE digest = ANY(%s) FOR SHARE", (list(blob_digests),))
        missing = sorted(set(blob_digests) - {r["digest"] for r in present})
        if missing:
            return missing
        await conn.execute(
            "INSERT INTO manifests (model, base_model_id, digest, object_key, size_bytes, source)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model) DO UPDATE SET digest = excluded.digest,"
            " base_model_id = excluded.base_model_id, size_bytes = excluded.size_bytes, source = excluded.source,"
            " stored_at = now()",
            (model, base_model_id, digest, object_key, size_bytes, source),
        )
        await conn.execute("DELETE FROM manifest_blobs WHERE model = %s", (model,))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO manifest_blobs (model, digest) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(model, d) for d in sorted(set(blob_digests))],
            )
        return []

    async def stored_models(self, conn: Conn) -> list[StoredModel]:
        rows = await _rows(
            conn,
            "SELECT model, base_model_id, digest, object_key, size_bytes, source, stored_at FROM manifests"
            " ORDER BY model",
        )
        return [StoredModel(**r) for r in rows]

    async def stored_model(
        self, conn: Conn, *, model: str | None = None, base_model_id: str | None = None, lock: bool = False
    ) -> StoredModel | None:
        column, value = ("model", model) if model is not None else ("base_model_id", base_model_id)
        suffix = " FOR UPDATE" if lock else ""
        row = await _row(
            conn,
            "SELECT model, base_model_id, digest, object_key, size_bytes, source, stored_at FROM manifests"
            f" WHERE {column} = %s{suffix}",
            (value,),
        )
        return StoredModel(**row) if row else None

    async def delete_manifest(self, conn: Conn, model: str) -> list[str]:
        """Removes the manifest and returns the blobs nothing else uses (no other manifest, no active pull)."""
        refs = await _rows(conn, "DELETE FROM manifest_blobs WHERE model = %s RETURNING digest", (model,))
        await conn.execute("DELETE FROM manifests WHERE model = %s", (model,))
        digests = [r["digest"] for r in refs]
        if not digests:
            return []
        orphans = await _rows(
            conn,
            "DELETE FROM blobs b WHERE b.digest = ANY(%s)"
            " AND NOT EXISTS (SELECT 1 FROM manifest_blobs m WHERE m.digest = b.digest)"
            " AND NOT EXISTS (SELECT 1 FROM pull_layers l JOIN pull_jobs j ON j.id = l.pull_id"
            "   WHERE l.digest = b.digest AND j.state IN ('queued', 'running'))"
            " RETURNING b.digest",
            (digests,),
        )
        return sorted(r["digest"] for r in orphans)


def _layer(row: dict[str, Any]) -> LayerProgress:
    return LayerProgress(
        digest=row["digest"],
        media_type=row["media_type"],
        total_bytes=row["total_bytes"],
        completed_bytes=row["completed_bytes"],
        state=LayerState(row["state"]),
    )
