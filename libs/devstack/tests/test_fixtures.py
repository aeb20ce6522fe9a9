"""Each session fixture hands out a real, working server."""

from __future__ import annotations

import io
import uuid

import httpx
import nats
import psycopg
import pytest
from minio import Minio
from minio.error import S3Error
from nats.js.api import StreamConfig

from modelhub_devstack import S3Endpoint


async def test_nats_url_has_jetstream(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        stream = f"DEVSTACK_{uuid.uuid4().hex[:8].upper()}"
        subject = f"devstack.test.{stream.lower()}"
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        ack = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1"})
        duplicate = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1"})
        assert ack.stream == stream
        assert duplicate.duplicate

        subscription = await js.pull_subscribe(subject, durable="devstack-test")
        [message] = await subscription.fetch(1, timeout=5)
        assert message.data == b"hello"
        await message.ack_sync()
        info = await js.consumer_info(stream, "devstack-test")
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
    finally:
        await client.close()


def test_pg_url_has_pgvector(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        [vector] = conn.execute("SELECT '[1,2]'::vector::text").fetchone() or (None,)
        [extension] = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() or (None,)
    assert vector == "[1,2]"
    assert extension is not None


@pytest.mark.parametrize("attempt", [1, 2])
def test_pg_url_is_a_fresh_database_per_test(pg_url: str, attempt: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE leftover (id int)")


def test_pg_url_database_is_dropped_afterwards(postgres_admin_url: str) -> None:
    with psycopg.connect(postgres_admin_url) as conn:
        leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'").fetchall()
    assert leftovers == []


def test_postgres_admin_url_is_superuser(postgres_admin_url: str) -> None:
    with psycopg.connect(postgres_admin_url) as conn:
        [is_superuser] = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() or (
            None,
        )
    assert is_superuser is True


def test_s3_put_and_get(s3: S3Endpoint) -> None:
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=s3.secure)
    bucket = f"devstack-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    payload = b"model weights" * 1000
    client.put_object(bucket, "models/a.bin", io.BytesIO(payload), length=len(payload))
    response = client.get_object(bucket, "models/a.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()


def test_s3_rejects_a_wrong_secret(s3: S3Endpoint) -> None:
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key="not-the-secret", secure=s3.secure)
    with pytest.raises(S3Error) as failure:
        client.list_buckets()
    assert failure.value.code == "SignatureDoesNotMatch"


def test_s3_endpoint_repr_hides_the_secret(s3: S3Endpoint) -> None:
    assert s3.secret_key not in repr(s3)


def test_oci_registry_serves_the_v2_api(oci_registry_url: str) -> None:
    response = httpx.get(f"{oci_registry_url}/v2/")
    assert response.status_code == 200
