"""The ChatService servicer: proto in, service layer, proto out. Errors become gRPC statuses here only."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
import httpx
from google.protobuf import json_format
from grpc import aio

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_chat_gateway.domain import events as ev
from modelhub_chat_gateway.domain.chat_types import Citation, ContextMode, ImageData, Usage
from modelhub_chat_gateway.domain.conversation import ConversationRecord, MessageTree, StoredMessage
from modelhub_chat_gateway.domain.tools import ToolStepRecord
from modelhub_chat_gateway.entrypoints.auth_interceptor import current_principal, current_token
from modelhub_chat_gateway.errors import (
    ConversationNotFoundError,
    FilterBlockedError,
    FilterFailedError,
    InvalidRequestError,
    ModelAccessDeniedError,
    ModelNotFoundError,
    ModelUnusableError,
    RegistryUnavailableError,
)
from modelhub_chat_gateway.metrics import GatewayMetrics
from modelhub_chat_gateway.service_layer.chat import ChatService, Turn, TurnRequest
from modelhub_chat_gateway.service_layer.model_catalog import Caller, ModelCatalog
from modelhub_common.errors import DependencyError, ModelhubError

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[ModelhubError], grpc.StatusCode]] = [
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConversationNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelAccessDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (ModelUnusableError, grpc.StatusCode.FAILED_PRECONDITION),
    (RegistryUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (DependencyError, grpc.StatusCode.UNAVAILABLE),
    (FilterBlockedError, grpc.StatusCode.FAILED_PRECONDITION),
    (FilterFailedError, grpc.StatusCode.UNAVAILABLE),
]
_MODES = {
    chat_pb2.CONTEXT_MODE_UNSPECIFIED: None,
    chat_pb2.CONTEXT_MODE_SHARED: ContextMode.SHARED,
    chat_pb2.CONTEXT_MODE_PER_MODEL: ContextMode.PER_MODEL,
}
_MODE_PROTO = {ContextMode.SHARED: chat_pb2.CONTEXT_MODE_SHARED, ContextMode.PER_MODEL: chat_pb2.CONTEXT_MODE_PER_MODEL}


async def _abort(context: aio.ServicerContext[Any, Any], exc: ModelhubError) -> NoReturn:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            await context.abort(status, f"{exc.code}: {exc.message}")
    logger.error("request failed", extra={"code": exc.code, "error": exc.message})
    await context.abort(grpc.StatusCode.INTERNAL, f"{exc.code}: {exc.message}")
    raise AssertionError("unreachable")


def _caller() -> Caller:
    return Caller(current_principal.get(), current_token.get())


def _overrides(params: Any) -> dict[str, Any]:
    """A Struct carries every number as a double: ``max_tokens: 8`` arrives as ``8.0``, which backends
    expecting integers (Ollama's ``num_predict``, llama.cpp's ``max_tokens``) refuse."""
    if not params.fields:
        return {}
    return {k: _integral(v) for k, v in json_format.MessageToDict(params).items()}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _usage(usage: Usage) -> chat_pb2.Usage:
    return chat_pb2.Usage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def _citation(c: Citation) -> chat_pb2.Citation:
    return chat_pb2.Citation(
        knowledge_id=c.knowledge_id,
        file_id=c.file_id,
        file_name=c.file_name,
        text=c.text,
        score=c.score,
        page=c.page,
        start_offset=c.start_offset,
        end_offset=c.end_offset,
    )


def _tool_call(step: ToolStepRecord) -> chat_pb2.ToolCall:
    return chat_pb2.ToolCall(
        id=step.call_id, tool=step.tool, arguments=step.arguments, server_id=step.server_id, step=step.step
    )


def _tool_result(step: ToolStepRecord) -> chat_pb2.ToolResult:
    return chat_pb2.ToolResult(
        id=step.call_id,
        ok=step.ok,
        content=step.content,
        error_code=step.error_code,
        duration_seconds=step.duration_seconds,
        truncated=step.truncated,
    )


def _tool_step(step: ToolStepRecord) -> chat_pb2.ToolStep:
    return chat_pb2.ToolStep(call=_tool_call(step), result=_tool_result(step))


def event_proto(event: ev.TurnEvent) -> chat_pb2.ChatEvent:
    E = chat_pb2.ChatEvent  # noqa: N806 - the proto class, kept short
    match event:
        case ev.Delta(model_id, text):
            return E(model_id=model_id, delta=E.Delta(text=text))
        case ev.TurnStarted(conversation_id, user_message_id):
            return E(turn_started=E.TurnStarted(conversation_id=conversation_id, user_message_id=user_message_id))
        case ev.AnswerStarted(model_id, message_id, parent_id):
            return E(model_id=model_id, answer_started=E.AnswerStarted(message_id=message_id, parent_id=parent_id))
        case ev.CitationsFound(model_id, citations):
            return E(model_id=model_id, citations=E.Citations(citations=[_citation(c) for c in citations]))
        case ev.TurnWarning(model_id, code, message):
            return E(model_id=model_id, warning=E.Warning(code=code, message=message))
        case ev.AnswerDone(model_id, _, finish_reason, usage, ttft, total):
            done = E.AnswerDone(
                finish_reason=finish_reason,
                usage=_usage(usage),
                time_to_first_token_seconds=ttft,
                total_seconds=total,
            )
            return E(model_id=model_id, answer_done=done)
        case ev.AnswerFailed(model_id, message_id, code, message):
            return E(model_id=model_id, answer_error=E.AnswerError(code=code, message=message, message_id=message_id))
        case ev.ToolCalled(model_id, step):
            return E(model_id=model_id, tool_call=_tool_call(step))
        case ev.ToolFinished(model_id, step):
            return E(model_id=model_id, tool_result=_tool_result(step))
        case ev.TurnDone():
            return E(turn_done=E.TurnDone())
    raise TypeError(f"unknown event {event!r}")


def _observe(metrics: GatewayMetrics, backends: dict[str, str], event: ev.TurnEvent) -> None:
    """Per-answer figures from the events the turn yields (AnswerDone carries them all)."""
    match event:
        case ev.AnswerDone(model_id, _, _, usage, ttft, total):
            metrics.record_answer(
                backends.get(model_id, "other"),
                ttft=ttft,
                total=total,
                prompt=usage.prompt_tokens,
                completion=usage.completion_tokens,
            )
        case ev.AnswerFailed(model_id, _, _, _):
            metrics.record_failed_answer(backends.get(model_id, "other"))


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        chat: ChatService,
        catalog: ModelCatalog,
        image_fetcher: ImageFetcher,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._chat = chat
        self._catalog = catalog
        self._images = image_fetcher
        self._metrics = metrics

    async def _stream(self, turn: Turn) -> AsyncIterator[chat_pb2.ChatEvent]:
        backends: dict[str, str] = {model.id: model.location.backend for model in turn.models}
        async for event in self._chat.run(turn):
            if self._metrics is not None:
                _observe(self._metrics, backends, event)
            yield event_proto(event)

    async def Chat(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: chat_pb2.ChatRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        try:
            images = [await self._images.load(i, n) for n, i in enumerate(request.message.images)]
            turn = await self._chat.start_turn(
                _caller(),
                TurnRequest(
                    models=list(request.models),
                    text=request.message.text,
                    images=images,
                    conversation_id=request.conversation_id,
                    parent_message_id=request.parent_message_id,
                    context_mode=_MODES.get(request.context_mode) or ContextMode.SHARED,
                    overrides=_overrides(request.params),
                ),
            )
        except ModelhubError as exc:
            await _abort(context, exc)
        try:
            async for event in self._stream(turn):
                yield event
        except ModelhubError as exc:
            await _abort(context, exc)

    async def Regenerate(  # noqa: N802
        self, request: chat_pb2.RegenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        try:
            turn = await self._chat.start_regeneration(
                _caller(),
                request.conversation_id,
                request.message_id,
                _overrides(request.params),
                _MODES.get(request.context_mode),
            )
        except ModelhubError as exc:
            await _abort(context, exc)
        try:
            async for event in self._stream(turn):
                yield event
        except ModelhubError as exc:
            await _abort(context, exc)

    async def ListModels(  # noqa: N802
        self, request: chat_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> bytes:
        """A serialized ``ListModelsResponse``: the catalog's pre-encoded entries joined (see grpc_server)."""
        try:
            return await self._catalog.listing_protobuf(
                _caller(), include_hidden=request.include_hidden, include_disabled=request.include_disabled
            )
        except ModelhubError as exc:
            await _abort(context, exc)

    async def _message(self, message: StoredMessage, children_ids: list[str]) -> chat_pb2.Message:
        item = chat_pb2.Message(
            id=message.id,
            parent_id=message.parent_id or "",
            children_ids=children_ids,
            role=message.role,
            model_id=message.model_id,
            content=message.content,
            image_urls=await self._chat.image_urls(message),
            status=message.status,
            usage=_usage(message.usage),
            citations=[_citation(c) for c in message.citations],
            finish_reason=message.finish_reason,
            error_code=message.error_code,
            error_message=message.error_message,
            time_to_first_token_seconds=message.time_to_first_token,
            total_seconds=message.total_seconds,
            context_mode=_MODE_PROTO[message.context_mode],
            tool_steps=[_tool_step(t) for t in message.tool_steps],
            action_id=message.action_id,
        )
        if message.created_at is not None:
            item.created_at.FromDatetime(message.created_at)
        return item

    async def _conversation(self, record: ConversationRecord, tree: MessageTree) -> chat_pb2.Conversation:
        conversation = chat_pb2.Conversation(
            id=record.id, title=record.title, current_message_id=record.current_message_id or ""
        )
        conversation.created_at.FromDatetime(record.created_at)
        conversation.updated_at.FromDatetime(record.updated_at)
        for message in tree.by_id.values():
            conversation.messages.append(
                await self._message(message, [c.id for c in tree.children.get(message.id, [])])
            )
        return conversation

    async def GetConversation(  # noqa: N802
        self, request: chat_pb2.GetConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.Conversation:
        try:
            record, tree = await self._chat.get(_caller(), request.conversation_id)
            return await self._conversation(record, tree)
        except ModelhubError as exc:
            await _abort(context, exc)

    async def ListConversations(  # noqa: N802
        self, request: chat_pb2.ListConversationsRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.ListConversationsResponse:
        try:
            items, cursor = await self._chat.list_conversations(_caller(), request.limit, request.cursor)
        except ModelhubError as exc:
            await _abort(context, exc)
        response = chat_pb2.ListConversationsResponse(next_cursor=cursor)
        for item in items:
            summary = response.conversations.add(id=item.id, title=item.title)
            summary.updated_at.FromDatetime(item.updated_at)
        return response

    async def DeleteConversation(  # noqa: N802
        self, request: chat_pb2.DeleteConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.DeleteConversationResponse:
        try:
            await self._chat.delete(_caller(), request.conversation_id)
        except ModelhubError as exc:
            await _abort(context, exc)
        return chat_pb2.DeleteConversationResponse()

    async def SelectAnswer(  # noqa: N802
        self, request: chat_pb2.SelectAnswerRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.Conversation:
        try:
            await self._chat.select_answer(_caller(), request.conversation_id, request.message_id)
            record, tree = await self._chat.get(_caller(), request.conversation_id)
            return await self._conversation(record, tree)
        except ModelhubError as exc:
            await _abort(context, exc)

    async def RunAction(  # noqa: N802
        self, request: chat_pb2.RunActionRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.Message:
        try:
            result = await self._chat.run_action(
                _caller(), request.conversation_id, request.message_id, request.action_id
            )
            return await self._message(result, [])
        except ModelhubError as exc:
            await _abort(context, exc)


class ImageFetcher:
    """Turns a proto Image into bytes: inline data, a ``data:`` URL, or an http(s) URL on an allowed host."""

    def __init__(self, http: httpx.AsyncClient, allowed_hosts: tuple[str, ...], max_bytes: int) -> None:
        self._http = http
        self._allowed = {h.lower() for h in allowed_hosts}
        self._max = max_bytes

    async def load(self, image: chat_pb2.Image, index: int) -> ImageData:
        where = f"message.images[{index}]"
        if image.WhichOneof("source") == "data":
            return ImageData(bytes(image.data), image.mime_type or "image/png")
        url = image.url
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if ";base64" not in header:
                raise InvalidRequestError(f"{where}: only base64 data URLs are accepted")
            try:
                data = base64.b64decode(payload, validate=True)
            except ValueError as exc:
                raise InvalidRequestError(f"{where}: the data URL is not valid base64") from exc
            return ImageData(data, header[5:].split(";")[0] or image.mime_type or "image/png")
        host = httpx.URL(url).host.lower() if url.startswith(("http://", "https://")) else ""
        if not host or host not in self._allowed:
            raise InvalidRequestError(f"{where}: the gateway may not fetch images from {host or url!r}; send the bytes")
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise InvalidRequestError(f"{where}: cannot fetch {url}: {type(exc).__name__}") from exc
        if response.status_code != 200 or len(response.content) > self._max:
            raise InvalidRequestError(f"{where}: {url} answered HTTP {response.status_code} or is too large")
        mime = image.mime_type or response.headers.get("content-type", "image/png").split(";")[0]
        return ImageData(response.content, mime)
