"""An OpenAI-compatible HTTP API on the gateway: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` is a model-file id (or a base model id) and the model file is applied, so the official ``openai``
SDK, or Open WebUI as an "OpenAI connection", can use modelhub's models. The API key is a modelhub token.
Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelhub_chat_gateway.domain.chat_types import (
    BackendWarning,
    ImageData,
    PromptMessage,
    Role,
    ToolCall,
    ToolDefinition,
    ToolOptions,
)
from modelhub_chat_gateway.errors import (
    BackendError,
    BackendTimeoutError,
    ContextTooLongError,
    FilterBlockedError,
    FilterFailedError,
    InvalidRequestError,
    ModelAccessDeniedError,
    ModelNotFoundError,
    ModelUnusableError,
    RegistryUnavailableError,
    RetrievalError,
    VisionNotSupportedError,
)
from modelhub_chat_gateway.service_layer.completions import CompletionService, PreparedCompletion
from modelhub_chat_gateway.service_layer.generation import EMPTY_ANSWER
from modelhub_chat_gateway.service_layer.model_catalog import Caller, ModelCatalog
from modelhub_common.auth import VerifiedTokens, parse_authorization_header
from modelhub_common.errors import AuthError, ModelhubError

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[ModelhubError], int, str]] = [
    (AuthError, 401, "authentication_error"),
    (ModelNotFoundError, 404, "invalid_request_error"),
    (ModelAccessDeniedError, 403, "permission_error"),
    (ModelUnusableError, 400, "invalid_request_error"),
    (VisionNotSupportedError, 400, "invalid_request_error"),
    (ContextTooLongError, 400, "invalid_request_error"),
    (InvalidRequestError, 400, "invalid_request_error"),
    (BackendTimeoutError, 504, "api_error"),
    (BackendError, 502, "api_error"),
    (RetrievalError, 502, "api_error"),
    # A filter refused the message or the answer: the request itself is what was refused.
    (FilterBlockedError, 400, "invalid_request_error"),
    (FilterFailedError, 502, "api_error"),
]
_PASSED_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


class OpenAIError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def _error_body(exc: ModelhubError) -> tuple[int, dict[str, Any]]:
    for kind, status, type_ in _STATUS:
        if isinstance(exc, kind):
            return status, {"error": {"message": exc.message, "type": type_, "param": None, "code": exc.code}}
    return 500, {"error": {"message": exc.message, "type": "api_error", "param": None, "code": exc.code}}


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tool_options(body: ChatCompletionIn) -> ToolOptions:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` checked as OpenAI does."""
    tools: list[ToolDefinition] = []
    for n, raw in enumerate(body.tools or []):
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequestError(f"tools[{n}]: must be {{'type': 'function', 'function': {{...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequestError(f"tools[{n}].function.name: 1-64 letters, digits, '_' or '-'")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InvalidRequestError(f"tools[{n}].function.parameters: must be a JSON schema object")
        if any(t.name == name for t in tools):
            raise InvalidRequestError(f"tools[{n}].function.name: '{name}' is declared twice")
        tools.append(ToolDefinition(name, str(function.get("description") or ""), parameters))
    choice, forced = None, None
    raw_choice = body.tool_choice
    if isinstance(raw_choice, str):
        if raw_choice not in ("auto", "none", "required"):
            raise InvalidRequestError("tool_choice: must be 'auto', 'none', 'required' or a function")
        choice = raw_choice
    elif isinstance(raw_choice, dict):
        forced = (raw_choice.get("function") or {}).get("name") if raw_choice.get("type") == "function" else None
        if not isinstance(forced, str) or not any(t.name == forced for t in tools):
            raise InvalidRequestError("tool_choice: names no function declared in tools")
    if (choice == "required" or forced) and not tools:
        raise InvalidRequestError("tool_choice: asks for a tool call but tools is empty")
    response_format = body.response_format
    if response_format is not None:
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequestError("response_format.type: must be text, json_object or json_schema")
        if kind == "json_schema" and not isinstance((response_format.get("json_schema") or {}).get("schema"), dict):
            raise InvalidRequestError("response_format.json_schema.schema: must be a JSON schema object")
        if kind == "text":
            response_format = None
    return ToolOptions(tuple(tools), choice, forced, body.parallel_tool_calls, response_format)


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if not isinstance(raw, list):
        raise InvalidRequestError(f"{where}: must be a list")
    calls: list[ToolCall] = []
    for n, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not item.get("id"):
            raise InvalidRequestError(f"{where}[{n}]: needs an id and a function with a name")
        arguments = function.get("arguments", "{}")
        calls.append(
            ToolCall(
                str(item["id"]),
                function["name"],
                arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
    return tuple(calls)


def _openai_tool_calls(calls: Sequence[ToolCall], *, indexed: bool) -> list[dict[str, Any]]:
    return [
        {
            **({"index": n} if indexed else {}),
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for n, c in enumerate(calls)
    ]


def _image(url: str, where: str) -> ImageData:
    if not url.startswith("data:"):
        raise InvalidRequestError(f"{where}: only data: URLs are accepted for images")
    header, _, payload = url.partition(",")
    try:
        return ImageData(base64.b64decode(payload, validate=True), header[5:].split(";")[0] or "image/png")
    except ValueError as exc:
        raise InvalidRequestError(f"{where}: the data URL is not valid base64") from exc


def _messages(raw: list[dict[str, Any]]) -> list[PromptMessage]:
    result: list[PromptMessage] = []
    for n, message in enumerate(raw):
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequestError(f"messages[{n}].role: must be system, developer, user, assistant or tool")
        content = message.get("content")
        texts: list[str] = []
        images: list[ImageData] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for p, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    images.append(_image(str(url), f"messages[{n}].content[{p}]"))
                else:
                    raise InvalidRequestError(f"messages[{n}].content[{p}]: type must be text or image_url")
        elif content is not None:
            raise InvalidRequestError(f"messages[{n}].content: must be a string or a list of parts")
        typed_role: Role = role
        calls: tuple[ToolCall, ...] = ()
        if role == "assistant" and message.get("tool_calls") is not None:
            calls = _tool_calls(message["tool_calls"], f"messages[{n}].tool_calls")
        call_id = ""
        if role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            if not call_id:
                raise InvalidRequestError(f"messages[{n}].tool_call_id: a tool message names the call it answers")
        result.append(PromptMessage(typed_role, "\n".join(texts), tuple(images), calls, call_id))
    return result


def _overrides(body: ChatCompletionIn) -> dict[str, Any]:
    overrides = {key: getattr(body, key) for key in _PASSED_PARAMS if getattr(body, key) is not None}
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        overrides["max_tokens"] = max_tokens
    return overrides


@dataclass(frozen=True)
class OpenAIApiDeps:
    """What the routes need, stored by the bootstrap as ``app.state.openai``."""

    tokens: VerifiedTokens
    catalog: Callable[[], ModelCatalog]
    completions: Callable[[], CompletionService]


async def _deps(request: Request) -> OpenAIApiDeps:
    # async: FastAPI would run a plain function in its thread pool, a thread hop on every request
    deps: OpenAIApiDeps = request.app.state.openai
    return deps


async def _caller(request: Request) -> Caller:
    deps = await _deps(request)
    try:
        token = parse_authorization_header(request.headers.get("authorization"))
        return Caller(deps.tokens.verify(token), token)
    except AuthError as exc:
        raise OpenAIError(*_error_body(exc)) from exc


CallerDep = Annotated[Caller, Depends(_caller)]


DepsDep = Annotated[OpenAIApiDeps, Depends(_deps)]


_OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "description": "e.g. invalid_request_error, authentication_error"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_OPENAI_ERROR_STATUSES = {
    400: "The request is invalid; `error.message` says which field",
    401: "No token, or a token that is invalid or expired",
    403: "The caller may not use this model",
    404: "No such model, or the caller cannot read it",
    413: "The request is over a limit (messages, images, tools)",
    422: "A field of the body has the wrong type",
    429: "Too many requests",
    502: "The backend failed or answered with an error",
    503: "A dependency (the registry, the backend) is unavailable",
}
#: What the OpenAI-compatible routes answer when they cannot serve, in OpenAI's error shape.
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _OPENAI_ERROR_SCHEMA}}}
    for status, text in _OPENAI_ERROR_STATUSES.items()
}


