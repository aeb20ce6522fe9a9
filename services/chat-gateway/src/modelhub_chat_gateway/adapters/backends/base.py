"""The interface every backend implements, and the translation of HTTP transport errors."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Protocol

import httpx

from modelhub_chat_gateway.domain.chat_types import BackendRequest, ImageData, StreamChunk
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.errors import BackendError, BackendTimeoutError


class ChatBackend(Protocol):
    def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        """Streams the answer. Closing the iterator (``aclose``) must stop generation and release the upstream
        connection at once. Raises :class:`BackendError` (with a stable code) when the backend fails."""
        ...


def transport_error(exc: httpx.HTTPError, url: str) -> BackendError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return BackendTimeoutError(f"connecting to {url} timed out", code="connect_timeout")
    if isinstance(exc, httpx.ConnectError):
        return BackendError(f"cannot connect to {url}", code="backend_unavailable")
    return BackendError(f"the connection to {url} failed: {type(exc).__name__}", code="backend_unavailable")


def http_error(status: int, body: bytes, url: str) -> BackendError:
    """``{"error": "..."}`` (Ollama) or ``{"error": {"message": ...}}`` (OpenAI) becomes a readable message."""

    detail = body.decode(errors="replace")[:300]
    try:
        parsed = json.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            detail = str(error.get("message") or detail)
        elif isinstance(error, str):
            detail = error
    except ValueError:
        pass
    code = "model_not_found_upstream" if status == 404 else "backend_error"
    return BackendError(f"{url} answered HTTP {status}: {detail}", code=code)


async def response_lines(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's lines as bytes (one layer instead of httpx's text decoding and line splitting, which
    cost more per token than everything else the gateway does)."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield buffer[start:end].rstrip(b"\r")
            start = end + 1
        buffer = buffer[start:]
    if buffer.strip():
        yield buffer


def data_url(image: ImageData) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"
