"""The chat gateway's gRPC API as the console uses it: the model picker, a turn to one or two models streamed
event by event, sibling answers and regeneration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc
from modelhub_console.errors import BackendError, BackendUnavailableError, SignInRequiredError

_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
CONTEXT_MODES = {"shared": chat_pb2.CONTEXT_MODE_SHARED, "per_model": chat_pb2.CONTEXT_MODE_PER_MODEL}


def _translate(exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return SignInRequiredError("your sign-in is no longer accepted; sign in again")
    if code in _UNAVAILABLE:
        return BackendUnavailableError("the chat gateway is unreachable")
    status = {
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    }.get(code, 502)
    return BackendError(status, code.name.lower(), exc.details() or code.name)


def event_dict(event: chat_pb2.ChatEvent) -> dict[str, Any]:
    """A ChatEvent as JSON for the browser: ``{"type": <oneof name>, "model_id", ...its fields}``."""
    kind = event.WhichOneof("event") or "unknown"
    body = MessageToDict(getattr(event, kind), preserving_proto_field_name=True) if kind != "unknown" else {}
    return {"type": kind, "model_id": event.model_id, **body}


class GatewayClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = chat_pb2_grpc.ChatServiceStub(channel)  # type: ignore[no-untyped-call]

    @staticmethod
    def _metadata(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async def list_models(self, token: str, *, include_hidden: bool = False) -> list[dict[str, Any]]:
        try:
            reply = await self.stub.ListModels(
                chat_pb2.ListModelsRequest(include_hidden=include_hidden), metadata=self._metadata(token), timeout=15
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return [MessageToDict(m, preserving_proto_field_name=True) for m in reply.models]

    async def chat(
        self,
        token: str,
        *,
        models: list[str],
        text: str,
        conversation_id: str = "",
        parent_message_id: str = "",
        images: Sequence[tuple[bytes, str]] = (),
        context_mode: str = "shared",
    ) -> AsyncIterator[dict[str, Any]]:
        """``images``: ``(bytes, mime type)`` pairs; ``context_mode``: ``shared`` (every model sees the selected
        branch) or ``per_model`` (each model sees its own earlier answers)."""
        request = chat_pb2.ChatRequest(
            conversation_id=conversation_id,
            models=models,
            message=chat_pb2.UserMessage(
                text=text, images=[chat_pb2.Image(data=data, mime_type=mime) for data, mime in images]
            ),
            parent_message_id=parent_message_id,
            context_mode=CONTEXT_MODES[context_mode],
        )
        try:
            async for event in self.stub.Chat(request, metadata=self._metadata(token)):
                yield event_dict(event)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc

    async def regenerate(self, token: str, *, conversation_id: str, message_id: str) -> AsyncIterator[dict[str, Any]]:
        request = chat_pb2.RegenerateRequest(conversation_id=conversation_id, message_id=message_id)
        try:
            async for event in self.stub.Regenerate(request, metadata=self._metadata(token)):
                yield event_dict(event)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc

    async def select_answer(self, token: str, *, conversation_id: str, message_id: str) -> dict[str, Any]:
        try:
            reply = await self.stub.SelectAnswer(
                chat_pb2.SelectAnswerRequest(conversation_id=conversation_id, message_id=message_id),
                metadata=self._metadata(token),
                timeout=15,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return MessageToDict(reply, preserving_proto_field_name=True)

    async def conversation(self, token: str, conversation_id: str) -> dict[str, Any]:
        try:
            reply = await self.stub.GetConversation(
                chat_pb2.GetConversationRequest(conversation_id=conversation_id),
                metadata=self._metadata(token),
                timeout=15,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return MessageToDict(reply, preserving_proto_field_name=True)

    async def conversations(self, token: str, *, limit: int = 20) -> list[dict[str, Any]]:
        try:
            reply = await self.stub.ListConversations(
                chat_pb2.ListConversationsRequest(limit=limit), metadata=self._metadata(token), timeout=15
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return [MessageToDict(c, preserving_proto_field_name=True) for c in reply.conversations]