def openai_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai-compatible"], responses=OPENAI_ERRORS)

    @router.get("/models", summary="Models the caller can use, as OpenAI lists them")
    async def list_models(who: CallerDep, deps: DepsDep) -> Response:
        try:
            body = await deps.catalog().listing_json(who)
        except RegistryUnavailableError as exc:
            error = {"message": exc.message, "type": "api_error", "param": None, "code": exc.code}
            raise OpenAIError(503, {"error": error}) from exc
        except ModelhubError as exc:
            raise OpenAIError(*_error_body(exc)) from exc
        # A join of entries the catalog encoded once: no per-request JSON encoding.
        return Response(body, media_type="application/json")

    @router.post("/chat/completions", summary="A chat completion with the model file applied", response_model=None)
    async def chat_completions(body: ChatCompletionIn, who: CallerDep, deps: DepsDep) -> Response:
        completions = deps.completions
        try:
            prepared = await completions().prepare(
                who, body.model, _messages(body.messages), _overrides(body), _tool_options(body)
            )
        except ModelhubError as exc:
            raise OpenAIError(*_error_body(exc)) from exc
        headers = {}
        if prepared.dropped_messages:
            headers["X-Modelhub-Warning"] = (
                f"context_trimmed: left out the {prepared.dropped_messages} oldest messages to fit the context"
            )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse(completions(), prepared, completion_id, body.model, include_usage),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        return JSONResponse(await _complete(completions(), prepared, completion_id, body.model), headers=headers)

    return router


