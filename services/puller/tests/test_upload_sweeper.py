"""Multipart uploads left behind by pulls that died are aborted in S3 and forgotten; live ones are kept."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
from puller_testkit import MIB, db_rows, store_client, unique_outbox_ids

from modelhub_puller import bootstrap
from modelhub_puller.adapters.part_spool import PartSpool
from modelhub_puller.domain import manifest as mf
from modelhub_puller.settings import PullerSettings


async def start_upload(settings: PullerSettings, digest: str) -> str:
    """A real S3 multipart upload of ``digest``'s key with one 5 MiB part stored."""
    async with httpx.AsyncClient(timeout=60) as http:
        store = bootstrap.build_blob_store(settings, http, bootstrap.build_object_store(settings))
        await store.objects.ensure_bucket(settings.bucket)
        upload_id = await store.create_upload(mf.blob_key(digest))
        await store.upload_part(mf.blob_key(digest), upload_id, 1, b"x" * 5 * MIB)
    return upload_id


def s3_upload_ids(settings: PullerSettings) -> set[str]:
    client = store_client(settings)
    result = client._list_multipart_uploads(settings.bucket, prefix="blobs/")  # the SDK's only listing of uploads
    return {upload.upload_id for upload in result.uploads}


def test_abandoned_uploads_are_aborted_and_live_ones_kept(
    puller_settings: Callable[..., PullerSettings], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    settings = puller_settings(spool_dir=spool)
    asyncio.run(bootstrap.run_migrations(settings))
    unique_outbox_ids(settings.database_url.get_secret_value())
    digests = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest() for name in ("failed", "live", "queued")}
    uploads = {name: asyncio.run(start_upload(settings, digest)) for name, digest in digests.items()}

    def job(name: str, state: str, lease: str | None) -> None:
        """A pull job in ``state`` needing blob ``name``, its upload started two hours ago with one part."""
        digest, worker, until = digests[name], "w" if lease else None, lease or "0 s"
        db_rows(
            settings,
            "WITH j AS (INSERT INTO pull_jobs (model, base_model_id, target, state, requested_by, worker, lease_until)"
            " VALUES (%s, 'm', 'store', %s, 'root', %s, now() + %s::interval) RETURNING id)"
            " INSERT INTO pull_layers (pull_id, position, digest, media_type, total_bytes)"
            " SELECT id, 0, %s, 'model', 10 FROM j RETURNING pull_id",
            (f"model-{name}", state, worker, until, digest),
        )
        db_rows(
            settings,
            "INSERT INTO blob_uploads (digest, size, part_size, upload_id, pull_id, worker, lease_until, created_at)"
            " SELECT %s, 10, %s, %s, pull_id, %s, now() + %s::interval, now() - interval '2 hours'"
            " FROM pull_layers WHERE digest = %s RETURNING digest",
            (digest, 5 * MIB, uploads[name], worker, until, digest),
        )
        db_rows(
            settings,
            "INSERT INTO blob_upload_parts (digest, part_number, size, etag) VALUES (%s, 1, %s, 'e') RETURNING 1",
            (digest, 5 * MIB),
        )

    # A pull that failed while its process was dead: nobody will ever finish its upload.
    job("failed", "failed", None)
    # A pull downloading right now (its lease is renewed), and a queued one waiting to resume its upload.
    job("live", "running", "1 hour")
    job("queued", "queued", None)
    # The failed pull's process had spooled a part in flight on this disk.
    leftover = PartSpool(spool).upload(digests["failed"], uploads["failed"]).open(2, 5 * MIB)
    leftover.add(b"y" * MIB)
    leftover.close()
    assert list(spool.rglob("*.part"))
    assert set(uploads.values()) <= s3_upload_ids(settings)

    # Younger than the age limit: kept.
    kept = asyncio.run(bootstrap.sweep_abandoned_uploads(settings, older_than_seconds=3 * 3600))
    assert (kept.aborted, kept.failed) == (0, 0)

    swept = asyncio.run(bootstrap.sweep_abandoned_uploads(settings, older_than_seconds=3600))
    assert (swept.aborted, swept.failed) == (1, 0)
    remaining = {row[0] for row in db_rows(settings, "SELECT digest FROM blob_uploads")}
    assert remaining == {digests["live"], digests["queued"]}
    assert db_rows(settings, "SELECT count(*) FROM blob_upload_parts WHERE digest = %s", (digests["failed"],)) == [(0,)]
    in_s3 = s3_upload_ids(settings)
    assert uploads["failed"] not in in_s3
    assert {uploads["live"], uploads["queued"]} <= in_s3
    assert not list(spool.rglob("*.part"))
