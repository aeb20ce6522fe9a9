"""The object store against a real S3 server (SeaweedFS locally, from the devstack ``s3`` fixture)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from modelhub_common.errors import DependencyError
from modelhub_common.objectstore import (
    AsyncObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
)

MiB = 1024 * 1024


class UnsizedStream:
    """A stream of unknown length handing out odd-sized reads, like a socket or a pipe would."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def read(self, size: int = -1, /) -> bytes:
        size = len(self._data) if size < 0 else min(size, 700_001)
        chunk = self._data[self._offset : self._offset + size]
        self._offset += len(chunk)
        return chunk


def store_for(s3: Any, *, secret_key: str | None = None) -> ObjectStore:
    return ObjectStore(
        s3.endpoint,
        s3.access_key,
        secret_key if secret_key is not None else s3.secret_key,
        secure=s3.secure,
        connect_timeout=5,
        read_timeout=30,
    )


@pytest.fixture(scope="module")
def payload() -> bytes:
    # 12 MiB + a bit: several multipart parts at the 5 MiB minimum part size, last one partial.
    return os.urandom(12 * MiB + 12_345)


@pytest.fixture
def store(s3: Any) -> ObjectStore:
    return store_for(s3)


@pytest.fixture
def bucket(store: ObjectStore) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    assert store.ensure_bucket(name) is True
    yield name
    for obj in store.list(name):
        store.remove(name, obj.key)


def test_ensure_bucket_is_idempotent(store: ObjectStore, bucket: str) -> None:
    assert store.ensure_bucket(bucket) is False


def test_streaming_put_of_unknown_length_then_full_and_ranged_gets(
    store: ObjectStore, bucket: str, payload: bytes
) -> None:
    result = store.put_stream(
        bucket,
        "models/blob.bin",
        UnsizedStream(payload),
        part_size=5 * MiB,
        content_type="application/x-gguf",
        metadata={"Sha256": hashlib.sha256(payload).hexdigest()},
    )
    assert result.size == len(payload)
    assert result.etag

    with store.get_stream(bucket, "models/blob.bin", chunk_size=MiB) as stream:
        assert stream.content_length == len(payload)
        chunks = list(stream)
    assert stream.closed
    assert max(len(chunk) for chunk in chunks) <= MiB
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(payload).digest()

    # A range across the first part boundary, and one running to the end of the object.
    offset = 5 * MiB - 1000
    assert (
        store.get_bytes(bucket, "models/blob.bin", offset=offset, length=123_456) == payload[offset : offset + 123_456]
    )
    assert store.get_bytes(bucket, "models/blob.bin", offset=len(payload) - 10) == payload[-10:]

    info = store.stat(bucket, "models/blob.bin")
    assert (info.bucket, info.key, info.size) == (bucket, "models/blob.bin", len(payload))
    assert info.content_type == "application/x-gguf"
    assert info.etag == result.etag
    assert info.metadata == {"sha256": hashlib.sha256(payload).hexdigest()}
    assert info.last_modified is not None


def test_put_bytes_stat_exists_and_remove(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "a.txt", b"hello", content_type="text/plain")
    assert store.exists(bucket, "a.txt")
    assert store.get_bytes(bucket, "a.txt") == b"hello"
    assert store.stat(bucket, "a.txt").size == 5

    store.remove(bucket, "a.txt")
    assert not store.exists(bucket, "a.txt")
    store.remove(bucket, "a.txt")  # removing again is not an error


def test_list_by_prefix(store: ObjectStore, bucket: str) -> None:
    for key in ("k/1/a", "k/1/b", "k/2/c", "other"):
        store.put_bytes(bucket, key, key.encode())

    assert [(o.key, o.size) for o in store.list(bucket, "k/")] == [("k/1/a", 5), ("k/1/b", 5), ("k/2/c", 5)]
    assert [o.key for o in store.list(bucket, "k/1/", recursive=False)] == ["k/1/a", "k/1/b"]
    assert [o.key for o in store.list(bucket)] == ["k/1/a", "k/1/b", "k/2/c", "other"]
    assert list(store.list(bucket, "nothing/")) == []


def test_presigned_url_serves_the_bytes(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "shared/file.bin", b"presigned payload")

    url = store.presigned_get_url(bucket, "shared/file.bin", timedelta(minutes=5))

    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == b"presigned payload"


def test_missing_objects_and_buckets_raise_not_found(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        store.stat(bucket, "no/such/key")
    assert caught.value.code == "object_not_found"
    assert isinstance(caught.value, DependencyError)
    with pytest.raises(ObjectNotFoundError):
        store.get_stream(bucket, "no/such/key")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes(f"missing-{uuid.uuid4().hex[:12]}", "key")


def test_wrong_secret_is_a_clear_error(s3: Any, bucket: str) -> None:
    store = store_for(s3, secret_key="not-the-secret-key")

    with pytest.raises(ObjectStoreError, match="rejected the credentials") as caught:
        store.put_bytes(bucket, "x", b"x")
    assert caught.value.code == "object_store_access_denied"
    assert not isinstance(caught.value, ObjectNotFoundError)
    with pytest.raises(ObjectStoreError, match="rejected the credentials"):
        store.get_bytes(bucket, "x")


def test_unreachable_server_is_an_object_store_error() -> None:
    store = ObjectStore("127.0.0.1:1", "key", "secret", connect_timeout=1)
    with pytest.raises(ObjectStoreError, match="cannot reach"):
        store.exists("bucket", "key")


def test_closing_a_stream_early_releases_it(store: ObjectStore, bucket: str, payload: bytes) -> None:
    store.put_bytes(bucket, "big", payload)
    for _ in range(15):  # more than the connection pool holds, so leaked connections would show
        with store.get_stream(bucket, "big", chunk_size=64 * 1024) as stream:
            assert len(next(iter(stream))) == 64 * 1024
        assert stream.closed
    assert store.get_bytes(bucket, "big", offset=3, length=4) == payload[3:7]


async def test_async_store_streams_in_and_out(store: ObjectStore, bucket: str, payload: bytes) -> None:
    astore = AsyncObjectStore(store)

    async def chunks() -> AsyncIterator[bytes]:
        view = memoryview(payload)
        for start in range(0, len(payload), 300_000):
            await asyncio.sleep(0)
            yield bytes(view[start : start + 300_000])

    result = await astore.put_stream(bucket, "async/blob", chunks(), part_size=5 * MiB)
    assert result.size == len(payload)
    assert (await astore.stat(bucket, "async/blob")).size == len(payload)

    received = bytearray()
    async with await astore.get_stream(bucket, "async/blob", chunk_size=MiB) as stream:
        async for chunk in stream:
            received += chunk
    assert bytes(received) == payload
    assert await astore.get_bytes(bucket, "async/blob", offset=10, length=20) == payload[10:30]
    assert [o.key async for o in astore.list(bucket, "async/")] == ["async/blob"]

    url = await astore.presigned_get_url(bucket, "async/blob", timedelta(minutes=1))
    async with httpx.AsyncClient() as http:
        response = await http.get(url, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206 and response.content == payload[:100]

    await astore.remove(bucket, "async/blob")
    assert not await astore.exists(bucket, "async/blob")
    with pytest.raises(ObjectNotFoundError):
        await astore.get_stream(bucket, "async/blob")


async def test_async_upload_error_in_source_aborts_the_upload(store: ObjectStore, bucket: str) -> None:
    astore = AsyncObjectStore(store)

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (6 * MiB)
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        await astore.put_stream(bucket, "async/broken", failing(), part_size=5 * MiB)
    assert not await astore.exists(bucket, "async/broken")