async def _complete(
    service: CompletionService, prepared: PreparedCompletion, completion_id: str, model: str
) -> dict[str, Any]:
    parts: list[str] = []
    calls: list[ToolCall] = []
    warnings: list[BackendWarning] = []
    finish, usage = "stop", None
    try:
        async for chunk in service.stream(prepared):
            parts.append(chunk.text)
            calls.extend(chunk.tool_calls)
            if chunk.warning is not None:
                warnings.append(chunk.warning)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
    except ModelhubError as exc:
        raise OpenAIError(*_error_body(exc)) from exc
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts)}
    if calls:
        message["tool_calls"] = _openai_tool_calls(calls, indexed=False)
        message["content"] = message["content"] or None
        finish = "tool_calls"
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if said := _warnings(prepared, warnings, any(parts) or bool(calls)):
        body["warnings"] = said
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return body


def _warnings(prepared: PreparedCompletion, said: list[BackendWarning], got_text: bool) -> list[dict[str, str]]:
    """The answer's warnings as ``[{code, message}]`` (a modelhub extension of the completion object)."""
    warnings = list(said)
    if prepared.dropped_messages:
        warnings.insert(
            0,
            BackendWarning(
                "context_trimmed", f"left out the {prepared.dropped_messages} oldest messages to fit the context"
            ),
        )
    if not got_text:
        warnings.append(EMPTY_ANSWER)
    return [{"code": w.code, "message": w.message} for w in warnings]


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _sse(
    service: CompletionService, prepared: PreparedCompletion, completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, warnings: list[dict[str, str]] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if warnings:
            body["warnings"] = warnings
        return _event(body)

    yield chunk({"role": "assistant", "content": ""}, None)
    finish, usage = "stop", None
    warnings: list[BackendWarning] = []
    got_text = False
    called = 0
    try:
        async for piece in service.stream(prepared):
            if piece.text:
                got_text = True
                yield chunk({"content": piece.text}, None)
            if piece.tool_calls:
                listed = _openai_tool_calls(piece.tool_calls, indexed=True)
                for item in listed:
                    item["index"] += called
                called += len(listed)
                yield chunk({"tool_calls": listed}, None)
            if piece.warning is not None:
                warnings.append(piece.warning)
            finish = piece.finish_reason or finish
            usage = piece.usage or usage
    except ModelhubError as exc:
        yield _event(_error_body(exc)[1])
        return
    # Warnings ride on the last chunk that has a choice, so clients that read choices[0] of every chunk still work.
    if called:
        finish = "tool_calls"
    yield chunk({}, finish, _warnings(prepared, warnings, got_text or called > 0))
    if include_usage:
        u = usage
        yield _event(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": u.prompt_tokens if u else 0,
                    "completion_tokens": u.completion_tokens if u else 0,
                    "total_tokens": u.total_tokens if u else 0,
                },
            }
        )
    yield b"data: [DONE]\n\n"


def install_openai_errors(app: FastAPI) -> None:
    async def openai_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OpenAIError)
        return JSONResponse(exc.body, status_code=exc.status)

    app.add_exception_handler(OpenAIError, openai_error)
