"""The model store's S3 operations the puller needs beyond ``modelhub_common.objectstore``.

Resumable downloads need S3 multipart uploads whose parts are sent one by one, in any order, from any
replica, and completed later: create, upload part, list, complete, abort. The MinIO SDK only offers them as
private methods, so this adapter presigns each request with the SDK's public ``get_presigned_url`` (computed
locally, no network) and sends it with httpx. A presigned request also carries ``UNSIGNED-PAYLOAD``, which
spares hashing every part a second time just to sign it (the SDK does that over plain http).

Reads, stats and deletes go through the shared :class:`~modelhub_common.objectstore.AsyncObjectStore`.
Every failure becomes a :class:`StoreError` (retryable) or :class:`UploadLostError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from xml.sax.saxutils import escape

import httpx
from minio import Minio

from modelhub_common.objectstore import AsyncObjectStore, ObjectNotFoundError, ObjectStoreError
from modelhub_puller.errors import StoreError, UploadLostError

_PRESIGN_TTL = timedelta(hours=1)
# A part is sent in slices of this size straight from its buffer (no copy of the whole part first).
_SEND_SLICE = 1024 * 1024


class BlobStore:
    def __init__(self, signer: Minio, http: httpx.AsyncClient, objects: AsyncObjectStore, bucket: str) -> None:
        self._signer = signer
        self._http = http
        self._objects = objects
        self.bucket = bucket

    @property
    def objects(self) -> AsyncObjectStore:
        return self._objects

    def _url(self, method: str, key: str, query: Mapping[str, str] | None = None) -> str:
        url: str = self._signer.get_presigned_url(
            method, self.bucket, key, expires=_PRESIGN_TTL, extra_query_params=dict(query) if query else None
        )
        return url

    async def _call(
        self,
        method: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        length: int | None = None,
    ) -> httpx.Response:
        headers = {"Content-Length": str(length)} if length is not None else None
        try:
            response = await self._http.request(method, self._url(method, key, query), content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise StoreError(f"object store {method} {key} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404 and "NoSuchUpload" in response.text:
            raise UploadLostError(f"the multipart upload of {key} no longer exists")
        if response.status_code >= 300:
            raise StoreError(
                f"object store {method} {key} answered HTTP {response.status_code}: {_s3_code(response.text)}"
            )
        return response

    # ---- whole objects

    async def put(self, key: str, data: bytes) -> None:
        await self._call("PUT", key, content=data)

    async def exists(self, key: str) -> bool:
        try:
            return await self._objects.exists(self.bucket, key)
        except ObjectStoreError as exc:
            raise StoreError(exc.message) from exc

    async def size(self, key: str) -> int | None:
        try:
            return (await self._objects.stat(self.bucket, key)).size
        except ObjectNotFoundError:
            return None
        except ObjectStoreError as exc:
            raise StoreError(exc.message) from exc

    async def remove(self, key: str) -> None:
        try:
            await self._objects.remove(self.bucket, key)
        except ObjectStoreError as exc:
            raise StoreError(exc.message) from exc

    async def read(self, key: str) -> bytes:
        try:
            return await self._objects.get_bytes(self.bucket, key)
        except ObjectStoreError as exc:
            raise StoreError(exc.message) from exc

    # ---- multipart

    async def create_upload(self, key: str) -> str:
        response = await self._call("POST", key, query={"uploads": ""})
        upload_id = _xml_text(response.text, "UploadId")
        if not upload_id:
            raise StoreError(f"the object store started an upload of {key} without an upload id")
        return upload_id

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes | bytearray) -> str:
        async def slices() -> AsyncIterator[bytes]:
            view = memoryview(data)
            for start in range(0, len(view), _SEND_SLICE):
                yield view[start : start + _SEND_SLICE]  # type: ignore[misc]

        response = await self._call(
            "PUT",
            key,
            query={"partNumber": str(part_number), "uploadId": upload_id},
            content=slices(),
            length=len(data),
        )
        etag = str(response.headers.get("etag", "")).strip('"')
        if not etag:
            raise StoreError(f"the object store stored part {part_number} of {key} without an ETag")
        return etag

    async def complete_upload(self, key: str, upload_id: str, parts: Mapping[int, str]) -> None:
        body = "".join(
            f'<Part><PartNumber>{number}</PartNumber><ETag>"{escape(etag)}"</ETag></Part>'
            for number, etag in sorted(parts.items())
        )
        document = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        response = await self._call("POST", key, query={"uploadId": upload_id}, content=document)
        # S3 may answer 200 and put the error in the body when completion fails late.
        if "<Error>" in response.text:
            raise StoreError(f"completing the upload of {key} failed: {_s3_code(response.text)}")

    async def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            await self._call("DELETE", key, query={"uploadId": upload_id})
        except UploadLostError:
            return


def _xml_text(document: str, tag: str) -> str:
    try:
        root = ET.fromstring(document)
    except ET.ParseError:
        return ""
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == tag:
            return element.text or ""
    return ""


def _s3_code(document: str) -> str:
    return _xml_text(document, "Code") or document[:200]
