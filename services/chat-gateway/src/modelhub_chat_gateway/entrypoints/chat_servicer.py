"""The ChatService servicer. Conversations and model fan-out are not served yet: each call says so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from modelhub.chat.v1 import chat_pb2, chat_pb2_grpc

NOT_AVAILABLE = "this gateway version does not serve chats yet"


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    async def Chat(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: chat_pb2.ChatRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_AVAILABLE)
        yield chat_pb2.ChatEvent()  # pragma: no cover - unreachable, keeps this a generator

    async def ListModels(  # noqa: N802
        self, request: chat_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> chat_pb2.ListModelsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NOT_AVAILABLE)
        raise AssertionError("unreachable")
