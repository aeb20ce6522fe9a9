"""Images of a conversation as the gateway stores them: it answers with presigned object-store URLs, which a
browser outside the store's network cannot reach (and the page's Content-Security-Policy would refuse), so the
console fetches the bytes and serves them from its own origin."""

from __future__ import annotations

import httpx

from modelhub_console.errors import BackendError, BackendUnavailableError


class StoredImages:
    def __init__(self, http: httpx.AsyncClient, *, max_bytes: int) -> None:
        self.http = http
        self.max_bytes = max_bytes

    async def fetch(self, url: str) -> tuple[bytes, str]:
        """The image's bytes and type; only ``image/*`` answers are passed on."""
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise BackendError(
                        502, "image_unavailable", f"the object store answered {response.status_code} for the image"
                    )
                content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
                if not content_type.startswith("image/"):
                    raise BackendError(502, "image_unavailable", "the stored object is not an image")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise BackendError(502, "image_unavailable", "the stored image is larger than allowed")
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"the image store is unreachable ({type(exc).__name__})") from exc
        return bytes(data), content_type
