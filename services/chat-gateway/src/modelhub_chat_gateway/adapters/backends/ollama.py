"""Ollama's ``POST /api/chat`` (NDJSON stream). Closing the connection stops Ollama's generation."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

from modelhub_chat_gateway.adapters.backends.http_stream import StreamingHttpClient
from modelhub_chat_gateway.domain.chat_types import BackendRequest, StreamChunk, Usage
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.domain.params import to_ollama_options
from modelhub_chat_gateway.errors import BackendError


class OllamaBackend:
    def __init__(self, http: StreamingHttpClient) -> None:
        self._http = http

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        if not location.url:
            raise BackendError(f"no Ollama URL is known for '{request.model}'", code="backend_unavailable")
        url = f"{location.url.rstrip('/')}/api/chat"
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.images:
                item["images"] = [base64.b64encode(i.data).decode() for i in m.images]
            messages.append(item)
        body = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "options": to_ollama_options(request.params),
        }
        async with self._http.post_lines(url, body, location.api_key) as lines:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    chunk = json.loads(line)
                except ValueError as exc:
                    raise BackendError(f"{url} sent a line that is not JSON", code="backend_error") from exc
                if chunk.get("error"):
                    raise BackendError(f"Ollama failed mid-answer: {chunk['error']}", code="backend_error")
                text = (chunk.get("message") or {}).get("content") or ""
                if chunk.get("done"):
                    usage = Usage(int(chunk.get("prompt_eval_count") or 0), int(chunk.get("eval_count") or 0))
                    yield StreamChunk(text, finish_reason=chunk.get("done_reason") or "stop", usage=usage)
                    return
                if text:
                    yield StreamChunk(text)
        raise BackendError(f"{url} ended the stream without a final message", code="backend_error")
