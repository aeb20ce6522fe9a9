"""The chat page and its streams: a turn to one or two models relayed from the gateway's gRPC stream as
server-sent events, sibling answers (regenerate, select), and base models with "Pull X" and its progress."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from modelhub_console.conversation_view import replay
from modelhub_console.entrypoints.web import CheckedSessionDep, ConsoleDep, SessionDep
from modelhub_console.errors import BackendError, BackendUnavailableError, ConsoleError, SignInRequiredError

router = APIRouter()
logger = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class TurnIn(BaseModel):
    models: list[str] = Field(min_length=1, max_length=2)
    text: str = Field(min_length=1, max_length=100_000)
    conversation_id: str = Field("", max_length=200)


class AnswerIn(BaseModel):
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=200)


class PullIn(BaseModel):
    model: str = Field(min_length=1, max_length=600)


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _relay(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield _sse(event)
    except (BackendError, BackendUnavailableError, SignInRequiredError) as exc:
        yield _sse({"type": "stream_error", "code": exc.code, "message": exc.message})
    yield _sse({"type": "end"})


@router.get("/chat", summary="Chat with one or two models; ?conversation= reopens one")
async def chat_page(request: Request, app: ConsoleDep, session: SessionDep, conversation: str = "") -> Response:
    models = await app.gateway.list_models(session.token, include_hidden=False)
    reopened: dict[str, Any] = {"id": "", "turns": []}
    if conversation:
        stored = await app.gateway.conversation(session.token, conversation)
        reopened = {"id": stored.get("id", conversation), "turns": replay(stored)}
    recent = await app.gateway.conversations(session.token)
    # The picker leaves hidden models out (they stay callable by id); disabled ones cannot answer.
    picker = [
        {"id": m["id"], "name": m.get("name") or m["id"], "suggestions": m.get("suggestion_prompts", [])}
        for m in models
        if not m.get("hidden") and m.get("enabled", True)
    ]
    return app.page(
        request,
        "chat.html",
        session,
        models=picker,
        pulls=app.puller is not None,
        conversation=reopened,
        conversations=recent,
    )


@router.post("/chat/stream", summary="Send one message to one or two models; answers stream as SSE")
async def chat_stream(body: TurnIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    events = app.gateway.chat(session.token, models=body.models, text=body.text, conversation_id=body.conversation_id)
    return StreamingResponse(_relay(events), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/chat/regenerate", summary="One model's answer again, as a new sibling (SSE)")
async def chat_regenerate(body: AnswerIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    events = app.gateway.regenerate(session.token, conversation_id=body.conversation_id, message_id=body.message_id)
    return StreamingResponse(_relay(events), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/chat/select", summary="Continue the conversation from this answer")
async def chat_select(body: AnswerIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    conversation = await app.gateway.select_answer(
        session.token, conversation_id=body.conversation_id, message_id=body.message_id
    )
    return JSONResponse({"current_message_id": conversation.get("current_message_id", "")})


@router.get("/base-models", summary="Base models, and pulls")
async def base_models(request: Request, app: ConsoleDep, session: SessionDep) -> Response:
    items = await app.registry.base_models(session.token)
    return app.page(request, "base_models.html", session, items=items, pulls=app.puller is not None)


@router.post("/pulls", summary="Start a pull (or join the running one)")
async def start_pull(body: PullIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    if app.puller is None:
        raise ConsoleError("pulls are not configured for this console (MODELHUB_CONSOLE_PULLER_URL)")
    job = await app.puller.start(session.token, body.model)
    return JSONResponse({"id": job["id"], "state": job.get("state"), "model": body.model})


@router.get("/pulls/events", summary="A pull's progress as server-sent events")
async def pull_events(app: ConsoleDep, session: SessionDep, id: str) -> Response:
    if app.puller is None:
        raise ConsoleError("pulls are not configured for this console")
    puller = app.puller

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for line in puller.events(session.token, id):
                yield (line + "\n").encode()
        except (BackendError, BackendUnavailableError, SignInRequiredError) as exc:
            yield _sse({"code": exc.code, "message": exc.message}, event="stream_error")

    return StreamingResponse(relay(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/pulls/cancel", summary="Cancel a pull")
async def cancel_pull(body: AnswerIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    if app.puller is None:
        raise ConsoleError("pulls are not configured for this console")
    await app.puller.cancel(session.token, body.message_id)
    return JSONResponse({"cancelled": body.message_id})
