"""The interface every backend implements, and the translation of an upstream server's HTTP errors."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Protocol

from modelhub_chat_gateway.domain.chat_types import BackendRequest, ImageData, StreamChunk, ToolOptions
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.errors import BackendError


class ChatBackend(Protocol):
    def unsupported(self, options: ToolOptions) -> str | None:
        """What of ``options`` (tools, tool choice, response format) this backend cannot do, or None."""
        ...

    def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        """Streams the answer. Closing the iterator (``aclose``) must stop generation and release the upstream
        connection at once. Raises :class:`BackendError` (with a stable code) when the backend fails."""
        ...


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


def data_url(image: ImageData) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"
