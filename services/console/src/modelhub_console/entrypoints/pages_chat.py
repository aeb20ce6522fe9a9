"""The chat page and its streams: a turn to one or two models relayed from the gateway's gRPC stream as
server-sent events, sibling answers (regenerate, select), and base models with "Pull X" and its progress."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from modelhub_console.conversation_view import replay
from modelhub_console.entrypoints.web import CheckedSessionDep, Console, ConsoleDep, SessionDep
from modelhub_console.errors import BackendError, BackendUnavailableError, ConsoleError, SignInRequiredError
from modelhub_console.sessions import Session

router = APIRouter()
logger = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class ImageIn(BaseModel):
    # base64 of at most the gateway's default 10 MiB (the console's max_image_bytes is checked after decoding)
    data: str = Field(min_length=4, max_length=14_000_000)
    mime_type: str = Field(pattern=r"^image/(png|jpeg|webp|gif)$")


class TurnIn(BaseModel):
    models: list[str] = Field(min_length=1, max_length=2)
    # Empty text is allowed with an image (the gateway refuses a message with neither).
    text: str = Field("", max_length=100_000)
    conversation_id: str = Field("", max_length=200)
    images: list[ImageIn] = Field(default_factory=list, max_length=16)
    context_mode: Literal["shared", "per_model"] = "shared"


class PullCancelIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)


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


async def _picker(app: Console, session: Session) -> list[dict[str, Any]]:
    models = await app.gateway.list_models(session.token, include_hidden=False)
    # The picker leaves hidden models out (they stay callable by id); disabled ones cannot answer.
    return [
        {
            "id": m["id"],
            "name": m.get("name") or m["id"],
            "suggestions": m.get("suggestion_prompts", []),
            "vision": bool((m.get("capabilities") or {}).get("vision")),
        }
        for m in models
        if not m.get("hidden") and m.get("enabled", True)
    ]


@router.get("/chat", summary="Chat with one or two models; ?conversation= reopens one")
async def chat_page(request: Request, app: ConsoleDep, session: SessionDep, conversation: str = "") -> Response:
    picker = await _picker(app, session)
    reopened: dict[str, Any] = {"id": "", "turns": []}
    if conversation:
        stored = await app.gateway.conversation(session.token, conversation)
        reopened = {"id": stored.get("id", conversation), "turns": replay(stored)}
    recent = await app.gateway.conversations(session.token)
    return app.page(
        request,
        "chat.html",
        session,
        models=picker,
        pulls=app.puller is not None,
        conversation=reopened,
        conversations=recent,
        max_images=app.settings.max_images,
    )


@router.get("/chat/models", summary="The model picker's entries (after a pull, the page asks again)")
async def chat_models(app: ConsoleDep, session: SessionDep) -> Response:
    return JSONResponse({"models": await _picker(app, session)})


def _decoded(images: list[ImageIn], app: Console) -> list[tuple[bytes, str]]:
    if len(images) > app.settings.max_images:
        raise BackendError(422, "too_many_images", f"attach at most {app.settings.max_images} images to one message")
    decoded: list[tuple[bytes, str]] = []
    for n, image in enumerate(images, 1):
        try:
            data = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BackendError(422, "invalid_image", f"image {n} is not valid base64") from exc
        if len(data) > app.settings.max_image_bytes:
            raise BackendError(
                413, "image_too_large", f"image {n} is {len(data)} bytes; the limit is {app.settings.max_image_bytes}"
            )
        decoded.append((data, image.mime_type))
    return decoded


@router.post("/chat/stream", summary="Send one message to one or two models; answers stream as SSE")
async def chat_stream(body: TurnIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    if not body.text.strip() and not body.images:
        raise BackendError(422, "empty_message", "type a message or attach an image")
    events = app.gateway.chat(
        session.token,
        models=body.models,
        text=body.text,
        conversation_id=body.conversation_id,
        images=_decoded(body.images, app),
        context_mode=body.context_mode,
    )
    return StreamingResponse(_relay(events), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/chat/image", summary="An image of a conversation, fetched from the gateway's store")
async def chat_image(
    app: ConsoleDep,
    session: SessionDep,
    conversation: Annotated[str, Query(max_length=200)],
    message: Annotated[str, Query(max_length=200)],
    n: Annotated[int, Query(ge=0, le=64)] = 0,
) -> Response:
    # The gateway checks the caller may read the conversation; its URLs are valid for a while only.
    stored = await app.gateway.conversation(session.token, conversation)
    found = next((m for m in stored.get("messages", []) if m.get("id") == message), None)
    urls = (found or {}).get("image_urls", [])
    if app.images is None or n >= len(urls):
        raise BackendError(404, "image_not_found", "the conversation has no such image")
    data, content_type = await app.images.fetch(urls[n])
    return Response(data, media_type=content_type, headers={"Cache-Control": "private, max-age=600"})


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


@router.post("/pulls/cancel", summary="Cancel a pull (its event stream ends with a cancelled event)")
async def cancel_pull(body: PullCancelIn, app: ConsoleDep, session: CheckedSessionDep) -> Response:
    if app.puller is None:
        raise ConsoleError("pulls are not configured for this console")
    job = await app.puller.cancel(session.token, body.id)
    return JSONResponse({"id": body.id, "state": job.get("state")})
