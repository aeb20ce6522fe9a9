"""The S3 object store (MinIO in production, SeaweedFS locally), through the MinIO SDK.

:class:`ObjectStore` is blocking, like the SDK; :class:`AsyncObjectStore` runs the same calls in worker
threads and streams in chunks, for use from asyncio code. Constructing either connects to nothing.

Errors: every SDK or transport failure becomes an :class:`ObjectStoreError` (a
:class:`~modelhub_common.errors.DependencyError`); a missing object or bucket becomes its subclass
:class:`ObjectNotFoundError`. :meth:`ObjectStore.stat` raises :class:`ObjectNotFoundError` rather than
returning ``None``; use :meth:`ObjectStore.exists` for a yes/no. Rejected credentials or a denied request
raise :class:`ObjectStoreError` with ``code == "object_store_access_denied"``.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import BinaryIO, Protocol, Self, TypeVar, cast

import urllib3
import urllib3.exceptions
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from modelhub_common.errors import ConfigurationError, DependencyError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PART_SIZE",
    "AsyncObjectStore",
    "AsyncObjectStream",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStream",
    "ObjectSummary",
    "PutResult",
    "Readable",
]

logger = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 16 * 1024 * 1024
"""Multipart part size for uploads of unknown length (S3 allows 10,000 parts: 160 GiB at this size).

Each upload buffers a few parts in memory; pass a larger ``part_size`` for bigger objects."""

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""Size of the chunks a download yields."""

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchVersion", "ResourceNotFound"})
_ACCESS_DENIED = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_META_PREFIX = "x-amz-meta-"

_T = TypeVar("_T")


class ObjectStoreError(DependencyError):
    """The object store failed, is unreachable, or refused the request."""

    code = "object_store_unavailable"


class ObjectNotFoundError(ObjectStoreError):
    """The object (or its bucket) does not exist."""

    code = "object_not_found"


class Readable(Protocol):
    """Anything with a blocking ``read(size)`` returning ``b""`` at the end (files, ``io.BytesIO``)."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class PutResult:
    bucket: str
    key: str
    etag: str
    size: int
    version_id: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`ObjectStore.stat` returns. ``metadata`` keys are lower-case, without ``x-amz-meta-``."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectSummary:
    """One entry of :meth:`ObjectStore.list` (a listing carries no content type or metadata)."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime | None


