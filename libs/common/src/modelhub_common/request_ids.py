"""Request ids: one id per request, taken from the caller's ``X-Request-ID`` or made here, on every log line.

A client (or a proxy in front of the service) may send ``X-Request-ID``; a value that is not a short token
(at most :data:`MAX_REQUEST_ID_CHARS` of letters, digits and ``._:-``) is replaced by a new id rather than
logged as sent, so a caller cannot inject text into the logs. The id is echoed in the response's
``X-Request-ID`` header (gRPC: ``x-request-id`` initial metadata) and held in :data:`current_request_id`
while the request runs, where :class:`modelhub_common.logconfig.RequestContextFilter` finds it.
"""

from __future__ import annotations

import contextvars
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_REQUEST_ID_CHARS",
    "REQUEST_ID_HEADER",
    "RequestIdMiddleware",
    "accept_request_id",
    "current_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 128
_VALID = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}$")
_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_request_id", default=None)
"""The id of the request being handled in this context (None outside a request)."""


def accept_request_id(sent: str | None) -> str:
    """The caller's id when it is a well-formed token, else a new one."""
    if sent and _VALID.match(sent):
        return sent
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI middleware: sets :data:`current_request_id` for the request and echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER_BYTES:
                sent = value.decode("latin-1")
                break
        request_id = accept_request_id(sent)
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, encoded))
                message = {**message, "headers": headers}
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
