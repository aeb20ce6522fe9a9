"""Ollama's ``POST /api/chat`` (NDJSON stream). Closing the connection stops Ollama's generation."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from modelhub_chat_gateway.adapters.backends.http_stream import StreamingHttpClient
from modelhub_chat_gateway.domain.chat_types import BackendRequest, StreamChunk, ToolCall, ToolOptions, Usage
from modelhub_chat_gateway.domain.model import ModelLocation
from modelhub_chat_gateway.domain.params import to_ollama_options
from modelhub_chat_gateway.errors import BackendError, InvalidRequestError


def unsupported(options: ToolOptions) -> str | None:
    """What of ``options`` Ollama's chat API cannot do (it has no ``tool_choice``), or None."""
    if options.active and (options.forced or options.choice == "required"):
        return "tool_choice: Ollama backends cannot be made to call a tool; use 'auto' or 'none'"
    if options.parallel is False and options.active:
        return "parallel_tool_calls: Ollama backends cannot be limited to one tool call"
    return None


def _messages(request: BackendRequest) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.images:
            item["images"] = [base64.b64encode(i.data).decode() for i in m.images]
        if m.tool_calls:
            item["tool_calls"] = [{"function": {"name": c.name, "arguments": _arguments(c)}} for c in m.tool_calls]
        if m.role == "tool" and m.tool_call_id in names:
            item["tool_name"] = names[m.tool_call_id]
        messages.append(item)
    return messages


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def _format(options: ToolOptions) -> Any:
    """Ollama's ``format``: "json" for a JSON object, the schema itself for a JSON schema."""
    response_format = options.response_format or {}
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    return None


class OllamaBackend:
    def __init__(self, http: StreamingHttpClient) -> None:
        self._http = http

    def unsupported(self, options: ToolOptions) -> str | None:
        return unsupported(options)

    async def stream(self, request: BackendRequest, location: ModelLocation) -> AsyncGenerator[StreamChunk, None]:
        if not location.url:
            raise BackendError(f"no Ollama URL is known for '{request.model}'", code="backend_unavailable")
        url = f"{location.url.rstrip('/')}/api/chat"
        problem = unsupported(request.tools)
        if problem:
            raise InvalidRequestError(problem)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request),
            "stream": True,
            "options": to_ollama_options(request.params),
        }
        if request.tools.active:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools.active
            ]
        if (wanted := _format(request.tools)) is not None:
            body["format"] = wanted
        calls: list[ToolCall] = []
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
                message = chunk.get("message") or {}
                text = message.get("content") or ""
                for call in message.get("tool_calls") or []:
                    function = (call or {}).get("function") or {}
                    arguments = function.get("arguments")
                    calls.append(
                        ToolCall(
                            str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                            str(function.get("name") or ""),
                            arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                        )
                    )
                if chunk.get("done"):
                    if text:
                        yield StreamChunk(text)
                        text = ""
                    if calls:
                        yield StreamChunk(tool_calls=tuple(calls))
                    usage = Usage(int(chunk.get("prompt_eval_count") or 0), int(chunk.get("eval_count") or 0))
                    finish = "tool_calls" if calls else chunk.get("done_reason") or "stop"
                    yield StreamChunk(finish_reason=finish, usage=usage)
                    return
                if text:
                    yield StreamChunk(text)
        raise BackendError(f"{url} ended the stream without a final message", code="backend_error")