class ObjectStream:
    """An open download: iterate it for chunks, or ``read()`` it like a file.

    The HTTP response is closed and its connection released when the data is exhausted, when reading fails,
    or on :meth:`close` / leaving a ``with`` block, whichever comes first. Use ``with`` when you may stop
    reading early.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, *, bucket: str, key: str, chunk_size: int) -> None:
        self._response = response
        self._bucket = bucket
        self._key = key
        self._chunk_size = chunk_size
        self._closed = False

    @property
    def content_length(self) -> int | None:
        """Bytes this download will yield (the range's length for a ranged get), if the server said."""
        value = self._response.headers.get("Content-Length")
        return int(value) if value is not None else None

    @property
    def content_type(self) -> str | None:
        value = self._response.headers.get("Content-Type")
        return str(value) if value is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all remaining if negative); ``b""`` at the end."""
        if self._closed:
            return b""
        try:
            data = self._response.read(None if size < 0 else size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.close()
            raise ObjectStoreError(
                f"download of {self._bucket}/{self._key} broke off: {exc.__class__.__name__}"
            ) from exc
        if not data or size < 0:
            self.close()
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(self._chunk_size):
            yield chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()
            self._response.release_conn()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ObjectStore:
    """Blocking access to one S3 endpoint. Thread-safe (the SDK's connection pool is shared).

    ``endpoint`` is ``host:port`` without a scheme; ``secure`` selects https. ``region`` is required so that
    presigning needs no network call. Timeouts are in seconds.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_connections: int = 10,
    ) -> None:
        self._endpoint = endpoint
        # The SDK's default client waits five minutes to connect; services should fail faster than that.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED",
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid object store endpoint {endpoint!r}: {exc}") from exc

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def ensure_bucket(self, bucket: str) -> bool:
        """Creates the bucket unless it exists; returns True if it created it. Safe to race."""
        with self._translated("ensure bucket", bucket):
            if self._client.bucket_exists(bucket):
                return False
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code in _BUCKET_EXISTS:
                    return False
                raise
        logger.info("created bucket", extra={"bucket": bucket})
        return True

    def put_stream(
        self,
        bucket: str,
        key: str,
        stream: Readable,
        *,
        length: int = -1,
        part_size: int = DEFAULT_PART_SIZE,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        """Uploads from ``stream`` without holding it in memory (multipart above one part).

        ``length`` is the exact size, or -1 when unknown; then parts of ``part_size`` bytes (at least 5 MiB)
        are buffered, otherwise the SDK sizes the parts itself. A failed multipart upload is aborted, so
        nothing partial stays behind. The returned ``size`` counts the bytes actually read.
        """
        counted = _CountingReader(stream)
        with self._translated("put", bucket, key):
            result = self._client.put_object(
                bucket,
                key,
                cast(BinaryIO, counted),
                length,
                content_type=content_type,
                metadata=dict(metadata) if metadata else None,
                part_size=part_size if length < 0 else 0,
            )
        put = PutResult(
            bucket=bucket, key=key, etag=result.etag or "", size=counted.count, version_id=result.version_id
        )
        logger.debug("stored object", extra={"bucket": bucket, "key": key, "size": put.size})
        return put

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        return self.put_stream(
            bucket, key, io.BytesIO(data), length=len(data), content_type=content_type, metadata=metadata
        )

    def get_stream(
        self,
        bucket: str,
        key: str,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> ObjectStream:
        """Opens a download of the whole object, or of ``length`` bytes from ``offset``.

        The request is made now (a missing object raises :class:`ObjectNotFoundError` here); the body is
        read as the returned stream is consumed.
        """
        if offset < 0 or (length is not None and length <= 0):
            raise ValueError("offset must be >= 0 and length > 0")
        with self._translated("get", bucket, key):
            response = self._client.get_object(bucket, key, offset=offset, length=length or 0)
        return ObjectStream(response, bucket=bucket, key=key, chunk_size=chunk_size)

    def get_bytes(self, bucket: str, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        with self.get_stream(bucket, key, offset=offset, length=length) as stream:
            return stream.read()

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Size, etag, content type and metadata; raises :class:`ObjectNotFoundError` if there is none."""
        with self._translated("stat", bucket, key):
            obj = self._client.stat_object(bucket, key)
        metadata = {
            name.lower().removeprefix(_META_PREFIX): str(value)
            for name, value in (obj.metadata or {}).items()
            if name.lower().startswith(_META_PREFIX)
        }
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=obj.size or 0,
            etag=obj.etag or "",
            content_type=obj.content_type or "application/octet-stream",
            last_modified=obj.last_modified,
            metadata=metadata,
        )

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    def remove(self, bucket: str, key: str) -> None:
        """Deletes the object. Removing a missing object is not an error (S3 semantics)."""
        with self._translated("remove", bucket, key):
            self._client.remove_object(bucket, key)

    def list(self, bucket: str, prefix: str = "", *, recursive: bool = True) -> Generator[ObjectSummary, None, None]:
        """Objects whose key starts with ``prefix``, in key order, fetched page by page as iterated.

        With ``recursive=False``, keys are grouped at the next ``/`` and only the objects at this level are
        yielded (the "directories" are skipped).
        """
        with self._translated("list", bucket, prefix):
            objects = self._client.list_objects(bucket, prefix=prefix or None, recursive=recursive)
            for obj in objects:
                if obj.is_dir or obj.object_name is None:
                    continue
                yield ObjectSummary(
                    bucket=bucket,
                    key=obj.object_name,
                    size=obj.size or 0,
                    etag=obj.etag or "",
                    last_modified=obj.last_modified,
                )

    def presigned_get_url(self, bucket: str, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL anyone holding it can GET the object with until ``expires`` (1 s to 7 days) has passed.

        Computed locally; it does not check that the object exists.
        """
        with self._translated("presign", bucket, key):
            url: str = self._client.presigned_get_object(bucket, key, expires=expires)
        return url

    def _translated(self, operation: str, bucket: str, key: str | None = None) -> _Translate:
        return _Translate(self._endpoint, operation, bucket, key)


class _Translate:
    """Turns SDK and transport errors raised inside the block into :class:`ObjectStoreError`."""

    def __init__(self, endpoint: str, operation: str, bucket: str, key: str | None) -> None:
        self._endpoint = endpoint
        self._operation = operation
        self._target = f"{bucket}/{key}" if key else bucket

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or not isinstance(exc, MinioException | urllib3.exceptions.HTTPError):
            return
        raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> ObjectStoreError:
        what = f"object store {self._operation} of {self._target}"
        if isinstance(exc, S3Error):
            if exc.code in _NOT_FOUND:
                return ObjectNotFoundError(f"{what}: {exc.code}: {exc.message or 'not found'}")
            if exc.code in _ACCESS_DENIED:
                return ObjectStoreError(
                    f"{what}: the S3 server at {self._endpoint} rejected the credentials or denied access"
                    f" ({exc.code}); check the access key and secret key",
                    code="object_store_access_denied",
                )
            return ObjectStoreError(f"{what} failed: {exc.code}: {exc.message}")
        if isinstance(exc, ServerError):
            return ObjectStoreError(f"{what} failed: the server answered HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            return ObjectStoreError(f"{what} failed: unexpected response from {self._endpoint}")
        if isinstance(exc, urllib3.exceptions.HTTPError):
            return ObjectStoreError(f"{what} failed: cannot reach {self._endpoint}: {exc.__class__.__name__}")
        return ObjectStoreError(f"{what} failed: {exc}")


class _CountingReader:
    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = bytes(self._stream.read(size))
        self.count += len(data)
        return data


# ---------------------------------------------------------------------------------------------------------
# asyncio facade


class AsyncObjectStream:
    """An open download for asyncio code: ``async for chunk in stream`` or ``await stream.read(n)``.

    Closes like :class:`ObjectStream`: at the end, on error, or on :meth:`aclose` / leaving ``async with``.
    """

    def __init__(self, stream: ObjectStream, *, chunk_size: int) -> None:
        self._stream = stream
        self._chunk_size = chunk_size

    @property
    def content_length(self) -> int | None:
        return self._stream.content_length

    @property
    def content_type(self) -> str | None:
        return self._stream.content_type

    async def read(self, size: int = -1) -> bytes:
        return await asyncio.to_thread(self._stream.read, size)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read(self._chunk_size):
            yield chunk

    async def aclose(self) -> None:
        if not self._stream.closed:
            await asyncio.to_thread(self._stream.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncObjectStore:
    """The same operations as :class:`ObjectStore`, run in worker threads so the event loop never blocks."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    @property
    def sync(self) -> ObjectStore:
        """The blocking store underneath (for code already running in a thread)."""
        return self._store

    async def ensure_bucket(self, bucket: str) -> bool:
        return await asyncio.to_thread(self._store.ensure_bucket, bucket)

    async def put_stream(
        self,
        bucket: str,
        key: str,
        stream: Readable | AsyncIterable[bytes],
        *,
        length: int = -1,
        part_size: int = DEFAULT_PART_SIZE,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        """Uploads from a blocking reader or an async iterable of byte chunks.

        An async iterable is consumed on the event loop while the upload runs in a worker thread. If this
        coroutine is cancelled, the upload stops at its next read and is aborted.
        """
        if isinstance(stream, AsyncIterable):
            reader: _AsyncChunksReader | Readable = _AsyncChunksReader(stream, asyncio.get_running_loop())
        else:
            reader = stream
        upload = asyncio.to_thread(
            self._store.put_stream,
            bucket,
            key,
            reader,
            length=length,
            part_size=part_size,
            content_type=content_type,
            metadata=metadata,
        )
        try:
            return await upload
        except asyncio.CancelledError:
            if isinstance(reader, _AsyncChunksReader):
                reader.cancel()
            raise

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        return await asyncio.to_thread(
            self._store.put_bytes, bucket, key, data, content_type=content_type, metadata=metadata
        )

    async def get_stream(
        self,
        bucket: str,
        key: str,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncObjectStream:
        """Opens a download (see :meth:`ObjectStore.get_stream`); iterate the result for chunks."""
        stream = await asyncio.to_thread(
            self._store.get_stream, bucket, key, offset=offset, length=length, chunk_size=chunk_size
        )
        return AsyncObjectStream(stream, chunk_size=chunk_size)

    async def get_bytes(self, bucket: str, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._store.get_bytes, bucket, key, offset=offset, length=length)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._store.stat, bucket, key)

    async def exists(self, bucket: str, key: str) -> bool:
        return await asyncio.to_thread(self._store.exists, bucket, key)

    async def remove(self, bucket: str, key: str) -> None:
        await asyncio.to_thread(self._store.remove, bucket, key)

    async def list(
        self, bucket: str, prefix: str = "", *, recursive: bool = True, page_size: int = 1000
    ) -> AsyncIterator[ObjectSummary]:
        """Like :meth:`ObjectStore.list`, fetching ``page_size`` entries per worker-thread call."""
        objects = self._store.list(bucket, prefix, recursive=recursive)
        try:
            while page := await asyncio.to_thread(_take, objects, page_size):
                for summary in page:
                    yield summary
        finally:
            objects.close()

    async def presigned_get_url(self, bucket: str, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return await asyncio.to_thread(self._store.presigned_get_url, bucket, key, expires)


def _take(items: Iterator[_T], count: int) -> builtins.list[_T]:
    return builtins.list(itertools.islice(items, count))


class _AsyncChunksReader:
    """A blocking ``read`` over an async iterable, called from a worker thread while the loop runs."""

    def __init__(self, chunks: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = aiter(chunks)
        self._loop = loop
        self._buffer = bytearray()
        self._eof = False
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def read(self, size: int = -1, /) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            if self._cancelled:
                raise ObjectStoreError("upload cancelled")
            chunk = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop).result()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        if size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    async def _next_chunk(self) -> bytes | None:
        try:
            return bytes(await anext(self._chunks))
        except StopAsyncIteration:
            return None
