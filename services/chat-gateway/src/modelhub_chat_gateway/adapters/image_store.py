"""Images of conversations, kept in the gateway's bucket under ``images/<conversation>/<message>/<n>``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

from modelhub_chat_gateway.domain.chat_types import ImageData
from modelhub_chat_gateway.domain.conversation import StoredImage
from modelhub_common.errors import ModelhubError
from modelhub_common.objectstore import AsyncObjectStore


class ImageStore:
    def __init__(self, store: AsyncObjectStore, bucket: str) -> None:
        self._store = store
        self._bucket = bucket

    async def put(self, conversation_id: str, message_id: str, images: Sequence[ImageData]) -> list[StoredImage]:
        stored = [
            StoredImage(f"images/{conversation_id}/{message_id}/{n}", image.mime_type) for n, image in enumerate(images)
        ]
        await asyncio.gather(
            *(
                self._store.put_bytes(self._bucket, s.key, i.data, content_type=i.mime_type)
                for s, i in zip(stored, images, strict=True)
            )
        )
        return stored

    async def get(self, images: Sequence[StoredImage]) -> list[ImageData]:
        data = await asyncio.gather(*(self._store.get_bytes(self._bucket, i.key) for i in images))
        return [ImageData(d, i.mime_type) for d, i in zip(data, images, strict=True)]

    async def url(self, image: StoredImage) -> str:
        return await self._store.presigned_get_url(self._bucket, image.key, timedelta(hours=1))

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(ModelhubError):
                await self._store.remove(self._bucket, key)
